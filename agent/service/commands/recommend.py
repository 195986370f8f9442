"""`hosttune recommend`: what to change on this host for the workload it runs,
why, and how much it should help. Works without the daemon and without root
(reading is enough); `--output` writes a plan for `hosttune apply`."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    ROOT_OPTION,
    add_command,
    echo_lines,
    emit_json,
    fail,
    host_root,
)
from hosttune.models import workload_classes

_WORKLOAD = typer.Option(
    None, "--workload", "-w",
    help=f"Workload class ({', '.join(workload_classes.recommendable())}); default: the "
         "class a running hosttuned has settled on, else classify what runs now.")
_EXPLAIN = typer.Option(False, "--explain", help="Show evidence, source and expected effect.")
_OUTPUT = typer.Option(None, "--output", "-o", help="Write the plan (YAML) for `hosttune apply`.")
_WINDOW = typer.Option(1.0, "--window", min=0.1, max=60.0,
                       help="Seconds of telemetry to look at.")


def register(app: typer.Typer) -> None:
    add_command(app, "recommend", recommend_command)


def recommend_command(  # noqa: PLR0917 (typer maps parameters to options)
    workload: str | None = _WORKLOAD,
    explain: bool = _EXPLAIN,
    output: Path | None = _OUTPUT,
    window: float = _WINDOW,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Recommend changes for the workload on this host, each with its reason.

    Works without the daemon and without root; --output writes the plan for
    `hosttune apply`."""
    # recommend (the priors, topology, the model): 120 ms, not for --help
    from hosttune.agent.service.recommend import run_recommend

    host = Host(host_root(root))
    try:
        report = run_recommend(host, workload=workload, window=window)
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    if output is not None:
        try:
            output.write_text(report.plan_yaml)
        except OSError as exc:
            raise fail(f"{output}: cannot write: {exc.strerror}") from None
    if json_out:
        emit_json(report.to_dict())
        return
    echo_lines(report.render(explain=explain))
    if output is not None:
        typer.echo(f"\nplan written to {output}; apply it with: hosttune apply {output}")
