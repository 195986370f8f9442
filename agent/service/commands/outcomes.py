"""`hosttune outcomes`: what was measured on this host (tuning trials and
applied plans), per workload class, and whether that is enough for the
recommender to prefer it over the priors."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    add_command,
    add_group,
    emit_json,
    fail,
)

_WORKLOAD_OPT = typer.Option(None, "--workload", "-w", help="Only this workload class.")
_RECORD_WORKLOAD = typer.Option(..., "--workload", "-w", help="Workload class it was run under.")
_EFFECT = typer.Option(..., "--effect", min=0.0,
                       help="Measured throughput as a ratio to the baseline (1.10 = 10% faster).")
_PLAN = typer.Option(..., "--plan", help="The plan file that was applied.")
_OBJECTIVE = typer.Option("", "--objective", help="What was measured, for the record.")


def register(app: typer.Typer) -> None:
    group = add_group(app, "outcomes",
                      "Outcomes measured on this host, which the recommender learns from.")
    add_command(group, "show", show_command)
    add_command(group, "record", record_command)


def show_command(workload: str | None = _WORKLOAD_OPT, json_out: bool = JSON_OPTION) -> None:
    """List recorded outcomes and whether each class has enough evidence."""
    from hosttune.agent.service.outcome_store import OutcomeStore  # 30 ms, not for --help
    from hosttune.models.outcomes import MIN_EVIDENCE

    store = OutcomeStore(Paths.from_env().state_dir / "outcomes.db")
    try:
        rows = store.outcomes(workload)
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    classes = sorted({o.workload for o in rows})
    summary = {}
    for cls in classes:
        model = store.learned(cls)
        summary[cls] = {"outcomes": model.count, "learned": model.fitted,
                        "needed": MIN_EVIDENCE}
    if json_out:
        emit_json({"store": str(store.path), "classes": summary,
                   "outcomes": [o.__dict__ for o in rows]})
        return
    if not rows:
        typer.echo(f"no outcomes recorded in {store.path}")
        return
    for cls, info in summary.items():
        state = ("used ahead of the priors" if info["learned"]
                 else f"priors only (need {MIN_EVIDENCE})")
        typer.echo(f"{cls}: {info['outcomes']} outcome(s), {state}")
    for o in rows:
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(o.knobs.items()))
        typer.echo(f"  {o.workload:<16} {o.source:<6} {o.effect:6.3f}x  {knobs}")


def record_command(workload: str = _RECORD_WORKLOAD, effect: float = _EFFECT,
           plan: Path = _PLAN, objective: str = _OBJECTIVE) -> None:
    """Record the measured effect of an applied plan."""
    # the outcome store, config and the knob vocabulary: 70 ms, not for --help
    from hosttune.agent.service.config import read_text
    from hosttune.agent.service.outcome_store import OutcomeStore
    from hosttune.models.outcomes import Outcome
    from hosttune.tuners.knobs import Plan

    try:
        parsed = Plan.from_yaml(read_text(plan), str(plan))
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    knobs = {c.knob: c.after for c in parsed.changes}
    if not knobs:
        raise fail(f"{plan}: the plan has no changes to record")
    store = OutcomeStore(Paths.from_env().state_dir / "outcomes.db")
    try:
        store.record(Outcome(workload=workload, source="plan", knobs=knobs, effect=effect,
                             objective=objective))
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"recorded {effect:.3f}x for {len(knobs)} knob(s) under '{workload}'")
