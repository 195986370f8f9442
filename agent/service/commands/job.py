"""`hosttune job start|end|reconcile|status`: what a batch scheduler's prolog
and epilog call (packaging/slurm/). The logic is in `service/jobs.py`; the
Slurm commands (scontrol, squeue) are run only with `--slurm`.

The act layer and the job book are imported inside the commands: `hosttune
--help` imports this module too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hosttune.agent.sense.errors import HosttuneError, PermissionRefused
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    ROOT_OPTION,
    add_command,
    add_group,
    emit_json,
    fail,
    host_root,
)

if TYPE_CHECKING:
    from hosttune.agent.service.jobs import Context, JobResult

_ID = typer.Option(None, "--id", help="The job's id (default: $SLURM_JOB_ID).")
_CLASS = typer.Option(None, "--class", help="The job's workload class (default: "
                                            "$HOSTTUNE_CLASS, else what the job declared "
                                            "to Slurm with --slurm).")
_PLAN = typer.Option(None, "--plan", help="Apply this plan file for the job instead of the "
                                          "class's plan.")
_SLURM = typer.Option(False, "--slurm", help="Ask Slurm: the class from the job's comment "
                                             "(hosttune:CLASS) or constraint (hosttune-CLASS), "
                                             "and end recorded jobs squeue no longer lists.")
_WAIT = typer.Option(60.0, "--wait", min=0.0,
                     help="Seconds to wait for another hosttune to finish.")


def register(app: typer.Typer) -> None:
    group = add_group(app, "job", "Batch jobs (Slurm prolog/epilog): each job's plan while it "
                                  "runs, the node's baseline after.")
    add_command(group, "start", start_command)
    add_command(group, "end", end_command)
    add_command(group, "reconcile", reconcile_command)
    add_command(group, "status", status_command)


def _job_id(given: str | None) -> str:
    job = given or os.environ.get("SLURM_JOB_ID")
    if not job:
        raise fail("give --id JOB (no $SLURM_JOB_ID in the environment)")
    return job


def _context(root: Path | None, wait: float) -> Context:
    # the act layer and the config: not at --help (see the module docstring)
    from hosttune.agent.service.commands.knobs import _admin_overrides
    from hosttune.agent.service.jobs import Context

    if os.geteuid() != 0:
        raise PermissionRefused(f"only root changes the host (this is uid {os.geteuid()})")
    allowlist, owned = _admin_overrides()
    return Context(host=Host(host_root(root)), paths=Paths.from_env(), allowlist=allowlist,
                   admin_owned=owned, lock_timeout=wait)


def _print(result: JobResult, json_out: bool) -> None:
    if json_out:
        emit_json(result.to_dict())
    else:
        typer.echo(result.message)
        for step in result.steps:
            typer.echo(f"  {step.line()}")
    if not result.ok:
        raise typer.Exit(1)


def start_command(  # noqa: PLR0917 (typer maps parameters to options)
    job_id: str | None = _ID,
    workload: str | None = _CLASS,
    plan_file: Path | None = _PLAN,
    slurm: bool = _SLURM,
    wait: float = _WAIT,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Record a job that starts on this node and apply its plan, merged with
    those of the jobs already running here.

    A knob two jobs want at different values goes back to its baseline and is
    reported. The plan of a class is `jobs.d/CLASS.yaml` beside hosttune.yaml
    if the site wrote one, else what `hosttune recommend --workload CLASS`
    gives for the node's knobs. A job that declares no class is recorded with
    no plan: the daemon's recognition takes it from there."""
    from hosttune.agent.service import jobs
    from hosttune.agent.service.config import read_text
    from hosttune.tuners.knobs import Plan

    job = _job_id(job_id)
    ctx = _context(root, wait)
    declared_by = "--class" if workload else ""
    if not workload and os.environ.get("HOSTTUNE_CLASS"):
        workload, declared_by = os.environ["HOSTTUNE_CLASS"], "HOSTTUNE_CLASS"
    notes: list[str] = []
    if slurm:
        done = jobs.reconcile(ctx, jobs.slurm_live_jobs, keep=[job])
        if done.ended or not done.ok:
            notes.append(f"reconcile: {done.message}")
        if not workload:
            try:
                workload, declared_by = jobs.class_from_slurm(jobs.slurm_job_fields(job))
            except HosttuneError as exc:
                notes.append(f"class not read from Slurm: {exc}")
    plan = None
    if plan_file is not None:
        try:
            plan = Plan.from_yaml(read_text(plan_file), str(plan_file))
        except HosttuneError as exc:
            raise fail(str(exc)) from None
    result = jobs.start(ctx, job, workload=workload, declared_by=declared_by or "undeclared",
                        plan=plan, plan_from=str(plan_file) if plan_file else "")
    for note in notes:
        typer.echo(f"hosttune: {note}", err=True)
    _print(result, json_out)


def end_command(
    job_id: str | None = _ID,
    wait: float = _WAIT,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Forget a job that ended here: every knob no other running job wants goes
    back to the baseline it had before the first job took it."""
    from hosttune.agent.service import jobs

    _print(jobs.end(_context(root, wait), _job_id(job_id)), json_out)


def reconcile_command(
    wait: float = _WAIT,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """End every recorded job Slurm (squeue) no longer lists: a job whose
    epilog never ran. Nothing is ended when squeue cannot answer."""
    from hosttune.agent.service import jobs

    _print(jobs.reconcile(_context(root, wait), jobs.slurm_live_jobs), json_out)


def status_command(json_out: bool = JSON_OPTION) -> None:
    """The jobs recorded on this node, the knobs held for them with their
    baselines, and the knobs left at baseline because jobs disagree."""
    from hosttune.agent.service import jobs

    try:
        data = jobs.status(Paths.from_env())
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    if json_out:
        emit_json(data)
        return
    if not data["jobs"]:
        typer.echo("no job recorded")
    for job in data["jobs"].values():
        typer.echo(f"job {job['id']}: {job['workload'] or 'no class'} "
                   f"({job['declared_by']}; plan from {job['plan_from']})")
        for knob, value in job["plan"].items():
            typer.echo(f"    {knob} = {value}")
    for knob, value in data["held"].items():
        typer.echo(f"held {knob} = {value} (baseline {data['baseline'].get(knob)})")
    for knob, by_job in data["conflicts"].items():
        typer.echo(f"conflict {knob}: " + ", ".join(f"job {j} wants {v}"
                                                    for j, v in by_job.items())
                   + "; left at baseline")
    for knob, why in data["problems"].items():
        typer.echo(f"not applied {knob}: {why}")
