"""`streamad bench report FILES... --out DIR`: one markdown table (groups x runs) with the
published anchors beside ours, and plots of chosen signals.

Anchors: Orion leaderboard 0.7.1 (overlapping-segment F1) and the NAB scoreboard (standard
profile), as given in issue 4; they are other systems' published numbers, not our runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..base import DataError

__all__ = ["ORION_ANCHORS", "NAB_ANCHORS", "render", "write_report"]

_ORION_GROUPS = ["MSL", "SMAP", "A1", "A2", "A3", "A4", "artificialWithAnomaly", "realAdExchange",
                 "realAWSCloudwatch", "realTraffic", "realTweets"]
ORION_ANCHORS = {
    "aer": [.657, .764, .782, .978, .893, .716, .750, .733, .702, .611, .606],
    "tadgan": [.578, .573, .619, .827, .402, .345, .500, .692, .710, .487, .588],
    "lstm_dynamic_threshold": [.455, .732, .740, .978, .744, .638, .400, .759, .537, .611, .588],
}
NAB_ANCHORS = {"ARTime": 74.9, "Numenta HTM": 70.5, "CAD OSE": 69.9, "KNN CAD": 58.0, "Random Cut Forest": 51.7,
               "Windowed Gaussian": 39.6}
#: NAB's scoreboard (numenta/NAB README at ea702d7): standard, reward low FP, reward low FN.
NAB_BOARD = {"ARTime": (74.9, 65.1, 80.4), "Numenta HTM": (70.5, 62.6, 75.2), "CAD OSE": (69.9, 67.0, 73.2),
             "KNN CAD": (58.0, 43.4, 64.8), "windowedGaussian": (39.6, 20.9, 47.4)}
_PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not a bench result JSON: {e}") from None
    if not isinstance(doc, dict) or "aggregates" not in doc or "meta" not in doc:
        raise DataError(f"{path} is not a `streamad bench` result (no meta/aggregates)")
    return doc


def _fmt(v, spec=".3f") -> str:
    return "" if v is None else format(v, spec)


def _variant(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """What tells apart runs of one detector and protocol, where not the default: NASA's
    multivariate mode, the seed, the parameters. The row label and the plot file name both
    come from this, so two runs never share either."""
    out = []
    if meta.get("nasa_mode") not in (None, "univariate"):
        out.append(("mode", str(meta["nasa_mode"])))
    if meta.get("seed"):
        out.append(("seed", str(meta["seed"])))
    if meta.get("params"):
        out.append(("params", json.dumps(meta["params"], sort_keys=True)))
    return out


def _label(meta: dict[str, Any]) -> str:
    """A run's row name: detector and protocol, then what sets it apart (``_variant``)."""
    extra = [meta["protocol"]] + [f"seed {v}" if k == "seed" else v for k, v in _variant(meta)]
    return f"{meta['detector']} ({', '.join(extra)})"


def _file_stem(meta: dict[str, Any]) -> str:
    """A run's plot file name prefix, from the same parts as ``_label`` (parameters hashed)."""
    run = f"{meta['dataset']}_{meta['detector']}_{meta['protocol']}"
    for k, v in _variant(meta):
        run += {"mode": f"_{v}", "seed": f"_seed{v}"}.get(k) or "_" + hashlib.sha1(v.encode()).hexdigest()[:8]
    return run


def render(docs: list[dict[str, Any]]) -> str:
    """The markdown report for several result documents."""
    groups = sorted({g for d in docs for g in d["aggregates"]["groups"]})
    lines = ["# Benchmark report", "",
             "Overlapping-segment F1 (Orion's rule, tp/fp/fn micro-averaged per group); VUS-PR and AUC-PR "
             "averaged over signals; NAB score normalised per group (standard profile, 0 = no detections, "
             "100 = perfect). Times are medians per signal.", ""]
    head = "| run | " + " | ".join(groups) + " | overall F1 | P | R | VUS-PR | NAB | fit s | detect s | failed |"
    lines += ["## F1 per group", "", head, "|" + "---|" * (head.count("|") - 1)]
    for d in docs:
        m, a = d["meta"], d["aggregates"]
        label = _label(m)
        cells = [_fmt(a["groups"].get(g, {}).get("f1")) for g in groups]
        o = a["overall"]
        nab = o.get("nab_score", {}).get("standard") if o else None
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {_fmt(o.get('f1'))} | {_fmt(o.get('precision'))} | {_fmt(o.get('recall'))} | "
                     f"{_fmt(o.get('vus_pr'))} | {_fmt(nab, '.1f')} | {_fmt(o.get('fit_s'), '.2f')} | "
                     f"{_fmt(o.get('detect_s'), '.2f')} | {a['failed']} |")
    anchored = [g for g in groups if g in _ORION_GROUPS]
    if anchored:
        for name, vals in ORION_ANCHORS.items():
            row = dict(zip(_ORION_GROUPS, vals, strict=True))
            lines.append(f"| {name} (Orion 0.7.1, published) | " +
                         " | ".join(_fmt(row.get(g)) for g in groups) + " | | | | | | | | |")
    alerting = [d for d in docs if "incidents" in d["aggregates"].get("overall", {})]
    if alerting:
        lines += ["", "## Incidents (alerts)", "",
                  "Detected intervals as alerts: incidents that overlap a labelled anomaly per labelled "
                  "anomaly found (1 is one alert per anomaly), and false incidents (overlapping none) per "
                  "10,000 records.", "",
                  "| run | incidents | labelled found | incidents per found | false incidents | false per 10k |",
                  "|---|---:|---:|---:|---:|---:|"]
        for d in alerting:
            o = d["aggregates"]["overall"]
            lines.append(f"| {_label(d['meta'])} | {o['incidents']} | {o['tp']:.0f} | "
                         f"{_fmt(o['incidents_per_found'], '.2f')} | {o['false_incidents']:.0f} | "
                         f"{_fmt(o['false_per_10k'], '.2f')} |")
    if any("nab_score" in d["aggregates"].get("overall", {}) for d in docs):
        lines += ["", "## NAB score per group", "",
                  "| run | " + " | ".join(groups) + " | overall (standard) | reward low FP | reward low FN |",
                  "|" + "---|" * (len(groups) + 4)]
        for d in docs:
            a = d["aggregates"]
            if "nab_score" not in a.get("overall", {}):
                continue
            cells = [_fmt(a["groups"].get(g, {}).get("nab_score", {}).get("standard"), ".1f") for g in groups]
            ns = a["overall"]["nab_score"]
            lines.append(f"| {_label(d['meta'])} | " + " | ".join(cells) +
                         f" | {ns['standard']:.1f} | {ns['reward_low_FP_rate']:.1f} | {ns['reward_low_FN_rate']:.1f} |")
        lines += ["", "NAB scoreboard (standard profile, published): " +
                  ", ".join(f"{k} {v}" for k, v in NAB_ANCHORS.items()) + "."]
    nabp = [d for d in docs if "nab_protocol" in d["aggregates"].get("overall", {})]
    if nabp:
        lines += ["", "## NAB protocol", "",
                  "Per-row scores in [0, 1] from one causal pass, one threshold per profile for the whole "
                  "corpus chosen as NAB's optimiser does (the threshold in brackets). NAB's published "
                  "scoreboard below, for comparison (their runs, not ours).", "",
                  "| run | standard | reward low FP | reward low FN |", "|---|---|---|---|"]
        for d in nabp:
            np_ = d["aggregates"]["overall"]["nab_protocol"]
            label = _label(d["meta"]) + (" + likelihood" if d["meta"].get("likelihood") else "")
            lines.append(f"| {label} | " + " | ".join(
                f"{np_[p]['score']:.1f} ({np_[p]['threshold']:.4g})" for p in _PROFILES) + " |")
        for name, vals in NAB_BOARD.items():
            lines.append(f"| {name} (NAB scoreboard, published) | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
        cats = sorted({g for d in nabp for g in d["aggregates"]["groups"]})
        lines += ["", "NAB protocol, standard profile, per category (at the corpus threshold):", "",
                  "| run | " + " | ".join(cats) + " |", "|" + "---|" * (len(cats) + 1)]
        for d in nabp:
            groups = d["aggregates"]["groups"]
            label = _label(d["meta"]) + (" + likelihood" if d["meta"].get("likelihood") else "")
            lines.append(f"| {label} | " + " | ".join(
                _fmt(groups.get(c, {}).get("nab_protocol", {}).get("standard", {}).get("score"), ".1f")
                for c in cats) + " |")
    return "\n".join(lines) + "\n"


def _nab_cell(v: float) -> str:
    return "-" if v is None or v != v else f"{v:.1f}"  # a category without windows has no score


def render_peers(doc: dict[str, Any], peers: dict[str, list]) -> str:
    """A NAB-protocol run beside other detectors' NAB outputs (``peers``: name -> runs, as
    :func:`streamad.bench.nab.read_results` gives them), each at its own corpus threshold
    (standard profile): per category, then the files where a peer finds windows the run misses."""
    from . import metrics as M
    from . import nab

    me = doc["meta"]["detector"] + (" + likelihood" if doc["meta"].get("likelihood") else "")
    rows = {r["signal"]: r for r in doc["signals"] if "nab" in r}
    table = nab.compare(peers)
    names = [me, *peers]
    cats = sorted({r["group"] for r in rows.values()})
    lines = ["## Beside the streaming leaders", "",
             "Standard profile, each detector at its own corpus threshold: NAB score per category "
             "(windows found / labelled, false detections).", "",
             "| category | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for c in cats:
        mine = [M.NabFileScore(**r["nab"]["standard"]) for r in rows.values() if r["group"] == c]
        cells = [f"{_nab_cell(M.nab_normalized(mine))} ({sum(f.tp for f in mine)}/{sum(f.tp + f.fn for f in mine)}, "
                 f"{sum(f.fp for f in mine)})"]
        for p in peers:
            t = table["categories"].get(c, {}).get(p)
            cells.append("" if t is None else f"{_nab_cell(t['score'])} ({t['tp']}/{t['tp'] + t['fn']}, {t['fp']})")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "Files where a leader finds labelled windows that the run misses (windows found, false "
              "detections):", "", "| file | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for sig in sorted(rows):
        fs = rows[sig]["nab"]["standard"]
        theirs = table["files"].get(sig, {})
        if any(v["tp"] > fs["tp"] for v in theirs.values()):
            cells = [f"{fs['tp']}/{fs['tp'] + fs['fn']}, {fs['fp']}"] + [
                "" if p not in theirs else f"{theirs[p]['tp']}/{theirs[p]['windows']}, {theirs[p]['fp']}"
                for p in peers]
            lines.append(f"| {sig} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _peers_sections(docs: list[dict[str, Any]], root: Path) -> str:
    from . import nab
    from .datasets import load

    if not root.is_dir():
        raise DataError(f"--peers {root}: no such directory (NAB's results layout: DIR/<detector>/<category>/...)")
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise DataError(f"--peers {root}: no detector directories in it")
    text = ""
    for d in docs:
        if "nab_protocol" not in d["aggregates"].get("overall", {}):
            continue
        m = d["meta"]
        sigs = [s for s in load("nab", m["data_dir"], m.get("signals"))
                if s.name in {r["signal"] for r in d["signals"]}]
        peers = {n: nab.read_results(root, n, sigs) for n in names if n != m["detector"]}
        text += "\n" + render_peers(d, peers)
    return text


def _plot(doc: dict[str, Any], row: dict[str, Any], out: Path) -> Path | None:
    """Series, true anomalies, detected intervals and the score of one signal (rescored)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .datasets import load
    from .runner import run_signal

    m = doc["meta"]
    try:
        kw = {"mode": m["nasa_mode"]} if m["dataset"] == "nasa" else {}
        [sig] = [s for s in load(m["dataset"], m["data_dir"], row["signal"] + "*", **kw) if s.name == row["signal"]]
    except Exception:  # noqa: BLE001 - the data may not be here: no plot, not an error
        return None
    res = run_signal(sig, m["detector"], m["params"], m["protocol"], m["seed"])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    x = np.arange(sig.n)
    ax1.plot(x, sig.values[:, 0], lw=0.7, color="black")
    for s, e in sig.anomalies:
        ax1.axvspan(s, e, color="tab:green", alpha=0.25, lw=0)
    for s, e in res["detected"]:
        ax1.axvspan(s, e + 1, color="tab:red", alpha=0.35, lw=0)
    ax1.set_title(f"{row['signal']}: {m['detector']} ({m['protocol']}), F1 {row['f1']:.2f} "
                  "- green: labelled, red: detected", fontsize=9)
    ax2.plot(x, res["_scores"], lw=0.7, color="tab:blue")
    ax2.set_ylabel("score")
    fig.tight_layout()
    path = out / f"{_file_stem(m)}_{row['signal'].replace('/', '_')}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_report(files: list[str], out_dir: str, plots: int = 2, peers: str | None = None) -> Path:
    """report.md (and plots) for bench result files; with ``peers`` (a directory in NAB's results
    layout, one subdirectory per detector), each NAB-protocol run is also set beside those
    detectors' outputs, file by file."""
    docs = [_load(Path(f)) for f in files]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = render(docs)
    if peers is not None:
        text += _peers_sections(docs, Path(peers))
    made = []
    for d in docs:
        rows = sorted((r for r in d["signals"] if "error" not in r and r.get("n_anomalies")),
                      key=lambda r: (-r["f1"], r["signal"]))
        for r in rows[:plots]:
            p = _plot(d, r, out)
            if p is not None:
                made.append(p)
    if made:
        text += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in made) + "\n"
    path = out / "report.md"
    path.write_text(text)
    return path
