"""`hosttune record`: record a labelled telemetry trace of a command, a
running process or the host as it is."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.service import optional
from hosttune.agent.service.commands.options import JSON_OPTION, add_command, emit_json, fail

_COMMAND = typer.Argument(None, help="The command to run and record (after --).")
_LABEL = typer.Option(..., "--label", "-l",
                      help="Workload class of what runs (training, idle, ...).")
_OUTPUT = typer.Option(..., "--output", "-o", help="Trace file to write (.csv.gz).")
_INTERVAL = typer.Option(1.0, "--interval", "-i", help="Seconds between samples.")
_PID = typer.Option(None, "--pid", help="Watch this running process instead of a command.")
_DURATION = typer.Option(None, "--duration", "-d",
                         help="Stop after this many seconds (a command still running is stopped).")
_META = typer.Option(None, "--meta", help="key=value added to the trace header (repeatable).")


def _meta(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier() or key.lower() != key:
            raise fail(f"--meta wants key=value with a lowercase key, got {item!r}", 2)
        out[key] = value
    return out


def register(app: typer.Typer) -> None:
    add_command(app, "record", record_command,
                context_settings={"allow_interspersed_args": False})


def record_command(  # noqa: PLR0917 (typer maps parameters to options)
    command: list[str] | None = _COMMAND,
    label: str = _LABEL,
    output: Path = _OUTPUT,
    interval: float = _INTERVAL,
    pid: int | None = _PID,
    duration: float | None = _DURATION,
    meta: list[str] | None = _META,
    json_out: bool = JSON_OPTION,
) -> None:
    """Record a labelled telemetry trace while COMMAND runs (or --pid lives,
    or for --duration).

    Writes one row per sample every --interval seconds into a gzip CSV with
    host-independent columns and a header naming host, kernel, hosttune
    version, label and command. A workload of hosttune's suite that needs
    PyTorch is refused before anything runs when PyTorch is missing."""
    # recording (the sampler) and rich: 90 ms, not for --help
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from hosttune.agent.service.recording import record as do_record

    if not label.strip() or any(c.isspace() for c in label):
        raise fail("--label must be one word, e.g. training", 2)
    try:
        optional.require_for_command_line("record", command or [])
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    total = duration
    with Progress(
        TextColumn(f"recording [bold]{label}[/]"), BarColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[rows]} samples"), transient=True,
        disable=json_out,
    ) as bar:
        task = bar.add_task("record", total=total, rows=0)

        def tick(elapsed: float, rows: int) -> None:
            bar.update(task, completed=elapsed, rows=rows)

        try:
            result = do_record(
                output, label, command=command or None, pid=pid, duration=duration,
                interval=interval, meta=_meta(meta), progress=tick,
            )
        except HosttuneError as exc:
            raise fail(str(exc)) from None
    summary = {
        "trace": str(result.path), "label": label, "samples": result.rows,
        "seconds": round(result.seconds, 1), "stopped": result.stopped,
        "exit_code": result.exit_code,
    }
    if json_out:
        emit_json(summary)
    else:
        typer.echo(
            f"{result.path}: {result.rows} samples of {label} over {result.seconds:.0f} s "
            f"({result.stopped}"
            + (f", exit code {result.exit_code}" if result.exit_code is not None else "")
            + ")"
        )
    if result.exit_code:
        raise typer.Exit(result.exit_code)
