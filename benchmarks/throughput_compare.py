"""`streamad serve` throughput of this checkout against another one, measured in turns.

    python benchmarks/throughput_compare.py --base ../main --rounds 10 --records 600000 --keys 1000 \\
        --only ceiling-kafka-python,serve-gaussian-kafka-python-events --out benchmarks/results/throughput_compare.json

Runs ``benchmarks/throughput.py`` of this checkout and of ``--base`` (another checkout, e.g. a
worktree of main) one after the other, ``--rounds`` times each, in the order base, this, this,
base, base, this, ... so that neither side always runs first. On a shared machine records/s
of one scenario move by +-30% between minutes, more than most changes; the median over the
rounds, the ratio to the Kafka ceiling measured in the same run, and the service thread's CPU
time per record (which other processes on the machine disturb least) are compared instead.

``--collect-base FILES --collect-this FILES`` summarises result files of earlier
``throughput.py`` runs instead of running anything.

Writes every run's rows and the summary (per scenario: medians of each side and this / base)
to ``--out`` and a table beside it (``.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commit(tree: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _run(tree: Path, out: Path, args) -> Path:
    cmd = [sys.executable, str(tree / "benchmarks" / "throughput.py"), "--records", str(args.records), "--keys",
           str(args.keys), "--only", args.only, "--out", str(out)]
    subprocess.run(cmd, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    return out


def _rows(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return {"file": path.name, "when": doc["when"],
            "rows": {r["scenario"]: {k: r.get(k) for k in ("rps", "ratio", "thread_cpu_us_per_record", "cpu_s", "error")}
                     for r in doc["rows"]}}


def summarise(base: list[dict], this: list[dict]) -> dict:
    """Per scenario: the medians of each side over its runs, and this / base."""
    out = {}
    scenarios = sorted({s for run in base + this for s in run["rows"]})
    for s in scenarios:
        side = {}
        for name, runs in (("base", base), ("this", this)):
            ok = [r["rows"][s] for r in runs if s in r["rows"] and not r["rows"][s].get("error")]
            side[name] = {k: statistics.median(x[k] for x in ok) if ok and all(x.get(k) is not None for x in ok)
                          else None for k in ("rps", "ratio", "thread_cpu_us_per_record")}
            side[name]["runs"] = len(ok)
        b, t = side["base"], side["this"]
        ratio = {k: t[k] / b[k] if t[k] and b[k] else None for k in ("rps", "ratio", "thread_cpu_us_per_record")}
        out[s] = {**side, "this_over_base": ratio}
    return out


def _table(summary: dict) -> str:
    lines = ["| scenario | runs (base / this) | records/s, median (base / this) | this / base | ratio to the "
             "ceiling, median (base / this) | this / base | thread CPU us per record, median (base / this) "
             "| this / base |", "|---|---|---|---:|---|---:|---|---:|"]

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    for s, v in summary.items():
        b, t, r = v["base"], v["this"], v["this_over_base"]
        lines.append(f"| {s} | {b['runs']} / {t['runs']} | {f(b['rps'], ',.0f')} / {f(t['rps'], ',.0f')} | "
                     f"{f(r['rps'], '.3f')} | {f(b['ratio'], '.2f')} / {f(t['ratio'], '.2f')} | {f(r['ratio'], '.3f')} | "
                     f"{f(b['thread_cpu_us_per_record'], '.2f')} / {f(t['thread_cpu_us_per_record'], '.2f')} | "
                     f"{f(r['thread_cpu_us_per_record'], '.3f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="the other checkout (its benchmarks/throughput.py and code)")
    ap.add_argument("--rounds", type=int, default=6, help="runs of each side (default: 6)")
    ap.add_argument("--records", type=int, default=600_000)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--only", default="ceiling-kafka-python,serve-gaussian-kafka-python-events",
                    help="throughput.py scenarios (default: the kafka-python ceiling and events-only gaussian serve)")
    ap.add_argument("--collect-base", nargs="*", type=Path, default=None, help="summarise these base result files")
    ap.add_argument("--collect-this", nargs="*", type=Path, default=None, help="... against these of this checkout")
    ap.add_argument("--note", default="", help="what was compared, for the result file (e.g. the runs collected)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    meta = {"this": str(ROOT), "this_commit": _commit(ROOT), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": args.note}
    if args.collect_base is not None or args.collect_this is not None:
        if not args.collect_base or not args.collect_this:
            print("error: --collect-base and --collect-this go together", file=sys.stderr)
            return 2
        base = [_rows(p) for p in args.collect_base]
        this = [_rows(p) for p in args.collect_this]
        meta["collected"] = True
    else:
        if args.base is None or not (args.base / "benchmarks" / "throughput.py").exists():
            print("error: --base must be a checkout with benchmarks/throughput.py", file=sys.stderr)
            return 2
        meta.update({"base": str(args.base), "base_commit": _commit(args.base), "rounds": args.rounds,
                     "records": args.records, "keys": args.keys, "only": args.only})
        base, this = [], []
        with tempfile.TemporaryDirectory() as work:
            for i in range(args.rounds):
                order = [("base", args.base), ("this", ROOT)]
                for name, tree in order if i % 2 == 0 else order[::-1]:
                    path = _run(tree, Path(work) / f"{name}_r{i + 1}.json", args)
                    (base if name == "base" else this).append(_rows(path))
                    print(f"round {i + 1} {name}: " + ", ".join(
                        f"{s} {v['rps']:,.0f}/s" for s, v in (base if name == "base" else this)[-1]["rows"].items()
                        if v.get("rps")), file=sys.stderr, flush=True)
    summary = summarise(base, this)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "summary": summary, "base_runs": base, "this_runs": this},
                                   indent=1) + "\n")
    table = _table(summary)
    args.out.with_suffix(".md").write_text(f"# serve throughput: this checkout against a base, in turns\n\n"
                                           f"{json.dumps(meta)}\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
