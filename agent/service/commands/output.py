"""Shared output helpers for commands: every command has --json."""

from __future__ import annotations

import json
from typing import Any

import typer

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON.")


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear error line; the caller raises the returned Exit."""
    typer.echo(f"hosttune: error: {message}", err=True)
    return typer.Exit(code)
