"""Auto mode's policy: keep a plan ready for the settled workload, apply the
part of it a transaction may change, watch the next windows, revert a change
that hurt and remember it (the avoid set), and record what the watch measured
where `hosttune recommend` learns from it.

Plans are computed on a worker thread, from the loop's own latest sample and
rates (no second sampler), and picked up by the loop: every change to the
host happens on the loop's thread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.service.daemon.collapsing import Collapsing
from hosttune.agent.service.daemon.host_access import Proposal
from hosttune.agent.service.daemon.services import Services
from hosttune.agent.service.daemon.window import SampleWindow
from hosttune.agent.service.objective import CommandProbe, Score, harm, window_score
from hosttune.agent.service.outcome_store import OutcomeStore
from hosttune.agent.service.store import Store
from hosttune.models.outcomes import Outcome, OutcomeError, effect_of
from hosttune.tuners.knobs import Change, Plan

# A recommendation is refreshed this often even when the workload holds still.
REFRESH_WINDOWS = 20
# Changes of these rules are bounded in time: auto mode puts the knobs back
# after so many seconds (khugepaged scanning 10x as often catches up on a
# running job's memory where MADV_COLLAPSE is missing, and then need not go on).
TEMPORARY_RULES = {"khugepaged-catch-up": 600.0}
# THP `always` for a job's new memory comes back only after this many seconds
# without a checkpoint writer: a checkpoint written in bursts (one shard, a
# pause, the next) would otherwise flip the knob at every pause.
WRITER_QUIET_S = 60.0

Avoided = tuple[str, str, str]  # workload, knob, value


@dataclass
class ForJob:
    """A change made for the life of running processes (THP `always` for a
    job that keeps allocating): put back when they are gone."""

    txn: str | None
    values: dict[str, str]  # knob -> the value to put back
    pids: set[int]


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


def proposal_dict(proposal: Proposal | None) -> dict[str, Any]:
    if proposal is None:
        return {"workload": None, "changes": [], "report": None}
    return {"workload": proposal.workload, "plan": proposal.plan.to_dict(),
            "report": proposal.report}


class AutoPolicy:
    def __init__(self, services: Services, window: SampleWindow) -> None:
        self.services = services
        self.window = window
        self.recommendation: Proposal | None = None
        self.recommendation_error: str | None = None
        self.recommendation_at: float | None = None
        self.recommendation_for: str | None = None
        self._future: Future[Proposal | None] | None = None
        self._windows = 0  # since the last plan was started
        self._workload: str | None = None  # the plan in flight is for
        self._pending: str | None = None  # started when the one in flight is in
        self.applied: list[dict[str, Any]] = []
        self.reverts: list[dict[str, Any]] = []
        self.avoid: set[Avoided] = set()
        self.watch: Watch | None = None
        self.blocked: str | None = None  # why auto mode may change nothing
        self.windows_since_change = 10**9
        # (monotonic deadline, knob -> value to put back) of time-bounded changes
        self.temporary: list[tuple[float, dict[str, str]]] = []
        # per-process huge pages (auto mode)
        self.collapsing = Collapsing(services, window)
        self.for_job: ForJob | None = None
        self.writer_seen: float | None = None  # self.clock(), last time a writer blocked it
        self.clock = time.monotonic

    def remember_reverts(self, store: Store) -> None:
        """What hurt before stays avoided across restarts."""
        for event in store.events(limit=1000, kind="revert"):
            for change in event.detail.get("changes", []):
                self.avoid.add((event.detail.get("workload", ""), change.get("knob", ""),
                                str(change.get("value", ""))))

    # -- each window -------------------------------------------------------------

    def on_window(self, stable: str | None, workload_changed: bool) -> None:
        self.windows_since_change += 1
        self._end_temporary()
        if self.watch is not None:
            self._watch_window(workload_changed)
        if self.services.config.mode == "auto":
            self.collapsing.on_window(stable, blocked=self.blocked)
            self._new_memory(stable)
        self._windows += 1
        # Until a class is believed the plan is the generic one ("unknown"
        # priors): something to show in recommend mode; auto never applies it.
        if self.services.config.mode in ("recommend", "auto") and (
                workload_changed or self.recommendation_at is None
                or self._windows >= REFRESH_WINDOWS):
            self.start_recommendation(stable or "unknown")

    def start_recommendation(self, workload: str) -> None:
        if self._future is not None and not self._future.done():
            if workload != self._workload:
                self._pending = workload
            return
        self._pending = None
        self._windows = 0
        self._workload = workload
        fut: Future[Proposal | None] = Future()
        self._future = fut
        with self.services.lock:
            latest, rates = self.window.last_sample, dict(self.window.last_rates)
        access = self.services.access

        def work() -> None:
            try:
                fut.set_result(access.recommend(workload, latest, rates))
            except BaseException as exc:
                fut.set_exception(exc)
            self.services.wake.set()

        threading.Thread(target=work, name="hosttune-recommend", daemon=True).start()

    def collect(self, stable: str | None) -> None:
        """Takes a finished plan; in auto mode applies it."""
        fut = self._future
        if fut is None or not fut.done():
            return
        self._future = None
        exc = fut.exception()
        with self.services.lock:
            self.recommendation_at = time.time()
            self.recommendation_for = self._workload
            if exc is not None:
                self.recommendation = None
                self.recommendation_error = str(exc)
            else:
                self.recommendation = fut.result()
                self.recommendation_error = None
        if self._pending is not None:
            self.start_recommendation(self._pending)
            return
        if exc is not None:
            if not isinstance(exc, HosttuneError):
                self.services.log("error", f"recommender crashed: {type(exc).__name__}: {exc}")
            return
        proposal = self.recommendation
        if self.services.config.mode == "auto" and proposal is not None:
            self._maybe_apply(proposal, stable)

    def recommendation_dict(self) -> dict[str, Any] | None:
        """Call with services.lock held."""
        if self.recommendation is None:
            if self.recommendation_error:
                return {"error": self.recommendation_error}
            if self.recommendation_at is not None:  # asked, and nothing to change
                return {"workload": self.recommendation_for, "plan": {"changes": []},
                        "at": self.recommendation_at}
            return None
        data = proposal_dict(self.recommendation)
        data["at"] = self.recommendation_at
        return data

    # -- apply -------------------------------------------------------------------

    def allowlist(self) -> dict[str, dict[str, Any]]:
        return self.services.config.effective_allowlist(
            self.services.access.allowlist_defaults())

    def job_held(self) -> set[str]:
        """Knobs a batch job holds (`hosttune job start`, the Slurm prolog):
        the job's plan wins on them until it ends; auto mode leaves them."""
        # auto mode only, when a plan is about to be applied (jobs loads the
        # transaction module)
        from hosttune.agent.service import jobs

        try:
            return set(jobs.status(self.services.paths).get("held", {}))
        except (HosttuneError, OSError) as exc:
            self.services.log("warning", f"cannot read the batch jobs' knobs: {exc}")
            return set()

    def admin_owned(self) -> dict[str, str]:
        config = self.services.config
        where = config.source or "the configuration"
        return {knob: f"overrides in {where}" for knob in config.overrides}

    def _maybe_apply(self, proposal: Proposal, stable: str | None) -> None:
        config = self.services.config
        if self.blocked or self.watch is not None:
            return
        if self.windows_since_change < config.auto.cooldown_windows:
            return
        if proposal.workload != stable:
            return
        plan = proposal.plan
        held = self.job_held()
        fresh = [c for c in plan.changes
                 if (plan.workload or "", c.knob, c.after) not in self.avoid
                 and c.knob not in held]
        if not fresh:
            return
        try:
            # The transaction's own checks (allowlist and bounds, ownership,
            # isolated CPUs) as a dry run: what it would change now.
            plan = self.services.access.preflight(
                Plan(changes=fresh, workload=plan.workload, note=plan.note),
                self.allowlist(), self.admin_owned())
        except HosttuneError as exc:
            self.services.log("warning", f"auto mode cannot check its plan: {exc}")
            return
        if not plan.changes:
            return
        before = window_score(list(self.window.rows), config.objective)
        probe = None
        if config.objective.command:
            # The baseline run happens first; the plan is applied when it is done.
            probe = CommandProbe(config.objective.command, config.objective.timeout)
            while not probe.done and not self.services.stopping:
                self.services.notifier.ping()
                probe._done.wait(1.0)
            if probe.value is None:
                self.services.log("warning", f"auto mode skipped: {probe.error}")
                return
        self._apply(plan, f"auto: workload {proposal.workload}", before,
                    probe.value if probe else None)

    def _apply(self, plan: Plan, reason: str, before: Score, probe_before: float | None
               ) -> str | None:
        """Applies and watches `plan`; the transaction's id, None when it failed."""
        s = self.services
        try:
            outcome = s.access.apply(plan, reason, allowlist=self.allowlist(),
                                     admin_owned=self.admin_owned())
        except HosttuneError as exc:
            s.log("error", f"auto mode could not apply its plan: {exc}")
            s.store.add_event("apply-failed", str(exc))
            self.windows_since_change = 0
            return None
        changes = [c.to_dict() for c in plan.changes]
        record = {"txn": outcome.txn, "wall": time.time(), "workload": plan.workload,
                  "changes": changes, "ok": outcome.ok, "message": outcome.message,
                  "by": "auto"}
        self.record_apply(record)
        if not outcome.ok:
            s.log("error", f"auto mode: plan failed and was undone: {outcome.message}")
            return None
        s.log("info", f"auto mode applied {len(changes)} change(s) for {plan.workload}: "
              + ", ".join(f"{c['knob']}={c['value']}" for c in changes), txn=outcome.txn)
        for rule, seconds in TEMPORARY_RULES.items():
            bounded = [c for c in plan.changes
                       if c.evidence.get("rule") == rule and c.before is not None]
            if bounded:
                self.temporary.append((time.monotonic() + seconds,
                                       {c.knob: str(c.before) for c in bounded}))
                # once is the point: not set again after it is put back
                self.avoid.update((plan.workload or "", c.knob, c.after) for c in bounded)
        self.watch = Watch(txn=outcome.txn, workload=plan.workload or "", changes=changes,
                           before=before, windows_left=s.config.auto.watch_windows,
                           probe_before=probe_before)
        return outcome.txn or ""

    def record_apply(self, record: dict[str, Any]) -> None:
        """An apply (auto mode's or an administrator's over the socket)."""
        with self.services.lock:
            self.applied.append(record)
        self.windows_since_change = 0
        self.services.store.add_event("apply" if record["ok"] else "apply-failed",
                                      record["message"], record)

    def on_tick(self, stable: str | None) -> None:
        if self.services.config.mode == "auto":
            self.collapsing.on_tick(stable, blocked=self.blocked)
            self._new_memory(stable)

    def _new_memory(self, stable: str | None) -> None:
        """THP `always` while a collapsed job keeps allocating fresh memory
        (models.collapse.new_memory_thp). It does not wait for a settled
        class: the evidence is the process's own faults, as for its collapse.
        Put back when those processes are gone or a checkpoint writer starts."""
        if self.blocked:
            return
        advice = self.services.access.new_memory()
        if advice is None:
            return
        if advice.blocked is not None:
            self.writer_seen = self.clock()
        held = self.for_job
        if held is not None:
            with self.services.lock:
                latest = self.window.last_sample
            # the runner's view is as old as its last look; the sampler's
            # process list says sooner that a job is gone
            live = {pid for pid, _start in advice.live} & {
                p.pid for p in (latest.processes if latest else ())}
            why = advice.blocked or (None if held.pids & live else
                                     "the job it was made for has ended")
            if why is not None:
                self.for_job = None
                self._put_back(held.values, f"THP for a job's new memory ends: {why}",
                               "job-change-ended", {"txn": held.txn, "why": why})
            return
        change = advice.change
        if change is None or self.watch is not None or self.writer_quiet_for() is not None:
            return
        workload = stable or "unknown"
        if (workload, change.knob, change.after) in self.avoid:
            return
        config = self.services.config
        if change.knob in config.overrides or (
                change.knob in config.allowlist and config.allowlist[change.knob] is None):
            # the administrator's: known without loading every knob family
            # (the allowlist, the dry run: 5 MB a daemon that may not change
            # it need not hold)
            self.avoid.add((workload, change.knob, change.after))
            return
        if change.knob in self.job_held():
            return
        try:
            plan = self.services.access.preflight(
                Plan(changes=[change], workload=workload,
                     note="auto mode: THP for a running job's new memory"),
                self.allowlist(), self.admin_owned())
        except HosttuneError as exc:
            self.services.log("warning", f"auto mode cannot check THP for a job: {exc}")
            return
        if not plan.changes:
            # not allowed here (allowlist, an administrator's setting): once
            self.avoid.add((workload, change.knob, change.after))
            return
        txn = self._apply(plan, f"auto: THP for a running job's new memory ({change.reason})",
                          window_score(list(self.window.rows), self.services.config.objective),
                          None)
        if txn is not None:
            self.for_job = ForJob(txn=txn, values={change.knob: change.before or "madvise"},
                                  pids={pid for pid, _start in advice.pids})

    def writer_quiet_for(self) -> float | None:
        """Seconds left before THP for a job's new memory may come back after
        a checkpoint writer put it back (or withheld it); None when it may."""
        if self.writer_seen is None:
            return None
        left = WRITER_QUIET_S - (self.clock() - self.writer_seen)
        return left if left > 0 else None

    def _end_temporary(self) -> None:
        """Put back the knobs of time-bounded changes whose time is up."""
        now = time.monotonic()
        due = [values for deadline, values in self.temporary if deadline <= now]
        if not due:
            return
        self.temporary = [(d, v) for d, v in self.temporary if d > now]
        for values in due:
            self._put_back(values, "a time-bounded change ends", "temporary-ended", {})

    def _put_back(self, values: dict[str, str], why: str, event: str,
                  detail: dict[str, Any]) -> None:
        s = self.services
        plan = Plan(changes=[Change(knob=k, after=v, source="expert",
                                    reason=f"{why}: back to the value before it")
                             for k, v in values.items()],
                    workload=None, note=f"auto mode: {why}")
        try:
            plan = s.access.preflight(plan, self.allowlist(), self.admin_owned())
            if not plan.changes:
                return  # already back (reverted as harmful, or set by someone else)
            outcome = s.access.apply(plan, f"auto: {why}", allowlist=self.allowlist(),
                                     admin_owned=self.admin_owned())
        except HosttuneError as exc:
            s.log("error", f"could not put a change back ({why}): {exc}")
            return
        s.log("info" if outcome.ok else "error", f"{why}: {outcome.message}", txn=outcome.txn)
        s.store.add_event(event, outcome.message, {**detail, "put_back_txn": outcome.txn,
                                                   "knobs": values})

    # -- watch and revert ----------------------------------------------------------

    def _watch_window(self, workload_changed: bool) -> None:
        s = self.services
        watch = self.watch
        assert watch is not None
        if workload_changed:
            s.log("info", "the workload changed while a change was watched: keeping it "
                  "without a verdict", txn=watch.txn)
            s.store.add_event("kept", "workload changed during the watch", {"txn": watch.txn})
            self.watch = None
            return
        watch.windows_left -= 1
        if watch.windows_left > 0:
            return
        objective = s.config.objective
        after = window_score(list(self.window.rows), objective)
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
        why = harm(before, after, objective, s.config.auto.regression)
        self.watch = None
        self._record_outcome(watch, before, after)
        if why is None:
            s.store.add_event("kept", "no harm measured", {
                "txn": watch.txn, "before": before.to_dict(), "after": after.to_dict()})
            return
        self._revert(watch, why, before, after)

    def _record_outcome(self, watch: Watch, before: Score, after: Score) -> None:
        """With an objective configured, the watch measured what the change did:
        keep it in outcomes.db, where `hosttune recommend` learns from this
        host's own results (the old values as the 1.0 point beside it). Without
        one, the PSI/CPU signals judge harm but measure no speed-up, so nothing
        is recorded rather than a guess."""
        objective = self.services.config.objective
        b, a = before.objective, after.objective
        if not (objective.metric or objective.command) or b is None or a is None:
            return
        if b <= 0 or a <= 0:
            return
        effect = effect_of(a, b, lower_is_better=not objective.higher_is_better)
        new = {str(c["knob"]): str(c["value"]) for c in watch.changes}
        old = {str(c["knob"]): str(c["before"]) for c in watch.changes if "before" in c}
        what = objective.metric or objective.command or ""
        store = OutcomeStore(self.services.paths.state_dir / "outcomes.db")
        try:
            if old.keys() == new.keys():
                store.record(Outcome(watch.workload, "plan", old, 1.0, what))
            store.record(Outcome(watch.workload, "plan", new, effect, what))
        except OutcomeError as exc:
            self.services.log("warning", f"could not record the outcome of transaction "
                              f"{watch.txn}: {exc}", txn=watch.txn)

    def _revert(self, watch: Watch, why: str, before: Score, after: Score) -> None:
        s = self.services
        try:
            outcome = s.access.rollback(f"before:{watch.txn}")
        except HosttuneError as exc:
            s.log("error", f"could not revert a change that hurt ({why}): {exc}",
                  txn=watch.txn)
            return
        detail = {"txn": watch.txn, "workload": watch.workload, "changes": watch.changes,
                  "why": why, "before": before.to_dict(), "after": after.to_dict(),
                  "rollback": outcome.to_dict()}
        with s.lock:
            self.reverts.append({"wall": time.time(), **detail})
            for change in watch.changes:
                self.avoid.add((watch.workload, change["knob"], str(change["value"])))
        self.windows_since_change = 0
        s.store.add_event("revert", f"reverted: {why}", detail)
        s.log("warning", f"reverted a change that hurt: {why}", txn=watch.txn)

    def revert_own(self) -> None:
        """On stop (revert_on_stop): only what auto mode did; an
        administrator's own apply stays."""
        own = [a for a in self.applied if a.get("by") == "auto" and a.get("ok")]
        if not own:
            return
        try:
            outcome = self.services.access.rollback(f"before:{own[0].get('txn')}")
            self.services.log("info", f"reverted hosttune's changes on stop: {outcome.message}")
        except HosttuneError as exc:
            self.services.log("error", f"could not revert on stop: {exc}")

