"""Programs the role dataset does not hold (`benchmarks/fresh/`: other code,
libraries and shapes than any recorded program), each run live while
`hosttune classify --window W --json` looks at the host mid-run.

    python benchmarks/classify_fresh.py [--seconds 45] [--live-at 12] [--window 20]

Per program it prints the role hosttune gave the program's own process
group, the host verdict composed from that job alone (what the host would
read with only this program running: the composition of `models/roles.py`
over the job's role and CPU), and the live host verdict over every job
(which, on a shared machine, also answers for other people's work). A
program counts as right when the composed verdict is its class. Needs
PyTorch and scikit-learn (the `workloads` extra) and openssl.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hosttune.models import roles as R

FRESH_DIR = Path(__file__).parent / "fresh"
PROGRAMS = (
    ("train_attn.py", "training"),
    ("train_mlp_skl.py", "training"),
    ("serve_asyncio.py", "inference_serving"),
    ("batch_conv.py", "batch_inference"),
    ("prep_sed.sh", "data_preparation"),
    ("ckpt_torch_save.py", "checkpoint_io"),
    ("stress_openssl.sh", "background"),
    ("idle_sleep.sh", "idle"),
)


def own_verdict(job: dict[str, object] | None, ncpu: int) -> str:
    if job is None:
        return R.compose([], 0.0).label
    jw = R.JobWindow(pgrp=int(str(job["pgrp"])), leader=str(job["leader"]), pids=(),
                     features=(0.0,) * len(R.FEATURES),
                     cpu_cores=float(str(job["cpu_cores"])),
                     io_bps=float(str(job["io_bytes_per_s"])), host_cpu_share=math.nan,
                     serving=bool(job["active"]))  # stands for all of `active`
    role = R.JobRole(jw, str(job["role"]), str(job["best"]), float(str(job["confidence"])), ())
    return R.compose([role], jw.cpu_cores / ncpu).label


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=45.0)
    p.add_argument("--live-at", type=float, default=12.0, help="when to start classifying")
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--only", action="append", default=None)
    args = p.parse_args()
    ncpu = os.cpu_count() or 1
    results = []
    for program, label in PROGRAMS:
        if args.only and program not in args.only:
            continue
        path = FRESH_DIR / program
        argv = ([sys.executable] if program.endswith(".py") else ["bash"]) + [
            str(path), f"{args.seconds:g}"]
        proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(args.live_at)
            out = subprocess.run(
                [sys.executable, "-m", "hosttune.agent.service.cli", "classify", "--window",
                 f"{args.window:g}", "--interval", f"{args.interval:g}", "--json"],
                capture_output=True, text=True, check=True)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        live = json.loads(out.stdout)
        roles = live.get("roles") or {"label": None, "roles": []}
        job = next((j for j in roles["roles"] if j["pgrp"] == proc.pid), None)
        composed = own_verdict(job, ncpu)
        results.append({
            "program": program, "label": label, "composed": composed,
            "job": None if job is None else {k: job[k] for k in (
                "role", "best", "confidence", "active", "cpu_cores", "io_bytes_per_s",
                "frameworks", "evidence")},
            "host_verdict": roles["label"], "host_reason": roles.get("reason"),
            "aggregate_model": live.get("label"),
        })
        print(json.dumps(results[-1]), flush=True)
    print()
    print("| program | class | its job's role (conf.) | composed verdict | live host verdict |"
          " host-aggregate model |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        j = r["job"]
        role = "not examined" if j is None else f"{j['role']} ({j['confidence']:.2f})"
        print(f"| {r['program']} | {r['label']} | {role} | {r['composed']} | "
              f"{r['host_verdict']} | {r['aggregate_model']} |")
    ok = sum(1 for r in results if r["composed"] == r["label"])
    host_ok = sum(1 for r in results if r["host_verdict"] == r["label"])
    print(f"\ncomposed from the program's job: {ok}/{len(results)} right; "
          f"live host verdict: {host_ok}/{len(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
