"""Records the shipped dataset (`models/data/`) with the workload suite, or the
fresh evaluation runs that are not in it (`--plan fresh`).

    python -m hosttune.agent.service.record_dataset --out models/data
    python -m hosttune.agent.service.record_dataset --plan fresh --out /tmp/fresh

Each run is one workload module with one set of parameters, recorded at
`--interval` for `--seconds` by `hosttune.agent.service.recording.record`, into
`<out>/<run>.csv.gz`. `manifest.json` lists every run: label, workload,
parameters, file, sha256, rows, host, kernel, date. Runs already in the
manifest with a matching file are skipped, so an interrupted recording
resumes. Needs the `workloads` extra (PyTorch) for the torch workloads, and
gcc/make for the build runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hosttune.models
from hosttune.agent.service.recording import make_sampler, record
from hosttune.models.workloads import LABELS

# the shipped dataset, next to the models that are trained on it
SHIPPED_DATA = Path(hosttune.models.__file__).parent / "data"

# (run name, workload module, parameters): five or more runs per class, each
# with other sizes and intensities
DATASET: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("train-small-b64-w0", "train", {"model-size": "small", "batch": 64, "workers": 0}),
    ("train-medium-b32-w0", "train", {"model-size": "medium", "batch": 32, "workers": 0}),
    ("train-large-b16-w0", "train", {"model-size": "large", "batch": 16, "workers": 0}),
    ("train-small-b256-w2", "train", {"model-size": "small", "batch": 256, "workers": 2}),
    ("train-medium-b64-w1", "train", {"model-size": "medium", "batch": 64, "workers": 1}),
    ("train-large-b8-w2", "train", {"model-size": "large", "batch": 8, "workers": 2}),
    ("serve-small-r50", "serve", {"model-size": "small", "rate": 50}),
    ("serve-medium-r30", "serve", {"model-size": "medium", "rate": 30}),
    ("serve-large-r20", "serve", {"model-size": "large", "rate": 20}),
    ("serve-small-r200-c2", "serve", {"model-size": "small", "rate": 200, "clients": 2}),
    ("serve-medium-r100-c4", "serve", {"model-size": "medium", "rate": 100, "clients": 4}),
    ("serve-large-r5", "serve", {"model-size": "large", "rate": 5}),
    ("batch-medium-b256", "batch_infer", {"model-size": "medium", "batch": 256}),
    ("batch-small-b1024", "batch_infer", {"model-size": "small", "batch": 1024}),
    ("batch-large-b32", "batch_infer", {"model-size": "large", "batch": 32}),
    ("batch-medium-b64-t1", "batch_infer", {"model-size": "medium", "batch": 64, "threads": 1}),
    ("batch-small-b4096", "batch_infer", {"model-size": "small", "batch": 4096}),
    ("prep-f64-r64-w2", "dataprep", {"files": 64, "records": 64, "workers": 2}),
    ("prep-f128-r32-w1", "dataprep", {"files": 128, "records": 32, "workers": 1}),
    ("prep-f64-r64-w0", "dataprep", {"files": 64, "records": 64, "workers": 0}),
    ("prep-f32-r256-w2", "dataprep", {"files": 32, "records": 256, "workers": 2}),
    ("prep-f256-r16-w3", "dataprep", {"files": 256, "records": 16, "workers": 3}),
    ("ckpt-512m-e0", "checkpoint", {"size-mb": 512, "every": 0}),
    ("ckpt-1g-e5", "checkpoint", {"size-mb": 1024, "every": 5}),
    ("ckpt-256m-e2-busy", "checkpoint", {"size-mb": 256, "every": 2, "busy": True}),
    ("ckpt-2g-e0-nofsync", "checkpoint", {"size-mb": 2048, "every": 0, "no-fsync": True}),
    ("ckpt-128m-c1-e1", "checkpoint", {"size-mb": 128, "chunk-mb": 1, "every": 1}),
    ("idle-hb5", "idle", {"heartbeat": 5}),
    ("idle-hb1", "idle", {"heartbeat": 1}),
    ("idle-hb10", "idle", {"heartbeat": 10}),
    ("idle-hb0.2", "idle", {"heartbeat": 0.2}),
    ("idle-hb2", "idle", {"heartbeat": 2}),
    ("build-f40-j2", "build", {"files": 40, "jobs": 2}),
    ("build-f80-j1", "build", {"files": 80, "jobs": 1}),
    ("build-f20-fn60-j2", "build", {"files": 20, "functions": 60, "jobs": 2}),
    ("backup-f400-512k", "backup", {"files": 400, "size-kb": 512}),
    ("backup-f200-1m-gz", "backup", {"files": 200, "size-kb": 1024, "gzip": True}),
    ("backup-f1000-128k", "backup", {"files": 1000, "size-kb": 128}),
)

# one run per class with parameters none of the dataset's runs has
FRESH: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("fresh-train-medium-b16-w2", "train", {"model-size": "medium", "batch": 16, "workers": 2}),
    ("fresh-serve-small-r120", "serve", {"model-size": "small", "rate": 120, "clients": 3}),
    ("fresh-batch-large-b64", "batch_infer", {"model-size": "large", "batch": 64}),
    ("fresh-prep-f96-r48-w1", "dataprep", {"files": 96, "records": 48, "workers": 1}),
    ("fresh-ckpt-768m-e3", "checkpoint", {"size-mb": 768, "every": 3}),
    ("fresh-idle-hb3", "idle", {"heartbeat": 3}),
    ("fresh-build-f60-fn20-j2", "build", {"files": 60, "functions": 20, "jobs": 2}),
    ("fresh-backup-f600-256k-gz", "backup", {"files": 600, "size-kb": 256, "gzip": True}),
)

PLANS = {"dataset": DATASET, "fresh": FRESH}


def command_of(module: str, params: dict[str, Any], seconds: float, seed: int) -> list[str]:
    cmd = [sys.executable, "-m", f"hosttune.models.workloads.{module}",
           "--seconds", f"{seconds:g}", "--seed", str(seed)]
    for key, value in params.items():
        if value is True:
            cmd.append(f"--{key}")
        else:
            cmd += [f"--{key}", str(value)]
    return cmd


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=SHIPPED_DATA)
    p.add_argument("--plan", choices=sorted(PLANS), default="dataset")
    p.add_argument("--seconds", type=float, default=70.0, help="length of each run")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--only", action="append", default=None, help="record only these runs")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest: dict[str, Any] = (
        json.loads(manifest_path.read_text()) if manifest_path.exists()
        else {"format": 1, "runs": []}
    )
    done = {r["run"]: r for r in manifest["runs"]
            if (args.out / r["file"]).exists() and sha256(args.out / r["file"]) == r["sha256"]}
    manifest["runs"] = list(done.values())
    plan = _interleave([r for r in PLANS[args.plan] if not args.only or r[0] in args.only])
    sampler = make_sampler()
    try:
        for i, (run, module, params) in enumerate(plan):
            if run in done:
                continue
            label = LABELS[module]
            file = f"{run}.csv.gz"
            cmd = command_of(module, params, args.seconds, seed=zlib.crc32(run.encode()) % 1000)
            sys.stderr.write(f"[{i + 1}/{len(plan)}] {run} ({label}) ...\n")
            started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            t0 = time.monotonic()
            result = record(
                args.out / file, label, command=cmd, interval=args.interval,
                duration=args.seconds + 30, sampler=sampler, quiet_command=True,
                meta={"run": run, "workload": module,
                      "params": json.dumps(params, sort_keys=True)},
            )
            if result.exit_code != 0:
                sys.stderr.write(f"  {run}: workload exited {result.exit_code}; not kept\n")
                (args.out / file).unlink(missing_ok=True)
                continue
            manifest["runs"].append({
                "run": run, "label": label, "workload": module, "params": params,
                "command": " ".join(cmd[2:]), "file": file, "sha256": sha256(args.out / file),
                "rows": result.rows, "seconds": round(time.monotonic() - t0, 1),
                "interval": args.interval, "started": started,
                "host": socket.gethostname(), "kernel": platform.release(),
                "cpus": _cpus(),
            })
            manifest["runs"].sort(key=lambda r: r["run"])
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            sys.stderr.write(f"  {result.rows} samples\n")
    finally:
        sampler.close()
    return 0


def _interleave(
    plan: list[tuple[str, str, dict[str, Any]]],
) -> list[tuple[str, str, dict[str, Any]]]:
    """Round-robin over classes, so that whatever else the host does over the
    recording (other jobs, drift) is spread over every class rather than
    tied to one."""
    by_label: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for entry in plan:
        by_label.setdefault(LABELS[entry[1]], []).append(entry)
    out: list[tuple[str, str, dict[str, Any]]] = []
    while any(by_label.values()):
        for runs in by_label.values():
            if runs:
                out.append(runs.pop(0))
    return out


def _cpus() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
