"""The control socket's requests, the status dict and the metrics text.

Reads answer from the loop's state under the shared lock, on the socket's
thread. Anything that writes (apply, rollback, reload) or reads the journal
and store is handed to the loop's thread as a future (`MainThreadJobs`), so
the journal keeps one writer."""

from __future__ import annotations

import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

from hosttune.agent.sense.sample import AIProcess
from hosttune.agent.service.control import STATUS_METRICS, Peer, RequestError
from hosttune.agent.service.daemon.host_access import PartUnavailable
from hosttune.agent.service.daemon.policy import AutoPolicy, proposal_dict
from hosttune.agent.service.daemon.services import RunInfo, Services
from hosttune.agent.service.daemon.window import SampleWindow
from hosttune.agent.service.tracker import WorkloadTracker
from hosttune.models import workload_classes
from hosttune.models.workload_classes import UNKNOWN
from hosttune.tuners.knobs import Plan

READ_OPS = frozenset({"ping", "status", "telemetry", "history", "recommendation", "recommend"})
ADMIN_OPS = frozenset({"apply", "rollback", "reload"})
# Process roles (the classes a process can be doing; "idle" is a host's, not a
# process's): the metrics endpoint's label values, fixed so series stay bounded.
ROLES = tuple(c for c in workload_classes.names() if c != "idle")
# How long a scrape waits for the loop's thread to count drifted knobs.
DRIFT_WAIT = 1.0


class MainThreadJobs:
    """Work the socket's thread hands to the loop's thread."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = \
            queue.SimpleQueue()
        self._wake = wake

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        self._queue.put((fn, fut))
        self._wake()
        return fut

    def run(self, after_each: Callable[[], None]) -> None:
        while True:
            try:
                fn, fut = self._queue.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
            after_each()

    def cancel_all(self) -> None:
        """At stop: queued requests are answered, not left hanging."""
        while True:
            try:
                _fn, fut = self._queue.get_nowait()
            except queue.Empty:
                return
            fut.cancel()


class Requests:
    def __init__(self, services: Services, info: RunInfo, window: SampleWindow,
                 tracker: WorkloadTracker, policy: AutoPolicy, *,
                 reload: Callable[[], None]) -> None:
        self.services = services
        self.info = info
        self.window = window
        self.tracker = tracker
        self.policy = policy
        self.jobs = MainThreadJobs(services.wake.set)
        self._reload = reload
        # for the metrics endpoint (read and written on its thread only)
        self._version: str | None = None
        self._drift: int | None = None
        self._drift_future: Future[Any] | None = None
        self._rollbacks = 0  # asked over the socket and done

    def handle(self, op: str, args: dict[str, Any], peer: Peer, role: str) -> Any:
        s = self.services
        if op == "ping":
            return {"pid": os.getpid(), "version": package_version()}
        if op == "status":
            return self.status()
        if op == "telemetry":
            with s.lock:
                sample = self.window.last_sample
                return {"wall": sample.wall if sample else None,
                        "values": dict(sample.values) if sample else {},
                        "rates": dict(self.window.last_rates),
                        "errors": dict(sample.errors) if sample else {}}
        if op == "history":
            limit = _int_arg(args, "limit", 50, 1, 10000)
            return self.jobs.submit(lambda: self._history(limit))
        if op == "recommendation":
            with s.lock:
                return self.policy.recommendation_dict()
        if op == "recommend":
            workload = args.get("workload") or self.tracker.stable or "unknown"
            if not isinstance(workload, str):
                raise RequestError("bad_request", "workload must be text")
            return self.jobs.submit(lambda: self._recommend(workload))
        if op == "apply":
            self._check_root(args)
            return self.jobs.submit(lambda: self._apply(args, peer))
        if op == "rollback":
            self._check_root(args)
            target = args.get("to")
            if not isinstance(target, str) or not target:
                raise RequestError("bad_request", "rollback needs \"to\": a transaction id, "
                                   "before:ID or \"baseline\"")
            force = _bool_arg(args, "force")
            return self.jobs.submit(lambda: self._rollback(target, force, peer))
        if op == "reload":
            return self.jobs.submit(self._reload_now)
        raise RequestError("unknown_op", op)

    def _check_root(self, args: Mapping[str, Any]) -> None:
        """A request for another host tree (a CLI run with --root) is not ours."""
        want = args.get("root", "/")
        mine = self.info.host.get("root", "/")
        if not isinstance(want, str) or Path(want).resolve() != Path(mine).resolve():
            raise RequestError("other_root", f"this daemon manages {mine}, not {want}")

    def _recommend(self, workload: str) -> dict[str, Any]:
        s = self.services
        with s.lock:
            latest, rates = self.window.last_sample, dict(self.window.last_rates)
        return proposal_dict(s.access.recommend(workload, latest, rates))

    def _rollback(self, target: str, force: bool, peer: Peer) -> dict[str, Any]:
        outcome = self.services.access.rollback(target, force=force, uid=peer.uid)
        if outcome.ok:
            self._rollbacks += 1
        self.services.store.add_event("rollback", outcome.message, {
            "to": target, "by": f"uid {peer.uid}", "ok": outcome.ok})
        self.policy.windows_since_change = 0
        return outcome.to_dict()

    def _reload_now(self) -> dict[str, Any]:
        self._reload()
        config = self.services.config
        return {"mode": config.mode, "config": config.source or "defaults"}

    def _history(self, limit: int) -> dict[str, Any]:
        store = self.services.store
        out: dict[str, Any] = {
            "events": [e.to_dict() for e in store.events(limit=limit)],
            "workload": store.workloads(limit=limit)}
        try:
            out["transactions"] = self.services.access.history(limit)
        except PartUnavailable as exc:
            out["transactions"] = []
            out["transactions_error"] = str(exc)
        return out

    def _apply(self, args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        text = args.get("plan")
        if not isinstance(text, str):
            raise RequestError("bad_request", "apply needs \"plan\": the plan file's text")
        plan = Plan.from_yaml(text, str(args.get("path", "<plan>")))
        outcome = self.services.access.apply(
            plan, str(args.get("reason") or f"requested by uid {peer.uid} over the socket"),
            uid=peer.uid, allowlist=self.policy.allowlist(),
            admin_owned=self.policy.admin_owned(), force=_bool_arg(args, "force"))
        self.policy.record_apply({
            "txn": outcome.txn, "wall": time.time(), "workload": plan.workload,
            "changes": [c.to_dict() for c in plan.changes], "ok": outcome.ok,
            "message": outcome.message, "by": f"uid {peer.uid}",
            "refused": [c["knob"] for c in outcome.changes if c.get("status") == "refused"]})
        return outcome.to_dict()

    # -- what is shown -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        s, w, tracker, policy, info = (self.services, self.window, self.tracker, self.policy,
                                       self.info)
        with s.lock:
            sample = w.last_sample
            verdict = tracker.last
            metrics = {}
            if sample is not None:
                merged = {**sample.values, **w.last_rates}
                metrics = {k: merged[k] for k in STATUS_METRICS if k in merged}
            server = info.server
            return {
                "pid": os.getpid(),
                "version": package_version(),
                "mode": s.config.mode,
                "config": s.config.source or "defaults",
                "started": info.started_wall,
                "uptime_s": round(time.monotonic() - info.started_mono, 3),
                "workload": {
                    "label": tracker.stable or "unknown",
                    "confidence": round(tracker.stable_confidence, 4),
                    "since": tracker.since,
                    "last_window": verdict.to_dict() if verdict else None,
                    "candidate": tracker.candidate,
                },
                # the per-process roles behind the last window (roles: true)
                "roles": s.access.roles(),
                "last_sample": None if sample is None else {
                    "wall": sample.wall, "age_s": round(time.time() - sample.wall, 3),
                    "metrics": metrics, "errors": dict(sample.errors)},
                "sampling": {
                    "interval_s": s.config.interval, "window": s.config.window,
                    "samples": w.sample_count, "errors": w.sample_errors,
                    "missed_ticks": w.missed_ticks,
                    "last_lateness_s": round(w.last_lateness, 4),
                    "max_lateness_s": round(w.max_lateness, 4),
                    "windows": w.windows},
                "recommendation": policy.recommendation_dict(),
                "applied": list(policy.applied[-20:]),
                "reverts": list(policy.reverts[-20:]),
                "watching": None if policy.watch is None else {
                    "txn": policy.watch.txn, "windows_left": policy.watch.windows_left},
                "collapse": {
                    "enabled": s.config.collapse.enabled and s.config.mode == "auto",
                    "runner": s.access.collapse_status(),
                    "recent": list(policy.collapsing.recent[-5:]),
                    "measuring": None if policy.collapsing.watch is None else {
                        "txn": policy.collapsing.watch.txn,
                        "windows_left": policy.collapsing.watch.windows_left},
                    "for_job": None if policy.for_job is None else {
                        "txn": policy.for_job.txn, "knobs": policy.for_job.values,
                        "pids": sorted(policy.for_job.pids)},
                    "writer_quiet_s": policy.writer_quiet_for()},
                "auto_blocked": policy.blocked,
                "engine": dict(info.host),
                "notes": list(s.access.notes)
                + ([info.geometry_warning] if info.geometry_warning else []),
                "socket": {} if server is None else {
                    "clients": server.clients, "served": server.served,
                    "rejected": server.rejected},
            }

    def status_line(self) -> str:
        label = self.tracker.stable or "unknown"
        # Changes only when something worth a line does: it is sent on change.
        return (f"{self.services.config.mode}: workload {label}, "
                f"{len(self.policy.applied)} applied, {len(self.policy.reverts)} reverted")

    def render_metrics(self) -> str:
        # http.server comes with it: 5.4 MB a daemon without the listener saves.
        from hosttune.agent.service.metrics import (
            UNASSIGNED_ROLE,
            DaemonMetrics,
            apply_result,
            render,
        )

        s, w, tracker, policy = self.services, self.window, self.tracker, self.policy
        drift = self._drift_count()
        if self._version is None:
            self._version = package_version()
        with s.lock:
            sample = w.last_sample
            processes = sample.processes if sample else []
            applies = Counter(apply_result(a) for a in policy.applied)
            proposal = policy.recommendation
            report = proposal.report if proposal else {}
            advice = report.get("advice", [])
            owned = [a for a in advice if str(a.get("why_advice", "")).startswith(
                ("admin-owned", "owned by "))]
            collapse = s.access.collapse_status() or {}
            m = DaemonMetrics(
                version=self._version, mode=s.config.mode,
                workload=tracker.stable or UNKNOWN, confidence=tracker.stable_confidence,
                classes=workload_classes.recommendable(), workload_changes=tracker.changes,
                # Each AI process the sampler found, by the role of its job in
                # the last window (roles: true); a quiet job's, or one the
                # model could not name, is unassigned.
                roles=_roles_by_process(processes, s.access.roles(), UNASSIGNED_ROLE),
                role_names=(*ROLES, UNASSIGNED_ROLE),
                applies=applies,
                reverts={"auto": len(policy.reverts), "admin": self._rollbacks},
                knobs_refused=sum(len(a.get("refused", ())) for a in policy.applied),
                knobs_admin_owned=len(owned), knobs_advised=len(advice),
                knobs_recommended=len(proposal.plan.changes) if proposal else 0,
                drift=drift, samples=w.sample_count, sample_errors=w.sample_errors,
                missed_ticks=w.missed_ticks, lateness=w.lateness.copy(),
                started_wall=self.info.started_wall,
                collapse_passes=int(collapse.get("passes", 0)),
                collapsed_bytes=float(collapse.get("collapsed_mib", 0)) * (1 << 20),
                collapse_cpu_seconds=float(collapse.get("cpu_seconds", 0.0)))
        return render(m)

    def _drift_count(self) -> int | None:
        """Drift reads the journal, which only the loop's thread touches: it
        is asked there and waited for briefly; while the loop is busy (a
        plan being applied) the last count stands."""
        fut = self._drift_future
        if fut is None:
            fut = self._drift_future = self.jobs.submit(self.services.access.drift)
        done, _ = wait([fut], timeout=DRIFT_WAIT)
        if done:
            self._take_drift(fut)
            self._drift_future = None
        return self._drift

    def _take_drift(self, fut: Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        self._drift = None if exc is not None else len(fut.result())


def _roles_by_process(processes: Sequence[AIProcess], roles: Mapping[str, Any] | None,
                      unassigned: str) -> dict[str, int]:
    verdict = (roles or {}).get("verdict") or {}
    of_pid = {pid: r["role"] for r in verdict.get("roles", []) for pid in r["pids"]
              if r["role"] in ROLES}
    return dict(Counter(of_pid.get(p.pid, unassigned) for p in processes))


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


def package_version() -> str:
    # importlib.metadata: 1.3 MB, 19 ms; asked for by ping and status only.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hosttune")
    except PackageNotFoundError:
        return "0+unknown"
