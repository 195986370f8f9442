"""`hosttune config validate [FILE]` and `hosttune config show [--json]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hosttune.agent.sense.errors import ConfigError
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    add_command,
    add_group,
    emit_json,
)

_FILE_ARG = typer.Argument(None, help="The file to check (default: the installed configuration).")
_FILE_OPT = typer.Option(None, "--file", "-f",
                         help="Show this file's effect instead of the installed one.")


def register(app: typer.Typer) -> None:
    group = add_group(app, "config",
                      "Check and show the configuration (/etc/hosttune/hosttune.yaml).")
    add_command(group, "validate", validate_command)
    add_command(group, "show", show_command)


def validate_command(
    file: Path | None = _FILE_ARG,
    json_out: bool = JSON_OPTION,
) -> None:
    """Check a configuration file; errors name the key and the line.

    Without FILE, the installed configuration is checked; where there is none,
    the daemon runs on the defaults, and those are what is checked."""
    # config (with sense.accel) and the model: 120 ms, not for --help
    from hosttune.agent.service import config as cfg
    from hosttune.agent.service.site_model import geometry_warning

    path = file if file is not None else Paths.from_env().config
    # only the installed file may be absent: a FILE given must be there
    defaults = file is None and not path.exists() and not path.is_symlink()
    try:
        config = cfg.load(path, missing_ok=file is None)
        allowlist = _effective_allowlist(config)
    except ConfigError as exc:
        if json_out:
            emit_json({"valid": False, "file": str(path), "error": str(exc),
                       "key": exc.key, "line": exc.line})
            raise typer.Exit(1) from None
        raise
    # valid, but the model's accuracy is unmeasured for such windows: say so
    warning = geometry_warning(config.interval, config.window)
    source = f"defaults ({path} absent)" if defaults else str(path)
    if json_out:
        emit_json({"valid": True, "file": str(path), "source": source, "defaults": defaults,
                   "mode": config.mode, "allowlisted_knobs": len(allowlist),
                   "warnings": [warning] if warning else []})
    else:
        if defaults:
            typer.echo(f"{path}: no such file; the defaults are in force (mode "
                       f"{config.mode}), and they are valid")
        else:
            typer.echo(f"{path}: valid")
        if warning:
            typer.echo(f"warning: interval {config.interval:g} s x window {config.window}: "
                       f"{warning}", err=True)


def show_command(
    file: Path | None = _FILE_OPT,
    json_out: bool = JSON_OPTION,
) -> None:
    """Print the configuration in force: the file merged over the defaults."""
    # config and yaml: 110 ms, not for --help
    import yaml

    from hosttune.agent.service import config as cfg

    path = file if file is not None else Paths.from_env().config
    config = cfg.load(path, missing_ok=file is None)
    data = config.to_dict()
    data["source"] = str(path) if config.source else f"defaults ({path} absent)"
    data["effective_allowlist"] = _effective_allowlist(config)
    if json_out:
        emit_json(data)
        return
    typer.echo(f"# effective configuration from {data.pop('source')}")
    typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())


def _effective_allowlist(config: Any) -> dict[str, Any]:
    """The knobs auto mode may change under `config`: the tuners' defaults
    as the file's `allowlist` amends them, less the admin's `overrides`."""
    from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST  # act layer: 25 ms

    return dict(config.effective_allowlist(DEFAULT_ALLOWLIST))
