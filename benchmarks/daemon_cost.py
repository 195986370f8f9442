#!/usr/bin/env python3
"""What hosttuned costs to leave running: CPU seconds per minute and per hour,
and resident memory, at its default interval, measured from /proc over a few
minutes; and the same for Debian's `tuned` daemon side by side when it is
installed (apt-get install tuned).

    .venv/bin/python benchmarks/daemon_cost.py [--duration 180] [--no-tuned] [--mode recommend]
    .venv/bin/python benchmarks/daemon_cost.py --grow 256 [--duration 240]

--grow MIB runs hosttuned in auto mode beside a PyTorch-style job (private
anonymous memory, never madvised) that grows by MIB every 20 s for the first
half of the run and then holds: auto mode keeps collapsing it into huge pages
(per-process THP). Its allowlist is emptied in the config, so no knob is
changed; the collapse passes are what is measured, their CPU time (the kernel
copies the pages on the daemon's account) in the growing half, and the
daemon's steady cost once the job holds still, in the other.

hosttuned runs as installed (the shipped config/hosttune.yaml: observe mode,
5 s interval; `--no-config` runs it without a file) with its state, socket
and config in a temporary directory, and the shipped workload model
(models/artifacts; `--site-model` gives another; the run prints which); the
figures exclude the first `--warmup` seconds (imports, first model load),
which are reported separately.

tuned runs in a private mount namespace (`unshare -m`) with tmpfs over
/etc/tuned, /run/tuned and /var/log/tuned, so its state files never touch the
host. Its configuration is Debian's tuned-main.conf (dynamic tuning on, 1 s
sleep interval) except `reapply_sysctl = 0`, and its profile has no plugins,
so it changes no knob: what is measured is the daemon itself, not a profile's
one-time work. The kernel boot values are checked before and after under the
shared kernel lock, and the script fails if any differs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hosttune.agent.sense.host import Host

KERNEL_LOCK = "/tmp/hosttune-kernel-tests.lock"
BOOT_VALUES = (
    "/proc/sys/vm/swappiness", "/proc/sys/vm/dirty_ratio", "/proc/sys/vm/dirty_background_ratio",
    "/proc/sys/kernel/numa_balancing", "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
)
TICKS = os.sysconf("SC_CLK_TCK")
HOST = Host()


def cpu_seconds(pid: int) -> float:
    stat = HOST.read_text(f"/proc/{pid}/stat")
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_parts(pid: int) -> dict[str, int]:
    """VmRSS and its parts, in bytes. RssFile (shared libraries' pages) moves
    with the page cache: the kernel maps the pages around a fault that are
    already cached, so the same daemon shows a few MB more right after its
    libraries were installed or read than after they were evicted."""
    out = {}
    for line in HOST.read_text(f"/proc/{pid}/status").splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def tree_pids(pid: int) -> list[int]:
    """pid and its descendants (tuned starts helper threads, not processes,
    but a wrapper such as unshare is a parent)."""
    out = [pid]
    for child in (HOST.read_optional(f"/proc/{pid}/task/{pid}/children") or "").split():
        out += tree_pids(int(child))
    return out


class Measured:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], pid_of: Any) -> None:
        self.name = name
        self.proc = proc
        self.pid_of = pid_of  # the pid to measure (the daemon, not a wrapper)
        self.cpu0 = 0.0
        self.t0 = 0.0
        self.rss: list[int] = []
        self.anon: list[int] = []
        self.file: list[int] = []
        self.start_cpu = 0.0

    def pid(self) -> int:
        return int(self.pid_of())

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = cpu_seconds(self.pid())
        self.start_cpu = self.cpu0

    def poll(self) -> None:
        parts = rss_parts(self.pid())
        self.rss.append(parts.get("VmRSS", 0))
        self.anon.append(parts.get("RssAnon", 0))
        self.file.append(parts.get("RssFile", 0))

    def result(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        cpu = cpu_seconds(self.pid()) - self.cpu0
        per_min = cpu / (elapsed / 60)
        return {
            "daemon": self.name, "seconds": round(elapsed, 1),
            "cpu_s": round(cpu, 3), "cpu_s_per_min": round(per_min, 4),
            "cpu_s_per_hour": round(per_min * 60, 2),
            "startup_cpu_s": round(self.start_cpu, 3),
            "rss_mb_median": round(statistics.median(self.rss) / 2**20, 1),
            "rss_mb_max": round(max(self.rss) / 2**20, 1),
            "rss_anon_mb_median": round(statistics.median(self.anon) / 2**20, 1),
            "rss_file_mb_median": round(statistics.median(self.file) / 2**20, 1),
        }


def boot_values() -> dict[str, str]:
    return {p: HOST.read_str(p) for p in BOOT_VALUES}


SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "hosttune.yaml"


GROWER = """
import mmap, sys, time
step, steps, hold = int(sys.argv[1]) << 20, int(sys.argv[2]), float(sys.argv[3])
maps = []
for n in range(steps):
    m = mmap.mmap(-1, step, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, step, 4096):
        m[i] = 1
    maps.append(m)
    time.sleep(hold)
time.sleep(3600)
"""


def no_knob_config() -> str:
    """Auto mode with every default allowlist entry removed: no knob changes."""
    from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST

    lines = ["mode: auto", "allowlist:"]
    lines += [f'  "{knob}": false' for knob in sorted(DEFAULT_ALLOWLIST)]
    return "\n".join(lines) + "\n"


def with_roles(text: str, roles: bool) -> str:
    """The config text with its top-level `roles:` key set (per-process
    roles on or off), so both can be measured back to back."""
    kept = [line for line in text.splitlines() if not line.startswith("roles:")]
    return "\n".join([*kept, f"roles: {'true' if roles else 'false'}"]) + "\n"


def start_hosttuned(tmp: Path, site_model: Path | None, config: bool, mode: str | None = None,
                    roles: bool | None = None
                    ) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    exe = Path(sys.executable).parent / "hosttuned"
    if mode == "auto":
        (tmp / "hosttune.yaml").write_text(no_knob_config())
        mode = None
    elif config:
        # As installed: the package puts this file in /etc/hosttune, so the
        # daemon parses YAML at start (PyYAML stays loaded: ~1 MB).
        shutil.copy(SHIPPED_CONFIG, tmp / "hosttune.yaml")
    if roles is not None:
        path = tmp / "hosttune.yaml"
        path.write_text(with_roles(path.read_text() if path.exists() else "", roles))
    if site_model is not None:
        # Where `hosttune model train` puts a site model; the daemon prefers it.
        dest = tmp / "state" / "models"
        dest.mkdir(parents=True)
        for suffix in (".npz", ".json"):
            shutil.copy(site_model.with_suffix(suffix), dest / f"workload{suffix}")
    env = dict(os.environ, HOSTTUNE_STATE_DIR=str(tmp / "state"),
               HOSTTUNE_RUN_DIR=str(tmp / "run"), HOSTTUNE_CONFIG=str(tmp / "hosttune.yaml"),
               HOSTTUNE_LOG="stderr")
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(var, None)
    log = open(tmp / "hosttuned.log", "wb")  # noqa: SIM115 (lives as long as the daemon)
    argv = [str(exe), "--foreground", *(["--mode", mode] if mode else [])]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    return proc, env


TUNED_SCRIPT = r"""
set -e
tmp=$1
# Everything tuned writes lands on tmpfs mounts of this namespace only; new
# directories are made inside those mounts, never on the host's filesystems.
mount -t tmpfs tmpfs /run && mkdir -p /run/tuned
mount -t tmpfs tmpfs /var/log
cp -a /etc/tuned/. "$tmp/etc-tuned/"
mount --bind "$tmp/etc-tuned" /etc/tuned
sed -i 's/^reapply_sysctl *=.*/reapply_sysctl = 0/' /etc/tuned/tuned-main.conf
mkdir -p /etc/tuned/hosttune-bench
printf '[main]\nsummary=no plugins: the daemon alone (hosttune daemon_cost benchmark)\n' \
    > /etc/tuned/hosttune-bench/tuned.conf
exec tuned --no-dbus --profile hosttune-bench --log "$tmp/tuned.log"
"""


def start_tuned(tmp: Path) -> subprocess.Popen[bytes] | str:
    tuned = shutil.which("tuned") or ("/usr/sbin/tuned" if Path("/usr/sbin/tuned").exists()
                                      else None)
    if tuned is None:
        return "tuned is not installed (apt-get install tuned)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is missing: tuned cannot be isolated from the host"
    (tmp / "etc-tuned").mkdir()
    script = tmp / "tuned.sh"
    script.write_text(TUNED_SCRIPT)
    log = open(tmp / "tuned.stderr", "wb")  # noqa: SIM115
    return subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", str(script),
                             str(tmp)], stdout=log, stderr=log)


def child_named(parent: int, name: str, timeout: float = 30) -> int:
    """The pid of `name` under `parent` (tuned runs below unshare's sh exec)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in tree_pids(parent):
            comm = HOST.read_optional(f"/proc/{pid}/comm") or ""
            cmd = (HOST.read_optional(f"/proc/{pid}/cmdline") or "").replace("\0", " ")
            if name in comm or f"/{name} " in cmd or cmd.startswith(f"{name} "):
                return pid
        time.sleep(0.2)
    raise RuntimeError(f"no {name} process under {parent}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=180.0, help="seconds measured (180)")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds excluded at start (15)")
    ap.add_argument("--no-tuned", action="store_true", help="measure hosttuned only")
    ap.add_argument("--site-model", type=Path, metavar="STEM",
                    help="a model from `hosttune model train -o STEM` for the daemon to load "
                    "(default: the shipped one, models/artifacts/workload-v1; the run "
                    "prints which model the daemon loaded)")
    ap.add_argument("--no-config", action="store_true",
                    help="start hosttuned without a configuration file (defaults, no YAML "
                    "parsed); default: the shipped config/hosttune.yaml, as installed")
    ap.add_argument("--mode", choices=("observe", "recommend", "auto"),
                    help="override the configured mode (recommend: keeps a plan ready, "
                    "made from the daemon's own samples); auto is not offered, it changes "
                    "the host")
    ap.add_argument("--grow", type=int, metavar="MIB", default=0,
                    help="auto mode (no knob allowlisted) beside a job growing by MIB every "
                    "20 s for half the run, then holding: the cost of per-process huge pages")
    ap.add_argument("--roles", choices=("on", "off"),
                    help="per-process roles on or off (default: as the config says)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    if args.roles and args.no_config:
        ap.error("--roles needs a configuration file: leave out --no-config")
    if args.grow:
        args.mode, args.no_tuned = "auto", True

    with open(KERNEL_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = boot_values()
        tmp = Path(tempfile.mkdtemp(prefix="hosttune-daemon-cost-"))
        procs: list[subprocess.Popen[bytes]] = []
        notes: list[str] = []
        results: list[dict[str, Any]] = []
        try:
            if args.grow:
                # started first, so the daemon's first process scan finds it; the
                # "torchrun" argument makes the sampler count it as AI work
                steps = max(1, int(args.duration / 2 / 20))
                procs.append(subprocess.Popen([sys.executable, "-c", GROWER, str(args.grow),
                                               str(steps), "20", "torchrun"]))
                time.sleep(1.0)
            hproc, env = start_hosttuned(tmp, args.site_model, not args.no_config, args.mode,
                                         None if args.roles is None else args.roles == "on")
            procs.append(hproc)
            measured = [Measured("hosttuned", hproc, lambda: hproc.pid)]
            if not args.no_tuned:
                tproc = start_tuned(tmp)
                if isinstance(tproc, str):
                    notes.append(f"tuned not measured: {tproc}")
                else:
                    procs.append(tproc)
                    try:
                        tpid = child_named(tproc.pid, "tuned")
                        measured.append(Measured("tuned", tproc, lambda: tpid))
                    except RuntimeError as exc:
                        err = (tmp / "tuned.stderr").read_text(errors="replace")[-500:]
                        notes.append(f"tuned did not start: {exc}: {err}")
            time.sleep(args.warmup)
            for p in procs:
                if p.poll() is not None:
                    name = "hosttuned" if p is hproc else "tuned"
                    log = tmp / ("hosttuned.log" if p is hproc else "tuned.stderr")
                    raise RuntimeError(f"{name} exited {p.returncode}: "
                                       f"{log.read_text(errors='replace')[-800:]}")
            for m in measured:
                m.begin()
                m.poll()
            end = time.monotonic() + args.duration
            half = time.monotonic() + args.duration / 2
            phase: dict[str, float] = {}
            while time.monotonic() < end:
                time.sleep(min(5.0, max(0.0, end - time.monotonic())))
                for m in measured:
                    m.poll()
                if args.grow and not phase and time.monotonic() >= half:
                    phase = {"t": time.monotonic(), "cpu": cpu_seconds(hproc.pid)}
            results = [m.result() for m in measured]
            if phase:
                grow_s = phase["t"] - measured[0].t0
                steady_s = time.monotonic() - phase["t"]
                results[0]["growing_cpu_s_per_min"] = round(
                    (phase["cpu"] - measured[0].cpu0) / (grow_s / 60), 4)
                results[0]["steady_cpu_s_per_min"] = round(
                    (cpu_seconds(hproc.pid) - phase["cpu"]) / (steady_s / 60), 4)
            status = subprocess.run([str(Path(sys.executable).parent / "hosttune"), "status",
                                     "--json"], env=env, capture_output=True, text=True,
                                    timeout=30, check=False)
            if status.returncode == 0:
                st = json.loads(status.stdout)
                results[0]["interval_s"] = st["sampling"]["interval_s"]
                results[0]["samples"] = st["sampling"]["samples"]
                engine = st.get("engine", {})
                model = engine.get("model")
                results[0]["model_loaded"] = bool(model)
                results[0]["model"] = (f"{model.get('source')} ({model.get('kind')})" if model
                                       else f"none: {engine.get('model_error')}")
                results[0]["workload"] = st["workload"]["label"]
                runner = (st.get("collapse") or {}).get("runner") or {}
                if args.grow:
                    results[0]["collapsed_mib"] = runner.get("collapsed_mib", 0)
                    results[0]["collapse_cpu_s"] = runner.get("cpu_seconds", 0)
                    results[0]["collapse_passes"] = runner.get("passes", 0)
                results[0]["mode"] = st["mode"]
                notes += [f"hosttuned: {n}" for n in st.get("notes", [])]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=15)
                if p.poll() is None:
                    p.kill()
                    p.wait()
            after = boot_values()
            shutil.rmtree(tmp, ignore_errors=True)
            fcntl.flock(lock, fcntl.LOCK_UN)
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        if changed:
            print(f"daemon_cost: host knobs changed during the run: {changed}", file=sys.stderr)
            return 1

    if args.json:
        print(json.dumps({"results": results, "notes": notes}, indent=2))
        return 0
    print(f"{'daemon':<10} {'CPU-s/min':>10} {'CPU-s/hour':>11} {'RSS MB':>7} "
          f"{'RSS max':>8} {'anon':>6} {'file':>6} {'startup CPU-s':>14}  measured")
    for r in results:
        print(f"{r['daemon']:<10} {r['cpu_s_per_min']:>10.4f} {r['cpu_s_per_hour']:>11.2f} "
              f"{r['rss_mb_median']:>7.1f} {r['rss_mb_max']:>8.1f} "
              f"{r['rss_anon_mb_median']:>6.1f} {r['rss_file_mb_median']:>6.1f} "
              f"{r['startup_cpu_s']:>14.2f}  {r['seconds']:.0f} s")
    h = results[0]
    if "samples" in h:
        print(f"hosttuned: {h['mode']} mode, interval {h['interval_s']:g} s, "
              f"{h['samples']} samples, "
              f"model loaded: {h['model_loaded']}, workload: {h['workload']}")
        print(f"hosttuned model: {h['model']}")
    if "growing_cpu_s_per_min" in h:
        gib = h.get("collapsed_mib", 0) / 1024
        per_gib = h.get("collapse_cpu_s", 0) / gib if gib else float("nan")
        print(f"auto mode beside a job growing by {args.grow} MiB / 20 s: "
              f"{h.get('collapse_passes', 0)} passes, {h.get('collapsed_mib', 0)} MiB "
              f"collapsed, {h.get('collapse_cpu_s', 0):.2f} CPU-s in the passes "
              f"({per_gib:.2f} CPU-s per GiB); daemon {h['growing_cpu_s_per_min']:.3f} "
              f"CPU-s/min while it grew, {h['steady_cpu_s_per_min']:.4f} once it held still")
    for note in notes:
        print(f"note: {note}")
    print("budget (DESIGN.md): RSS <= 40 MB, <= 0.05 CPU-s/min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
