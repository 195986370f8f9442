"""Fresh runs the shipped dataset does not hold (one per class, parameters
no dataset run has, `record_dataset.FRESH`), each recorded with `hosttune
record` while `hosttune classify` looks at the live host mid-run; then the
recorded trace is classified too (`hosttune classify --trace`).

    python benchmarks/classify_fresh.py [--out DIR] [--seconds S] [--model M]

Prints, per run: true label, the live answer (confidence, top evidence), the
trace's answer and its windows' labels; then how many were right. Needs the
`workloads` extra (PyTorch) and gcc/make.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path

from hosttune.agent.service.record_dataset import FRESH, command_of
from hosttune.models.workloads import LABELS


def hosttune(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "hosttune.agent.service.cli", *args, "--json"],
                         capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/hosttune-fresh"))
    p.add_argument("--seconds", type=float, default=45.0)
    p.add_argument("--live-at", type=float, default=18.0, help="when to classify live")
    p.add_argument("--model", default=None)
    p.add_argument("--only", action="append", default=None)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = ["-m", args.model] if args.model else []
    results = []
    for run, module, params in FRESH:
        if args.only and run not in args.only:
            continue
        label = LABELS[module]
        trace = args.out / f"{run}.csv.gz"
        cmd = command_of(module, params, args.seconds, seed=zlib.crc32(run.encode()) % 1000)
        rec = subprocess.Popen(
            [sys.executable, "-m", "hosttune.agent.service.cli", "record", "-l", label,
             "-o", str(trace),
             "--meta", f"run={run}", "--json", "--", *cmd],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        time.sleep(args.live_at)
        live = hosttune("classify", "--window", "10", *model)
        out, _ = rec.communicate()
        # the workload's own one-line report comes first, then record's JSON
        recorded = json.loads(out[out.rfind("{\n"):])
        on_trace = hosttune("classify", "--trace", str(trace), *model)
        windows = [w["label"] for w in on_trace["windows"]]  # type: ignore[attr-defined]
        results.append({
            "run": run, "label": label, "params": params, "samples": recorded["samples"],
            "live": {k: live[k] for k in ("label", "best", "confidence", "evidence")},
            "trace": {k: on_trace[k] for k in ("label", "best", "confidence")},
            "trace_windows": windows,
        })
        print(json.dumps(results[-1]), flush=True)
    print()
    print("| run | true class | live classify (10 s, mid-run) | confidence | trace verdict |"
          " confidence | windows right |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        live, tr = r["live"], r["trace"]
        right = sum(1 for w in r["trace_windows"] if w == r["label"])
        print(f"| {r['run']} | {r['label']} | {live['label']} | {live['confidence']:.2f} | "
              f"{tr['label']} | {tr['confidence']:.2f} | {right}/{len(r['trace_windows'])} |")
    live_ok = sum(1 for r in results if r["live"]["label"] == r["label"])
    trace_ok = sum(1 for r in results if r["trace"]["label"] == r["label"])
    print(f"\nlive: {live_ok}/{len(results)} right; traces: {trace_ok}/{len(results)} right")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
