"""Records the per-process role dataset (`models/data/roles/`): each run is
one workload program (`models/workloads/`), optionally beside an unrelated
background load, sampled with `ProcessScanner` every `--interval` seconds.

    python -m hosttune.agent.service.record_roles --out models/data/roles

(Programs kept out of it, for `benchmarks/classify_fresh.py`, live in
`benchmarks/fresh/`.)

A run file is a gzip CSV: `# key=value` comment lines (label, program, run,
interval, cpus, load, host, kernel, started), a header of
`proc_evidence.ROW_FIELDS` plus `tag`, then one row per examined process per
scan. `tag` is `job` for the recorded program's process group, `load` for the
background load's (a background job), empty for anything else the scanner
examined (other users' work on a shared host: never used as a label). A row
with pid 0 holds the host's CPU counters (`cpu_user` = busy seconds,
`cpu_sys` = all seconds, `cpu_children` = seconds since boot, `threads` =
CPUs). `manifest.json` lists every run
with its sha256; runs already there with a matching file are skipped.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hosttune.models
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.cpu import clock_ticks
from hosttune.agent.sense.telemetry.proc_evidence import (
    ROW_FIELDS,
    ProcessScanner,
    evidence_row,
    host_cpu,
    uptime,
)
from hosttune.models.workloads import LABELS

SHIPPED_ROLES = Path(hosttune.models.__file__).parent / "data" / "roles"
FIELDS = (*ROW_FIELDS, "tag")

_LOAD = ("burn", {"procs": 1, "duty": 0.6})

# (run, program, parameters, with background load): two runs of every
# program, one of them beside an unrelated CPU load
PLAN: tuple[tuple[str, str, dict[str, Any], bool], ...] = (
    ("train-mlp-a", "train", {"model-size": "small", "batch": 64}, False),
    ("train-mlp-b", "train", {"model-size": "medium", "batch": 32, "workers": 1}, True),
    ("train-seq-a", "train_seq", {}, False),
    ("train-seq-b", "train_seq", {"hidden": 64, "batch": 64}, True),
    ("train-sgd-a", "train_sgd", {}, False),
    ("train-sgd-b", "train_sgd", {"features": 200, "batch": 5000}, True),
    ("train-np-a", "train_numpy", {}, False),
    ("train-np-b", "train_numpy", {"hidden": 256, "batch": 512}, True),
    ("serve-tcp-a", "serve", {"model-size": "small", "rate": 50}, False),
    ("serve-tcp-b", "serve", {"model-size": "medium", "rate": 20, "clients": 2}, True),
    ("serve-http-a", "serve_http", {"rate": 30}, False),
    ("serve-http-b", "serve_http", {"rate": 80}, True),
    ("serve-np-a", "serve_numpy", {"rate": 50}, False),
    ("serve-np-b", "serve_numpy", {"rate": 150, "hidden": 512}, True),
    ("batch-torch-a", "batch_infer", {"model-size": "medium", "batch": 256}, False),
    ("batch-torch-b", "batch_infer", {"model-size": "small", "batch": 1024}, True),
    ("batch-skl-a", "batch_sklearn", {}, False),
    ("batch-skl-b", "batch_sklearn", {"rows": 20000, "chunks": 20}, True),
    ("batch-np-a", "batch_numpy", {}, False),
    ("batch-np-b", "batch_numpy", {"dim": 64, "block": 50000}, True),
    ("prep-img-a", "dataprep", {"files": 64, "records": 64, "workers": 2}, False),
    ("prep-img-b", "dataprep", {"files": 32, "records": 128, "workers": 0}, True),
    ("prep-sh-a", "prep_shell", {}, False),
    ("prep-sh-b", "prep_shell", {"files": 4, "lines": 120000}, True),
    ("prep-csv-a", "prep_csv", {}, False),
    ("prep-csv-b", "prep_csv", {"shards": 8, "rows": 10000}, True),
    ("ckpt-torchlike-a", "checkpoint", {"size-mb": 256, "every": 1}, False),
    ("ckpt-torchlike-b", "checkpoint", {"size-mb": 128, "every": 2, "busy": True}, True),
    ("ckpt-np-a", "ckpt_numpy", {}, False),
    ("ckpt-np-b", "ckpt_numpy", {"size-mb": 96, "every": 3}, True),
    ("ckpt-sh-a", "ckpt_shards", {}, False),
    ("ckpt-sh-b", "ckpt_shards", {"shards": 2, "shard-mb": 96, "every": 1}, True),
    ("build-a", "build", {"files": 40, "jobs": 2}, False),
    ("build-b", "build", {"files": 20, "jobs": 1}, True),
    ("backup-a", "backup", {"files": 300, "size-kb": 512}, False),
    ("backup-b", "backup", {"files": 200, "size-kb": 512, "gzip": True}, True),
    ("burn-a", "burn", {"procs": 2}, False),
    ("burn-b", "burn", {"procs": 1, "duty": 0.5}, False),
    ("web-a", "web_static", {"rate": 80}, False),
    ("web-b", "web_static", {"rate": 200}, True),
    ("idle-hb-a", "idle", {"heartbeat": 1}, False),
    ("idle-hb-b", "idle", {"heartbeat": 5}, True),
    # added in the second session for the weak classes (data preparation,
    # background): different tools and libraries, not parameter sweeps
    ("prep-tok-a", "prep_tokens", {}, False),
    ("prep-tok-b", "prep_tokens", {"chunk-kb": 64, "lines": 20000}, True),
    ("prep-feat-a", "prep_features", {}, False),
    ("prep-feat-b", "prep_features", {"bands": 40, "seconds-audio": 10}, True),
    ("prep-jsonl-a", "prep_jsonl", {}, False),
    ("prep-jsonl-b", "prep_jsonl", {"files": 3, "lines": 30000}, True),
    ("bg-sqlite-a", "bg_sqlite", {}, False),
    ("bg-sqlite-b", "bg_sqlite", {"batch": 500, "queries": 200}, True),
    ("bg-logrot-a", "bg_logrotate", {}, False),
    ("bg-logrot-b", "bg_logrotate", {"tool": "bzip2", "rotate-mb": 4}, True),
    ("bg-scan-a", "bg_scan", {}, False),
    ("bg-scan-b", "bg_scan", {"files": 300, "size-kb": 1024}, True),
    # added in the third session: programs in JAX and TensorFlow, so no
    # class is known through one framework's libraries alone
    ("train-jax-a", "train_jax", {}, False),
    ("train-jax-b", "train_jax", {"dim": 96, "seq": 48, "batch": 16}, True),
    ("batch-keras-a", "batch_keras", {}, False),
    ("batch-keras-b", "batch_keras", {"shards": 4, "batch": 256}, True),
    ("serve-tf-a", "serve_tf", {}, False),
    ("serve-tf-b", "serve_tf", {"rate": 100, "conns": 2}, True),
)


def program_argv(program: str, params: dict[str, Any], seconds: float) -> list[str]:
    argv = [sys.executable, "-m", f"hosttune.models.workloads.{program}",
            "--seconds", f"{seconds:g}", "--quiet"]
    for key, value in params.items():
        if value is True:
            argv.append(f"--{key}")
        else:
            argv += [f"--{key}", str(value)]
    return argv


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def record_run(path: Path, label: str, argv: Sequence[str], *, seconds: float,
               interval: float, load_argv: Sequence[str] | None,
               meta: dict[str, str]) -> int:
    """Runs `argv` (in a session of its own, so its process group is the
    job) and writes one row per examined process per scan; returns rows."""
    host = Host()
    scanner = ProcessScanner(host)
    hz = clock_ticks()
    load = subprocess.Popen(list(load_argv), start_new_session=True,
                            stdout=subprocess.DEVNULL) if load_argv else None
    job = subprocess.Popen(list(argv), start_new_session=True, stdout=subprocess.DEVNULL)
    rows = 0
    header = {"label": label, "interval": f"{interval:g}", "cpus": str(os.cpu_count() or 0),
              "host": socket.gethostname(), "kernel": platform.release(),
              "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **meta}
    buf = io.StringIO()
    for key, value in header.items():
        buf.write(f"# {key}={value}\n")
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    start = time.monotonic()
    next_at = start
    try:
        while time.monotonic() - start < seconds + 0.5 and job.poll() is None:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.monotonic() - start
            watch = [job.pid] + ([load.pid] if load else [])
            busy, total, ncpu = host_cpu(host)
            w.writerow({**dict.fromkeys(FIELDS, ""), "t": round(t, 3), "pid": 0, "start": 0,
                        "pgrp": 0, "ppid": 0, "comm": "<host>", "cpu_user": busy / hz,
                        "cpu_children": uptime(host),
                        "cpu_sys": total / hz, "threads": ncpu, "tag": ""})
            for ev in scanner.scan(watch):
                tag = "job" if ev.stat.pgrp == job.pid else (
                    "load" if load and ev.stat.pgrp == load.pid else "")
                w.writerow({**evidence_row(t, ev, hz), "tag": tag})
                rows += 1
            next_at += interval
    finally:
        _stop(job)
        if load is not None:
            _stop(load)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write(buf.getvalue())
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=SHIPPED_ROLES)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--only", nargs="*", default=None, help="run names to record")
    args = p.parse_args(argv)
    plan = PLAN
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest: dict[str, Any] = (json.loads(manifest_path.read_text())
                                if manifest_path.exists() else {"runs": []})
    done = {r["run"]: r for r in manifest["runs"]}
    for run, program, params, with_load in plan:
        if args.only and run not in args.only:
            continue
        path = args.out / f"{run}.csv.gz"
        if run in done and path.exists() and \
                hashlib.sha256(path.read_bytes()).hexdigest() == done[run]["sha256"]:
            continue
        label = LABELS[program]
        load_argv = program_argv(_LOAD[0], _LOAD[1], args.seconds + 5) if with_load else None
        t0 = time.monotonic()
        rows = record_run(path, label, program_argv(program, params, args.seconds + 5),
                          seconds=args.seconds, interval=args.interval, load_argv=load_argv,
                          meta={"run": run, "program": program, "load": str(with_load),
                                "params": json.dumps(params, sort_keys=True)})
        entry = {"run": run, "program": program, "label": label, "params": params,
                 "load": with_load, "file": path.name, "rows": rows,
                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                 "seconds": args.seconds, "interval": args.interval,
                 "host": socket.gethostname(), "kernel": platform.release(),
                 "recorded": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        manifest["runs"] = [r for r in manifest["runs"] if r["run"] != run] + [entry]
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        print(f"{run}: {rows} rows in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
