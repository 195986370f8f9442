"""The control socket's requests, the status dict and the metrics text.

Reads answer from the loop's state under the shared lock, on the socket's
thread. Anything that writes (apply, rollback, reload) or reads the journal
and store is handed to the loop's thread as a future (`MainThreadJobs`), so
the journal keeps one writer."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from hosttune.agent.service.control import STATUS_METRICS, Peer, RequestError
from hosttune.agent.service.daemon.host_access import PartUnavailable
from hosttune.agent.service.daemon.policy import AutoPolicy, proposal_dict
from hosttune.agent.service.daemon.services import RunInfo, Services
from hosttune.agent.service.daemon.window import SampleWindow
from hosttune.agent.service.tracker import WorkloadTracker
from hosttune.tuners.knobs import Plan

READ_OPS = frozenset({"ping", "status", "telemetry", "history", "recommendation", "recommend"})
ADMIN_OPS = frozenset({"apply", "rollback", "reload"})


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
            "message": outcome.message, "by": f"uid {peer.uid}"})
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
                    "recent": list(policy.collapses[-5:]),
                    "measuring": None if policy.collapse_watch is None else {
                        "txn": policy.collapse_watch.txn,
                        "windows_left": policy.collapse_watch.windows_left}},
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
        from hosttune.agent.service.metrics import render

        s, w, tracker = self.services, self.window, self.tracker
        with s.lock:
            rates = dict(w.last_rates)
            sample = w.last_sample
            values = dict(sample.values) if sample else {}
            state = {
                "mode": s.config.mode, "workload": tracker.stable or "unknown",
                "confidence": tracker.stable_confidence,
                "applied": len(self.policy.applied), "reverts": len(self.policy.reverts),
                "samples": w.sample_count, "lateness": w.last_lateness,
                "uptime": time.monotonic() - self.info.started_mono,
            }
        return render({**values, **rates}, state)


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
