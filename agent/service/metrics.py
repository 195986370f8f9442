"""The optional Prometheus endpoint: GET /metrics in the text format.

Off by default; on, it binds to 127.0.0.1 unless the config names another
address. One thread serves one request at a time with a short socket timeout,
so a slow or hostile scraper costs a few seconds of that thread, never the
sampling loop. Telemetry goes out as one family, `hosttune_telemetry`, with
the catalogue's metric name as a label, so no metric name has to be mangled
into a Prometheus name.
"""

from __future__ import annotations

import math
import os
import resource
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.processes import own_rss_bytes

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT = 2.0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def own_usage() -> tuple[float, int]:
    """(CPU seconds, resident bytes) of this process."""
    times = os.times()
    cpu = times.user + times.system
    rss = own_rss_bytes(Host())
    if rss is None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return cpu, rss


def render(telemetry: Mapping[str, float], state: Mapping[str, Any]) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("hosttune_telemetry", "gauge",
           "Latest telemetry value or per-second rate, by catalogue metric name")
    for name in sorted(telemetry):
        value = telemetry[name]
        if isinstance(value, int | float):
            out.append(f'hosttune_telemetry{{metric="{_label(name)}"}} {_num(float(value))}')
    family("hosttune_workload_info", "gauge", "The workload class hosttuned believes in")
    out.append(f'hosttune_workload_info{{class="{_label(str(state["workload"]))}",'
               f'mode="{_label(str(state["mode"]))}"}} 1')
    family("hosttune_workload_confidence", "gauge", "Confidence of the believed workload class")
    out.append(f"hosttune_workload_confidence {_num(float(state['confidence']))}")
    family("hosttune_changes_applied_total", "counter", "Plans applied since the daemon started")
    out.append(f"hosttune_changes_applied_total {int(state['applied'])}")
    family("hosttune_reverts_total", "counter", "Changes reverted because they hurt")
    out.append(f"hosttune_reverts_total {int(state['reverts'])}")
    family("hosttune_samples_total", "counter", "Samples taken since the daemon started")
    out.append(f"hosttune_samples_total {int(state['samples'])}")
    family("hosttune_sample_lateness_seconds", "gauge", "How late the last sample started")
    out.append(f"hosttune_sample_lateness_seconds {_num(float(state['lateness']))}")
    cpu, rss = own_usage()
    family("hosttune_daemon_cpu_seconds_total", "counter", "CPU time used by hosttuned")
    out.append(f"hosttune_daemon_cpu_seconds_total {_num(cpu)}")
    family("hosttune_daemon_resident_bytes", "gauge", "Resident memory of hosttuned")
    out.append(f"hosttune_daemon_resident_bytes {rss}")
    family("hosttune_daemon_uptime_seconds", "gauge", "Seconds since hosttuned started")
    out.append(f"hosttune_daemon_uptime_seconds {_num(float(state['uptime']))}")
    return "\n".join(out) + "\n"


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
