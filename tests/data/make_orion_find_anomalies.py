"""Write ``orion_find_anomalies.json``: Orion's own ``find_anomalies`` on the cases of
``tests/orion_find_anomalies_cases.py``. Needs Orion's module and its pandas (not streamad's
dependencies), e.g. in a separate virtual environment:

    pip download orion-ml==0.7.1 --no-deps -d wheel && unzip wheel/*.whl 'orion/primitives/*' -d orion
    python -m venv v && v/bin/pip install 'numpy<2' 'pandas<2' 'scipy<1.14'
    PYTHONPATH=orion:tests v/bin/python tests/data/make_orion_find_anomalies.py

Only ``orion/primitives/timeseries_anomalies.py`` is imported; nothing of Orion is committed.
"""

import json
import sys
from pathlib import Path

import numpy as np
from orion.primitives.timeseries_anomalies import find_anomalies
from orion_find_anomalies_cases import cases


def main() -> int:
    out = []
    for name, errors, kw in cases():
        e = np.asarray(errors, dtype=np.float64)
        row = {"case": name, "n": len(e), "params": kw}
        try:
            found = find_anomalies(e, index=np.arange(len(e)), **kw)
            row["anomalies"] = [[int(s), int(t), float(v)] for s, t, v in found]
        except ZeroDivisionError as err:  # Orion's merge of zero-length sequences (padding 0)
            row["orion_error"] = f"{type(err).__name__}: {err}"
        out.append(row)
    doc = {"source": "orion-ml 0.7.1 (MIT, https://github.com/sintel-dev/Orion), "
                     "orion.primitives.timeseries_anomalies.find_anomalies",
           "cases": out}
    path = Path(__file__).with_name("orion_find_anomalies.json")
    path.write_text(json.dumps(doc, indent=0) + "\n")
    print(f"{len(out)} cases, {sum(len(c.get('anomalies', [])) for c in out)} anomalies, {sum('orion_error' in c for c in out)} Orion errors -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
