"""Batch jobs (Slurm) on a node: each job's plan applied while it runs, the
node back at its baseline when the last job that wanted a knob has ended.

A scheduler's prolog calls `start`, its epilog `end`. Several jobs may share
a node, so a job never applies its plan alone: the book of running jobs is
merged (a knob two jobs set to the same value keeps it; a knob they disagree
on goes back to its baseline and is reported as a conflict) and the node is
converged to that merge in one transaction of the journal (tuners/transaction:
journalled, verified, all or nothing). The baseline of a knob is what it read
just before the first job took it; it is dropped once the knob is back.

The book (`jobs.json` in the state dir) is replaced atomically (written to a
temporary file, fsynced, renamed, the directory fsynced) and every change to
it is made under `jobs.lock`, so prologs and epilogs of jobs starting and
ending together serialise. A job whose epilog never ran (a node rebooted, a
slurmd killed and its job purged) is found by `reconcile`, which ends every
recorded job the scheduler no longer lists; the prolog runs it before each
job starts. A scheduler that cannot be asked ends nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hosttune.agent.sense.errors import ConfigError, HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.tuners.journal import Journal
from hosttune.tuners.knobs import Change, Plan, parse_knob
from hosttune.tuners.transaction import StepOutcome, apply_plan, recover

STATE_VERSION = 1
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CLASS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# A job's plan holds only knobs of the whole node: what reaches the job's own
# processes (numa:pid, cpuset, irq placement) needs them running, which the
# prolog is too early for; the daemon's recognition does that once they run.
NODE_WIDE_FAMILIES = ("sysctl", "thp", "hugepages", "block", "cpu")
# How a job may declare its class to Slurm: `--comment=hosttune:CLASS` (or
# `hosttune=CLASS` among other words) or `--constraint=hosttune-CLASS` (a node
# feature the site defines).
_COMMENT_CLASS_RE = re.compile(r"(?:^|[\s,;])hosttune[:=]([a-z][a-z0-9_-]*)")
_FEATURE_PREFIXES = ("hosttune-", "hosttune_")
_SCONTROL_FIELD_RE = re.compile(r"(?:^|\s)([A-Z][A-Za-z:/]*)=")


class JobError(HosttuneError):
    """A job request that cannot be honoured; names the job."""

    def __init__(self, job: str, message: str) -> None:
        super().__init__(message, subject=f"job {job}")
        self.job = job


@dataclass
class Job:
    id: str
    workload: str | None
    declared_by: str  # how the class came: --class, HOSTTUNE_CLASS, slurm comment, ...
    plan_from: str  # jobs.d file, recommender, or none
    plan: dict[str, str]  # knob -> value
    started: float
    sources: dict[str, str] = field(default_factory=dict)  # knob -> Change.source

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "workload": self.workload, "declared_by": self.declared_by,
                "plan_from": self.plan_from, "plan": dict(self.plan), "started": self.started,
                "sources": dict(self.sources)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        return cls(id=str(data["id"]), workload=data.get("workload"),
                   declared_by=str(data.get("declared_by", "")),
                   plan_from=str(data.get("plan_from", "")),
                   plan={str(k): str(v) for k, v in dict(data.get("plan", {})).items()},
                   started=float(data.get("started", 0.0)),
                   sources={str(k): str(v) for k, v in dict(data.get("sources", {})).items()})


@dataclass
class Book:
    """What is on disk: the running jobs, and for each knob hosttune holds for
    them the value it set and the baseline to return to."""

    jobs: dict[str, Job] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    baseline: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, dict[str, str]] = field(default_factory=dict)
    # knobs the last convergence could not set or restore, with why
    problems: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION,
                "jobs": {k: j.to_dict() for k, j in sorted(self.jobs.items())},
                "held": dict(sorted(self.held.items())),
                "baseline": dict(sorted(self.baseline.items())),
                "conflicts": {k: dict(v) for k, v in sorted(self.conflicts.items())},
                "problems": dict(sorted(self.problems.items()))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> Book:
        if data.get("version") != STATE_VERSION:
            raise ConfigError(f"job book version {data.get('version')!r} is not "
                              f"{STATE_VERSION}", path=path)
        try:
            return cls(jobs={str(k): Job.from_dict(v) for k, v in data["jobs"].items()},
                       held={str(k): str(v) for k, v in data["held"].items()},
                       baseline={str(k): str(v) for k, v in data["baseline"].items()},
                       conflicts={str(k): {str(a): str(b) for a, b in v.items()}
                                  for k, v in data.get("conflicts", {}).items()},
                       problems={str(k): str(v) for k, v in data.get("problems", {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"job book is malformed: {exc!r}", path=path) from None


def merge(jobs: Iterable[Job]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(knob -> value every job naming it agrees on, knob -> {job: value} where
    they disagree). A knob only one job names is that job's."""
    wanted: dict[str, dict[str, str]] = {}
    for job in jobs:
        for knob, value in job.plan.items():
            wanted.setdefault(knob, {})[job.id] = value
    target: dict[str, str] = {}
    conflicts: dict[str, dict[str, str]] = {}
    for knob, by_job in wanted.items():
        if len(set(by_job.values())) == 1:
            target[knob] = next(iter(by_job.values()))
        else:
            conflicts[knob] = dict(sorted(by_job.items()))
    return target, conflicts


@dataclass
class JobResult:
    action: str
    job: str | None
    ok: bool
    message: str
    steps: list[StepOutcome] = field(default_factory=list)
    book: dict[str, Any] = field(default_factory=dict)
    ended: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "job": self.job, "ok": self.ok, "message": self.message,
                "changes": [s.to_dict() for s in self.steps], "ended": self.ended,
                "state": self.book}


class JobBook:
    """The book on disk, held under its lock for the length of a `with`."""

    def __init__(self, state_dir: Path, *, lock_timeout: float = 60.0) -> None:
        self.dir = state_dir
        self.path = state_dir / "jobs.json"
        self.lock_path = state_dir / "jobs.lock"
        self.lock_timeout = lock_timeout
        self._fd: int | None = None

    def __enter__(self) -> JobBook:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise JobError("*", f"{self.lock_path} held by another hosttune for "
                                        f"{self.lock_timeout:.0f} s") from None
                time.sleep(0.05)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def read(self) -> Book:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Book()
        except OSError as exc:
            raise ConfigError(f"cannot read the job book: {exc.strerror}",
                              path=str(self.path)) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"job book is not JSON: {exc.msg}", path=str(self.path),
                              line=exc.lineno) from None
        if not isinstance(data, dict):
            raise ConfigError("job book is not a JSON object", path=str(self.path))
        return Book.from_dict(data, str(self.path))

    def write(self, book: Book) -> None:
        """Atomically: a reader (or a crash) sees the old book or the new one."""
        assert self._fd is not None, "write the book only under its lock"
        text = json.dumps(book.to_dict(), indent=1, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".jobs.", dir=self.dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# -- the class a job declares, and its plan ----------------------------------------------


def scontrol_fields(text: str) -> dict[str, str]:
    """`scontrol show job -o ID` output as a mapping. A value may hold spaces
    (a comment): it runs to the next ` Key=`."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    marks = list(_SCONTROL_FIELD_RE.finditer(line))
    fields: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(line)
        fields.setdefault(mark.group(1), line[mark.end():end].strip())
    return fields


def class_from_slurm(fields: Mapping[str, str]) -> tuple[str | None, str]:
    """(class, where it was declared) from a job's comment or its features."""
    match = _COMMENT_CLASS_RE.search(fields.get("Comment", "") or "")
    if match:
        return match.group(1), "slurm comment"
    for feature in re.split(r"[&|,*\[\]()\s]+", fields.get("Features", "") or ""):
        for prefix in _FEATURE_PREFIXES:
            if feature.startswith(prefix) and CLASS_RE.match(feature[len(prefix):]):
                return feature[len(prefix):], "slurm constraint"
    return None, "undeclared"


Runner = Callable[[list[str]], str]


def run_command(argv: list[str]) -> str:
    """stdout of a scheduler command; a failure is an error naming it."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JobError("*", f"{argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise JobError("*", f"{' '.join(argv)} failed ({done.returncode}): "
                            f"{done.stderr.strip()[:300]}")
    return done.stdout


def slurm_job_fields(job: str, runner: Runner = run_command) -> dict[str, str]:
    return scontrol_fields(runner(["scontrol", "show", "job", "-o", job]))


def slurm_live_jobs(runner: Runner = run_command) -> set[str]:
    """Ids of every job Slurm still lists (pending, running, completing...):
    a job whose epilog is still due stays listed until it has run."""
    out = runner(["squeue", "--noheader", "--format=%A"])
    return {line.strip() for line in out.splitlines() if line.strip()}


def plans_dir(paths: Paths) -> Path:
    """Site plans per class (`jobs.d/CLASS.yaml` beside hosttune.yaml): they
    win over the recommender for that class."""
    return paths.config.parent / "jobs.d"


def plan_for(host: Host, workload: str, paths: Paths,
             recommend: Callable[[Host, str], Plan] | None = None) -> tuple[Plan, str]:
    """The plan for a job of `workload` and where it came from."""
    site = plans_dir(paths) / f"{workload}.yaml"
    if site.is_file():
        from hosttune.agent.service.config import read_text

        return Plan.from_yaml(read_text(site), str(site)), str(site)
    recommend = recommend or _recommended_plan
    plan = recommend(host, workload)
    kept = [c for c in plan.changes if parse_knob(c.knob)[0] in NODE_WIDE_FAMILIES]
    return Plan(kept, workload=workload, note=plan.note), "hosttune recommend"


def _recommended_plan(host: Host, workload: str) -> Plan:
    # the recommender and its telemetry window: only when a job names a class
    from hosttune.agent.service.recommend import run_recommend
    from hosttune.tuners.knobs import Plan as PlanType

    report = run_recommend(host, workload=workload, window=1.0)
    return PlanType.from_yaml(report.plan_yaml, f"hosttune recommend --workload {workload}")


# -- converging the node to the book -------------------------------------------------------


@dataclass
class Context:
    host: Host
    paths: Paths
    allowlist: Mapping[str, Mapping[str, Any]] | None = None
    admin_owned: Mapping[str, str] | None = None
    lock_timeout: float = 60.0
    now: Callable[[], float] = time.time


def _converge(ctx: Context, journal: Journal, book: Book, why: str) -> list[StepOutcome]:
    """One transaction taking the node from what the book holds to the merge
    of its jobs. Updates `book` to what the node now holds."""
    target, conflicts = merge(book.jobs.values())
    book.conflicts = conflicts
    sources = {k: s for j in book.jobs.values() for k, s in j.sources.items()}
    changes: list[Change] = []
    restoring: set[str] = set()
    for knob in sorted(set(book.held) - set(target)):
        baseline = book.baseline.get(knob)
        if baseline is None:
            book.held.pop(knob)
            continue
        what = "in conflict between jobs " + ", ".join(conflicts[knob]) if knob in conflicts \
            else "no running job wants it"
        changes.append(Change(knob, baseline, reason=f"back to the baseline: {what} ({why})",
                              source="admin"))
        restoring.add(knob)
    for knob, value in sorted(target.items()):
        if book.held.get(knob) == value:
            continue
        holders = sorted(j.id for j in book.jobs.values() if knob in j.plan)
        changes.append(Change(knob, value, reason=f"plan of job(s) {', '.join(holders)}",
                              source=sources.get(knob, "admin")))
    book.problems = {k: v for k, v in book.problems.items() if k in target}
    if not changes:
        return []
    result = apply_plan(ctx.host, Plan(changes, note=why), journal, skip_refused=True,
                        reason=f"hosttune job: {why}", allowlist=ctx.allowlist,
                        admin_owned=ctx.admin_owned, lock_timeout=ctx.lock_timeout)
    if not result.ok and result.failed_step is not None:
        # all or nothing: the transaction put back what it had touched
        raise JobError("*", f"could not converge the node ({why}): {result.message}")
    for step in result.steps:
        knob = step.knob
        done = step.status in ("applied", "unchanged")
        if knob in restoring:
            if not done:
                book.problems[knob] = f"not restored to {book.baseline[knob]!r}: {step.message}"
            # restored, or someone else owns it now: hosttune lets go either way
            book.held.pop(knob, None)
            book.baseline.pop(knob, None)
        elif done:
            if knob not in book.held:
                book.baseline[knob] = step.before if step.before is not None else step.after
            book.held[knob] = step.after
            book.problems.pop(knob, None)
        else:
            book.problems[knob] = step.message
            if knob in book.held:
                # changed under hosttune since it set it: no longer hosttune's to restore
                book.held.pop(knob)
                book.baseline.pop(knob, None)
    return list(result.steps)


@contextlib.contextmanager
def _opened(ctx: Context) -> Iterator[tuple[JobBook, Book, Journal]]:
    with JobBook(ctx.paths.state_dir, lock_timeout=ctx.lock_timeout) as jb:
        journal = Journal(ctx.paths.journal)
        try:
            recover(ctx.host, journal, lock_timeout=ctx.lock_timeout)
            yield jb, jb.read(), journal
        finally:
            journal.close()


def _summary(book: Book) -> str:
    parts = [f"{len(book.jobs)} job(s) running", f"{len(book.held)} knob(s) held"]
    if book.conflicts:
        parts.append("left at baseline (jobs disagree): " + "; ".join(
            f"{k} ({', '.join(f'{j}={v}' for j, v in by.items())})"
            for k, by in book.conflicts.items()))
    if book.problems:
        parts.append("not applied: " + "; ".join(f"{k}: {v}" for k, v in book.problems.items()))
    return ", ".join(parts)


def start(ctx: Context, job_id: str, *, workload: str | None, declared_by: str,
          plan: Plan | None = None, plan_from: str = "",
          recommend: Callable[[Host, str], Plan] | None = None) -> JobResult:
    """Record job `job_id` and converge the node to the merge of every running
    job's plan. Without a class (and no plan) the job is recorded with an empty
    plan: the daemon's recognition takes it from there."""
    if not JOB_ID_RE.match(job_id):
        raise JobError(job_id, "a job id is 1-64 letters, digits, '_', '.' or '-'")
    if workload is not None and not CLASS_RE.match(workload):
        raise JobError(job_id, f"bad workload class {workload!r}")
    if plan is None and workload is not None:
        plan, plan_from = plan_for(ctx.host, workload, ctx.paths, recommend)
    changes = plan.changes if plan is not None else []
    job = Job(id=job_id, workload=workload, declared_by=declared_by,
              plan_from=plan_from if plan is not None else "none",
              plan={c.knob: c.after for c in changes},
              started=ctx.now(), sources={c.knob: c.source for c in changes})
    with _opened(ctx) as (jb, book, journal):
        again = job_id in book.jobs
        book.jobs[job_id] = job
        # recorded before the knobs move: a crash in between leaves a job the
        # epilog or reconcile ends, never a knob nobody will restore
        jb.write(book)
        steps = _converge(ctx, journal, book, f"job {job_id} started")
        jb.write(book)
    head = f"job {job_id} ({workload or 'no class declared'}"
    head += f", plan from {job.plan_from})" if plan is not None else ": left to the daemon)"
    if again:
        head += " [already recorded: plan refreshed]"
    return JobResult("start", job_id, not book.problems, f"{head}: {_summary(book)}", steps,
                     book.to_dict())


def end(ctx: Context, job_id: str) -> JobResult:
    """Forget job `job_id` and converge: knobs no other running job wants go
    back to their baseline. An unknown job is not an error (its prolog may
    have failed, or reconcile ended it already)."""
    with _opened(ctx) as (jb, book, journal):
        if job_id not in book.jobs:
            return JobResult("end", job_id, True,
                             f"job {job_id} is not recorded: nothing to undo; "
                             f"{_summary(book)}", book=book.to_dict())
        del book.jobs[job_id]
        steps = _converge(ctx, journal, book, f"job {job_id} ended")
        jb.write(book)
    # a knob someone else changed since is reported and left, not a failure:
    # only a failed restore (raised above) is
    return JobResult("end", job_id, True, f"job {job_id} ended: {_summary(book)}",
                     steps, book.to_dict(), ended=[job_id])


def reconcile(ctx: Context, live: Callable[[], set[str]], *,
              keep: Iterable[str] = ()) -> JobResult:
    """End every recorded job the scheduler no longer lists (its epilog never
    ran). If the scheduler cannot be asked, nothing is ended."""
    with _opened(ctx) as (jb, book, journal):
        if not book.jobs:
            return JobResult("reconcile", None, True, "no job recorded", book=book.to_dict())
        try:
            listed = live() | set(keep)
        except HosttuneError as exc:
            return JobResult("reconcile", None, False,
                             f"scheduler not asked, nothing ended: {exc}", book=book.to_dict())
        gone = sorted(set(book.jobs) - listed)
        if not gone:
            return JobResult("reconcile", None, True,
                             f"every recorded job is still listed: {_summary(book)}",
                             book=book.to_dict())
        for job_id in gone:
            del book.jobs[job_id]
        steps = _converge(ctx, journal, book, "jobs " + ", ".join(gone) + " no longer listed")
        jb.write(book)
    return JobResult("reconcile", None, True,
                     f"ended {', '.join(gone)} (no longer listed): {_summary(book)}",
                     steps, book.to_dict(), ended=gone)


def status(paths: Paths) -> dict[str, Any]:
    """The book as it is on disk (read without the lock: it is replaced whole)."""
    jb = JobBook(paths.state_dir)
    data = jb.read().to_dict()
    target, _ = merge(Book.from_dict(data, str(jb.path)).jobs.values())
    data["target"] = target
    return data
