"""`hosttuned`: the host daemon.

One main thread runs the loop: sample on the interval, classify once a window
(with hysteresis), keep a recommendation ready in `recommend` mode, and in
`auto` mode apply allowlisted changes as transactions, watch the next windows
and revert a change that hurt. Every change to the host happens on this
thread, so the tuners' journal has one writer; the control socket's thread
hands such requests over as futures. Recommendations (which observe the host
for a second) are computed on a worker thread and picked up by the loop.

Signals only set flags: SIGTERM/SIGINT stop (within seconds), SIGHUP reloads
the configuration (a bad file is refused and the old one stays in force).
"""

from __future__ import annotations

import os
import sys

# Before anything imports numpy: one BLAS/OpenMP thread is plenty for a model
# evaluated once a window, and pools of idle threads cost memory.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import collections  # noqa: E402
import math  # noqa: E402
import queue  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from concurrent.futures import Future  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType  # noqa: E402
from typing import Any  # noqa: E402

from hosttune.agent.sense.errors import ConfigError, HosttuneError  # noqa: E402
from hosttune.agent.sense.paths import Paths  # noqa: E402
from hosttune.agent.sense.sample import Sample  # noqa: E402
from hosttune.agent.service import config as cfg  # noqa: E402
from hosttune.agent.service.control import STATUS_METRICS, RequestError  # noqa: E402
from hosttune.agent.service.engine import Engine, EngineUnavailable, Proposal  # noqa: E402
from hosttune.agent.service.log import Log  # noqa: E402
from hosttune.agent.service.notify import Notifier  # noqa: E402
from hosttune.agent.service.objective import CommandProbe, Score, harm, window_score  # noqa: E402
from hosttune.agent.service.tracker import Verdict, WorkloadTracker  # noqa: E402

READ_OPS = frozenset({"ping", "status", "telemetry", "history", "recommendation", "recommend"})
ADMIN_OPS = frozenset({"apply", "rollback", "reload"})
# A recommendation is refreshed this often even when the workload holds still.
REFRESH_WINDOWS = 20
# Exit status for a configuration that does not load (sysexits' EX_CONFIG,
# systemd's "CONFIG"): the unit's RestartPreventExitStatus= stops a restart
# loop that could only fail the same way.
EXIT_CONFIG = 78


@dataclass
class Watch:
    """A change auto mode made and is watching."""

    txn: str | None
    workload: str
    changes: list[dict[str, Any]]
    before: Score
    windows_left: int
    probe_before: float | None = None
    probe: CommandProbe | None = None
    started: float = field(default_factory=time.time)


class Daemon:
    def __init__(self, paths: Paths, config: cfg.Config, engine: Engine, log: Log,
                 notifier: Notifier) -> None:
        self.paths = paths
        self.config = config
        self.engine = engine
        self.log = log
        self.notifier = notifier
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = \
            queue.SimpleQueue()
        self.tracker = WorkloadTracker(hysteresis=config.hysteresis)
        self.samples: collections.deque[Sample] = collections.deque(maxlen=config.window + 1)
        self.rows: collections.deque[dict[str, float]] = collections.deque(maxlen=config.window)
        self.last_rates: dict[str, float] = {}
        self.last_sample: Sample | None = None
        self.sample_count = 0
        self.sample_errors = 0
        self.missed_ticks = 0
        self.last_lateness = 0.0
        self.max_lateness = 0.0
        self.in_window = 0
        self.windows = 0
        self.windows_since_change = 10**9
        self.recommendation: Proposal | None = None
        self.recommendation_error: str | None = None
        self.recommendation_at: float | None = None
        self._rec_future: Future[Proposal | None] | None = None
        self._rec_windows = 0
        self._rec_workload: str | None = None
        self._rec_pending: str | None = None
        self.recommendation_for: str | None = None
        self.applied: list[dict[str, Any]] = []
        self.reverts: list[dict[str, Any]] = []
        self.avoid: set[tuple[str, str, str]] = set()
        self.watch: Watch | None = None
        self.auto_blocked: str | None = None
        self.store: Any = None
        self.server: Any = None
        self.metrics: Any = None
        self.engine_info: dict[str, Any] = {}
        self.geometry_warning: str | None = None
        self._instance_fd: int | None = None

    # -- signals and lifecycle ---------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True
        self._wake.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def run(self) -> int:
        from hosttune.agent.service.store import Store

        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_instance()
        self.store = Store(self.paths.store, rows=self.config.retention.rows,
                           max_age_hours=self.config.retention.max_age_hours)
        self._recover()
        self.engine_info = self.engine.prepare()
        self._check_geometry()
        for event in self.store.events(limit=1000, kind="revert"):
            for change in event.detail.get("changes", []):
                self.avoid.add((event.detail.get("workload", ""), change.get("knob", ""),
                                str(change.get("value", ""))))
        self._start_server()
        self._start_metrics()
        self.log("info", f"hosttuned started in {self.config.mode} mode, interval "
                 f"{self.config.interval:g} s", mode=self.config.mode,
                 config=self.config.source or "defaults")
        self.store.add_event("start", f"started in {self.config.mode} mode")
        self.notifier.ready(self._status_line())
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _lock_instance(self) -> None:
        """One daemon per state directory: a second one would take over the
        socket and write the same journal. The kernel drops the lock when the
        holder dies, however it dies."""
        import fcntl

        path = self.paths.state_dir / "hosttuned.lock"
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
        try:
            messages = self.engine.recover()
        except EngineUnavailable as exc:
            self.auto_blocked = str(exc)
            return
        except HosttuneError as exc:
            # Without a clean journal nothing may be changed: stay observing.
            self.auto_blocked = f"recovery failed: {exc}"
            self.log("error", f"could not roll back an unfinished transaction: {exc}",
                     journal=str(self.paths.journal))
            self.store.add_event("recover-failed", str(exc))
            return
        for message in messages:
            self.log("warning", f"recovered: {message}", journal=str(self.paths.journal))
            self.store.add_event("recovered", message)

    def _check_geometry(self) -> None:
        """Logs once when the configured interval and window lie outside the
        rows and windows the loaded model was validated on: its answers there
        have no measured accuracy."""
        geometry = (self.engine_info.get("model") or {}).get("geometry")
        problem = None
        if geometry:
            from hosttune.models.classifier import geometry_problem

            problem = geometry_problem(geometry, self.config.interval,
                                       self.config.interval * self.config.window)
        if problem and problem != self.geometry_warning:
            self.log("warning", f"{problem}; set interval and window inside that range or "
                     "retrain the model validated there (`hosttune model train "
                     "--validate INTERVAL/WINDOW`)", interval=f"{self.config.interval:g}",
                     window=str(self.config.window))
        self.geometry_warning = problem

    def _start_server(self) -> None:
        from hosttune.agent.service.control import ControlServer

        sock = self.config.socket
        self.server = ControlServer(
            self.paths.socket, self._handle, read_ops=READ_OPS, admin_ops=ADMIN_OPS,
            group_gid=self._group_gid(sock.group), max_clients=sock.max_clients,
            timeout=sock.timeout, max_request_bytes=sock.max_request_bytes, log=self.log)
        self.server.start()

    def _group_gid(self, name: str) -> int | None:
        import grp

        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            self.log("warning", f"group {name!r} does not exist: only root can use the "
                     "control socket (install the sysusers.d file or set socket.group)",
                     group=name)
            return None

    def _start_metrics(self) -> None:
        listener = self.config.metrics
        if not listener.enabled:
            return
        from hosttune.agent.service.metrics import MetricsServer

        try:
            self.metrics = MetricsServer(listener.address, listener.port, self.render_metrics)
            self.metrics.start()
        except OSError as exc:
            self.metrics = None
            self.log("error", f"metrics listener on {listener.address}:{listener.port}: "
                     f"{exc.strerror or exc}", address=listener.address, port=listener.port)
            return
        self.log("info", f"metrics on http://{listener.address}:{self.metrics.port}/metrics")

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping")
        self.log("info", "stopping")
        if self.server is not None:
            self.server.stop()
        while True:  # requests queued for the loop are answered, not left hanging
            try:
                _fn, fut = self._jobs.get_nowait()
            except queue.Empty:
                break
            fut.cancel()
        own = [a for a in self.applied if a.get("by") == "auto" and a.get("ok")]
        if self.config.revert_on_stop and own:
            # Only what auto mode did: an administrator's own apply stays.
            first = own[0].get("txn")
            try:
                outcome = self.engine.rollback(f"before:{first}")
                self.log("info", f"reverted hosttune's changes on stop: {outcome.message}")
            except HosttuneError as exc:
                self.log("error", f"could not revert on stop: {exc}")
        if self.metrics is not None:
            self.metrics.stop()
        if self.store is not None:
            self.store.add_event("stop", "stopped")
            self.store.close()
        self.engine.close()
        if self._instance_fd is not None:
            os.close(self._instance_fd)
            self._instance_fd = None

    # -- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop:
            # Cleared before the work it stands for: a request or signal that
            # arrives during this pass wakes the next wait at once.
            self._wake.clear()
            if self._reload:
                self._reload = False
                self.reload()
            self._run_jobs()
            self._collect_recommendation()
            now = time.monotonic()
            if now >= next_tick:
                lateness = now - next_tick
                self._guarded(self._tick, lateness)
                next_tick += self.config.interval
                after = time.monotonic()
                if next_tick <= after:  # a tick took longer than the interval
                    skipped = math.floor((after - next_tick) / self.config.interval) + 1
                    self.missed_ticks += skipped
                    next_tick += skipped * self.config.interval
            self.notifier.ping()
            timeout = next_tick - time.monotonic()
            ping = self.notifier.next_ping_in()
            if ping is not None:
                timeout = min(timeout, ping)
            if timeout > 0 and not self._stop:
                self._wake.wait(timeout)

    def _guarded(self, fn: Callable[[float], None], arg: float) -> None:
        """One failed tick (a full disk under the store, a collector's bug) is
        logged and counted; the daemon keeps sampling, serving and pinging."""
        try:
            fn(arg)
        except Exception as exc:
            self.sample_errors += 1
            import traceback

            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.log("error", f"tick failed: {type(exc).__name__}: {exc}",
                     where=f"{where.filename}:{where.lineno}")

    def _tick(self, lateness: float) -> None:
        self.last_lateness = lateness
        self.max_lateness = max(self.max_lateness, lateness)
        try:
            sample = self.engine.sample()
        except HosttuneError as exc:
            self.sample_errors += 1
            self.log("error", f"sampling failed: {exc}")
            return
        prev = self.samples[-1] if self.samples else None
        with self._lock:
            self.samples.append(sample)
            self.last_sample = sample
            self.sample_count += 1
            if prev is not None:
                self.last_rates = self.engine.rates(prev, sample)
                self.rows.append(self.last_rates)
        if prev is not None:
            self.store.add_sample(sample.wall, self.last_rates)
            self.in_window += 1
        if self.in_window >= self.config.window:
            self.in_window = 0
            self._window_done()
        self.notifier.status(self._status_line())

    def _window_done(self) -> None:
        self.windows += 1
        self.windows_since_change += 1
        try:
            samples = list(self.samples)
            rows = list(self.rows)[-(len(samples) - 1):] if len(samples) > 1 else []
            verdict = self.engine.classify(samples[-len(rows) - 1:], rows)
        except HosttuneError as exc:
            verdict = Verdict("unknown", 0.0, reason=str(exc))
        now = time.time()
        with self._lock:
            changed = self.tracker.update(verdict, now)
        self.store.add_workload(now, verdict.label, verdict.confidence, self.tracker.stable,
                                verdict.to_dict())
        if changed:
            self.log("info", f"workload is now {self.tracker.stable} (confidence "
                     f"{verdict.confidence:.2f})", workload=self.tracker.stable,
                     confidence=f"{verdict.confidence:.3f}")
            self.store.add_event("workload", f"workload is now {self.tracker.stable}",
                                 verdict.to_dict())
        if self.watch is not None:
            self._watch_window(changed)
        self._rec_windows += 1
        # Until a class is believed the plan is the generic one ("unknown"
        # priors): something to show in recommend mode; auto never applies it.
        if self.config.mode in ("recommend", "auto") and (
                changed or self.recommendation_at is None
                or self._rec_windows >= REFRESH_WINDOWS):
            self._start_recommendation(self.tracker.stable or "unknown")

    # -- recommendations and auto mode -------------------------------------------

    def _start_recommendation(self, workload: str) -> None:
        if self._rec_future is not None and not self._rec_future.done():
            if workload != self._rec_workload:
                self._rec_pending = workload  # started when the one in flight is in
            return
        self._rec_pending = None
        self._rec_windows = 0
        self._rec_workload = workload
        fut: Future[Proposal | None] = Future()
        self._rec_future = fut

        def work() -> None:
            try:
                fut.set_result(self.engine.recommend(workload))
            except BaseException as exc:
                fut.set_exception(exc)
            self._wake.set()

        threading.Thread(target=work, name="hosttune-recommend", daemon=True).start()

    def _collect_recommendation(self) -> None:
        fut = self._rec_future
        if fut is None or not fut.done():
            return
        self._rec_future = None
        exc = fut.exception()
        with self._lock:
            self.recommendation_at = time.time()
            self.recommendation_for = self._rec_workload
            if exc is not None:
                self.recommendation = None
                self.recommendation_error = str(exc)
            else:
                self.recommendation = fut.result()
                self.recommendation_error = None
        if self._rec_pending is not None:
            self._start_recommendation(self._rec_pending)
            return
        if exc is not None:
            if not isinstance(exc, HosttuneError):
                self.log("error", f"recommender crashed: {type(exc).__name__}: {exc}")
            return
        proposal = self.recommendation
        if self.config.mode == "auto" and proposal is not None:
            self._maybe_apply(proposal)

    def _maybe_apply(self, proposal: Proposal) -> None:
        if self.auto_blocked or self.watch is not None:
            return
        if self.windows_since_change < self.config.auto.cooldown_windows:
            return
        if proposal.workload != self.tracker.stable:
            return
        try:
            plan = self.engine.allowed(proposal.plan, self._allowlist(), self.avoid)
        except (HosttuneError, ImportError) as exc:
            self.log("warning", f"auto mode cannot check the allowlist: {exc}")
            return
        if not plan.changes:
            return
        before = window_score(list(self.rows), self.config.objective)
        probe = None
        if self.config.objective.command:
            # The baseline run happens first; the plan is applied when it is done.
            probe = CommandProbe(self.config.objective.command, self.config.objective.timeout)
            while not probe.done and not self._stop:
                self.notifier.ping()
                probe._done.wait(1.0)
            if probe.value is None:
                self.log("warning", f"auto mode skipped: {probe.error}")
                return
        self._apply(plan, f"auto: workload {proposal.workload}", before,
                    probe.value if probe else None)

    def _apply(self, plan: Any, reason: str, before: Score, probe_before: float | None
               ) -> None:
        try:
            outcome = self.engine.apply(plan, reason, allowlist=self._allowlist(),
                                        admin_owned=self._admin_owned())
        except HosttuneError as exc:
            self.log("error", f"auto mode could not apply its plan: {exc}")
            self.store.add_event("apply-failed", str(exc))
            self.windows_since_change = 0
            return
        changes = [c.to_dict() for c in plan.changes]
        record = {"txn": outcome.txn, "wall": time.time(), "workload": plan.workload,
                  "changes": changes, "ok": outcome.ok, "message": outcome.message,
                  "by": "auto"}
        with self._lock:
            self.applied.append(record)
        self.windows_since_change = 0
        self.store.add_event("apply" if outcome.ok else "apply-failed", outcome.message, record)
        if not outcome.ok:
            self.log("error", f"auto mode: plan failed and was undone: {outcome.message}")
            return
        self.log("info", f"auto mode applied {len(changes)} change(s) for {plan.workload}: "
                 + ", ".join(f"{c['knob']}={c['value']}" for c in changes), txn=outcome.txn)
        self.watch = Watch(txn=outcome.txn, workload=plan.workload or "", changes=changes,
                           before=before, windows_left=self.config.auto.watch_windows,
                           probe_before=probe_before)

    def _allowlist(self) -> dict[str, dict[str, Any]]:
        return self.config.effective_allowlist(self.engine.allowlist_defaults())

    def _admin_owned(self) -> dict[str, str]:
        where = self.config.source or "the configuration"
        return {knob: f"overrides in {where}" for knob in self.config.overrides}

    def _watch_window(self, workload_changed: bool) -> None:
        watch = self.watch
        assert watch is not None
        if workload_changed:
            self.log("info", "the workload changed while a change was watched: keeping it "
                     "without a verdict", txn=watch.txn)
            self.store.add_event("kept", "workload changed during the watch", {"txn": watch.txn})
            self.watch = None
            return
        watch.windows_left -= 1
        if watch.windows_left > 0:
            return
        objective = self.config.objective
        after = window_score(list(self.rows), objective)
        before = watch.before
        if objective.command:
            if watch.probe is None:
                watch.probe = CommandProbe(objective.command, objective.timeout)
                watch.windows_left = 1  # judge at the next window, when it has run
                return
            if not watch.probe.done:
                watch.windows_left = 1
                return
            before = Score(objective=watch.probe_before)
            after = Score(objective=watch.probe.value)
        why = harm(before, after, objective, self.config.auto.regression)
        self.watch = None
        self._record_outcome(watch, before, after)
        if why is None:
            self.store.add_event("kept", "no harm measured", {
                "txn": watch.txn, "before": before.to_dict(), "after": after.to_dict()})
            return
        self._revert(watch, why, before, after)

    def _record_outcome(self, watch: Watch, before: Score, after: Score) -> None:
        """With an objective configured, the watch measured what the change did:
        keep it in outcomes.db, where `hosttune recommend` learns from this
        host's own results (the old values as the 1.0 point beside it). Without
        one, the PSI/CPU signals judge harm but measure no speed-up, so nothing
        is recorded rather than a guess."""
        objective = self.config.objective
        b, a = before.objective, after.objective
        if not (objective.metric or objective.command) or b is None or a is None:
            return
        if b <= 0 or a <= 0:
            return
        try:
            from hosttune.agent.service.outcome_store import OutcomeStore
            from hosttune.models.outcomes import Outcome, OutcomeError, effect_of
        except ImportError:
            return  # a build without the recommender's learning part
        effect = effect_of(a, b, lower_is_better=not objective.higher_is_better)
        new = {str(c["knob"]): str(c["value"]) for c in watch.changes}
        old = {str(c["knob"]): str(c["before"]) for c in watch.changes if "before" in c}
        what = objective.metric or objective.command or ""
        store = OutcomeStore(self.paths.state_dir / "outcomes.db")
        try:
            if old.keys() == new.keys():
                store.record(Outcome(watch.workload, "plan", old, 1.0, what))
            store.record(Outcome(watch.workload, "plan", new, effect, what))
        except OutcomeError as exc:
            self.log("warning", f"could not record the outcome of transaction {watch.txn}: "
                     f"{exc}", txn=watch.txn)

    def _revert(self, watch: Watch, why: str, before: Score, after: Score) -> None:
        try:
            outcome = self.engine.rollback(f"before:{watch.txn}")
        except HosttuneError as exc:
            self.log("error", f"could not revert a change that hurt ({why}): {exc}",
                     txn=watch.txn)
            return
        detail = {"txn": watch.txn, "workload": watch.workload, "changes": watch.changes,
                  "why": why, "before": before.to_dict(), "after": after.to_dict(),
                  "rollback": outcome.to_dict()}
        with self._lock:
            self.reverts.append({"wall": time.time(), **detail})
            for change in watch.changes:
                self.avoid.add((watch.workload, change["knob"], str(change["value"])))
        self.windows_since_change = 0
        self.store.add_event("revert", f"reverted: {why}", detail)
        self.log("warning", f"reverted a change that hurt: {why}", txn=watch.txn)

    # -- configuration -----------------------------------------------------------

    def reload(self) -> None:
        self.notifier.reloading()
        path = self.paths.config
        try:
            new = cfg.load(path)
        except ConfigError as exc:
            self.log("error", f"configuration not reloaded, keeping the old one: {exc}",
                     config=str(path), key=exc.key or "", line=exc.line or "")
            self.store.add_event("reload-failed", str(exc))
            self.notifier.reloaded(self._status_line())
            return
        old = self.config
        self.config = new
        self.log_level(new.log_level)
        self.tracker.hysteresis = new.hysteresis
        if new.window != old.window:
            self.samples = collections.deque(self.samples, maxlen=new.window + 1)
            self.rows = collections.deque(self.rows, maxlen=new.window)
        self.store.set_retention(new.retention.rows, new.retention.max_age_hours)
        if self.server is not None:
            self.server.timeout = new.socket.timeout
            self.server.max_clients = new.socket.max_clients
            self.server.max_request_bytes = new.socket.max_request_bytes
            if new.socket.group != old.socket.group:
                self.server.apply_group(self._group_gid(new.socket.group))
        if new.metrics != old.metrics:
            if self.metrics is not None:
                self.metrics.stop()
                self.metrics = None
            self._start_metrics()
        if new.mode != "auto" and self.watch is not None:
            self.watch = None
        if (new.interval, new.window) != (old.interval, old.window):
            self._check_geometry()
        self.log("info", f"configuration reloaded: {new.mode} mode, interval "
                 f"{new.interval:g} s", config=str(path), mode=new.mode)
        self.store.add_event("reload", f"configuration reloaded ({new.mode} mode)")
        self.notifier.reloaded(self._status_line())

    def log_level(self, level: str) -> None:
        self.log.set_level(level)

    # -- requests from the control socket ----------------------------------------

    def _handle(self, op: str, args: dict[str, Any], peer: Any, role: str) -> Any:
        if op == "ping":
            return {"pid": os.getpid(), "version": _version()}
        if op == "status":
            return self.status()
        if op == "telemetry":
            with self._lock:
                sample = self.last_sample
                return {"wall": sample.wall if sample else None,
                        "values": dict(sample.values) if sample else {},
                        "rates": dict(self.last_rates),
                        "errors": dict(sample.errors) if sample else {}}
        if op == "history":
            limit = _int_arg(args, "limit", 50, 1, 10000)
            return self._submit(lambda: self._history(limit))
        if op == "recommendation":
            return self._recommendation_dict()
        if op == "recommend":
            workload = args.get("workload") or self.tracker.stable or "unknown"
            if not isinstance(workload, str):
                raise RequestError("bad_request", "workload must be text")
            return self._submit(lambda: _proposal_dict(self.engine.recommend(workload)))
        if op == "apply":
            self._check_root(args)
            return self._submit(lambda: self._apply_request(args, peer))
        if op == "rollback":
            self._check_root(args)
            target = args.get("to")
            if not isinstance(target, str) or not target:
                raise RequestError("bad_request", "rollback needs \"to\": a transaction id, "
                                   "before:ID or \"baseline\"")
            force = _bool_arg(args, "force")
            return self._submit(lambda: self._rollback_request(target, force, peer))
        if op == "reload":
            return self._submit(self._reload_request)
        raise RequestError("unknown_op", op)

    def _check_root(self, args: Mapping[str, Any]) -> None:
        """A request for another host tree (a CLI run with --root) is not ours."""
        want = args.get("root", "/")
        mine = self.engine_info.get("root", "/")
        if not isinstance(want, str) or Path(want).resolve() != Path(mine).resolve():
            raise RequestError("other_root", f"this daemon manages {mine}, not {want}")

    def _submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on the main loop's thread; the socket thread waits for it."""
        fut: Future[Any] = Future()
        self._jobs.put((fn, fut))
        self._wake.set()
        return fut

    def _run_jobs(self) -> None:
        while True:
            try:
                fn, fut = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
            self.notifier.ping()

    def _rollback_request(self, target: str, force: bool, peer: Any) -> dict[str, Any]:
        outcome = self.engine.rollback(target, force=force, uid=peer.uid)
        self.store.add_event("rollback", outcome.message, {"to": target, "by": f"uid {peer.uid}",
                                                           "ok": outcome.ok})
        self.windows_since_change = 0
        return outcome.to_dict()

    def _reload_request(self) -> dict[str, Any]:
        self.reload()
        return {"mode": self.config.mode, "config": self.config.source or "defaults"}

    def _history(self, limit: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "events": [e.to_dict() for e in self.store.events(limit=limit)],
            "workload": self.store.workloads(limit=limit)}
        try:
            out["transactions"] = self.engine.history(limit)
        except EngineUnavailable as exc:
            out["transactions"] = []
            out["transactions_error"] = str(exc)
        return out

    def _apply_request(self, args: dict[str, Any], peer: Any) -> dict[str, Any]:
        text = args.get("plan")
        if not isinstance(text, str):
            raise RequestError("bad_request", "apply needs \"plan\": the plan file's text")
        try:
            from hosttune.tuners.knobs import Plan
        except ImportError as exc:
            raise EngineUnavailable(f"no tuners in this build: {exc}") from None
        plan = Plan.from_yaml(text, str(args.get("path", "<plan>")))
        outcome = self.engine.apply(plan, str(args.get("reason") or
                                              f"requested by uid {peer.uid} over the socket"),
                                    uid=peer.uid, allowlist=self._allowlist(),
                                    admin_owned=self._admin_owned(),
                                    force=_bool_arg(args, "force"))
        record = {"txn": outcome.txn, "wall": time.time(), "workload": plan.workload,
                  "changes": [c.to_dict() for c in plan.changes], "ok": outcome.ok,
                  "message": outcome.message, "by": f"uid {peer.uid}"}
        with self._lock:
            self.applied.append(record)
        self.windows_since_change = 0
        self.store.add_event("apply" if outcome.ok else "apply-failed", outcome.message, record)
        return outcome.to_dict()

    # -- what is shown -------------------------------------------------------------

    def _recommendation_dict(self) -> dict[str, Any] | None:
        with self._lock:
            return self._recommendation_unlocked()

    def status(self) -> dict[str, Any]:
        with self._lock:
            sample = self.last_sample
            verdict = self.tracker.last
            metrics = {}
            if sample is not None:
                merged = {**sample.values, **self.last_rates}
                metrics = {k: merged[k] for k in STATUS_METRICS if k in merged}
            return {
                "pid": os.getpid(),
                "version": _version(),
                "mode": self.config.mode,
                "config": self.config.source or "defaults",
                "started": self.started_wall,
                "uptime_s": round(time.monotonic() - self.started_mono, 3),
                "workload": {
                    "label": self.tracker.stable or "unknown",
                    "confidence": round(self.tracker.stable_confidence, 4),
                    "since": self.tracker.since,
                    "last_window": verdict.to_dict() if verdict else None,
                    "candidate": self.tracker.candidate,
                },
                "last_sample": None if sample is None else {
                    "wall": sample.wall, "age_s": round(time.time() - sample.wall, 3),
                    "metrics": metrics, "errors": dict(sample.errors)},
                "sampling": {
                    "interval_s": self.config.interval, "window": self.config.window,
                    "samples": self.sample_count, "errors": self.sample_errors,
                    "missed_ticks": self.missed_ticks,
                    "last_lateness_s": round(self.last_lateness, 4),
                    "max_lateness_s": round(self.max_lateness, 4),
                    "windows": self.windows},
                "recommendation": self._recommendation_unlocked(),
                "applied": list(self.applied[-20:]),
                "reverts": list(self.reverts[-20:]),
                "watching": None if self.watch is None else {
                    "txn": self.watch.txn, "windows_left": self.watch.windows_left},
                "auto_blocked": self.auto_blocked,
                "engine": dict(self.engine_info),
                "notes": list(self.engine.notes)
                + ([self.geometry_warning] if self.geometry_warning else []),
                "socket": {} if self.server is None else {
                    "clients": self.server.clients, "served": self.server.served,
                    "rejected": self.server.rejected},
            }

    def _recommendation_unlocked(self) -> dict[str, Any] | None:
        if self.recommendation is None:
            if self.recommendation_error:
                return {"error": self.recommendation_error}
            if self.recommendation_at is not None:  # asked, and nothing to change
                return {"workload": self.recommendation_for, "plan": {"changes": []},
                        "at": self.recommendation_at}
            return None
        data = _proposal_dict(self.recommendation)
        data["at"] = self.recommendation_at
        return data

    def _status_line(self) -> str:
        label = self.tracker.stable or "unknown"
        # Changes only when something worth a line does: it is sent on change.
        return (f"{self.config.mode}: workload {label}, "
                f"{len(self.applied)} applied, {len(self.reverts)} reverted")

    def render_metrics(self) -> str:
        from hosttune.agent.service.metrics import render

        with self._lock:
            rates = dict(self.last_rates)
            sample = self.last_sample
            values = dict(sample.values) if sample else {}
            verdict = self.tracker.last
            probabilities = {}
            if verdict is not None:
                probabilities[verdict.label] = verdict.confidence
            state = {
                "mode": self.config.mode, "workload": self.tracker.stable or "unknown",
                "confidence": self.tracker.stable_confidence,
                "applied": len(self.applied), "reverts": len(self.reverts),
                "samples": self.sample_count, "lateness": self.last_lateness,
                "uptime": time.monotonic() - self.started_mono,
            }
        return render({**values, **rates}, state)


def _proposal_dict(proposal: Proposal | None) -> dict[str, Any]:
    if proposal is None:
        return {"workload": None, "changes": [], "report": None}
    return {"workload": proposal.workload, "plan": proposal.plan.to_dict(),
            "report": proposal.report}


def _bool_arg(args: Mapping[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise RequestError("bad_request", f"{name} must be true or false")
    return value


def _int_arg(args: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestError("bad_request", f"{name} must be an integer {lo}..{hi}")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hosttune")
    except PackageNotFoundError:
        return "0+unknown"


def check_config(path: str | None) -> int:
    """`hosttuned --check-config [FILE]`: 0 when the file loads, else one line
    naming file, key and line on stderr and 1 (ExecStartPre, packaging)."""
    target = path if path is not None else str(Paths.from_env().config)
    try:
        cfg.load(target, missing_ok=path is None)
    except ConfigError as exc:
        print(f"hosttuned: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="hosttuned", description="hosttune host daemon")
    parser.add_argument("--check-config", nargs="?", const="", default=None, metavar="FILE",
                        help="check the configuration (default file if none given) and exit")
    parser.add_argument("--foreground", action="store_true",
                        help="run in the foreground (the only way it runs; for systemd)")
    parser.add_argument("--mode", choices=cfg.MODES,
                        help="override the configured mode for this run")
    parser.add_argument("--root", default="/", metavar="DIR",
                        help="act on the host tree under DIR instead of / (trials on a "
                        "copy or a fixture tree)")
    args = parser.parse_args(argv)
    if args.check_config is not None:
        return check_config(args.check_config or None)
    paths = Paths.from_env()
    try:
        config = cfg.load(paths.config)
        if args.mode:
            config = cfg.with_mode(config, args.mode)
    except ConfigError as exc:
        print(f"hosttuned: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log = Log(config.log_level)
    from hosttune.agent.sense.host import Host
    from hosttune.agent.service.engine import HostEngine

    # The AI-process scan is most of a sample's cost (13 ms over ~90 processes
    # here, against ~1.5 ms for everything else): once a minute is enough to
    # know which processes are AI work.
    engine = HostEngine(Host(args.root), paths.state_dir, backends=config.backends,
                        process_every=max(1, round(60 / config.interval)),
                        pcie_every=config.accelerators.pcie_every)
    daemon = Daemon(paths, config, engine, log, Notifier())
    daemon.install_signals()
    try:
        return daemon.run()
    except HosttuneError as exc:
        log("error", f"hosttuned cannot run: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
