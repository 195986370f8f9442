"""The optional Prometheus endpoint: GET /metrics in the text format.

Off by default; on, it binds to 127.0.0.1 unless the config names another
address. One thread serves one request at a time with a short socket timeout,
so a slow or hostile scraper costs a few seconds of that thread, never the
sampling loop.

Only what hosttune alone knows goes out: what it believes runs here, what it
did about it, and what it costs. Host counters (CPU time, memory, PSI, disks,
network) are node_exporter's: exporting them again would double a fleet's
series for nothing. Every label set is bounded by a fixed vocabulary (the
workload classes, the process roles, transaction results), never by a pid or
a knob name, so one host adds a few dozen series whatever runs on it.
"""

from __future__ import annotations

import math
import os
import resource
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.processes import own_rss_bytes
from hosttune.agent.service.histogram import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT = 2.0

MODES = ("observe", "recommend", "auto")
# How an apply ended: every knob set, refused before anything was written (an
# admin owns a knob, outside the allowlist...), or failed and undone.
APPLY_RESULTS = ("applied", "refused", "failed")
# Who put knobs back: auto mode after measured harm, or an administrator.
REVERT_BY = ("auto", "admin")
# Processes with no role yet: the role model names one per process; until
# it has, a process that looks like AI work is counted here.
UNASSIGNED_ROLE = "unassigned"


@dataclass
class DaemonMetrics:
    """One scrape's view of the daemon, copied under its lock."""

    version: str
    mode: str
    workload: str
    confidence: float
    classes: Sequence[str]
    workload_changes: int
    roles: Mapping[str, int]
    role_names: Sequence[str]
    applies: Mapping[str, int]
    reverts: Mapping[str, int]
    knobs_refused: int
    knobs_admin_owned: int
    knobs_advised: int
    knobs_recommended: int
    drift: int | None
    samples: int
    sample_errors: int
    missed_ticks: int
    lateness: Histogram
    started_wall: float
    # per-process huge pages (auto mode): passes, bytes collapsed, their CPU time
    collapse_passes: int = 0
    collapsed_bytes: float = 0.0
    collapse_cpu_seconds: float = 0.0


def apply_result(record: Mapping[str, Any]) -> str:
    """One of APPLY_RESULTS for an apply the daemon recorded."""
    if record.get("ok"):
        return "applied"
    return "refused" if record.get("refused") else "failed"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def own_usage(host: Host) -> tuple[float, int, int]:
    """(CPU seconds, resident bytes, open fds) of this process."""
    times = os.times()
    cpu = times.user + times.system
    rss = own_rss_bytes(host)
    if rss is None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return cpu, rss, len(host.listdir_optional("/proc/self/fd"))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> None:
        pairs = ",".join(f'{k}="{_label(v)}"' for k, v in labels)
        self.lines.append(f"{name}{{{pairs}}} {_num(value)}" if pairs
                          else f"{name} {_num(value)}")

    def one_of(self, name: str, label: str, names: Iterable[str], current: str) -> None:
        """A state set: every allowed value as a series, 1 for the current
        one, so a change is a value change rather than a series appearing."""
        for value in names:
            self.sample(name, 1 if value == current else 0, [(label, value)])


def render(m: DaemonMetrics) -> str:
    w = _Writer()
    w.family("hosttune_build_info", "gauge", "hosttune's version; always 1")
    w.sample("hosttune_build_info", 1, [("version", m.version)])
    w.family("hosttune_mode", "gauge", "The configured mode (observe, recommend, auto): "
             "1 for the one in force")
    w.one_of("hosttune_mode", "mode", MODES, m.mode)
    w.family("hosttune_workload_info", "gauge",
             "The workload class hosttuned believes runs here; always 1")
    w.sample("hosttune_workload_info", 1, [("class", m.workload)])
    w.family("hosttune_workload_class", "gauge",
             "Every workload class hosttune knows: 1 for the believed one, else 0")
    w.one_of("hosttune_workload_class", "class", m.classes, m.workload)
    w.family("hosttune_workload_confidence", "gauge",
             "Classifier confidence (0-1) of the believed workload class")
    w.sample("hosttune_workload_confidence", m.confidence)
    w.family("hosttune_workload_changes_total", "counter",
             "Times the believed workload class changed")
    w.sample("hosttune_workload_changes_total", m.workload_changes)
    w.family("hosttune_processes", "gauge",
             "Processes that look like AI work in the last sample, by role")
    for role in m.role_names:
        w.sample("hosttune_processes", m.roles.get(role, 0), [("role", role)])

    w.family("hosttune_applies_total", "counter",
             "Plans hosttuned applied as one transaction (auto mode or over the socket), "
             "by result")
    for result in APPLY_RESULTS:
        w.sample("hosttune_applies_total", m.applies.get(result, 0), [("result", result)])
    w.family("hosttune_reverts_total", "counter",
             "Rollbacks: by auto mode after a change hurt, or asked by an administrator")
    for by in REVERT_BY:
        w.sample("hosttune_reverts_total", m.reverts.get(by, 0), [("by", by)])
    w.family("hosttune_knobs_refused_total", "counter",
             "Knob changes a transaction refused (admin-owned, outside the allowlist or "
             "its bounds, isolated CPUs, changed by someone else)")
    w.sample("hosttune_knobs_refused_total", m.knobs_refused)
    w.family("hosttune_recommended_changes", "gauge",
             "Changes in the current recommendation hosttune may make")
    w.sample("hosttune_recommended_changes", m.knobs_recommended)
    w.family("hosttune_advised_knobs", "gauge",
             "Knobs the current recommendation only advises on (hosttune leaves them)")
    w.sample("hosttune_advised_knobs", m.knobs_advised)
    w.family("hosttune_admin_owned_knobs", "gauge",
             "Knobs the current recommendation would change but an administrator owns "
             "(sysctl.d, kernel command line, config overrides)")
    w.sample("hosttune_admin_owned_knobs", m.knobs_admin_owned)
    if m.drift is not None:
        w.family("hosttune_drifted_knobs", "gauge",
                 "Knobs hosttune set that someone else has changed since")
        w.sample("hosttune_drifted_knobs", m.drift)

    w.family("hosttune_collapse_passes_total", "counter",
             "Per-process huge-page passes (MADV_COLLAPSE of running AI processes)")
    w.sample("hosttune_collapse_passes_total", m.collapse_passes)
    w.family("hosttune_collapsed_bytes_total", "counter",
             "Anonymous memory of running processes those passes turned into huge pages")
    w.sample("hosttune_collapsed_bytes_total", m.collapsed_bytes)
    w.family("hosttune_collapse_cpu_seconds_total", "counter",
             "CPU time the passes took (the kernel copies the pages on the daemon's account)")
    w.sample("hosttune_collapse_cpu_seconds_total", m.collapse_cpu_seconds)

    w.family("hosttune_samples_total", "counter", "Samples taken since the daemon started")
    w.sample("hosttune_samples_total", m.samples)
    w.family("hosttune_sample_errors_total", "counter",
             "Sampling passes that failed since the daemon started")
    w.sample("hosttune_sample_errors_total", m.sample_errors)
    w.family("hosttune_sample_ticks_missed_total", "counter",
             "Sampling ticks skipped because the loop was a whole interval late")
    w.sample("hosttune_sample_ticks_missed_total", m.missed_ticks)
    h = m.lateness
    name = "hosttune_sample_lateness_seconds"
    w.family(name, "histogram", "How late each sample started against its schedule")
    for bound, count in zip(h.bounds, h.counts, strict=True):
        w.sample(f"{name}_bucket", count, [("le", _num(bound))])
    w.sample(f"{name}_bucket", h.count, [("le", "+Inf")])
    w.sample(f"{name}_sum", h.total)
    w.sample(f"{name}_count", h.count)

    # The standard process_* families (as Prometheus client libraries name
    # them), so the daemon's cost sits beside every other exporter's.
    cpu, rss, fds = own_usage(Host())
    w.family("process_cpu_seconds_total", "counter",
             "Total user and system CPU time spent in seconds")
    w.sample("process_cpu_seconds_total", cpu)
    w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes")
    w.sample("process_resident_memory_bytes", rss)
    w.family("process_start_time_seconds", "gauge",
             "Start time of the process since unix epoch in seconds")
    w.sample("process_start_time_seconds", m.started_wall)
    w.family("process_open_fds", "gauge", "Number of open file descriptors")
    w.sample("process_open_fds", fds)
    return "\n".join(w.lines) + "\n"


class MetricsServer:
    def __init__(self, address: str, port: int, render_fn: Callable[[], str]) -> None:
        if address == "localhost":
            address = "127.0.0.1"
        render_ref = render_fn

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT  # per connection: slow clients are dropped

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = render_ref().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would flood the journal

        family = 10 if ":" in address else 2  # AF_INET6 / AF_INET
        server_cls = type("Server", (HTTPServer,), {"address_family": family,
                                                    "request_queue_size": 8})
        self._server = server_cls((address, port), Handler)
        self._server.timeout = REQUEST_TIMEOUT
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.5},
                                        name="hosttune-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
