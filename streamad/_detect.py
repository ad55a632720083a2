"""``streamad detect``: score a CSV offline, threshold the scores, report anomalous intervals.

The detector runs prequentially (each row is scored, then learned), as it would on a stream.
The first ``warmup`` rows only teach the detector; they are never flagged, nor are the rows a
detector scored before it had a model (``warmup_scores_``: HypAD's warm-up). Thresholds
(higher score = more anomalous):

- ``spot``: :class:`~streamad.thresholds.SPOT`, calibrated on the first ``init`` scores after the
  warm-up (not flagged either), then streaming;
- ``quantile``: :class:`~streamad.thresholds.Quantile` over the recent scores, streaming;
- ``orion``: Orion's batch :func:`~streamad.thresholds.find_anomalies` over the whole series.

The streaming thresholds' flags are grouped into incidents by the service's incident state
machine (:func:`~streamad.incidents.track_series`, ``--incident-gap``; the service's default
gap), so the intervals are the incidents ``streamad serve`` would publish for the series.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError, warmup_length
from .io import LABEL_COLUMNS, TIMESTAMP_COLUMNS, read_table

__all__ = ["Series", "detect", "read_csv", "run"]

MIN_ROWS = 20


@dataclass
class Series:
    """A CSV read into arrays: ``ts`` seconds since epoch, ``raw_ts`` as written."""

    ts: np.ndarray
    raw_ts: list[str]
    values: np.ndarray  # (n, d)
    columns: list[str]
    labels: np.ndarray | None
    iso: bool


def read_csv(path: str | Path, label_column: str | None = None) -> Series:
    """Read ``timestamp,value[,more values][,label]`` (:mod:`streamad.io`'s rules): the
    timestamp column is the first of :data:`~streamad.io.TIMESTAMP_COLUMNS` in the header, else
    the first column; the label column ``label_column``, else the first of
    :data:`~streamad.io.LABEL_COLUMNS`, if any (non-zero = anomalous); every other column is a
    value. Any problem is a one-line DataError."""
    table = read_table(path)
    p, header = table.where, table.header
    if len(header) < 2:
        raise DataError(f"{p}: need a header with a timestamp column and at least one value column, "
                        f"got {header!r}")
    ts_col = table.column(*TIMESTAMP_COLUMNS)
    ts_col = 0 if ts_col is None else ts_col
    if label_column is not None:
        if label_column not in header:
            raise DataError(f"{p}: no label column {label_column!r} (columns: {', '.join(header)})")
        label_col: int | None = header.index(label_column)
    else:
        label_col = table.column(*LABEL_COLUMNS)
    value_cols = [i for i in range(len(header)) if i not in (ts_col, label_col)]
    if not value_cols:
        raise DataError(f"{p}: no value column besides {header[ts_col]!r}")
    if len(table) < MIN_ROWS:
        raise DataError(f"{p}: too short: {len(table)} data rows, need at least {MIN_ROWS}")
    ts, iso = table.timestamps(ts_col)
    values = np.column_stack([table.numbers(c) for c in value_cols])
    labels = table.numbers(label_col) != 0 if label_col is not None else None
    return Series(ts, table.texts(ts_col), values, [header[c] for c in value_cols], labels, iso)


def detect(series: Series, detector: str = "records", params: dict[str, Any] | None = None,
           threshold: str = "auto", warmup: int | None = None, policy=None,
           threshold_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score ``series`` and threshold the scores; return scores, thresholds, flags, intervals
    (incidents under ``policy``, default: the service's, for the streaming thresholds).
    ``threshold="auto"`` is the detector's own default (as in ``streamad serve``)."""
    from . import detectors, thresholds
    from .incidents import track_series
    from .service.config import ServiceConfig

    det = detectors.make(detector, **(params or {}))
    n = len(series.values)
    t0 = time.perf_counter()
    scores = np.asarray(det.process_many(series.values, learn=True), dtype=np.float64)
    detect_s = time.perf_counter() - t0
    warmup = warmup_length(det, n, warmup)
    scores = np.where(np.isfinite(scores), scores, 0.0)
    scores[:warmup] = np.where(np.isfinite(scores[:warmup]), scores[:warmup], 0.0)
    th = np.full(n, np.inf)
    flags = np.zeros(n, dtype=bool)
    rest = n - warmup
    init = min(1000, max(20, rest // 5))
    threshold, tparams = thresholds.resolve(threshold, threshold_params, detector)
    if threshold == "orion":
        found = thresholds.find_anomalies(scores[warmup:], index=np.arange(warmup, n))
        intervals = [(int(s), int(e), float(v)) for s, e, v in found]
        for s, e, _ in intervals:
            flags[s:e + 1] = True
        th[:] = np.nan
    else:
        if threshold == "spot" and not tparams:  # calibrated on this series' first fifth
            rule = thresholds.SPOT(q=1e-3, level=0.98, init=max(init, 10))
        elif threshold == "quantile" and not tparams:
            rule = thresholds.Quantile(q=0.995, window=max(init * 10, 100), init=init)
        else:
            rule = thresholds.make(threshold, **tparams)
        for i in range(warmup, n):
            dec = rule.update(scores[i])
            th[i], flags[i] = dec.threshold, dec.is_anomaly
        found = track_series(flags, scores, th, ts=series.ts, policy=policy or ServiceConfig().incident_policy)
        intervals = [(i.start, i.end, float(i.severity or 0.0)) for i in found]
    return {"scores": scores, "threshold": th, "flags": flags, "intervals": intervals,
            "warmup": warmup, "detect_s": detect_s, "detector": det, "threshold_rule": (threshold, tparams)}


def score_limits(scores: np.ndarray, threshold: np.ndarray, warmup: int) -> tuple[float, float]:
    """The score panel's range: the scores after the ``warmup`` and the finite thresholds.

    >>> score_limits(np.array([0.0, 250530.0, 3.0, 9.0, 2.0]), np.array([np.inf] * 3 + [8.0, 8.0]), 2)
    (0.0, 9.0)
    """
    after = scores[warmup:] if warmup < len(scores) else scores
    finite = threshold[np.isfinite(threshold)]
    tops = ([float(np.max(after))] if len(after) else []) + ([float(np.max(finite))] if len(finite) else [])
    top = max(tops) if tops else 1.0
    bottom = min(0.0, float(np.min(after)) if len(after) else 0.0)
    return bottom, top if top > bottom else bottom + 1.0


def _plot(series: Series, result: dict[str, Any], path: Path, title: str) -> None:
    """Series, score and threshold; incidents shaded, each one's opening marked.

    The score panel's scale leaves out the warm-up: before a detector has a model its scores
    can be any size (PCA on NAB's nyc_taxi: 250,530 at row 2, against about 10 after), and
    taken into the scale they flatten everything else to zero. The warm-up is shaded grey and
    its scores are drawn within the scale of the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = series.ts.astype("datetime64[s]") if series.iso else series.ts
    scores, th = result["scores"], result["threshold"]
    warm = int(result["warmup"])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    for j, name in enumerate(series.columns[:5]):
        a1.plot(x, series.values[:, j], lw=0.7, label=name)
    a2.plot(x, scores, lw=0.7, color="tab:purple", label="score")
    finite_th = np.isfinite(th)
    if finite_th.any():
        a2.plot(x, np.where(finite_th, th, np.nan), lw=0.8, color="tab:red", ls="--", label="threshold")
    bottom, top = score_limits(scores, th, warm)
    pad = 0.05 * (top - bottom)
    a2.set_ylim(bottom - pad, top + pad)
    if warm:
        for ax in (a1, a2):
            ax.axvspan(x[0], x[min(warm, len(x) - 1)], color="0.85", lw=0,
                       label="warm-up (out of the score scale)" if ax is a2 else None)
    opens = []
    wide = max(1, len(x) // 300)  # an incident of one record is drawn 1/300 of the plot wide, not invisible
    for k, (s, e, _) in enumerate(result["intervals"]):
        for ax in (a1, a2):
            ax.axvspan(x[s], x[min(len(x) - 1, max(e, s + wide))], color="tab:red", alpha=0.3, lw=0,
                       label="incident" if k == 0 and ax is a1 else None)
        opens.append(s)
    if opens:
        a2.plot(x[opens], np.full(len(opens), top + 0.5 * pad), "v", color="tab:red", ms=6, clip_on=False,
                label="incident opens")
    if series.labels is not None and series.labels.any():
        from .bench.metrics import label_intervals

        for k, (s, e) in enumerate(label_intervals(series.labels)):
            a1.axvspan(x[s], x[e], ymax=0.08, color="tab:green", alpha=0.8, label="true label" if k == 0 else None)
    a1.legend(loc="upper left", fontsize=8)
    a2.legend(loc="upper left", fontsize=8)
    a1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args) -> int:
    """The ``streamad detect`` handler."""
    from .base import parse_params

    params = parse_params(args.params, "--params")
    tparams = parse_params(args.threshold_params, "--threshold-params")
    series = read_csv(args.file, label_column=args.label_column)
    from . import detectors

    detectors.make(args.detector, **params)  # fail on a bad name/params before any work
    from .service.config import ServiceConfig

    gap = ServiceConfig.incident_gap if args.incident_gap is None else args.incident_gap
    policy = ServiceConfig(incident_gap=gap).incident_policy
    result = detect(series, args.detector, params, args.threshold, policy=policy, threshold_params=tparams)
    args.threshold = result["threshold_rule"][0]  # what "auto" resolved to, for the report
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create output directory {out}: {e.strerror}") from None
    iv = [{"start": series.raw_ts[s], "end": series.raw_ts[e], "start_index": s, "end_index": e,
           "severity": round(v, 6)} for s, e, v in result["intervals"]]
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", *series.columns, "score", "threshold", "is_anomaly"]
                   + (["label"] if series.labels is not None else []))
        for i in range(len(series.ts)):
            row = [series.raw_ts[i], *series.values[i].tolist(), repr(float(result["scores"][i])),
                   repr(float(result["threshold"][i])), int(result["flags"][i])]
            w.writerow(row + ([int(series.labels[i])] if series.labels is not None else []))
    with (out / "intervals.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start", "end", "start_index", "end_index", "severity"])
        for r in iv:
            w.writerow([r["start"], r["end"], r["start_index"], r["end_index"], r["severity"]])
    meta = {"file": str(args.file), "detector": args.detector, "params": params, "threshold": args.threshold,
            "incident_gap": None if args.threshold == "orion" else str(policy.gap), "n_points": len(series.ts), "warmup": result["warmup"], "detect_s": round(result["detect_s"], 3),
            "intervals": iv}
    (out / "intervals.json").write_text(json.dumps(meta, indent=2) + "\n")
    if args.save_state:
        from . import _state

        try:
            _state.save_atomic(args.save_state, result["detector"].state_dict())
        except OSError as e:
            raise DataError(f"cannot write detector state {args.save_state}: {e.strerror}") from None
    if not args.no_plot:
        _plot(series, result, out / "plot.png", f"{Path(args.file).name}: {args.detector} + {args.threshold}")
    print(f"{len(iv)} {'anomalous interval' if args.threshold == 'orion' else 'incident'}(s) in {Path(args.file).name} "
          f"({len(series.ts)} points, detector {args.detector}, threshold {args.threshold}):")
    for r in iv:
        print(f"  {r['start']}  ->  {r['end']}  severity {r['severity']:.3f}")
    print(f"wrote {out}/scores.csv, intervals.csv, intervals.json" + ("" if args.no_plot else ", plot.png")
          + (f", detector state {args.save_state}" if args.save_state else ""))
    return 0
