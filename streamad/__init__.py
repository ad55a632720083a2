"""streamad: streaming anomaly detection for time series and IoT telemetry."""

__version__ = "0.1.0"
