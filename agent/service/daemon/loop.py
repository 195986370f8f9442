"""The daemon's loop: start-up and shutdown, signals, one tick per interval
(sample, rates, store), and at the end of each window the classification
(with hysteresis) that the auto-mode policy (`policy.py`) acts on. Requests
from the control socket (`handlers.py`) that must run here are run between
ticks.

Signals only set flags: SIGTERM/SIGINT stop (within seconds), SIGHUP reloads
the configuration (a bad file is refused and the old one stays in force).
"""

from __future__ import annotations

import fcntl
import grp
import math
import os
import signal
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from hosttune.agent.sense.errors import ConfigError, HosttuneError
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service import config as cfg
from hosttune.agent.service.control import ControlServer
from hosttune.agent.service.daemon.handlers import ADMIN_OPS, READ_OPS, Requests
from hosttune.agent.service.daemon.host_access import HostAccess, PartUnavailable
from hosttune.agent.service.daemon.policy import AutoPolicy
from hosttune.agent.service.daemon.services import RunInfo, Services
from hosttune.agent.service.daemon.window import SampleWindow
from hosttune.agent.service.log import Log
from hosttune.agent.service.notify import Notifier
from hosttune.agent.service.store import Store
from hosttune.agent.service.tracker import Verdict, WorkloadTracker
from hosttune.models.classifier import geometry_problem

if TYPE_CHECKING:
    from hosttune.agent.service.metrics import MetricsServer


class Daemon:
    def __init__(self, paths: Paths, config: cfg.Config, access: HostAccess, log: Log,
                 notifier: Notifier) -> None:
        self.services = Services(paths, config, access, log, notifier)
        self.info = RunInfo()
        self.window = SampleWindow(config.window)
        self.tracker = WorkloadTracker(hysteresis=config.hysteresis)
        self.policy = AutoPolicy(self.services, self.window)
        self.requests = Requests(self.services, self.info, self.window, self.tracker,
                                 self.policy, reload=self.reload)
        self.metrics: MetricsServer | None = None
        self._reload_asked = False
        self._instance_fd: int | None = None

    # -- signals and lifecycle ---------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.services.stop()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.request_reload()

    def request_stop(self) -> None:
        self.services.stop()

    def request_reload(self) -> None:
        self._reload_asked = True
        self.services.wake.set()

    def run(self) -> int:
        s = self.services
        s.paths.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_instance()
        s.opened = Store(s.paths.store, rows=s.config.retention.rows,
                         max_age_hours=s.config.retention.max_age_hours)
        self._recover()
        self.info.host = s.access.prepare()
        self.check_geometry()
        self.policy.remember_reverts(s.store)
        self._start_server()
        self._start_metrics()
        s.log("info", f"hosttuned started in {s.config.mode} mode, interval "
              f"{s.config.interval:g} s", mode=s.config.mode,
              config=s.config.source or "defaults")
        s.store.add_event("start", f"started in {s.config.mode} mode")
        s.notifier.ready(self.requests.status_line())
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _lock_instance(self) -> None:
        """One daemon per state directory: a second one would take over the
        socket and write the same journal. The kernel drops the lock when the
        holder dies, however it dies."""
        path = self.services.paths.state_dir / "hosttuned.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise HosttuneError(f"another hosttuned (pid {holder}) already runs on this "
                                "state directory", subject=str(path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._instance_fd = fd

    def _recover(self) -> None:
        """Unfinished transactions from a crash are rolled back before anything else."""
        s = self.services
        try:
            messages = s.access.recover()
        except PartUnavailable as exc:
            self.policy.blocked = str(exc)
            return
        except HosttuneError as exc:
            # Without a clean journal nothing may be changed: stay observing.
            self.policy.blocked = f"recovery failed: {exc}"
            s.log("error", f"could not roll back an unfinished transaction: {exc}",
                  journal=str(s.paths.journal))
            s.store.add_event("recover-failed", str(exc))
            return
        for message in messages:
            s.log("warning", f"recovered: {message}", journal=str(s.paths.journal))
            s.store.add_event("recovered", message)

    def check_geometry(self) -> None:
        """Logs once when the configured interval and window lie outside the
        rows and windows the loaded model was validated on: its answers there
        have no measured accuracy."""
        config = self.services.config
        geometry = (self.info.host.get("model") or {}).get("geometry")
        problem = None
        if geometry:
            problem = geometry_problem(geometry, config.interval,
                                       config.interval * config.window)
        if problem and problem != self.info.geometry_warning:
            self.services.log(
                "warning", f"{problem}; set interval and window inside that range or "
                "retrain the model validated there (`hosttune model train "
                "--validate INTERVAL/WINDOW`)", interval=f"{config.interval:g}",
                window=str(config.window))
        self.info.geometry_warning = problem

    def _start_server(self) -> None:
        s = self.services
        sock = s.config.socket
        self.info.server = ControlServer(
            s.paths.socket, self.requests.handle, read_ops=READ_OPS, admin_ops=ADMIN_OPS,
            group_gid=self._group_gid(sock.group), max_clients=sock.max_clients,
            timeout=sock.timeout, max_request_bytes=sock.max_request_bytes, log=s.log)
        self.info.server.start()

    def _group_gid(self, name: str) -> int | None:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            self.services.log("warning", f"group {name!r} does not exist: only root can use "
                              "the control socket (install the sysusers.d file or set "
                              "socket.group)", group=name)
            return None

    def _start_metrics(self) -> None:
        listener = self.services.config.metrics
        if not listener.enabled:
            return
        # http.server comes with it: 5.4 MB a daemon without the listener saves.
        from hosttune.agent.service.metrics import MetricsServer

        try:
            self.metrics = MetricsServer(listener.address, listener.port,
                                         self.requests.render_metrics)
            self.metrics.start()
        except OSError as exc:
            self.metrics = None
            self.services.log("error", f"metrics listener on {listener.address}:"
                              f"{listener.port}: {exc.strerror or exc}",
                              address=listener.address, port=listener.port)
            return
        self.services.log("info", f"metrics on http://{listener.address}:"
                          f"{self.metrics.port}/metrics")

    def _shutdown(self) -> None:
        s = self.services
        s.notifier.stopping("stopping")
        s.log("info", "stopping")
        if self.info.server is not None:
            self.info.server.stop()
        self.requests.jobs.cancel_all()
        if s.config.revert_on_stop:
            self.policy.revert_own()
        if self.metrics is not None:
            self.metrics.stop()
        if s.opened is not None:
            s.opened.add_event("stop", "stopped")
            s.opened.close()
        s.access.close()
        if self._instance_fd is not None:
            os.close(self._instance_fd)
            self._instance_fd = None

    # -- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        s = self.services
        next_tick = time.monotonic()
        while not s.stopping:
            # Cleared before the work it stands for: a request or signal that
            # arrives during this pass wakes the next wait at once.
            s.wake.clear()
            if self._reload_asked:
                self._reload_asked = False
                self.reload()
            self.requests.jobs.run(s.notifier.ping)
            self.policy.collect(self.tracker.stable)
            now = time.monotonic()
            if now >= next_tick:
                lateness = now - next_tick
                self._guarded(self._tick, lateness)
                interval = s.config.interval
                next_tick += interval
                after = time.monotonic()
                if next_tick <= after:  # a tick took longer than the interval
                    skipped = math.floor((after - next_tick) / interval) + 1
                    self.window.missed_ticks += skipped
                    next_tick += skipped * interval
            s.notifier.ping()
            timeout = next_tick - time.monotonic()
            ping = s.notifier.next_ping_in()
            if ping is not None:
                timeout = min(timeout, ping)
            if timeout > 0 and not s.stopping:
                s.wake.wait(timeout)

    def _guarded(self, fn: Callable[[float], None], arg: float) -> None:
        """One failed tick (a full disk under the store, a collector's bug) is
        logged and counted; the daemon keeps sampling, serving and pinging."""
        try:
            fn(arg)
        except Exception as exc:
            self.window.sample_errors += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.services.log("error", f"tick failed: {type(exc).__name__}: {exc}",
                              where=f"{where.filename}:{where.lineno}")

    def _tick(self, lateness: float) -> None:
        s, w = self.services, self.window
        w.last_lateness = lateness
        w.max_lateness = max(w.max_lateness, lateness)
        try:
            sample = s.access.sample()
        except HosttuneError as exc:
            w.sample_errors += 1
            s.log("error", f"sampling failed: {exc}")
            return
        prev = w.samples[-1] if w.samples else None
        rates = None if prev is None else s.access.rates(prev, sample)
        with s.lock:
            window_done = w.add(sample, rates)
        if rates is not None:
            s.store.add_sample(sample.wall, rates)
        if window_done:
            self._window_done()
        self.policy.on_tick(self.tracker.stable)
        s.notifier.status(self.requests.status_line())

    def _window_done(self) -> None:
        s = self.services
        try:
            verdict = s.access.classify(*self.window.for_classifier())
        except HosttuneError as exc:
            verdict = Verdict("unknown", 0.0, reason=str(exc))
        now = time.time()
        with s.lock:
            changed = self.tracker.update(verdict, now)
        s.store.add_workload(now, verdict.label, verdict.confidence, self.tracker.stable,
                             verdict.to_dict())
        if changed:
            s.log("info", f"workload is now {self.tracker.stable} (confidence "
                  f"{verdict.confidence:.2f})", workload=self.tracker.stable,
                  confidence=f"{verdict.confidence:.3f}")
            s.store.add_event("workload", f"workload is now {self.tracker.stable}",
                              verdict.to_dict())
        self.policy.on_window(self.tracker.stable, changed)

    # -- configuration -----------------------------------------------------------

    def reload(self) -> None:
        s = self.services
        s.notifier.reloading()
        path = s.paths.config
        try:
            new = cfg.load(path)
        except ConfigError as exc:
            s.log("error", f"configuration not reloaded, keeping the old one: {exc}",
                  config=str(path), key=exc.key or "", line=exc.line or "")
            s.store.add_event("reload-failed", str(exc))
            s.notifier.reloaded(self.requests.status_line())
            return
        old = s.config
        s.config = new
        s.log.set_level(new.log_level)
        self.tracker.hysteresis = new.hysteresis
        if new.window != old.window:
            with s.lock:
                self.window.resize(new.window)
        s.store.set_retention(new.retention.rows, new.retention.max_age_hours)
        server = self.info.server
        if server is not None:
            server.timeout = new.socket.timeout
            server.max_clients = new.socket.max_clients
            server.max_request_bytes = new.socket.max_request_bytes
            if new.socket.group != old.socket.group:
                server.apply_group(self._group_gid(new.socket.group))
        if new.metrics != old.metrics:
            if self.metrics is not None:
                self.metrics.stop()
                self.metrics = None
            self._start_metrics()
        if new.mode != "auto":
            self.policy.watch = None
        if (new.interval, new.window) != (old.interval, old.window):
            self.check_geometry()
        s.log("info", f"configuration reloaded: {new.mode} mode, interval "
              f"{new.interval:g} s", config=str(path), mode=new.mode)
        s.store.add_event("reload", f"configuration reloaded ({new.mode} mode)")
        s.notifier.reloaded(self.requests.status_line())
