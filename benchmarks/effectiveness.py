"""How much faster hosttune makes real workloads on this host, against the
kernel defaults, tuned's fixed profiles and random search.

    .venv/bin/python benchmarks/effectiveness.py [--quick] [--repeats N] [--budget B]
                                                [--workloads embedding,training,...]

Needs root (it changes vm.*, THP and the dataset disk's read_ahead_kb) and
PyTorch CPU in the same environment (`pip install torch==2.13.0`). For each
workload (benchmarks/effect_workloads.py) and each configuration it prints the
median throughput of repeated runs as a ratio to the kernel defaults.

Configurations:
- defaults: the kernel's own defaults (THP madvise, swappiness 60,
  dirty_ratio 20, dirty_background_ratio 10, read_ahead_kb 128);
- tuned profiles, values transcribed from redhat-performance/tuned
  profiles/*/tuned.conf (only what this host exposes: no cpufreq governor,
  no sched_* sysctls, no energy_perf_bias here);
- recommend: the plan `hosttune recommend --workload CLASS` makes while the
  workload runs (so it sees the workload's processes and I/O), from the
  kernel defaults and from a host already on tuned's hpc-compute values;
- tune: `hosttune tune` with --budget trials over THP, swappiness, the dirty
  ratios and readahead, keeping its best setting, then measured like the rest;
- random: the same number of random settings in the same space, its best
  measured like the rest.

It holds the kernel-test lock (/tmp/hosttune-kernel-tests.lock) while it
changes knobs, one workload at a time, snapshots every knob it may touch and
restores and verifies them after each workload, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKLOAD_SCRIPT = HERE / "effect_workloads.py"
LOCK = "/tmp/hosttune-kernel-tests.lock"
METRIC = r"throughput: ([0-9.]+)"

# Which workload class `hosttune recommend` is told, per workload.
CLASSES = {"embedding": "batch_inference", "training": "training",
           "checkpoint": "checkpoint_io", "loader": "data_preparation"}


def dataset_disk() -> str:
    """The block device under the benchmark's data directory (via /sys/block)."""
    data = Path(os.environ.get("HOSTTUNE_BENCH_DIR", "/var/tmp/hosttune-effectiveness"))
    data.mkdir(parents=True, exist_ok=True)
    dev = os.stat(data).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for name in sorted(os.listdir("/sys/block")):
        base = Path("/sys/block") / name
        candidates = [base, *[p for p in base.iterdir() if p.name.startswith(name)]]
        for part in candidates:
            try:
                if (part / "dev").read_text().strip() == f"{major}:{minor}":
                    return name
            except OSError:
                continue
    raise SystemExit(f"effectiveness: no block device in /sys/block holds {data}")


def knob_space(disk: str) -> list[str]:
    return ["thp:enabled", "sysctl:vm.swappiness", "sysctl:vm.dirty_ratio",
            "sysctl:vm.dirty_background_ratio", f"block:{disk}:read_ahead_kb"]


def kernel_defaults(disk: str) -> dict[str, str]:
    return {"thp:enabled": "madvise", "sysctl:vm.swappiness": "60",
            "sysctl:vm.dirty_ratio": "20", "sysctl:vm.dirty_background_ratio": "10",
            f"block:{disk}:read_ahead_kb": "128"}


def tuned_profiles(disk: str) -> dict[str, tuple[dict[str, str], str]]:
    """Each profile's values this host can take, over the defaults, and its source."""
    ra = f"block:{disk}:read_ahead_kb"
    return {
        "tuned throughput-performance": (
            {"sysctl:vm.dirty_ratio": "40", "sysctl:vm.dirty_background_ratio": "10",
             "sysctl:vm.swappiness": "10", ra: "4096"},
            "profiles/throughput-performance/tuned.conf: vm.dirty_ratio = 40, "
            "vm.dirty_background_ratio = 10, vm.swappiness=10, [disk] readahead=>4096"),
        "tuned accelerator-performance": (
            {"sysctl:vm.dirty_ratio": "40", "sysctl:vm.dirty_background_ratio": "10",
             "sysctl:vm.swappiness": "10", ra: "4096"},
            "profiles/accelerator-performance/tuned.conf: dirty_bytes = 40%, "
            "dirty_background_bytes = 10%, vm.swappiness=10, [disk] readahead=>4096"),
        "tuned hpc-compute": (
            {"sysctl:vm.dirty_ratio": "40", "sysctl:vm.dirty_background_ratio": "10",
             "sysctl:vm.swappiness": "10", ra: "4096", "thp:enabled": "always"},
            "profiles/hpc-compute/tuned.conf: include=throughput-performance, "
            "[vm] transparent_hugepages=always, kernel.numa_balancing=0 (already 0 here)"),
    }


# -- knobs through hosttune's Host (the benchmark's own writes) -----------------

def _path(knob: str) -> str:
    from hosttune.agent.sense.host import Host

    family, key = knob.split(":", 1)
    if family == "sysctl":
        return Host.sysctl_path(key)
    if family == "thp":
        return f"/sys/kernel/mm/transparent_hugepage/{key}"
    if family == "block":
        disk, attr = key.split(":", 1)
        return f"/sys/block/{disk}/queue/{attr}"
    raise SystemExit(f"effectiveness: no path for knob {knob}")


def read_knob(knob: str) -> str:
    from hosttune.agent.sense.host import Host

    text = Host().read_str(_path(knob))
    found = re.search(r"\[([^\]]+)\]", text)
    return found.group(1) if found else text


def write_knobs(values: dict[str, str]) -> None:
    from hosttune.agent.sense.host import Host

    host = Host()
    for knob, value in values.items():
        host.write_text(_path(knob), value)
        if read_knob(knob) != value:
            raise SystemExit(f"effectiveness: {knob} did not take {value!r}")


@contextlib.contextmanager
def locked_and_restored(knobs: list[str]) -> Iterator[dict[str, str]]:
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        snapshot = {k: read_knob(k) for k in knobs}
        try:
            yield snapshot
        finally:
            write_knobs(snapshot)
            after = {k: read_knob(k) for k in knobs}
            fcntl.flock(fh, fcntl.LOCK_UN)
            if after != snapshot:
                raise SystemExit(f"effectiveness: restore failed: {snapshot} != {after}")


# -- running things -------------------------------------------------------------

def run_once(workload: str, scale: float) -> tuple[float, str]:
    """The workload's throughput and the unit it printed it in."""
    out = subprocess.run([sys.executable, str(WORKLOAD_SCRIPT), workload, "--scale", str(scale)],
                         capture_output=True, text=True, check=True)
    found = re.search(METRIC + r" (\S+)", out.stdout)
    if not found:
        raise SystemExit(f"effectiveness: {workload} printed no throughput: {out.stdout!r}")
    return float(found.group(1)), found.group(2)


def hosttune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("hosttune")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                          check=False)


def recommended_values(workload: str, scale: float, knobs: list[str],
                       env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Run the workload, let `hosttune recommend` look at it, keep the plan's
    changes to the knobs this benchmark measures (and list the others)."""
    probe = subprocess.Popen([sys.executable, str(WORKLOAD_SCRIPT), workload, "--scale",
                              str(scale), "--hold", "60"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(4.0)  # past start-up: torch imported, tables allocated, I/O flowing
        out = hosttune("recommend", "--workload", CLASSES[workload], "--json", env=env)
    finally:
        probe.send_signal(signal.SIGTERM)
        probe.wait()
    if out.returncode != 0:
        raise SystemExit(f"effectiveness: hosttune recommend failed: {out.stderr.strip()}")
    plan = json.loads(out.stdout)
    values, other = {}, []
    for change in plan.get("changes", []):
        if change["knob"] in knobs:
            values[change["knob"]] = str(change["after"])
        else:
            other.append(f"{change['knob']}={change['after']}")
    return values, other


def tuned_by_hosttune(workload: str, scale: float, knobs: list[str], *, budget: int,
                      repeats: int, seed: int, env: dict[str, str]) -> tuple[dict[str, str], str]:
    objective = f"{sys.executable} {WORKLOAD_SCRIPT} {workload} --scale {scale}"
    args = ["tune", "--objective", objective, "--metric", METRIC, "--budget", str(budget),
            "--repeats", str(repeats), "--keep", "best", "--seed", str(seed),
            "--workload", CLASSES[workload], "--json"]
    for knob in knobs:
        args += ["--knobs", knob]
    out = hosttune(*args, env=env)
    if out.returncode != 0:
        raise SystemExit(f"effectiveness: hosttune tune failed: {out.stderr.strip()[-500:]}")
    report = json.loads(out.stdout)
    kept = {k: read_knob(k) for k in knobs}
    prunes = sum(1 for t in report["trials"] if t["origin"] == "prune")
    dropped = f", put back {'+'.join(k.split(':')[-1] for k in report['dropped'])}" \
        if report.get("dropped") else ""
    return kept, (f"{len(report['trials']) - 1 - prunes} trials + {prunes} pruning"
                  f"{dropped}, kept={report['kept']}")


def random_best(workload: str, scale: float, knobs: list[str], *, defaults: dict[str, str],
                budget: int, repeats: int, seed: int) -> dict[str, str]:
    """Random search with the same budget and repeats per trial as `tune`."""
    from hosttune.models.optimizer import random_search
    from hosttune.models.space import space_for
    from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST
    from hosttune.tuners.registry import search_hints

    def measure() -> float:
        return statistics.median(run_once(workload, scale)[0] for _ in range(repeats))

    space = space_for(knobs, DEFAULT_ALLOWLIST, hints=search_hints())
    best, best_score = defaults, measure()
    for point in random_search(space, budget, seed=seed):
        write_knobs({**defaults, **point})
        score = measure()
        if score > best_score:
            best, best_score = {**defaults, **point}, score
    return best


def _changed(values: dict[str, str], defaults: dict[str, str]) -> str:
    return ", ".join(f"{k.split(':', 1)[1]}={v}" for k, v in values.items()
                     if v != defaults.get(k)) or "defaults"


class Row(NamedTuple):
    name: str
    ratio: float  # median over rounds of (configuration / defaults of the same round)
    low: float
    high: float
    note: str


def bench_workload(workload: str, args: argparse.Namespace, disk: str,
                   env: dict[str, str]) -> list[Row]:
    """Find each configuration's setting (the searches measure as they go),
    then measure all of them in interleaved rounds, so background load on a
    shared machine falls on every configuration alike."""
    knobs = knob_space(disk)
    defaults = kernel_defaults(disk)
    configs: list[tuple[str, dict[str, str], str]] = [("defaults", defaults, "kernel defaults")]
    with locked_and_restored(knobs):
        if "profiles" in args.configs:
            for name, (values, _source) in tuned_profiles(disk).items():
                configs.append((name, {**defaults, **values}, _changed(values, defaults)))
        if "recommend" in args.configs:
            # From the kernel defaults, and from a host already on the best
            # general profile (hpc-compute): what recommend changes there.
            hpc = {**defaults, **tuned_profiles(disk)["tuned hpc-compute"][0]}
            for name, start in (("hosttune recommend", defaults),
                                ("hpc-compute + hosttune recommend", hpc)):
                write_knobs(start)
                rec, other = recommended_values(workload, args.scale, knobs, env)
                rec = {k: v for k, v in rec.items() if start.get(k) != v}
                note = _changed({**start, **rec}, defaults)
                if start is hpc:
                    note = f"recommend changed {_changed(rec, start) if rec else 'nothing'}"
                if other:
                    note += f" (also: {', '.join(other)})"
                configs.append((name, {**start, **rec}, note))
        if "tune" in args.configs:
            write_knobs(defaults)
            kept, how = tuned_by_hosttune(workload, args.scale, knobs, budget=args.budget,
                                          repeats=args.trial_repeats, seed=args.seed, env=env)
            configs.append(("hosttune tune", kept, f"{how}: {_changed(kept, defaults)}"))
        if "random" in args.configs:
            write_knobs(defaults)
            best = random_best(workload, args.scale, knobs, defaults=defaults,
                               budget=args.budget, repeats=args.trial_repeats, seed=args.seed)
            configs.append(("random search", best, _changed(best, defaults)))
        # Each round measures every configuration once, in a fresh order, and
        # each is compared with the defaults of the same round: slow drift of a
        # shared machine then cancels out of the ratio instead of landing on
        # whichever configuration ran during a busy minute.
        order = random.Random(args.seed)
        scores: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        unit = ""
        for _ in range(args.repeats):
            for name, values, _note in order.sample(configs, len(configs)):
                write_knobs(values)
                value, unit = run_once(workload, args.scale)
                scores[name].append(value)
    base = scores["defaults"]
    spread = (max(base) - min(base)) / statistics.median(base)
    rows = []
    for name, _, note in configs:
        ratios = sorted(s / b for s, b in zip(scores[name], base, strict=True))
        rows.append(Row(name, statistics.median(ratios), ratios[0], ratios[-1], note))
    rows[0] = Row("defaults", 1.0, 1.0, 1.0,
                  f"kernel defaults: {statistics.median(base):.1f} {unit}, "
                  f"run-to-run spread {spread:.0%}")
    return rows


# -- end to end: hosttuned in auto mode on jobs already running -------------------
#
# hosttuned --mode auto, told nothing (no workload class, no objective), on
# jobs of effect_workloads.py --stream that run the whole time, against the
# kernel defaults and tuned's fixed profiles in the same rounds:
# - defaults / tuned profiles: set before the job starts; its rate from `warm` s on;
# - auto (a), the usual case: the job starts under the kernel defaults and
#   `lead` seconds later hosttuned starts; the job's rate over its last `tail`
#   seconds, and the time until half the final gain was reached;
# - auto (b): hosttuned runs first (fresh state), the job starts `lead` s later.
# After each auto run the daemon is stopped and `hosttune rollback --baseline`
# puts back everything it changed; locked_and_restored checks the knobs after.

E2E_WORKLOADS = ("gather", "embedding", "training", "numpy", "checkpoint", "loader")
E2E_DEFAULT = "gather,embedding,training,numpy,checkpoint"
AUTO_ROWS = {"a": "hosttuned auto (a): started while the job runs",
             "b": "hosttuned auto (b): running before the job starts"}


@dataclass
class Timings:
    """One timeline for every row: each job runs `job` seconds and is measured
    over its last `tail`. A job's rate drifts along its run (a disk writing
    for 45 s is not the disk of its first 16 s), so rows measured over
    different stretches of a job compare the stretches, not the settings."""
    job: float = 45.0     # seconds every job runs, fixed settings and auto alike
    tail: float = 20.0    # the rate: the median over the job's last seconds
    lead_a: float = 10.0  # (a): hosttuned starts this far into the job
    lead_b: float = 6.0   # (b): the job starts this long after hosttuned


@dataclass
class JobRun:
    rates: list[tuple[float, float]] = field(default_factory=list)  # (s since ready, rate)
    unit: str = ""
    ready_wall: float = 0.0
    pid: int = 0  # the job's process
    steal: float | None = None  # share of the host's CPU time the hypervisor took meanwhile

    def median_from(self, start: float) -> float:
        value = self.between(start, math.inf)
        if value is None:
            raise SystemExit(f"effectiveness: the job printed no rate after {start:.0f} s")
        return value

    def between(self, start: float, end: float) -> float | None:
        vals = [r for t, r in self.rates if start <= t < end]
        return statistics.median(vals) if vals else None

    def tail(self, seconds: float) -> float:
        last = self.rates[-1][0] if self.rates else 0.0
        return self.median_from(last - seconds)

    def time_to(self, level: float) -> float | None:
        """First time the rolling median of three rates reaches `level`."""
        for i in range(2, len(self.rates)):
            window = [r for _t, r in self.rates[i - 2:i + 1]]
            if statistics.median(window) >= level:
                return self.rates[i][0]
        return None


def _cpu_times() -> dict[str, float]:
    """The host's CPU seconds by kind (cpu.user ... cpu.steal), as the sampler
    reads them (guest time is inside user and nice, not counted twice)."""
    from hosttune.agent.sense.telemetry.cpu import FIELDS, clock_ticks, parse_stat

    total = parse_stat(Path("/proc/stat").read_text(), hz=clock_ticks())
    return {f: total[f"cpu.{f}"] for f in FIELDS}


def run_job(workload: str, seconds: float, scale: float,
            at: tuple[float, Callable[[JobRun], None]] | None = None) -> JobRun:
    """Run a job for `seconds` after its set-up; `at` = (t, fn): call fn with
    the run so far once the job has run t seconds (it runs on, and its rates
    keep coming)."""
    # In a session of its own, as a scheduler or a shell starts a job: in the
    # benchmark's process group the job would be judged together with it.
    proc = subprocess.Popen([sys.executable, str(WORKLOAD_SCRIPT), workload, "--stream",
                             str(seconds), "--scale", str(scale)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    run = JobRun(pid=proc.pid)
    cpu0 = _cpu_times()
    called = threading.Event()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            parts = line.split()
            if parts and parts[0] == "ready":
                run.ready_wall = time.time()
            elif parts and parts[0] == "rate":
                t, value = float(parts[1]), float(parts[2])
                run.rates.append((t, value))
                run.unit = " ".join(parts[3:])
                if at is not None and not called.is_set() and t >= at[0]:
                    called.set()
                    at[1](run)
        cpu1 = _cpu_times()
        total = sum(cpu1.values()) - sum(cpu0.values())
        run.steal = (cpu1["steal"] - cpu0["steal"]) / total if total > 0 else None
        if proc.wait() != 0:
            raise SystemExit(f"effectiveness: {workload} job failed ({proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return run


class AutoDaemon:
    """hosttuned --mode auto with state, run dir and config of its own."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hosttune-e2e-"))
        (self.dir / "hosttune.yaml").write_text("mode: auto\n")
        self.env = {**os.environ, "HOSTTUNE_STATE_DIR": str(self.dir / "state"),
                    "HOSTTUNE_RUN_DIR": str(self.dir / "run"),
                    "HOSTTUNE_CONFIG": str(self.dir / "hosttune.yaml"),
                    "HOSTTUNE_LOG": "stderr"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_wall = 0.0
        self.status: dict[str, Any] = {}

    def _exe(self, name: str) -> str:
        return str(Path(sys.executable).with_name(name))

    def start(self) -> None:
        self.started_wall = time.time()
        # a session of its own, as systemd starts it
        self.proc = subprocess.Popen([self._exe("hosttuned"), "--foreground"], env=self.env,
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.log", "wb"))  # noqa: SIM115

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self._exe("hosttune"), *args], env=self.env, text=True,
                              capture_output=True, timeout=120, check=False)

    def stop(self) -> None:
        """Keep its status, stop it, and put back everything it changed."""
        if self.proc is None:
            return
        got = self.cli("status", "--json")
        if got.returncode == 0:
            self.status = json.loads(got.stdout)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        back = self.cli("rollback", "--baseline")
        said = back.stderr + back.stdout
        if back.returncode != 0 and "no transaction" not in said and \
                "has not changed anything" not in said:
            raise SystemExit(f"effectiveness: rollback --baseline failed: {back.stderr}")
        self.proc = None

    def first_collapse(self) -> float | None:
        """Seconds from the daemon's start to its first collapse pass."""
        collapse = self.status.get("collapse") if isinstance(self.status, dict) else None
        recent = collapse.get("recent", []) if isinstance(collapse, dict) else []
        walls = [r["wall"] for r in recent if r.get("results")]
        return min(walls) - self.started_wall if walls else None

    def summary(self, job_pid: int) -> str:
        st = self.status if isinstance(self.status, dict) else {}
        applied = st.get("applied", [])
        knobs = [f"{c['knob']}={c['value']}" for a in applied if isinstance(a, dict)
                 for c in a.get("changes", [])]
        collapse = st.get("collapse", {})
        runner = collapse.get("runner") or {} if isinstance(collapse, dict) else {}
        mib = runner.get("collapsed_mib", 0) if isinstance(runner, dict) else 0
        return (f"{recognised(st, job_pid)}; collapsed {mib} MiB; applied "
                + (", ".join(knobs) if knobs else "no knob"))

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def recognised(status: dict[str, Any], job_pid: int) -> str:
    """What the daemon made of the job by the time it stopped: the role its
    process model gave the job's process (each window), the host class it
    believes (after `hysteresis` windows in a row: 60 s at the defaults, so
    not within a 35 s run) and, short of a belief, the last window's class."""
    roles = status.get("roles") or {}
    verdict = roles.get("verdict") or {} if isinstance(roles, dict) else {}
    role = next((f"{r['role']} {r['confidence']:.2f}" for r in verdict.get("roles", [])
                 if job_pid in r.get("pids", [])), "not assigned")
    workload = status.get("workload") or {}
    believed = workload.get("label", "unknown")
    last = workload.get("last_window") or {}
    host = (f"host class {believed}" if believed != "unknown" else
            f"host class not yet believed (last window {last['label']} "
            f"{last['confidence']:.2f})" if last else "host class: no window yet")
    return f"job read as {role}; {host}"


@dataclass
class Measured:
    value: float
    note: str = ""
    job: JobRun | None = None  # the auto rows' job, for the time to the gain


def measure_auto(workload: str, case: str, timings: Timings, scale: float) -> Measured:
    daemon = AutoDaemon()
    try:
        if case == "a":
            job = run_job(workload, timings.job, scale,
                          at=(timings.lead_a, lambda _run: daemon.start()))
        else:
            daemon.start()
            time.sleep(timings.lead_b)
            job = run_job(workload, timings.job, scale)
        daemon.stop()
        post = job.tail(timings.tail)
        first = daemon.first_collapse()
        note = daemon.summary(job.pid)
        if first is not None:
            note += f"; first pass {first:.0f} s after hosttuned started"
        return Measured(post, note, job)
    finally:
        daemon.cleanup()


def measure_fixed(workload: str, timings: Timings, scale: float) -> Measured:
    job = run_job(workload, timings.job, scale)
    return Measured(job.tail(timings.tail), job.unit, job)


def bench_e2e(workloads: list[str], configs: dict[str, dict[str, str]], *,
              defaults: dict[str, str], repeats: int, seed: int, scale: float,
              timings: Timings, cases: str = "ab") -> dict[str, dict[str, list[Measured]]]:
    """workload -> configuration -> one Measured per round. Every round runs
    every configuration of a workload once, in a fresh order."""
    order = random.Random(seed)
    names = [*configs, *(AUTO_ROWS[c] for c in cases)]
    results: dict[str, dict[str, list[Measured]]] = {
        w: {n: [] for n in names} for w in workloads}
    for round_no in range(repeats):
        for workload in workloads:
            for name in order.sample(names, len(names)):
                if name in configs:
                    write_knobs(configs[name])
                    got = measure_fixed(workload, timings, scale)
                else:
                    write_knobs(defaults)
                    got = measure_auto(workload, "a" if "(a)" in name else "b", timings, scale)
                    write_knobs(defaults)
                results[workload][name].append(got)
                steal = got.job.steal if got.job is not None else None
                print(f"# round {round_no + 1} {workload} {name}: {got.value:.2f} {got.note}"
                      + ("" if steal is None else f"; steal {steal:.1%}"), flush=True)
    return results


def _to_half_gain(m: Measured, base: float) -> float | None:
    """Seconds into the job until it ran halfway from the defaults' rate of
    the same round to its own final rate; None where it gained < 5 %."""
    if m.job is None or m.value <= base * 1.05:
        return None
    return m.job.time_to(base + 0.5 * (m.value - base))


def _within_run(m: Measured, d: Measured, timings: Timings) -> float | None:
    """Case (a) against itself: the job's last `tail` seconds over its own
    seconds before hosttuned started (same process, same minute of the VM),
    divided by the same ratio of the defaults row of the round (the drift of
    an untouched job along its run). Between-run noise of a shared VM (the
    defaults' spread) cancels; noise within a run does not."""
    if m.job is None or d.job is None:
        return None
    own = m.job.between(1.0, timings.lead_a)
    ref = d.job.between(1.0, timings.lead_a)
    if not own or not ref:
        return None
    return (m.value / own) / (d.value / ref)


def _paired(runs: list[Measured], other: list[Measured]) -> str:
    """The median over rounds of a row against another row of the same round."""
    return f"{statistics.median(m.value / o.value for m, o in zip(runs, other, strict=True)):.2f}"


def e2e_report(results: dict[str, dict[str, list[Measured]]], units: dict[str, str],
               timings: Timings) -> None:
    geo: dict[str, list[float]] = {}
    paired: dict[str, float] = {}
    for workload, by_config in results.items():
        base = [m.value for m in by_config["defaults"]]
        spread = (max(base) - min(base)) / statistics.median(base)
        print(f"\n## {workload}: kernel defaults {statistics.median(base):.2f} "
              f"{units.get(workload, '')}, run-to-run spread {spread:.0%}")
        profiles = [n for n in by_config if n.startswith("tuned ")]
        print("| configuration | ratio | range | "
              + "".join(f"vs {n.removeprefix('tuned ')} | " for n in profiles)
              + "time to half the gain | what it did |\n|---|---:|---|"
              + "---:|" * len(profiles) + "---|---|")
        for name, runs in by_config.items():
            ratios = sorted(m.value / b for m, b in zip(runs, base, strict=True))
            geo.setdefault(name, []).append(statistics.median(ratios))
            gains = [t for m, b in zip(runs, base, strict=True)
                     if "auto" in name and (t := _to_half_gain(m, b)) is not None]
            gain = f"{statistics.median(gains):.0f} s into the job" if gains else "-"
            note = runs[-1].note if "auto" in name else ""
            against = "".join(f"{_paired(runs, by_config[p])} | " if p != name else "- | "
                              for p in profiles)
            print(f"| {name} | {statistics.median(ratios):.2f} | {ratios[0]:.2f}-"
                  f"{ratios[-1]:.2f} | {against}{gain} | {note} |")
        auto_a = next((n for n in by_config if "(a)" in n), None)
        within = [] if auto_a is None else sorted(
            w for m, d in zip(by_config[auto_a], by_config["defaults"], strict=True)
            if (w := _within_run(m, d, timings)) is not None)
        if within:
            paired[workload] = statistics.median(within)
            print(f"(a) within its own run (last {timings.tail:.0f} s over its first "
                  f"{timings.lead_a:.0f} s, over the defaults row's same ratio): "
                  f"{paired[workload]:.2f} ({within[0]:.2f}-{within[-1]:.2f})")
    print("\n## all running jobs: geometric mean of the ratios, and the worst\n"
          "| configuration | geometric mean | worst |\n|---|---:|---:|")
    for name, values in geo.items():
        print(f"| {name} | {statistics.geometric_mean(values):.2f} | {min(values):.2f} |")
    if paired:
        print(f"| (a) within its own run | {statistics.geometric_mean(paired.values()):.2f} | "
              f"{min(paired.values()):.2f} |")


def e2e_main(args: argparse.Namespace, disk: str) -> int:
    """The end-to-end rows."""
    chosen = E2E_DEFAULT if args.workloads == DEFAULT_WORKLOADS else args.workloads
    workloads = [w for w in chosen.split(",") if w in E2E_WORKLOADS]
    defaults = kernel_defaults(disk)
    profiles = tuned_profiles(disk)
    # accelerator-performance sets the same values as throughput-performance on
    # this host (no governor, no sched_* sysctls): measured once, for both.
    configs = {"defaults": defaults,
               "tuned throughput-/accelerator-performance":
                   {**defaults, **profiles["tuned throughput-performance"][0]},
               "tuned hpc-compute": {**defaults, **profiles["tuned hpc-compute"][0]}}
    rows = set(args.rows.split(","))
    if "profiles" not in rows:
        configs = {"defaults": defaults}
    cases = "".join(c for c in "ab" if c in rows)
    timings = Timings()
    print(f"# hosttune end to end: {args.repeats} rounds; hosttuned --mode auto, told nothing "
          f"(no class, no objective); every job runs {timings.job:.0f} s, measured over its "
          f"last {timings.tail:.0f} s; (a) hosttuned starts {timings.lead_a:.0f} s into it, "
          f"(b) the job starts {timings.lead_b:.0f} s after hosttuned; "
          f"{os.cpu_count()} CPUs")
    with locked_and_restored(knob_space(disk)):
        results = bench_e2e(workloads, configs, defaults=defaults, repeats=args.repeats,
                            seed=args.seed, scale=args.scale, timings=timings, cases=cases)
    e2e_report(results, {w: results[w]["defaults"][0].note for w in workloads}, timings)
    return 0


DEFAULT_WORKLOADS = "embedding,training,checkpoint,loader"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hosttune effectiveness benchmark")
    parser.add_argument("--repeats", type=int, default=7,
                        help="measurement rounds (each runs every configuration once)")
    parser.add_argument("--budget", type=int, default=8, help="tune and random search trials")
    parser.add_argument("--trial-repeats", type=int, default=2,
                        help="runs per trial in tune and random search (median)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="repeats 3, budget 4")
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    parser.add_argument("--configs", default="profiles,recommend,tune,random",
                        help="which configurations besides the defaults to run")
    parser.add_argument("--e2e", action="store_true",
                        help="the end-to-end rows: hosttuned in auto mode, told nothing, on "
                             "jobs already running")
    parser.add_argument("--rows", default="profiles,a,b",
                        help="with --e2e, the rows besides the defaults: profiles (tuned's), "
                             "a (hosttuned started while the job runs), b (before it starts)")
    args = parser.parse_args(argv)
    args.configs = set(args.configs.split(","))
    if args.quick:
        args.repeats, args.budget, args.trial_repeats = 3, 4, 1
    # Ctrl-C and SIGTERM (also when started in the background, where SIGINT
    # is ignored) unwind through locked_and_restored, which restores the knobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    if os.geteuid() != 0:
        print("effectiveness: needs root (it changes vm.*, THP and read_ahead_kb)",
              file=sys.stderr)
        return 2
    disk = dataset_disk()
    subprocess.run([sys.executable, str(WORKLOAD_SCRIPT), "loader", "--prepare",
                    "--scale", str(args.scale)], check=True)
    state = tempfile.mkdtemp(prefix="hosttune-effectiveness-")
    env = {**os.environ, "HOSTTUNE_STATE_DIR": state, "HOSTTUNE_RUN_DIR": state}
    if args.e2e:
        return e2e_main(args, disk)
    print(f"# hosttune effectiveness: {args.repeats} rounds, tune/random budget "
          f"{args.budget} x {args.trial_repeats} runs, dataset disk {disk}, "
          f"{os.cpu_count()} CPUs")
    print("# throughput / kernel defaults of the same round (higher is better): "
          "median over rounds, lowest-highest in brackets")
    ratios: dict[str, list[float]] = {}
    for workload in args.workloads.split(","):
        start = time.monotonic()
        rows = bench_workload(workload, args, disk, env)
        for row in rows:
            ratios.setdefault(row.name, []).append(row.ratio)
        print(f"\n## {workload} ({CLASSES[workload]}), {time.monotonic() - start:.0f} s")
        print("| configuration | ratio | range | setting |\n|---|---:|---|---|")
        for row in rows:
            print(f"| {row.name} | {row.ratio:.2f} | {row.low:.2f}-{row.high:.2f} | {row.note} |",
                  flush=True)
    # One setting for every workload is what a fixed profile is: the
    # geometric mean over the workloads shows what each costs where it is wrong.
    print("\n## all workloads: geometric mean of the ratios, and the worst\n"
          "| configuration | geometric mean | worst |\n|---|---:|---:|")
    for name, values in ratios.items():
        print(f"| {name} | {statistics.geometric_mean(values):.2f} | {min(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
