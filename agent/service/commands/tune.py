"""`hosttune tune`: Bayesian optimisation of allowed knobs against an
objective the admin names (a benchmark command, a metric file, a Prometheus
metric). Every trial is a transaction; the host is back at its baseline
after an interrupt (Ctrl-C, SIGTERM) and, after a crash, at the start of the
next tuning run."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.service import optional
from hosttune.agent.service.commands.options import (
    DRY_RUN_OPTION,
    JSON_OPTION,
    ROOT_OPTION,
    add_command,
    emit_json,
    fail,
    host_root,
)

_OBJECTIVE = typer.Option(None, "--objective", help="Shell command to run for each measurement.")
_METRIC = typer.Option(None, "--metric",
                       help="Regex for the metric in the output (its first group); "
                            "without it the command's wall time is minimised.")
_LOWER = typer.Option(False, "--lower-is-better", help="The metric is a cost, not a throughput.")
_BUDGET = typer.Option(10, "--budget", min=1, max=200, help="Trials after the baseline.")
_REPEATS = typer.Option(1, "--repeats", min=1, max=50,
                        help="Measurements per trial (the median is used).")
_KNOBS = typer.Option(None, "--knobs",
                      help="Knob to search (repeat the option); default: THP, swappiness, "
                           "dirty ratios.")
_KEEP = typer.Option("best", "--keep", help="At the end: keep the best setting, or revert.")
_METRIC_FILE = typer.Option(None, "--metric-file",
                            help="Read the metric from this file (a running workload).")
_PROMETHEUS = typer.Option(None, "--prometheus",
                           help="Scrape the metric from this Prometheus endpoint URL.")
_PROM_NAME = typer.Option(None, "--prometheus-metric",
                          help="Metric name (and labels) to read from --prometheus.")
_WINDOW = typer.Option(10.0, "--window", min=0.1,
                       help="Seconds to let a running workload settle before reading a "
                            "metric file or Prometheus.")
_WORKLOAD = typer.Option("unknown", "--workload", "-w",
                         help="Workload class the outcomes are recorded under.")
_SEED = typer.Option(0, "--seed", help="Random seed of the optimiser.")
_PRUNE = typer.Option(True, "--prune/--no-prune",
                      help="Before keeping the best setting, measure it without each knob it "
                           "changes and put back those that do not help (one trial per knob).")


def register(app: typer.Typer) -> None:
    add_command(app, "tune", tune_command)


def tune_command(  # noqa: PLR0917 (typer maps parameters to options)
    objective: str | None = _OBJECTIVE,
    metric: str | None = _METRIC,
    lower_is_better: bool = _LOWER,
    budget: int = _BUDGET,
    repeats: int = _REPEATS,
    knobs: list[str] | None = _KNOBS,
    keep: str = _KEEP,
    metric_file: Path | None = _METRIC_FILE,
    prometheus: str | None = _PROMETHEUS,
    prometheus_metric: str | None = _PROM_NAME,
    window: float = _WINDOW,
    workload: str = _WORKLOAD,
    seed: int = _SEED,
    prune: bool = _PRUNE,
    dry_run: bool = DRY_RUN_OPTION,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Find better knob values by measuring: Bayesian optimisation with trials
    applied as transactions and reverted on failure or regression.

    Needs scikit-learn (its Gaussian process), checked before the first trial."""
    # the optimiser and the act layer: 95 ms, not for --help
    from hosttune.agent.service.tune import TuneRequest, run_tune

    sources = [s for s in (objective, metric_file, prometheus) if s]
    if len(sources) != 1:
        raise fail("give exactly one of --objective, --metric-file, --prometheus")
    if keep not in ("best", "revert"):
        raise fail(f"--keep is 'best' or 'revert', not {keep!r}")
    if prometheus and not prometheus_metric:
        raise fail("--prometheus needs --prometheus-metric NAME")
    try:
        optional.require("tune", optional.SKLEARN)
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    request = TuneRequest(
        objective=objective, metric=metric, lower_is_better=lower_is_better, budget=budget,
        repeats=repeats, knobs=list(knobs or []), keep=keep, metric_file=metric_file,
        prometheus=prometheus, prometheus_metric=prometheus_metric, window=window,
        workload=workload, seed=seed, dry_run=dry_run, root=host_root(root), prune=prune)
    try:
        report = run_tune(request, echo=None if json_out else typer.echo)
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt as exc:
        typer.echo(f"hosttune: tuning interrupted ({exc or 'Ctrl-C'}); the host is back at "
                   "its baseline", err=True)
        raise typer.Exit(130) from None
    if json_out:
        emit_json(report)
