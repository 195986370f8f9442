"""`hosttune classify`: what runs on this host now (or in a recorded trace),
with the model's confidence and the features behind its answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.service.commands.options import JSON_OPTION, add_command, emit_json, fail
from hosttune.agent.service.render.roles import verdict_dict, verdict_lines

_WINDOW = typer.Option(10.0, "--window", "-w", help="Seconds of telemetry to classify.")
_INTERVAL = typer.Option(None, "--interval", "-i",
                         help="Seconds between samples (default 1). With --trace: merge the "
                              "trace's rows to this interval first, as a sampler at it would "
                              "have recorded them (e.g. -i 5 -w 30 is what the daemon sees).")
_TRACE = typer.Option(None, "--trace", "-t",
                      help="Classify this recorded trace instead of the live host.")
_MODEL = typer.Option(None, "--model", "-m", help="Model file (default: site model, else "
                      "the shipped one).")


def _render(pred: Any, header: str) -> None:
    typer.echo(f"{header}: {pred.label}"
               + (f" (best guess {pred.best})" if pred.label != pred.best else "")
               + f", confidence {pred.confidence:.2f}")
    top = sorted(pred.probabilities.items(), key=lambda kv: -kv[1])[:3]
    typer.echo("  probabilities: " + ", ".join(f"{c} {p:.2f}" for c, p in top))
    if pred.evidence:
        typer.echo("  evidence: " + ", ".join(
            f"{e.feature}={e.value:.3g} (+{e.contribution:.3f})" for e in pred.evidence))
    if pred.imputed:
        typer.echo(f"  not measured here (imputed): {', '.join(pred.imputed)}")


def register(app: typer.Typer) -> None:
    add_command(app, "classify", classify_command)


def classify_command(
    window: float = _WINDOW,
    interval: float | None = _INTERVAL,
    trace: Path | None = _TRACE,
    model: Path | None = _MODEL,
    json_out: bool = JSON_OPTION,
) -> None:
    """Say which workload runs on this host, how sure the model is, and why.

    Samples the host for --window seconds (or reads --trace) and classifies
    the window. Below the model's confidence threshold the answer is
    "unknown"."""
    # the model, the sampler and rich: 150 ms together, not for --help
    from rich.progress import BarColumn, Progress, TextColumn

    from hosttune.agent.service.recording import live_window
    from hosttune.agent.service.site_model import load_model
    from hosttune.models.features import MIN_ROWS
    from hosttune.models.recognise import classify_rows, classify_trace

    if window <= 0 or (interval is not None and interval <= 0):
        raise fail("--window and --interval must be positive", 2)
    try:
        m = load_model(model)
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    if trace is not None:
        try:
            overall, windows = classify_trace(m, trace, window, interval=interval)
        except HosttuneError as exc:
            raise fail(str(exc)) from None
        except ValueError as exc:
            raise fail(f"{trace}: {exc}", 2) from None
        if overall is None:
            raise fail(f"{trace}: too short for one {window:g} s window")
        if json_out:
            emit_json({"model": m.source, "trace": str(trace), **overall.as_dict(),
                       "windows": [{"start": w.start, "end": w.end,
                                    **w.prediction.as_dict()} for w in windows]})
            return
        _render(overall, f"{trace} ({len(windows)} windows)")
        for w in windows:
            typer.echo(f"  {w.start:6.0f}-{w.end:4.0f} s  {w.prediction.label:18} "
                       f"{w.prediction.confidence:.2f}")
        return
    interval = 1.0 if interval is None else interval

    from hosttune.agent.sense.host import Host
    from hosttune.agent.service.live_roles import RoleWatch

    roles = RoleWatch(Host(), accelerators=True)

    def tick(t: float) -> None:
        roles.scan()
        bar.update(task, completed=t)

    with Progress(TextColumn("sampling the host"), BarColumn(), transient=True,
                  disable=json_out) as bar:
        task = bar.add_task("sample", total=window)
        roles.scan()
        try:
            columns, matrix = live_window(window, interval, progress=tick)
        except HosttuneError as exc:
            raise fail(str(exc)) from None
        finally:
            roles.close()
    verdict = roles.verdict()
    if matrix.shape[0] < MIN_ROWS:
        raise fail(f"a {window:g} s window at {interval:g} s holds fewer than "
                   f"{MIN_ROWS} samples; widen --window")
    pred = classify_rows(m, columns, matrix)
    warning = m.geometry_problem(interval, window)
    if json_out:
        emit_json({"model": m.source, "window_seconds": window, **pred.as_dict(),
                   "geometry_warning": warning,
                   "roles": None if verdict is None else verdict_dict(
                       verdict, accel_problem=roles.accel_problem),
                   "roles_problem": roles.problem})
        return
    _render(pred, f"this host, last {window:g} s (host aggregates)")
    if verdict is not None:
        for line in verdict_lines(verdict_dict(verdict, accel_problem=roles.accel_problem)):
            typer.echo(line)
    elif roles.problem:
        typer.echo(f"note: no per-process roles: {roles.problem}", err=True)
    if warning:
        typer.echo(f"note: {warning}", err=True)
