"""I/O edge: Kafka source/sink, embedded broker, replay producer, federated transport."""
