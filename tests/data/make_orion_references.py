"""Write Orion's reference outputs for the cases of ``tests/orion_reference_cases.py``:

- ``orion_find_anomalies.json``: ``orion.primitives.timeseries_anomalies.find_anomalies``;
- ``orion_tadgan_scores.json``: ``orion.primitives.tadgan.score_anomalies`` (rules "mult" and
  "sum" with the point and area errors), the raw DTW error of
  ``orion.primitives.timeseries_errors.reconstruction_errors``, and
  ``orion.primitives.aer.score_anomalies`` ("mult" and "sum" with the point error).

Needs Orion's modules and their dependencies (not streamad's), e.g. in a separate virtual
environment. ``tadgan.py`` imports TensorFlow and ml-stars at the top but the scoring does not
use them, so they are replaced by stand-ins:

    pip download orion-ml==0.7.1 --no-deps -d wheel && unzip wheel/*.whl 'orion/primitives/*' -d orion
    python -m venv v && v/bin/pip install 'numpy<2' 'pandas<2' 'scipy<1.14' 'pyts<0.14' 'scikit-learn<1.6'
    PYTHONPATH=orion:tests v/bin/python tests/data/make_orion_references.py

Nothing of Orion is committed, only what it returns.
"""

import json
import math
import sys
from pathlib import Path
from unittest import mock

import numpy as np

for _name in ("tensorflow", "tensorflow.keras", "tensorflow.keras.layers", "tensorflow.keras.models",
              "mlstars", "mlstars.utils"):
    sys.modules[_name] = mock.MagicMock()

from orion.primitives.aer import score_anomalies as aer_score_anomalies  # noqa: E402
from orion.primitives.tadgan import score_anomalies  # noqa: E402
from orion.primitives.timeseries_anomalies import find_anomalies  # noqa: E402
from orion.primitives.timeseries_errors import reconstruction_errors  # noqa: E402
from orion_reference_cases import TADGAN_CASES, aer_case, find_anomalies_cases, tadgan_case  # noqa: E402

SOURCE = "orion-ml 0.7.1 (MIT, https://github.com/sintel-dev/Orion)"
HERE = Path(__file__).parent


def anomalies() -> dict:
    out = []
    for name, errors, kw in find_anomalies_cases():
        e = np.asarray(errors, dtype=np.float64)
        row = {"case": name, "n": len(e), "params": kw}
        try:
            found = find_anomalies(e, index=np.arange(len(e)), **kw)
            row["anomalies"] = [[int(s), int(t), float(v)] for s, t, v in found]
        except ZeroDivisionError as err:  # Orion's merge of zero-length sequences (padding 0)
            row["orion_error"] = f"{type(err).__name__}: {err}"
        out.append(row)
    return {"source": SOURCE + ", orion.primitives.timeseries_anomalies.find_anomalies", "cases": out}


def tadgan_scores() -> dict:
    out = []
    for k, (n, window) in enumerate(TADGAN_CASES):
        x, x_hat, critic = tadgan_case(k)
        y = np.lib.stride_tricks.sliding_window_view(np.asarray(x), window)[:, :, None]
        y_hat = np.asarray(x_hat)[:, :, None]
        c = np.asarray(critic)[:, None]
        smooth = math.trunc(len(y) * 0.01)  # what score_anomalies uses: 1% of the windows
        row = {"n": n, "window": window, "smooth": smooth}
        for rec in ("point", "area"):
            for comb in ("mult", "sum"):
                s = score_anomalies(y, y_hat, c, np.arange(len(y)), rec_error_type=rec, comb=comb)[0]
                row[f"{rec}_{comb}"] = [float(f"{v:.12g}") for v in s]
        dtw = reconstruction_errors(y, y_hat, 1, 10, smooth, False, "dtw")[0]
        row["dtw_raw"] = [float(f"{v:.12g}") for v in dtw]
        out.append(row)
    x, inner, first, last = aer_case()
    window = len(inner[0]) + 2
    y = np.lib.stride_tricks.sliding_window_view(np.asarray(x), window)[:, :, None]
    aer = {"n": len(x), "window": window, "smooth": min(math.trunc(len(y) * 0.01), 200)}
    for comb in ("mult", "sum"):
        s = aer_score_anomalies(y, np.asarray(first)[:, None], np.asarray(inner)[:, :, None],
                                np.asarray(last)[:, None], comb=comb, rec_error_type="point")
        aer[f"point_{comb}"] = [float(f"{v:.12g}") for v in s]
    return {"source": SOURCE + ", orion.primitives.tadgan.score_anomalies, "
                      "orion.primitives.timeseries_errors.reconstruction_errors and "
                      "orion.primitives.aer.score_anomalies", "cases": out, "aer": aer}


def main() -> int:
    for name, doc in (("orion_find_anomalies.json", anomalies()), ("orion_tadgan_scores.json", tadgan_scores())):
        text = json.dumps(doc, indent=0) if name == "orion_find_anomalies.json" else json.dumps(doc)
        (HERE / name).write_text(text + "\n")
        print(f"{name}: {len(doc['cases'])} cases", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
