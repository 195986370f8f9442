"""What every command shares: the options declared once (`--json`, `--root`,
`--dry-run`), the one way a command or a command group is registered, and the
output helpers (JSON, one-line errors).

A command is a module-level function whose docstring's first paragraph is
its summary, one or more whole sentences, shown in `hosttune --help`; the
rest of the docstring is the detail its own `--help` adds. Docstrings are
hard-wrapped in the source: `add_command` joins each paragraph back into one
line so the help formatter wraps it to the terminal instead.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON.")
ROOT_OPTION = typer.Option(
    None, "--root", metavar="DIR",
    help="Work on this host tree instead of the live host: a tree `hosttune capture` wrote, "
         "or a fixture such as tests/fixtures/hosts/mixed.")
DRY_RUN_OPTION = typer.Option(False, "--dry-run",
                              help="Print what would change (old -> new); change nothing.")

# Plain help formatting (click's own): rich's renders `hosttune --help` in
# 0.42 s instead of 0.13 s here (farm-bench, 2-vCPU VM), past the 0.3 s budget.
HELP_MARKUP: Any = None


def paragraphs(doc: str | None) -> list[str]:
    """A docstring's paragraphs, each joined into one line."""
    text = inspect.cleandoc(doc or "")
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def add_command(app: typer.Typer, name: str, fn: Callable[..., Any], **settings: Any) -> None:
    """Register `fn` as `hosttune ... NAME`, its docstring as its help."""
    parts = paragraphs(fn.__doc__)
    if not parts:
        raise ValueError(f"command {name!r} ({fn.__qualname__}) has no docstring to show")
    app.command(name, help="\n\n".join(parts), short_help=parts[0], **settings)(fn)


def add_group(app: typer.Typer, name: str, summary: str) -> typer.Typer:
    """A command group (`hosttune NAME SUBCOMMAND`) with `summary` as its help."""
    group = typer.Typer(help=summary, short_help=summary, no_args_is_help=True,
                        rich_markup_mode=HELP_MARKUP)
    app.add_typer(group, name=name)
    return group


def host_root(root: Path | None) -> Path:
    """The tree `--root` names, else the live host ("/"). A --root that is not
    a directory is refused before anything is read."""
    if root is None:
        return Path("/")
    if not root.is_dir():
        raise fail(f"--root {root}: not a directory")
    return root


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear error line; the caller raises the returned Exit."""
    typer.echo(f"hosttune: error: {message}", err=True)
    return typer.Exit(code)
