"""The `hosttune` command line.

Start-up must stay cheap (`hosttune --help` within 0.3 s): `--help` imports
every command module, so those import only typer, the standard library and
the cheap bottom of sense (errors, paths, Host: 9 ms) at top level; what a
command needs beyond that (180 ms for all of them together) it imports when
it runs, each such import saying so.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable
from types import ModuleType
from typing import Any

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.service.commands import (
    accel,
    capture,
    classify,
    config,
    doctor,
    job,
    k8s,
    knobs,
    model,
    outcomes,
    recommend,
    record,
    status,
    telemetry,
    topology,
    tune,
)
from hosttune.agent.service.commands.options import HELP_MARKUP

# One module per command group, each with `register(app)` calling
# options.add_command/add_group, in the order --help lists them.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    recommend, tune, outcomes, topology, capture, config, accel, status, telemetry, record,
    model, classify, knobs, job, k8s, doctor,
)


def version() -> str:
    # importlib.metadata: 32 ms, needed by --version alone
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("hosttune")
    except PackageNotFoundError:
        return "0+unknown"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"hosttune {version()}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="hosttune",
        help="Tune Linux hosts for AI workloads: observe, recommend, apply, roll back.",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=HELP_MARKUP,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        show_version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True,
            help="Print the version and exit.",
        ),
    ) -> None:
        """hosttune: workload-aware, reversible host tuning for AI servers."""

    for module in COMMAND_MODULES:
        module.register(app)
    _spell_unions_for_old_typer(app)
    return app


def _spell_unions_for_old_typer(app: typer.Typer) -> None:
    """Rewrite `X | None` parameter annotations as `typing.Optional[X]`.

    Debian 12's typer 0.7 recognises only typing.Union and raises "Type not
    yet supported: str | None" for PEP 604 unions; newer typer reads both.
    """
    callbacks: list[Callable[..., Any]] = []
    pending = [app]
    while pending:
        current = pending.pop()
        callbacks += [c.callback for c in current.registered_commands if c.callback]
        for group in current.registered_groups:
            if group.typer_instance is not None:
                pending.append(group.typer_instance)
    for callback in callbacks:
        hints = typing.get_type_hints(callback)
        for name, hint in hints.items():
            if isinstance(hint, types.UnionType):
                hints[name] = typing.Union[hint.__args__]  # noqa: UP007
        callback.__annotations__ = hints


def main(argv: list[str] | None = None) -> int:
    app = build_app()
    try:
        app(args=argv, prog_name="hosttune", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except HosttuneError as exc:
        typer.echo(f"hosttune: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("hosttune: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
