"""`hosttune config validate [FILE]` and `hosttune config show [--json]`."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.service.commands.output import JSON_OPTION, emit_json

_FILE_ARG = typer.Argument(None, help="The file to check (default: the installed configuration).")
_FILE_OPT = typer.Option(None, "--file", "-f",
                         help="Show this file's effect instead of the installed one.")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Check and show the configuration (/etc/hosttune/hosttune.yaml).",
                        no_args_is_help=True)

    @group.command("validate")
    def validate(
        file: Path | None = _FILE_ARG,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Check a configuration file; errors name the key and the line."""
        from hosttune.agent.sense.errors import ConfigError
        from hosttune.agent.sense.paths import Paths
        from hosttune.agent.service import config as cfg
        from hosttune.agent.service.commands.model import geometry_warning

        path = file if file is not None else Paths.from_env().config
        try:
            config = cfg.load(path, missing_ok=False)
        except ConfigError as exc:
            if json_out:
                emit_json({"valid": False, "file": str(path), "error": str(exc),
                           "key": exc.key, "line": exc.line})
                raise typer.Exit(1) from None
            raise
        # valid, but the model's accuracy is unmeasured for such windows: say so
        warning = geometry_warning(config.interval, config.window)
        if json_out:
            emit_json({"valid": True, "file": str(path), "warnings": [warning] if warning else []})
        else:
            typer.echo(f"{path}: valid")
            if warning:
                typer.echo(f"warning: interval {config.interval:g} s x window {config.window}: "
                           f"{warning}", err=True)

    @group.command("show")
    def show(
        file: Path | None = _FILE_OPT,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Print the configuration in force: the file merged over the defaults."""
        from hosttune.agent.sense.paths import Paths
        from hosttune.agent.service import config as cfg

        path = file if file is not None else Paths.from_env().config
        config = cfg.load(path, missing_ok=file is None)
        data = config.to_dict()
        data["source"] = str(path) if config.source else f"defaults ({path} absent)"
        import importlib

        try:
            allowlist = importlib.import_module("hosttune.tuners.allowlist")
            data["effective_allowlist"] = config.effective_allowlist(allowlist.DEFAULT_ALLOWLIST)
        except ImportError:
            data["effective_allowlist"] = None  # no tuners in this build
        if json_out:
            emit_json(data)
            return
        import yaml

        typer.echo(f"# effective configuration from {data.pop('source')}")
        typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())

    app.add_typer(group, name="config")
