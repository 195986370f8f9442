"""What recognising the workload costs: CPU time of one inference on one
window, and the RSS that loading the model adds, with numpy alone (the
daemon's and `hosttune classify`'s path). scikit-learn's own cost, for the
ratio, when it is installed.

    python benchmarks/model_cost.py [--model PATH] [--trace FILE] [--repeat N]

Each figure comes from a fresh interpreter (import costs and RSS are per
process): it prints one JSON object per stage and a summary table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time, resource

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

stage = sys.argv[1]
model_path, trace_path, repeat = sys.argv[2], sys.argv[3], int(sys.argv[4])
out = {"stage": stage, "rss_start_kib": rss_kib()}
t0 = time.perf_counter()
import numpy as np
out["numpy_import_s"] = time.perf_counter() - t0
out["rss_numpy_kib"] = rss_kib()
from hosttune.models import classifier as serving
from hosttune.models import features
from hosttune.models.trace import read_trace
trace = read_trace(trace_path)
matrix = trace.matrix()
bounds = features.window_bounds(trace.elapsed)
a, b = bounds[0]
window = matrix[a:b]
out["rss_before_load_kib"] = rss_kib()
t0 = time.perf_counter()
model = serving.load(model_path)
out["load_s"] = time.perf_counter() - t0
out["rss_after_load_kib"] = rss_kib()
x = features.window_features(trace.columns, window)
model.classify(x)  # warm caches
feat, pred, both = [], [], []
for _ in range(repeat):
    c0 = time.process_time()
    features.window_features(trace.columns, window)
    c1 = time.process_time()
    model.classify(x)
    c2 = time.process_time()
    feat.append(c1 - c0)
    pred.append(c2 - c1)
    both.append(c2 - c0)
out["cpu_features_s"] = sorted(feat)[len(feat) // 2]
out["cpu_classify_s"] = sorted(pred)[len(pred) // 2]
out["cpu_window_s"] = sorted(both)[len(both) // 2]
out["rss_after_inference_kib"] = rss_kib()
out["window_rows"] = int(window.shape[0])
out["kind"] = model.kind
out["nodes"] = int(model.arrays["node_feature"].shape[0]) if model.kind == "trees" else 0
out["sklearn_loaded"] = "sklearn" in sys.modules
if stage == "sklearn":
    t0 = time.perf_counter()
    import sklearn.ensemble, sklearn.linear_model  # noqa
    out["sklearn_import_s"] = time.perf_counter() - t0
    out["rss_after_sklearn_kib"] = rss_kib()
print(json.dumps(out))
"""


def run(stage: str, model: str, trace: str, repeat: int) -> dict[str, float]:
    res = subprocess.run([sys.executable, "-c", CHILD, stage, model, trace, str(repeat)],
                         capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                              "PATH": "/usr/bin:/bin"})
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def main() -> int:
    from hosttune.models import classifier as serving
    here = Path(serving.__file__).parent
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(serving.shipped_model()))
    p.add_argument("--trace", default=None, help="default: the first trace of the dataset")
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--runs", type=int, default=3, help="fresh interpreters per stage")
    args = p.parse_args()
    trace = args.trace or str(sorted((here / "data").glob("*.csv.gz"))[0])
    numpy_runs = [run("numpy", args.model, trace, args.repeat) for _ in range(args.runs)]
    for r in numpy_runs:
        print(json.dumps(r))
    try:
        import sklearn  # noqa: F401

        sk = run("sklearn", args.model, trace, 10)
        print(json.dumps(sk))
    except ImportError:
        sk = None

    def med(key: str) -> float:
        return statistics.median(r[key] for r in numpy_runs)

    load_kib = med("rss_after_load_kib") - med("rss_before_load_kib")
    numpy_kib = med("rss_numpy_kib") - med("rss_start_kib")
    print()
    print(f"model: {args.model} ({numpy_runs[0]['kind']}, {numpy_runs[0]['nodes']} nodes)")
    print(f"window: {numpy_runs[0]['window_rows']} rows of {trace}")
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| CPU time, features of one window | {1e3 * med('cpu_features_s'):.2f} ms |")
    print(f"| CPU time, classify one window (probabilities + evidence) | "
          f"{1e3 * med('cpu_classify_s'):.2f} ms |")
    print(f"| CPU time, both | {1e3 * med('cpu_window_s'):.2f} ms |")
    print(f"| load time | {1e3 * med('load_s'):.1f} ms |")
    print(f"| RSS added by loading the model (numpy already imported) | "
          f"{load_kib / 1024:.1f} MiB |")
    print(f"| RSS added by importing numpy | {numpy_kib / 1024:.1f} MiB |")
    print(f"| RSS of the process after inference | "
          f"{med('rss_after_inference_kib') / 1024:.1f} MiB |")
    loaded = any(r["sklearn_loaded"] for r in numpy_runs)
    print(f"| scikit-learn imported on this path | {loaded} |")
    if sk is not None:
        sk_kib = sk["rss_after_sklearn_kib"] - sk["rss_after_inference_kib"]
        print(f"| peer: RSS added by importing scikit-learn's estimators | "
              f"{sk_kib / 1024:.1f} MiB ({sk_kib / max(load_kib, 1):.0f}x the model) |")
        print(f"| peer: scikit-learn import time | {1e3 * sk['sklearn_import_s']:.0f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
