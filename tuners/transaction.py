"""Plans applied as transactions: all or nothing, journalled, reversible.

For each change, in order: its old value is committed to the journal (fsynced)
before the knob is written; the write is read back and verified; the journal
then records it done. If any step fails (the kernel refuses, the read-back
differs, the journal cannot be written), every knob already touched is
restored in reverse order and the result names the failed step and why.

`recover` rolls back transactions a killed process left unfinished; it runs
under the lock, so an open transaction found there has no live owner.
`apply_plan` and `rollback` call it first themselves.

A knob someone else changed since hosttune last wrote it is reported and
left, unless forced; so is a knob the administrator owns (sysctl files, the
kernel command line).

Test hooks: `hook(step, seq, change)` is called at the named points
"journalled" (old value durable, knob not yet written), "written" (knob
written, not yet verified) and "verified" (done and journalled). Fault tests
kill the process there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense.errors import HosttuneError, KnobError, PermissionRefused
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.ownership import Owner, owner_of
from hosttune.agent.sense.telemetry.memory import mem_total_kb
from hosttune.tuners import allowlist as allowlist_mod
from hosttune.tuners.base import Tuner
from hosttune.tuners.journal import TOUCHED, Journal, JournalError, TxnRecord
from hosttune.tuners.knobs import Change, Plan
from hosttune.tuners.owners import owners
from hosttune.tuners.registry import bind_tuners, tuner_and_key

Hook = Callable[[str, int, Change], None]

# Sources that choose values on their own: held to the allowlist and its bounds.
AUTONOMOUS = ("expert", "model", "optimizer")


@dataclass
class StepOutcome:
    seq: int
    knob: str
    before: str | None
    after: str
    # would change | applied | unchanged | refused | failed | restored |
    # restore_failed | not reached | left | gone
    status: str
    message: str = ""
    advice: list[str] = field(default_factory=list)
    reason: str = ""
    source: str = "admin"

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "knob": self.knob, "before": self.before, "after": self.after,
                "status": self.status, "message": self.message, "advice": self.advice,
                "reason": self.reason, "source": self.source}

    def line(self) -> str:
        text = f"{self.knob}: {self.before} -> {self.after} [{self.status}]"
        return f"{text} {self.message}" if self.message else text


@dataclass
class TxnResult:
    ok: bool
    txn_id: int | None
    kind: str  # apply | rollback | recover
    steps: list[StepOutcome] = field(default_factory=list)
    dry_run: bool = False
    failed_step: int | None = None
    error: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "txn": self.txn_id, "kind": self.kind, "dry_run": self.dry_run,
                "failed_step": self.failed_step, "error": self.error, "message": self.message,
                "changes": [s.to_dict() for s in self.steps]}

    def __str__(self) -> str:
        return self.message


@dataclass
class _Step:
    seq: int
    change: Change
    tuner: Tuner | None
    key: str
    before: str | None
    after: str
    status: str = "pending"
    message: str = ""
    advice: list[str] = field(default_factory=list)
    identity: str = ""

    def outcome(self) -> StepOutcome:
        return StepOutcome(self.seq, self.change.knob, self.before, self.after, self.status,
                           self.message, self.advice, self.change.reason, self.change.source)


def require_root(host: Host) -> None:
    """Only root changes the live host; checked before anything is touched."""
    if host.is_live and os.geteuid() != 0:
        raise PermissionRefused(
            f"only root changes the host (this is uid {os.geteuid()}); "
            "--dry-run shows what would change")


def _prepare(host: Host, changes: list[Change], journal: Journal, tuners: dict[str, Tuner], *,
             force: bool, allowlist: Mapping[str, Mapping[str, Any]] | None,
             owned: dict[str, Owner]) -> list[_Step]:
    steps: list[_Step] = []
    seen: set[str] = set()
    mem_total = mem_total_kb(host)
    for seq, change in enumerate(changes, start=1):
        step = _Step(seq, change, None, "", change.before, change.after)
        steps.append(step)
        try:
            if change.knob in seen:
                raise KnobError(change.knob, "appears twice in the plan")
            seen.add(change.knob)
            tuner, key = tuner_and_key(tuners, change.knob)
            step.tuner, step.key = tuner, key
            if not tuner.available(key):
                raise KnobError(change.knob, "unavailable on this host")
            step.after = tuner.validate(key, change.after)
            step.before = tuner.read(key)
            step.identity = tuner.identity(key)
            if change.source in AUTONOMOUS and allowlist is not None:
                allowlist_mod.check(allowlist, change.knob, step.after, mem_total_kb=mem_total)
            if change.source != "rollback" and not (force and change.source == "admin"):
                # CPUs the admin isolated at boot: an admin's own --force may
                # overrule that, the rules, models and the optimizer never do.
                conflict = tuner.conflict(key, step.after, step.before)
                if conflict:
                    raise KnobError(change.knob, conflict + (
                        " (--force to override)" if change.source == "admin" else ""))
            if change.source != "rollback" and not force:
                owner = owner_of(change.knob, owned)
                if owner is not None:
                    raise KnobError(change.knob, f"{owner.why()} (--force to override)")
                ours = journal.hosttune_value(change.knob)
                if ours is not None and not tuner.equal(step.before, ours):
                    raise KnobError(change.knob, f"changed by someone else since hosttune set it "
                                                 f"to {ours!r} (now {step.before!r}); "
                                                 "--force to override")
            if tuner.equal(step.before, step.after):
                step.status = "unchanged"
            step.advice = tuner.advise(key, step.after)
        except HosttuneError as exc:
            step.status, step.message = "refused", str(exc)
    return steps


def _hook(hook: Hook | None, name: str, step: _Step) -> None:
    if hook is not None:
        hook(name, step.seq, step.change)


def _restore(step: _Step, journal: Journal, txn: int) -> None:
    """Put one knob this transaction touched back to its old value."""
    assert step.tuner is not None and step.before is not None
    try:
        if not step.tuner.equal(step.tuner.read(step.key), step.before):
            step.tuner.apply(step.key, step.before)
            if not step.tuner.verify(step.key, step.before):
                raise KnobError(step.change.knob, f"read back {step.tuner.read(step.key)!r} "
                                                  f"after restoring {step.before!r}")
        step.status = "restored"
    except HosttuneError as exc:
        step.status, step.message = "restore_failed", f"{step.message}; restore failed: {exc}"
    try:
        value = step.before if step.status == "restored" else None
        journal.mark(txn, step.seq, step.status, error=step.message or None,
                     knob=step.change.knob, value=value)
    except JournalError as exc:
        step.message = f"{step.message}; journal: {exc}".strip("; ")


def _execute(journal: Journal, steps: list[_Step], *, kind: str, uid: int | None,
             workload: str | None, note: str, reason: str, target: str | None,
             hook: Hook | None) -> TxnResult:
    txn = journal.begin(kind=kind, uid=uid, workload=workload, note=note, reason=reason,
                        target=target)
    journal.add_steps(txn, [
        {"seq": s.seq, "knob": s.change.knob, "before": s.before, "after": s.after,
         "reason": s.change.reason, "source": s.change.source, "evidence": s.change.evidence,
         "identity": s.identity, "state": s.status, "error": s.message or None}
        for s in steps])
    touched: list[_Step] = []
    failed: _Step | None = None
    try:
        for step in steps:
            if step.status != "pending":
                continue
            assert step.tuner is not None
            try:
                journal.mark_writing(txn, step.seq, step.change.knob, step.before)
            except JournalError as exc:
                failed, step.status, step.message = step, "failed", str(exc)
                break
            touched.append(step)
            _hook(hook, "journalled", step)
            try:
                step.tuner.apply(step.key, step.after)
                _hook(hook, "written", step)
                if not step.tuner.verify(step.key, step.after):
                    now = step.tuner.read(step.key)
                    raise KnobError(step.change.knob,
                                    f"read back {now!r} after writing {step.after!r}")
                journal.mark(txn, step.seq, "verified", knob=step.change.knob, value=step.after)
            except HosttuneError as exc:
                failed, step.status, step.message = step, "failed", str(exc)
                break
            step.status = "applied"
            _hook(hook, "verified", step)
    except BaseException:
        # Interrupted (KeyboardInterrupt, SIGTERM raised as an exception, a bug):
        # leave nothing half-applied, then let it propagate.
        for step in reversed(touched):
            _restore(step, journal, txn)
        with contextlib.suppress(JournalError):
            journal.finish(txn, "rolled_back", error="interrupted")
        raise
    if failed is None:
        journal.finish(txn, "committed")
        changed = sum(s.status == "applied" for s in steps)
        return TxnResult(True, txn, kind, [s.outcome() for s in steps],
                         message=f"transaction {txn}: {changed} knob(s) changed")
    for step in steps:
        if step.status == "pending":
            step.status = "not reached"
    for step in reversed(touched):
        _restore(step, journal, txn)
    clean = all(s.status == "restored" for s in touched)
    error = f"step {failed.seq} ({failed.change.knob}) failed: {failed.message}"
    with contextlib.suppress(JournalError):
        journal.finish(txn, "rolled_back" if clean else "failed", error=error,
                       failed_step=failed.seq)
    undone = ("every knob touched was restored" if clean else
              "SOME KNOBS COULD NOT BE RESTORED: " + "; ".join(
                  s.outcome().line() for s in touched if s.status != "restored"))
    return TxnResult(False, txn, kind, [s.outcome() for s in steps], failed_step=failed.seq,
                     error=error, message=f"transaction {txn}: {error}; {undone}")


def _refused(steps: list[_Step], kind: str, dry_run: bool) -> TxnResult:
    bad = [s for s in steps if s.status == "refused"]
    return TxnResult(False, None, kind, [s.outcome() for s in steps], dry_run=dry_run,
                     error="; ".join(s.message for s in bad),
                     message="refused, nothing changed: " + "; ".join(s.message for s in bad))


def apply_plan(host: Host, plan: Plan, journal: Journal, *, dry_run: bool = False,
               force: bool = False, uid: int | None = None, reason: str = "",
               allowlist: Mapping[str, Mapping[str, Any]] | None = None,
               skip_refused: bool = False, lock_timeout: float = 30.0,
               admin_owned: Mapping[str, str] | None = None,
               hook: Hook | None = None, tuners: dict[str, Tuner] | None = None) -> TxnResult:
    """Apply `plan` all or nothing. Changes from expert rules, models and the
    optimizer must be on `allowlist` (default: the built-in table) within its
    bounds. Knobs the administrator owns (sysctl files, the kernel command
    line, and `admin_owned`: knob or pattern -> where, from the config) are
    refused unless `force`. A refused change refuses the whole plan, unless
    `skip_refused` (then the rest is applied and the refusals are reported)."""
    if not dry_run:
        require_root(host)
    tuners = tuners if tuners is not None else bind_tuners(host)
    uid = os.getuid() if uid is None else uid
    table = allowlist_mod.DEFAULT_ALLOWLIST if allowlist is None else allowlist

    def prepare() -> list[_Step]:
        owned = owners(host)
        for knob, where in (admin_owned or {}).items():
            owned[knob] = Owner("config", where)
        return _prepare(host, list(plan.changes), journal, tuners, force=force,
                        allowlist=table, owned=owned)

    if dry_run:
        steps = prepare()
        if any(s.status == "refused" for s in steps) and not skip_refused:
            return _refused(steps, "apply", True)
        for step in steps:
            if step.status == "pending":
                step.status = "would change"
        changed = sum(s.status == "would change" for s in steps)
        return TxnResult(True, None, "apply", [s.outcome() for s in steps], dry_run=True,
                         message=f"dry run: {changed} knob(s) would change, nothing changed")
    with journal.locked(lock_timeout):
        _recover_locked(host, journal, tuners, force=False)
        steps = prepare()
        if any(s.status == "refused" for s in steps) and not skip_refused:
            result = _refused(steps, "apply", False)
            txn = journal.begin(kind="apply", uid=uid, workload=plan.workload, note=plan.note,
                                reason=reason, state="refused")
            journal.add_steps(txn, [
                {"seq": s.seq, "knob": s.change.knob, "before": s.before, "after": s.after,
                 "reason": s.change.reason, "source": s.change.source,
                 "evidence": s.change.evidence, "state": s.status, "error": s.message or None}
                for s in steps])
            journal.finish(txn, "refused", error=result.error)
            result.txn_id = txn
            return result
        return _execute(journal, steps, kind="apply", uid=uid, workload=plan.workload,
                        note=plan.note, reason=reason, target=None, hook=hook)


# -- recovery ------------------------------------------------------------------------


def _recover_locked(host: Host, journal: Journal, tuners: dict[str, Tuner], *,
                    force: bool) -> list[TxnResult]:
    results = []
    for record in journal.open_transactions():
        results.append(_recover_one(record, journal, tuners, force=force))
    return results


def _recover_one(record: TxnRecord, journal: Journal, tuners: dict[str, Tuner], *,
                 force: bool) -> TxnResult:
    if record.kind == "collapse":
        return _close_collapse(record, journal)
    outcomes: list[StepOutcome] = []
    for step in reversed(record.steps):
        if step.state not in TOUCHED:
            continue
        out = StepOutcome(step.seq, step.knob, step.after, step.before or "", "restored",
                          reason=f"recovery of transaction {record.id}", source="rollback")
        outcomes.append(out)
        value: str | None = None
        try:
            tuner, key = tuner_and_key(tuners, step.knob)
            if not tuner.available(key) or (step.identity and tuner.identity(key)
                                            != step.identity):
                out.status, out.message = "gone", "no longer exists; nothing to restore"
            elif step.before is None:
                out.status, out.message = "left", "no old value was journalled"
            else:
                current = tuner.read(key)
                out.before = current
                if tuner.equal(current, step.before):
                    value = step.before
                elif step.state == "writing" or tuner.equal(current, step.after) or force:
                    # "writing": the write may have happened in part (a hugepage
                    # pool part-allocated), so anything but the old value is ours.
                    tuner.apply(key, step.before)
                    if not tuner.verify(key, step.before):
                        raise KnobError(step.knob, f"read back {tuner.read(key)!r} after "
                                                   f"restoring {step.before!r}")
                    value = step.before
                else:
                    out.status = "left"
                    out.message = (f"changed by someone else since (now {current!r}, hosttune "
                                   f"wrote {step.after!r}); left as is")
        except HosttuneError as exc:
            out.status, out.message = "restore_failed", str(exc)
        journal.mark(record.id, step.seq, out.status, error=out.message or None,
                     knob=step.knob, value=value)
    ok = all(o.status in ("restored", "gone", "left") for o in outcomes)
    owner = f"pid {record.pid}" if record.pid else "a process"
    detail = "; ".join(o.line() for o in outcomes) or "no knob had been written"
    message = (f"recovered transaction {record.id} left unfinished by {owner}: {detail}")
    journal.finish(record.id, "recovered", error=None if ok else message)
    return TxnResult(ok, record.id, "recover", outcomes, message=message)


def _close_collapse(record: TxnRecord, journal: Journal) -> TxnResult:
    """A collapse pass cut short (the daemon killed mid-pass): nothing to undo,
    since huge pages the kernel made are as correct as the small ones they
    replaced; the steps that never finished are marked so `history` says it."""
    outcomes: list[StepOutcome] = []
    for step in record.steps:
        if step.state in ("pending", "collapsing"):
            why = ("interrupted: the pass was cut short; nothing to undo (huge pages "
                   "already made stay, the rest stays in small pages)")
            journal.mark(record.id, step.seq, "interrupted", error=why)
            outcomes.append(StepOutcome(step.seq, step.knob, step.before, step.after,
                                        "interrupted", why, source="rollback"))
    owner = f"pid {record.pid}" if record.pid else "a process"
    message = (f"closed collapse pass {record.id} left unfinished by {owner}: "
               f"{len(outcomes)} process(es) not finished, nothing to undo")
    journal.finish(record.id, "recovered")
    return TxnResult(True, record.id, "recover", outcomes, message=message)


def recover(host: Host, journal: Journal, *, force: bool = False, lock_timeout: float = 30.0,
            tuners: dict[str, Tuner] | None = None) -> list[TxnResult]:
    """Roll back every transaction a killed process left unfinished. Call it
    at the start of anything that may write (CLI commands, the daemon)."""
    if not journal.open_transactions():
        return []
    tuners = tuners if tuners is not None else bind_tuners(host)
    require_root(host)
    with journal.locked(lock_timeout):
        return _recover_locked(host, journal, tuners, force=force)


# -- rollback and history ---------------------------------------------------------------


def parse_target(to: int | str | None, *, baseline: bool = False) -> tuple[int, str]:
    """(last transaction to keep, label). `baseline`/0: before hosttune's first
    change; N: as transaction N left the host; `before:N`: as it was before N."""
    if baseline or to in (None, "baseline", 0, "0"):
        if to not in (None, "baseline", 0, "0"):
            raise KnobError("rollback", "give a transaction or --baseline, not both")
        return 0, "the baseline"
    text = str(to).strip()
    if text.startswith("before:"):
        number = text[len("before:"):]
        if number.isdigit() and int(number) > 0:
            return int(number) - 1, f"before transaction {number}"
    elif text.isdigit():
        return int(text), f"transaction {text}"
    raise KnobError("rollback", f"bad rollback target {to!r} (a transaction id, before:ID, "
                                "or baseline)")


def rollback(host: Host, journal: Journal, to: int | str | None = None, *,
             baseline: bool = False, force: bool = False, dry_run: bool = False,
             uid: int | None = None, lock_timeout: float = 30.0, hook: Hook | None = None,
             tuners: dict[str, Tuner] | None = None) -> TxnResult:
    """Return every knob hosttune changed after the target to the value it had
    then. A knob someone else changed since hosttune last wrote it is reported
    and left, unless `force`."""
    keep, label = parse_target(to, baseline=baseline)
    if keep > journal.last_txn_id():
        raise KnobError("rollback", f"no transaction {keep} in {journal.path}")
    if not dry_run:
        require_root(host)
    tuners = tuners if tuners is not None else bind_tuners(host)
    uid = os.getuid() if uid is None else uid

    def prepare() -> list[_Step]:
        steps: list[_Step] = []
        knobs = journal.knobs_changed_after(keep)
        for seq, knob in enumerate(reversed(knobs), start=1):
            target = journal.value_after(knob, keep)
            if target is None:
                continue
            change = Change(knob, target, reason=f"rollback to {label}", source="rollback")
            step = _Step(seq, change, None, "", None, target)
            steps.append(step)
            try:
                tuner, key = tuner_and_key(tuners, knob)
                step.tuner, step.key = tuner, key
                last = journal.last_change(knob)
                if not tuner.available(key) or (last is not None and last.identity
                                                and tuner.identity(key) != last.identity):
                    step.status, step.message = "gone", "no longer exists; nothing to restore"
                    continue
                step.before = tuner.read(key)
                step.identity = tuner.identity(key)
                ours = journal.hosttune_value(knob)
                if tuner.equal(step.before, target):
                    step.status = "unchanged"
                elif ours is not None and not tuner.equal(step.before, ours) and not force:
                    step.status = "left"
                    step.message = (f"changed by someone else since hosttune set it to {ours!r} "
                                    f"(now {step.before!r}); left as is (--force to restore)")
            except HosttuneError as exc:
                step.status, step.message = "left", str(exc)
        return steps

    def summary(steps: list[_Step], verb: str) -> str:
        moving = sum(s.status in ("pending", "would change", "applied") for s in steps)
        left = [s for s in steps if s.status == "left"]
        text = f"rollback to {label}: {moving} knob(s) {verb}"
        if left:
            text += "; left (changed by someone else): " + ", ".join(s.change.knob for s in left)
        return text

    if dry_run:
        steps = prepare()
        for step in steps:
            if step.status == "pending":
                step.status = "would change"
        return TxnResult(True, None, "rollback", [s.outcome() for s in steps], dry_run=True,
                         message=summary(steps, "would change") + "; nothing changed")
    with journal.locked(lock_timeout):
        _recover_locked(host, journal, tuners, force=False)
        steps = prepare()
        if not any(s.status == "pending" for s in steps):
            return TxnResult(True, None, "rollback", [s.outcome() for s in steps],
                             message=summary(steps, "to change"))
        result = _execute(journal, steps, kind="rollback", uid=uid, workload=None, note="",
                          reason=f"rollback to {label}", target=label, hook=hook)
        if result.ok:
            result.message = f"transaction {result.txn_id}: " + summary(steps, "restored")
        return result


def history(journal: Journal) -> list[TxnRecord]:
    """Every transaction, oldest first, with its changes and outcome."""
    return journal.transactions()
