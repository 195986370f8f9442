"""Per-process roles: window features of one job (a process group) from
successive scans of its processes, and the host's class composed from the
roles of its jobs. Pure Python (no numpy): the daemon computes these every
window.

A scan is what `hosttune.agent.sense.telemetry.proc_evidence` reports at one
moment, as flat rows (`evidence_row`): cumulative counters (CPU seconds, I/O
bytes and syscalls, distinct sockets seen) and gauges (threads, RSS, open
files by kind, sockets). A counter's change over an interval is taken per
process identity (pid, start time): a process seen at both ends gives its
difference, one started inside the interval gives its whole count, and one
that was there before but not examined gives nothing (its past is not this
interval's work). A shell's pipelines often start and end between two
scans; their CPU reaches the shell's `cpu_children` when it reaps them.

Features are rates per second of the window and ratios, so they do not
depend on the row interval; no feature depends on the host's other load
except `host_cpu_share` (the job's share of the host's busy CPU), which the
model does not use: the composition does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ROLES = ("training", "inference_serving", "batch_inference", "data_preparation",
         "checkpoint_io", "background")
AI_ROLES = frozenset(ROLES[:-1])
ROLE_FEATURE_VERSION = 3

FRAMEWORK_FLAGS = ("torch", "tensorflow", "jax", "onnxruntime", "vllm", "triton",
                   "collective", "cann", "cuda", "sklearn", "numpy")
TRAIN_LAUNCHERS = frozenset(("torchrun", "deepspeed", "accelerate", "horovodrun", "msrun",
                             "colossalai", "megatron", "-m torch.distributed.run",
                             "-m torch.distributed.launch", "-m deepspeed"))
SERVE_LAUNCHERS = frozenset(("vllm", "sglang", "tritonserver", "text-generation-launcher",
                             "text-generation-server", "text-generation-router", "ollama",
                             "llama-server"))

_COUNTERS = ("cpu_user", "cpu_sys", "cpu_children", "read_bytes", "write_bytes", "rchar",
             "wchar", "syscr", "syscw", "sockets_seen")
_MIB = float(1 << 20)

# a job is active (its role matters to the host) above any of these
ACTIVE_CPU = 0.05  # cores
ACTIVE_IO = 1.0 * _MIB  # storage bytes/s
ACTIVE_CHARS = 64.0 * 1024  # bytes/s through read()/write() (sockets, pipes): a server's requests
# the host is busy above this share of all CPUs, or with an active job
BUSY_HOST_CPU = 0.25
BUSY_JOB_CPU = 0.25
BUSY_JOB_IO = 8.0 * _MIB
# below this CPU a job's bytes per CPU-second are noise over a near-zero
# divisor (a sleeping job's one flush): the feature reads 0, "no meaning"
PER_CPU_FLOOR = 0.01  # cores


@dataclass
class Scan:
    """One scan: the host's CPU counters and each examined process's row."""

    t: float
    host_busy: float  # CPU seconds, all CPUs, since boot
    host_total: float
    ncpu: int
    uptime: float
    procs: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)


def _f(row: Mapping[str, Any], key: str) -> float:
    v = row.get(key)
    if v is None or v == "":
        return 0.0
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _log(x: float) -> float:
    return math.log1p(max(0.0, x)) if math.isfinite(x) else math.nan


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _cv(xs: Sequence[float]) -> float:
    m = _mean(xs)
    if not math.isfinite(m) or m <= 1e-12:
        return 0.0
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)) / m


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def job_members(scan: Scan, pgrp: int) -> dict[tuple[int, int], dict[str, Any]]:
    return {k: r for k, r in scan.procs.items() if int(_f(r, "pgrp")) == pgrp}


def _interval(prev: Scan, cur: Scan, pgrp: int, hz_start: float) -> dict[str, float] | None:
    """Counter changes of job `pgrp` between two scans, plus the CPU of its
    busiest process; None when none of its processes can be measured over
    the interval."""
    before = job_members(prev, pgrp)
    now = job_members(cur, pgrp)
    if not now:
        return None
    out = dict.fromkeys(_COUNTERS, 0.0)
    out["births"] = 0.0
    per_proc: list[float] = []
    for key, row in now.items():
        old = before.get(key)
        if old is None:
            # started inside the interval: all of its counters are this interval's
            if key[1] / hz_start < prev.uptime - 1e-6:
                continue
            old = {}
            out["births"] += 1.0
        cpu = 0.0
        for c in _COUNTERS:
            d = max(0.0, _f(row, c) - _f(old, c))
            out[c] += d
            if c in ("cpu_user", "cpu_sys"):
                cpu += d
        per_proc.append(cpu)
    if not per_proc:
        return None  # nobody in it could be measured over this interval
    out["top_cpu"] = max(per_proc)
    return out


_COMPUTED = (
    "cpu_cores", "cpu_cv", "cpu_active_frac", "user_frac", "spread_cpu_frac",
    "log_procs", "log_threads", "log_rss_mib", "rss_slope", "anon_frac", "anon_huge_frac",
    "log_read_bps", "log_write_bps", "log_rchar_bps", "log_wchar_bps", "log_syscr",
    "log_syscw", "log_bytes_per_write", "log_bytes_per_read", "write_active_frac", "write_cv",
    "write_peak_ratio", "storage_write_frac", "storage_read_frac", "log_wchar_per_cpu",
    "log_rchar_per_cpu", "log_syscalls_per_cpu", "log_fd_regular", "log_fd_socket",
    "log_fd_pipe", "fd_accel", "log_fd_device", "listening", "log_connected",
    "log_socket_churn", *(f"fw_{n}" for n in FRAMEWORK_FLAGS), "launcher_train",
    "launcher_serve",
    # what tells a pipeline or a build from one program: processes started
    # per second (seen at a scan), CPU of children already reaped, the share
    # of its processes reading or writing a pipe, and whether it writes more
    # than it reads (expands: decoding, tokenising) or less (compresses, sums)
    "log_births_per_s", "child_cpu_frac", "pipe_proc_frac", "log_out_in",
    # storage bytes per CPU-second and storage written against read: what
    # tells a pipeline that reads a file, transforms it and writes the result
    # (data preparation) from maintenance that mostly reads (a scan, a backup
    # that compresses) or mostly writes (a database, a log rotation) at
    # another CPU cost per byte. The forest's random thresholds split one
    # feature at a time, so a ratio of two of them is one it cannot draw
    # itself (leave-one-program-out host macro-F1 over seeds 0-4: 0.903
    # without these three, 0.933 with).
    "log_read_per_cpu", "log_write_per_cpu", "log_storage_out_in",
)
# What the model reads: the computed set less the counts that describe one
# program rather than a role (its size, threads, processes, open files):
# with them the forest recognised programs it had seen and generalised worse
# to programs it had not (leave-one-program-out macro-F1 0.73 without them,
# 0.70 with, extra trees on the same data).
_PROGRAM_SHAPED = frozenset(("log_rss_mib", "log_threads", "log_procs", "log_fd_regular",
                             "log_fd_pipe", "log_fd_device", "log_fd_socket"))
_NOT_YET = frozenset(("log_births_per_s", "child_cpu_frac", "pipe_proc_frac", ))
FEATURES = tuple(n for n in _COMPUTED if n not in _PROGRAM_SHAPED | _NOT_YET)
COMPUTED = _COMPUTED


@dataclass(frozen=True)
class JobWindow:
    """One job's features over one window, and what the composition needs."""

    pgrp: int
    leader: str  # comm of its lowest pid
    pids: tuple[int, ...]
    features: tuple[float, ...]
    cpu_cores: float
    io_bps: float  # storage read + write
    host_cpu_share: float
    chars_bps: float = 0.0  # read()/write() bytes of every kind
    # every computed feature (_COMPUTED), the model's and the others: what
    # training tries other feature sets on
    computed: tuple[float, ...] = ()
    # a listening socket with clients connected: a server at work, however
    # light its load (socket traffic reaches no per-process counter)
    serving: bool = False
    # what vendor backends listed of its processes (shown, not a feature):
    # whether any was listed, mean device memory over the scans that saw the
    # job, mean summed busy share where the vendor keeps one, devices held
    accel_listed: bool = False
    accel_mem_bytes: float = 0.0
    accel_util: float | None = None
    accel_devices: tuple[int, ...] = ()

    @property
    def active(self) -> bool:
        return (self.cpu_cores >= ACTIVE_CPU or self.io_bps >= ACTIVE_IO
                or self.chars_bps >= ACTIVE_CHARS or self.serving)

    @property
    def numeric(self) -> bool:
        """Whether a numeric or AI library is loaded in any of its processes."""
        named = self.named()
        return any(named[f"fw_{n}"] for n in FRAMEWORK_FLAGS)

    @property
    def busy(self) -> bool:
        return self.cpu_cores >= BUSY_JOB_CPU or self.io_bps >= BUSY_JOB_IO

    def named(self) -> dict[str, float]:
        return dict(zip(FEATURES, self.features, strict=True))


def job_window(scans: Sequence[Scan], pgrp: int, hz: float = 100.0) -> JobWindow | None:
    """The features of job `pgrp` over `scans` (two or more, oldest first);
    None when it was seen in fewer than two of them."""
    if len(scans) < 2:
        return None
    dts: list[float] = []
    ivals: list[dict[str, float]] = []
    for prev, cur in itertools.pairwise(scans):
        iv = _interval(prev, cur, pgrp, hz)
        dt = cur.t - prev.t
        if iv is None or dt <= 0:
            continue
        ivals.append(iv)
        dts.append(dt)
    members = [job_members(s, pgrp) for s in scans]
    seen = [m for m in members if m]
    if not ivals or len(seen) < 2:
        return None
    dur = sum(dts)
    tot = {c: sum(iv[c] for iv in ivals) for c in (*_COUNTERS, "top_cpu")}
    cpu_i = [(iv["cpu_user"] + iv["cpu_sys"] + iv["cpu_children"]) / dt
             for iv, dt in zip(ivals, dts, strict=True)]
    wr_i = [iv["write_bytes"] / dt for iv, dt in zip(ivals, dts, strict=True)]
    cpu_all = tot["cpu_user"] + tot["cpu_sys"] + tot["cpu_children"]
    cpu = cpu_all / dur

    def gauge(key: str) -> list[float]:
        return [sum(_f(r, key) for r in m.values()) for m in seen]

    rss = gauge("rss")
    anon, filed, huge = gauge("rss_anon"), gauge("rss_file"), gauge("anon_huge")
    rss_mean = _mean(rss)
    span_min = max(1e-9, (scans[-1].t - scans[0].t) / 60.0)
    frameworks: set[str] = set()
    hints: set[str] = set()
    for m in seen:
        for r in m.values():
            frameworks.update(x for x in str(r.get("frameworks") or "").split(";") if x)
            hints.update(x for x in str(r.get("hints") or "").split(";") if x)
    syscalls = tot["syscr"] + tot["syscw"]
    wbps = tot["write_bytes"] / dur
    rbps = tot["read_bytes"] / dur
    f: list[float] = [
        cpu,
        _cv(cpu_i),
        sum(1 for x in cpu_i if x > ACTIVE_CPU) / len(cpu_i),
        _ratio(tot["cpu_user"], tot["cpu_user"] + tot["cpu_sys"]),
        # CPU outside the busiest process: loader workers, pipeline stages
        _ratio(cpu_all - tot["top_cpu"], cpu_all),
        _log(_mean([float(len(m)) for m in seen])),
        _log(_mean(gauge("threads"))),
        _log(rss_mean / _MIB),
        _ratio(rss[-1] - rss[0], rss_mean) / span_min if rss_mean > 0 else 0.0,
        _ratio(_mean(anon), _mean(anon) + _mean(filed)),
        _ratio(_mean(huge), _mean(anon)) if _mean(anon) > 0 else 0.0,
        _log(rbps),
        _log(wbps),
        _log(tot["rchar"] / dur),
        _log(tot["wchar"] / dur),
        _log(tot["syscr"] / dur),
        _log(tot["syscw"] / dur),
        _log(_ratio(tot["wchar"], tot["syscw"])) if tot["syscw"] else 0.0,
        _log(_ratio(tot["rchar"], tot["syscr"])) if tot["syscr"] else 0.0,
        sum(1 for x in wr_i if x > _MIB) / len(wr_i),
        _cv(wr_i),
        _ratio(max(wr_i), _mean(wr_i)) if _mean(wr_i) > 0 else 0.0,
        min(1.0, _ratio(tot["write_bytes"], tot["wchar"])) if tot["wchar"] > 0 else 0.0,
        min(1.0, _ratio(tot["read_bytes"], tot["rchar"])) if tot["rchar"] > 0 else 0.0,
        _log(_ratio(tot["wchar"], cpu_all)) if cpu_all > 0 else 0.0,
        _log(_ratio(tot["rchar"], cpu_all)) if cpu_all > 0 else 0.0,
        _log(_ratio(syscalls, cpu_all)) if cpu_all > 0 else 0.0,
        _log(_mean(gauge("fd_regular"))),
        _log(_mean(gauge("fd_socket"))),
        _log(_mean(gauge("fd_pipe"))),
        _mean(gauge("fd_accel")),
        _log(_mean(gauge("fd_device"))),
        _mean(gauge("listening")),
        _log(_mean(gauge("connected"))),
        _log(tot["sockets_seen"] / dur),
        *(1.0 if n in frameworks else 0.0 for n in FRAMEWORK_FLAGS),
        1.0 if hints & TRAIN_LAUNCHERS else 0.0,
        1.0 if hints & SERVE_LAUNCHERS else 0.0,
        _log(sum(iv["births"] for iv in ivals) / dur),
        _ratio(tot["cpu_children"], cpu_all) if cpu_all > 0 else 0.0,
        _mean([sum(1 for r in m.values() if _f(r, "fd_pipe") > 0) / len(m) for m in seen]),
        math.log((tot["wchar"] + 1.0) / (tot["rchar"] + 1.0)),
        _log(rbps / cpu) if cpu >= PER_CPU_FLOOR else 0.0,
        _log(wbps / cpu) if cpu >= PER_CPU_FLOOR else 0.0,
        math.log((wbps + 1.0) / (rbps + 1.0)),
    ]
    host_busy = scans[-1].host_busy - scans[0].host_busy
    util_seen = [[_f(r, "accel_util") for r in m.values() if r.get("accel_util") not in (None, "")]
                 for m in seen]
    devices = {int(d) for m in seen for r in m.values()
               for d in str(r.get("accel_devs") or "").split(";") if d.isdigit()}
    last = next(m for m in reversed(members) if m)
    pids = tuple(sorted(k[0] for k in last))
    leader = str(last[min(last, key=lambda k: k[0])].get("comm", ""))
    named = dict(zip(_COMPUTED, f, strict=True))
    return JobWindow(pgrp=pgrp, leader=leader, pids=pids,
                     features=tuple(named[n] for n in FEATURES), computed=tuple(f),
                     cpu_cores=cpu, io_bps=rbps + wbps,
                     chars_bps=(tot["rchar"] + tot["wchar"]) / dur,
                     serving=_mean(gauge("listening")) > 0 and _mean(gauge("connected")) > 0,
                     accel_listed=any(_f(r, "accel_listed") for m in seen for r in m.values()),
                     accel_mem_bytes=_mean(gauge("accel_mem")),
                     accel_util=_mean([sum(u) for u in util_seen if u]) if any(util_seen)
                     else None,
                     accel_devices=tuple(sorted(devices)),
                     host_cpu_share=_ratio(cpu_all, host_busy) if host_busy > 0 else math.nan)


def jobs_in(scans: Sequence[Scan]) -> list[int]:
    """Process groups seen in the scans."""
    return sorted({int(_f(r, "pgrp")) for s in scans for r in s.procs.values()})


def host_cpu_util(scans: Sequence[Scan]) -> float:
    """Busy share of all CPUs over the scans."""
    if len(scans) < 2:
        return math.nan
    total = scans[-1].host_total - scans[0].host_total
    return _ratio(scans[-1].host_busy - scans[0].host_busy, total)


@dataclass(frozen=True)
class JobRole:
    job: JobWindow
    role: str  # a role, or "unknown" below the model's threshold
    best: str
    confidence: float  # calibrated
    evidence: tuple[tuple[str, float, float], ...]  # (feature, value, push)


# roles that compute with a model: a job with no numeric library loaded
# (numpy, torch, ...) cannot be doing them, whatever its counters look like
_NEEDS_NUMERIC = frozenset(("training", "inference_serving", "batch_inference"))


def decide(job: JobWindow, best: str, confidence: float, unknown_below: float
           ) -> tuple[str, str, float, tuple[tuple[str, float, float], ...]]:
    """(role, best, confidence, extra evidence) from the model's best class
    and calibrated confidence: `unknown` below the threshold, and
    `background` for a model-computing role without a numeric library."""
    if best in _NEEDS_NUMERIC and not job.numeric:
        return "background", "background", confidence, (("no_numeric_library", 1.0, 0.0),)
    return (best if confidence >= unknown_below else "unknown"), best, confidence, ()


@dataclass(frozen=True)
class HostVerdict:
    label: str  # a workload class or "unknown"
    confidence: float
    reason: str
    roles: tuple[JobRole, ...]


def compose(roles: Iterable[JobRole], host_cpu: float, unknown: str = "unknown") -> HostVerdict:
    """The host's class from its jobs' roles: the active AI job with the most
    CPU and I/O names it; with none, a host at work (busy CPUs, or any
    active job) is `background` and a quiet one `idle`. A busy job of a role the model
    cannot name keeps the host from reading as idle: it is `unknown`."""
    roles = tuple(sorted(roles, key=lambda r: -(r.job.cpu_cores + r.job.io_bps / (64 * _MIB))))
    for r in roles:
        if r.job.active and r.role in AI_ROLES:
            return HostVerdict(r.role, r.confidence,
                               f"{r.job.leader} (pgrp {r.job.pgrp}) is {r.role}", roles)
    busy = [r for r in roles if r.job.busy]
    if any(r.role == unknown for r in busy):
        r = next(r for r in busy if r.role == unknown)
        return HostVerdict(unknown, r.confidence,
                           f"{r.job.leader} (pgrp {r.job.pgrp}) is busy with a role the model "
                           f"cannot name (best {r.best} {r.confidence:.2f})", roles)
    # any job at work (a light web server, say) makes the host not idle
    working = busy or [r for r in roles if r.job.active]
    if working or (math.isfinite(host_cpu) and host_cpu >= BUSY_HOST_CPU):
        why = (f"{working[0].job.leader} (pgrp {working[0].job.pgrp}) at work, no AI job"
               if working else f"CPUs {host_cpu:.0%} busy, no AI job")
        return HostVerdict("background", working[0].confidence if working else 1.0, why, roles)
    return HostVerdict("idle", 1.0, "no busy job and CPUs "
                       + (f"{host_cpu:.0%} busy" if math.isfinite(host_cpu) else "quiet"), roles)


def scans_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[Scan]:
    """Scans from the rows of a role trace (`record_roles`), host rows
    (pid 0) first in each scan."""
    scans: list[Scan] = []
    cur: Scan | None = None
    for row in rows:
        t = _f(row, "t")
        if int(_f(row, "pid")) == 0:
            cur = Scan(t=t, host_busy=_f(row, "cpu_user"), host_total=_f(row, "cpu_sys"),
                       ncpu=int(_f(row, "threads")), uptime=_f(row, "cpu_children"))
            scans.append(cur)
            continue
        if cur is None:
            continue
        cur.procs[(int(_f(row, "pid")), int(_f(row, "start")))] = dict(row)
    return scans


def window_starts(scans: Sequence[Scan], seconds: float, stride: float) -> list[tuple[int, int]]:
    """(first, last) scan indices of windows of `seconds` every `stride`."""
    out: list[tuple[int, int]] = []
    if len(scans) < 2:
        return out
    t0 = scans[0].t
    k = 0
    while True:
        start = t0 + k * stride
        end = start + seconds
        if end > scans[-1].t + 1e-6:
            break
        a = next(i for i, s in enumerate(scans) if s.t >= start - 1e-6)
        b = max(i for i, s in enumerate(scans) if s.t <= end + 1e-6)
        if b > a:
            out.append((a, b))
        k += 1
    return out


def subsample(scans: Sequence[Scan], interval: float) -> list[Scan]:
    """The scans a sampler every `interval` seconds would have made (counters
    are cumulative, so every k-th scan is exactly that)."""
    out: list[Scan] = []
    for s in scans:
        if not out or s.t - out[-1].t >= interval - 0.5:
            out.append(s)
    return out


def shipped_role_model() -> str:
    from pathlib import Path

    return str(Path(__file__).parent / "artifacts" / "roles-v4.npz")


class RoleModel:
    """The role forest served without numpy (`hosttune.models.forest`), its
    confidence calibrated on held-out programs (the schema's `calibration`:
    points of an isotonic map, interpolated as np.interp does)."""

    def __init__(self, path: str | None = None) -> None:
        from hosttune.models.forest import load_forest

        self.forest = load_forest(path or shipped_role_model(), features=FEATURES)
        self.source = self.forest.source
        self.unknown_below = self.forest.unknown_below
        cal = self.forest.schema.get("calibration")
        self.calibration: dict[str, list[float]] | None = cal if isinstance(cal, dict) else None

    def calibrated(self, confidence: float) -> float:
        cal = self.calibration
        if not cal or not cal.get("x"):
            return confidence
        xs, ys = cal["x"], cal["y"]
        if confidence <= xs[0]:
            return float(ys[0])
        if confidence >= xs[-1]:
            return float(ys[-1])
        for i in range(1, len(xs)):
            if confidence <= xs[i]:
                x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
                return float(y0 if x1 == x0 else y0 + (y1 - y0) * (confidence - x0) / (x1 - x0))
        return float(ys[-1])

    def classify(self, job: JobWindow, top: int = 4) -> JobRole:
        x = [v if math.isfinite(v) else 0.0 for v in job.features]
        pred = self.forest.classify(x, top=top)
        role, best, conf, extra = decide(job, pred.best, self.calibrated(pred.confidence),
                                         self.unknown_below)
        return JobRole(job=job, role=role, best=best, confidence=conf,
                       evidence=extra + tuple((e.feature, e.value, e.contribution)
                                              for e in pred.evidence))

    def verdict(self, scans: Sequence[Scan]) -> HostVerdict:
        """The host's class over `scans` from every job seen in them."""
        jobs = [j for j in (job_window(scans, g) for g in jobs_in(scans)) if j is not None]
        # A quiet job's role cannot change the composition (only active
        # jobs count), so the trees, most of a verdict's cost, skip it.
        return compose([self.classify(j) if j.active else
                        JobRole(j, "background", "background", 1.0, (("quiet", 0.0, 0.0),))
                        for j in jobs], host_cpu_util(scans))
