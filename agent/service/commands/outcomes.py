"""`hosttune outcomes`: what was measured on this host (tuning trials and
applied plans), per workload class, and whether that is enough for the
recommender to prefer it over the priors; `export` and `import` carry them
between the hosts of a fleet (format: README, "Fleet learning")."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from hosttune.agent.sense.errors import HosttuneError
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
    from hosttune.models.outcomes import Outcome

_WORKLOAD_OPT = typer.Option(None, "--workload", "-w", help="Only this workload class.")
_RECORD_WORKLOAD = typer.Option(..., "--workload", "-w", help="Workload class it was run under.")
_EFFECT = typer.Option(..., "--effect", min=0.0,
                       help="Measured throughput as a ratio to the baseline (1.10 = 10% faster).")
_PLAN = typer.Option(..., "--plan", help="The plan file that was applied.")
_OBJECTIVE = typer.Option("", "--objective", help="What was measured, for the record.")
_OUTPUT = typer.Option(None, "--output", "-o", metavar="FILE",
                       help="Write here (JSON lines) instead of standard output.")
_FILES = typer.Argument(..., metavar="FILE...",
                        help="Files `outcomes export` wrote; - reads standard input.")


def register(app: typer.Typer) -> None:
    group = add_group(app, "outcomes",
                      "Outcomes measured on this host, which the recommender learns from.")
    add_command(group, "show", show_command)
    add_command(group, "record", record_command)
    add_command(group, "export", export_command)
    add_command(group, "import", import_command)


def show_command(workload: str | None = _WORKLOAD_OPT, json_out: bool = JSON_OPTION) -> None:
    """List recorded outcomes and whether each class has enough evidence."""
    from hosttune.agent.sense.host import Host
    from hosttune.agent.service.outcome_store import (
        OutcomeStore,  # 30 ms, not for --help
        host_facts,
    )
    from hosttune.models.outcomes import MIN_EVIDENCE, weight_of

    store = OutcomeStore(Paths.from_env().state_dir / "outcomes.db")
    try:
        rows = store.outcomes(workload)
        imported = store.imported(workload)
        here = host_facts(Host())
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    classes = sorted({o.workload for o in rows + imported})
    summary = {}
    for cls in classes:
        model = store.learned(cls, here)
        summary[cls] = {"outcomes": model.local_count, "imported": model.imported_count,
                        "imported_hosts": model.imported_hosts, "weight": model.evidence,
                        "learned": model.fitted, "needed": MIN_EVIDENCE}
    if json_out:
        emit_json({"store": str(store.path), "classes": summary,
                   "outcomes": [_row(o) for o in rows],
                   "imported": [{**_row(o), "weight": round(weight_of(o, here), 4)}
                                for o in imported]})
        return
    if not rows and not imported:
        typer.echo(f"no outcomes recorded in {store.path}")
        return
    for cls, info in summary.items():
        state = ("used ahead of the priors" if info["learned"]
                 else f"priors only (need weight {MIN_EVIDENCE})")
        extra = (f" + {info['imported']} imported from {info['imported_hosts']} host(s)"
                 if info["imported"] else "")
        typer.echo(f"{cls}: {info['outcomes']} outcome(s){extra}, weight {info['weight']:g}, "
                   f"{state}")
    for o in rows + imported:
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(o.knobs.items()))
        where = (f"from {o.host.host_id} (weight {weight_of(o, here):.2f})"
                 if o.host else "here")
        typer.echo(f"  {o.workload:<16} {o.source:<6} {o.effect:6.3f}x  {knobs}  [{where}]")


def _row(o: Outcome) -> dict[str, Any]:
    return {"workload": o.workload, "source": o.source, "knobs": o.knobs,
            "effect": o.effect, "objective": o.objective, "ts": o.ts, "before": o.before,
            "noise": o.noise, "host": o.host.to_dict() if o.host else None}


def export_command(workload: str | None = _WORKLOAD_OPT, output: Path | None = _OUTPUT,
                   root: Path | None = ROOT_OPTION) -> None:
    """Write this host's own outcomes with its host facts, one JSON object a
    line (format version 1, described in the README), for `outcomes import`
    on other hosts. Outcomes imported here are not passed on."""
    from hosttune.agent.sense.host import Host
    from hosttune.agent.service.outcome_store import OutcomeStore, host_facts
    from hosttune.models.outcomes import to_record

    store = OutcomeStore(Paths.from_env().state_dir / "outcomes.db")
    try:
        rows = store.outcomes(workload)
        facts = host_facts(Host(host_root(root)))
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    if not facts.host_id:
        raise fail("this host has no /etc/machine-id nor hostname to tell it apart by")
    text = "".join(json.dumps(to_record(o, facts), sort_keys=True) + "\n" for o in rows)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise fail(f"{output}: {exc.strerror or exc}") from None
    typer.echo(f"exported {len(rows)} outcome(s) to {output}", err=True)


def import_command(files: list[str] = _FILES, root: Path | None = ROOT_OPTION,
                   json_out: bool = JSON_OPTION) -> None:
    """Keep outcomes other hosts exported, apart from this host's own, with
    the facts of the host that measured each; the recommender weighs them
    by how alike that host is to this one. A file with any malformed line is
    refused whole (each error named file:line); importing the same file
    twice adds nothing."""
    from hosttune.agent.sense.host import Host
    from hosttune.agent.service.outcome_store import OutcomeStore, host_facts
    from hosttune.models.outcomes import from_record

    try:
        here = host_facts(Host(host_root(root)))
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    parsed: list[Outcome] = []
    errors: list[str] = []
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{name}: {getattr(exc, 'strerror', None) or exc}")
            continue
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{'<stdin>' if name == '-' else name}:{lineno}"
            try:
                outcome = from_record(json.loads(line), where)
            except json.JSONDecodeError as exc:
                errors.append(f"{where}: not JSON: {exc.msg} (column {exc.colno})")
                continue
            except HosttuneError as exc:
                errors.append(str(exc))
                continue
            if outcome.host is not None and outcome.host.host_id == here.host_id:
                errors.append(f"{where}: measured on this very host (host_id "
                              f"{here.host_id}): its own outcomes are already here")
                continue
            parsed.append(outcome)
    if errors:
        for line in errors[:20]:
            typer.echo(f"hosttune: error: {line}", err=True)
        if len(errors) > 20:
            typer.echo(f"hosttune: error: ... and {len(errors) - 20} more", err=True)
        raise fail(f"nothing imported: {len(errors)} error(s)")
    store = OutcomeStore(Paths.from_env().state_dir / "outcomes.db")
    try:
        added = store.add_imported(parsed, origin=", ".join(files))
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    hosts = sorted({o.host.host_id for o in parsed if o.host})
    if json_out:
        emit_json({"read": len(parsed), "added": added, "hosts": hosts,
                   "store": str(store.path)})
        return
    typer.echo(f"imported {added} new outcome(s) of {len(parsed)} read, from "
               f"{len(hosts)} host(s), into {store.path}")


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
