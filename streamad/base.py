"""Core contracts: the Detector and Threshold protocols and the exception hierarchy.

Score direction everywhere in streamad: a higher score is more anomalous.

Exceptions
----------
Every error streamad raises on purpose is a :class:`StreamadError`, so callers can catch
one type. Subclasses say what went wrong::

    StreamadError
    ├── DecodeError        a telemetry message cannot be turned into a Record
    ├── DimensionError     a detector got a feature vector of the wrong shape or names
    ├── StateError         a state dict / checkpoint cannot be loaded
    ├── NotFittedError     a model was asked to score before it learned anything it needs
    ├── ConfigError        a bad parameter, config file or CLI argument
    ├── DataError          a dataset file is missing or malformed
    ├── NotBuiltError      a subcommand or feature that does not exist yet
    ├── TransportError     the message system cannot be reached or refused an operation
    │   ├── CommitError    input offsets could not be committed
    │   └── DeliveryError  output messages were not acknowledged
    ├── ServiceError       the streaming service cannot go on
    └── Rejected           a federated message was refused

Every error says whether trying the same thing again later may work (``retriable``): the
service retries those and stops on the others. It is False by default; a transport error is
retriable unless it says otherwise (a broker that is away comes back, bad credentials do not
get better).

>>> issubclass(DecodeError, StreamadError) and issubclass(DecodeError, ValueError)
True
>>> TransportError("broker away").retriable, ConfigError("bad flag").retriable
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BaseDetector",
    "CommitError",
    "ConfigError",
    "DataError",
    "Decision",
    "DecodeError",
    "DeliveryError",
    "Detector",
    "DimensionError",
    "FailedSend",
    "NotBuiltError",
    "NotFittedError",
    "Rejected",
    "ServiceError",
    "StateError",
    "StreamadError",
    "Threshold",
    "TransportError",
    "parse_options",
    "parse_params",
    "warmup_length",
]


class StreamadError(Exception):
    """Root of every error streamad raises on purpose."""

    #: Whether doing the same thing again later may succeed (a broker that is away, a
    #: timeout); False when it cannot (bad input, bad configuration, a refused commit).
    retriable: bool = False


class DecodeError(StreamadError, ValueError):
    """A message is not a valid telemetry record; ``reason`` says why in plain words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DimensionError(StreamadError, ValueError):
    """A detector got input of the wrong dimension or with unexpected feature names."""


class StateError(StreamadError):
    """A state dict or checkpoint is malformed or belongs to another kind of object."""


class NotFittedError(StreamadError):
    """A model must learn before it can score."""


class ConfigError(StreamadError, ValueError):
    """A parameter, config file or command-line argument is invalid."""


class DataError(StreamadError):
    """A dataset file or directory is missing or malformed."""


class NotBuiltError(StreamadError):
    """A feature that is planned but not built yet."""


class TransportError(StreamadError):
    """The message system cannot be reached or refused an operation.

    ``retriable`` is True when doing the same thing again later may succeed (broker down,
    timeout, leader moving); False when it cannot (bad credentials, partition lost).
    """

    def __init__(self, message: str, retriable: bool = True):
        super().__init__(message)
        self.retriable = retriable


class CommitError(TransportError):
    """Offsets could not be committed. Nothing is lost: the records will be read again."""


@dataclass(frozen=True, slots=True)
class FailedSend:
    """One message a sink could not deliver, and whether sending it again may work."""

    topic: str
    key: bytes | None
    value: bytes
    error: str
    retriable: bool
    headers: list | None = None


class DeliveryError(TransportError):
    """Some messages sent since the last flush were not acknowledged.

    ``failed`` lists them. Retriable ones are kept by the sink and sent again by its next
    ``flush``, so a caller that does not commit its input offsets and calls ``flush`` again
    later keeps at-least-once delivery. Permanent failures (a message larger than the broker
    accepts, an unknown topic with auto-creation off) are dropped from the sink and reported
    once, here.
    """

    def __init__(self, message: str, failed: list[FailedSend], retriable: bool):
        super().__init__(message, retriable=retriable)
        self.failed = failed


class ServiceError(StreamadError):
    """The service cannot continue (e.g. the sink keeps failing to deliver); ``retriable``
    when trying again later may work."""

    def __init__(self, message: str, retriable: bool = False):
        super().__init__(message)
        self.retriable = retriable


class Rejected(StreamadError):
    """A federated message was refused; ``reason`` says why (logged by the receiver)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Decision:
    """What a streaming threshold decided about one score."""

    is_anomaly: bool
    threshold: float


@runtime_checkable
class Detector(Protocol):
    """River-compatible online detector. Higher score = more anomalous.

    ``x`` is a mapping of feature name to float; ``X`` is an array of shape (n, d) whose
    columns follow ``features_`` (sorted feature names).
    """

    def learn_one(self, x: Mapping[str, float]) -> None: ...

    def score_one(self, x: Mapping[str, float]) -> float: ...

    def learn_many(self, X: np.ndarray) -> None: ...

    def score_many(self, X: np.ndarray) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Threshold(Protocol):
    """Streaming threshold over a score stream (higher score = more anomalous)."""

    def update(self, score: float) -> Decision: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class BaseDetector:
    """Shared plumbing for detectors: feature naming, input checks, batch loops, state.

    Subclasses implement ``_learn(v)``, ``_score(v)`` on 1-D float vectors, and
    ``_get_state()`` / ``_set_state(state)`` for their learned attributes. They may override
    the ``*_many`` methods with vectorised versions that give the same results.

    Semantics (the conformance suite in :mod:`streamad.checks` enforces them):

    - ``score_one(x)`` scores ``x`` as the next point of the stream and changes nothing.
    - ``learn_one(x)`` takes ``x`` into the model (and into the window, for window detectors).
    - ``learn_many(X)`` equals ``learn_one`` over the rows of ``X``;
      ``score_many(X)`` equals ``score_one`` over the rows (no learning in between).
    - ``process_many(X, learn=True)`` is the streaming (prequential) loop: score each row,
      then learn it; with ``learn=False`` the model is frozen and only the context window
      advances (``observe_one``), which is how a fitted model detects over a test series.

    Optional capabilities are declared here, each with a default that is right for a
    detector without it, so that the service, ``streamad detect`` and ``streamad bench`` use
    them without probing: ``window``, ``features_``, ``warmup_scores_``, ``default_threshold``,
    :meth:`unit_score`, :meth:`explain`, :meth:`process_keys`, :meth:`share_model`, and the
    batch protocol of Orion's benchmark (``whole_series``, :meth:`fit`, :meth:`score_series`).
    :mod:`streamad.checks` checks every one of them on every registered detector.
    """

    #: Name used in the registry, configs and result files. Giving a class in a private
    #: module of :mod:`streamad.detectors` a ``name`` registers it.
    name: str = "base"

    #: The feature names, sorted, that the columns of ``X`` follow: set by the first record
    #: learned or scored (its keys) or the first array (``x0``, ``x1``, ... or ``value``).
    features_: list[str] | None = None

    #: Records each score looks at: the detector's window (0 for a detector of single
    #: records). ``streamad detect`` and ``streamad bench --protocol streaming`` leave twice as
    #: many first scores unthresholded (:func:`warmup_length`).
    window: int = 0

    #: Whether :meth:`score_series` scores a series as a whole rather than prequentially (a
    #: score may look ahead): ``streamad bench --protocol orion`` then trains the detector with
    #: :meth:`fit` on the training part before :meth:`score_series`, as Orion's benchmark does
    #: (HypAD, TadGAN, AER); other detectors learn the training part as a stream.
    whole_series: bool = False

    #: The streaming threshold (registry name, parameters) that ``streamad serve``, ``streamad
    #: detect`` and ``streamad bench --protocol streaming`` use with this detector unless told
    #: otherwise (threshold ``"auto"``): SPOT, which calibrates itself to any score scale; a
    #: detector whose scores mean the same on every stream names a fixed value instead.
    default_threshold: tuple[str, dict[str, Any]] = ("spot", {})

    #: How many scores this detector has given without a model: a detector that trains after
    #: a warm-up (HypAD, node-ae) scores 0.0 until then. They always come first, so they are
    #: the first ``warmup_scores_`` scores of its stream. Thresholds must not learn from them
    #: (a threshold calibrated on zeros flags everything after): the service, ``streamad
    #: detect`` and ``streamad bench --protocol streaming`` leave them out. 0 for detectors
    #: that score from the first point.
    warmup_scores_: int = 0

    def unit_score(self, scores: np.ndarray) -> np.ndarray:
        """Scores mapped to [0, 1] by one fixed, increasing map, the same for every stream (NAB's
        result files take scores in [0, 1]; ``streamad bench --protocol nab`` uses this unless
        it maps through the anomaly likelihood). Default ``s / (1 + s)`` for ``s >= 0``, 0 below;
        detectors whose scores are already in [0, 1] return them unchanged.

        >>> BaseDetector().unit_score(np.array([0.0, 1.0, 3.0]))
        array([0.  , 0.5 , 0.75])
        """
        s = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
        return s / (1.0 + s)

    # -- input handling -------------------------------------------------------------
    def _vec(self, x: Mapping[str, float]) -> np.ndarray:
        if type(x) is not dict and not isinstance(x, Mapping):
            raise DimensionError(f"{type(self).__name__} expects a mapping of feature -> float, got {type(x).__name__}")
        feats = self.features_
        if feats is None:
            self._set_features(sorted(x))
            feats = self.features_
        if len(x) != len(feats):
            raise DimensionError(
                f"{type(self).__name__} expects {len(feats)} features {feats}, got {len(x)}: {sorted(x)}"
            )
        try:
            if len(feats) == 1:
                return np.array((float(x[feats[0]]),))
            return np.array([float(x[f]) for f in feats])
        except KeyError as e:
            raise DimensionError(
                f"{type(self).__name__} expects features {feats}, got {sorted(x)}"
            ) from e
        except (TypeError, ValueError) as e:
            raise DimensionError(f"{type(self).__name__} expects numeric feature values: {e}") from e

    def _mat(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2:
            raise DimensionError(f"{type(self).__name__} expects a 2-D array (n, d), got shape {X.shape}")
        if self.features_ is None:
            self._set_features([f"x{i}" for i in range(X.shape[1])] if X.shape[1] > 1 else ["value"])
        if X.shape[1] != len(self.features_):
            raise DimensionError(
                f"{type(self).__name__} expects {len(self.features_)} features, got an array with {X.shape[1]} columns"
            )
        return X

    def _set_features(self, names: list[str]) -> None:
        if not names:
            raise DimensionError(f"{type(self).__name__} needs at least one feature")
        self.features_ = list(names)
        self._on_features(len(names))

    def _on_features(self, d: int) -> None:
        """Hook: allocate buffers once the dimension is known."""

    # -- the protocol -----------------------------------------------------------------
    def learn_one(self, x: Mapping[str, float]) -> None:
        self._learn(self._vec(x))

    def score_one(self, x: Mapping[str, float]) -> float:
        return float(self._score(self._vec(x)))

    def learn_many(self, X: np.ndarray) -> None:
        for v in self._mat(X):
            self._learn(v)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        X = self._mat(X)
        return np.array([self._score(v) for v in X], dtype=np.float64)

    def observe_one(self, x: Mapping[str, float]) -> None:
        """Advance the context window without updating the model (no-op for point detectors)."""
        self._observe(self._vec(x))

    def process_many(self, X: np.ndarray, learn: bool = True) -> np.ndarray:
        """Score each row as it arrives, then learn it (or only observe it when frozen)."""
        X = self._mat(X)
        out = np.empty(len(X), dtype=np.float64)
        step = self._learn if learn else self._observe
        for i, v in enumerate(X):
            out[i] = self._score(v)
            step(v)
        return out

    def fit(self, X: np.ndarray) -> Any:
        """Train on the rows of ``X`` as one training set (a fleet's healthy days, a benchmark's
        training part). Default: learn them as a stream (``learn_many``). Detectors that train
        in one batch override it: PCA fits its subspace once, node-ae trains from scratch, the
        window reconstructors train now rather than after their warm-up."""
        self.learn_many(X)

    def score_series(self, X: np.ndarray) -> np.ndarray:
        """A score for every row of the series ``X``. Default: the prequential scores
        (``process_many``: each row is scored, then learned); a ``whole_series`` detector
        scores the series as a whole with the model it has, learning nothing."""
        return self.process_many(X, learn=True)

    def explain(self, x: Mapping[str, float]) -> list[tuple[str, float]]:
        """What makes the score of ``x`` (scored as the next record, changing nothing):
        ``(part, contribution)`` pairs, largest first, where a part is a feature's name or
        ``"feature:aspect"`` (records: ``"cpu:level"``). Incident messages carry them. A
        :class:`StreamadError` when it cannot explain yet (node-ae before it has trained).
        Default: ``[]``, for a detector that does not explain its scores."""
        return []

    @classmethod
    def process_keys(cls, jobs: list[tuple[BaseDetector, np.ndarray]]) -> list[np.ndarray]:
        """``process_many`` for several detectors of this class at once (the service calls it
        with one job per key of a batch). Detectors that can score many keys in one model call
        override it; the results are those of calling ``process_many`` on each."""
        return [det.process_many(X) for det, X in jobs]

    def share_model(self, other: BaseDetector, only_if_equal: bool = False) -> None:
        """Use ``other``'s trained model instead of an own copy where that is safe (it is never
        changed in place); with ``only_if_equal``, only when the two models hold the same
        weights (a key restored from a checkpoint). A no-op for detectors whose models learn
        in place."""

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Small parameters the conformance suite (``tests/test_conformance.py``) builds this
        detector with: quick to train, yet enough to exercise its model. Default: none (the
        constructor's defaults)."""
        return {}

    # -- hooks for subclasses ----------------------------------------------------------
    def _learn(self, v: np.ndarray) -> None:
        raise NotImplementedError

    def _score(self, v: np.ndarray) -> float:
        raise NotImplementedError

    def _observe(self, v: np.ndarray) -> None:
        pass

    # -- state ----------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        """Constructor parameters, stored unchanged on self (River/sklearn style)."""
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self" and hasattr(self, p)}

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Learned state as JSON-compatible values and numpy arrays (no pickle)."""
        return {
            "detector": self.name,
            "params": self._params(),
            "features_": None if self.features_ is None else list(self.features_),
            "state": self._get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("detector") != self.name:
            got = state.get("detector") if isinstance(state, Mapping) else type(state).__name__
            raise StateError(f"state is for detector {got!r}, not {self.name!r}")
        if state.get("params") != self._params():
            raise StateError(
                f"state was saved with parameters {state.get('params')}, this {self.name} has {self._params()}"
            )
        feats = state.get("features_")
        self.features_ = None
        if feats is not None:
            self._set_features(list(feats))
        try:
            self._set_state(state.get("state", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.name} state: {e}") from e

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]):
        obj = cls(**state["params"])
        obj.load_state_dict(state)
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


def warmup_length(detector: BaseDetector, n: int, rows: int | None = None) -> int:
    """How many first scores of a series of ``n`` records ``streamad detect`` and ``streamad
    bench --protocol streaming`` never threshold (nor flag): ``rows``, or by default twice the
    detector's ``window``, at least 50 and at most a tenth of the series; and always the
    scores it gave before it had a model (``warmup_scores_``), after scoring the series.

    >>> warmup_length(BaseDetector(), 10_000), warmup_length(BaseDetector(), 300)
    (50, 30)
    """
    if rows is None:
        window = detector.window if isinstance(detector.window, int) else 0
        rows = min(max(2 * window, 50), n // 10)
    return min(n, max(rows, detector.warmup_scores_))


def parse_options(items: list[str], flag: str) -> dict[str, Any]:
    """Repeated ``NAME=VALUE`` command-line options (``--kafka-option``, ``--option``) as a
    dict: a value that reads as JSON (a number, ``true``) is that, any other is the string;
    an item without ``=`` is a one-line :class:`ConfigError` naming the flag.

    >>> parse_options(["linger_ms=5", "acks=all"], "--kafka-option")
    {'linger_ms': 5, 'acks': 'all'}
    """
    import json

    options: dict[str, Any] = {}
    for item in items:
        name, eq, text = item.partition("=")
        if not eq or not name:
            raise ConfigError(f"{flag} must be NAME=VALUE, got {item!r}")
        try:
            options[name] = json.loads(text)
        except ValueError:
            options[name] = text
    return options


def parse_params(text: str | None, flag: str = "--params") -> dict[str, Any]:
    """A command-line JSON object of parameters (``None`` or empty: ``{}``); anything else is a
    one-line :class:`ConfigError` naming the flag.

    >>> parse_params('{"window": 48}')
    {'window': 48}
    >>> parse_params("[1]", "--threshold-params")
    Traceback (most recent call last):
    ...
    streamad.base.ConfigError: --threshold-params must be a JSON object, got '[1]'
    """
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {text!r}")
    return value
