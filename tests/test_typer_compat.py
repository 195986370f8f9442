"""The CLI must build on typer 0.7 (Debian 12), which does not read `X | None`."""

from __future__ import annotations

import typing

import typer
from typer.testing import CliRunner

from hosttune.agent.cli import build_app
from hosttune.agent.typer_compat import normalise_unions


def _command(name: str | None = typer.Option(None, "--name"), count: int = 1) -> None:
    typer.echo(f"name={name} count={count}")


def test_unions_become_typing_union_and_still_parse() -> None:
    app = typer.Typer()
    app.command("one")(_command)
    app.command("two")(_command)
    normalise_unions(app)
    assert _command.__annotations__["name"] == typing.Optional[str]  # noqa: UP045
    assert _command.__annotations__["count"] is int
    result = CliRunner().invoke(app, ["one", "--name", "x"])
    assert result.exit_code == 0, result.output
    assert "name=x count=1" in result.output


def test_every_hosttune_command_has_no_pep604_union_left() -> None:
    import types

    app = build_app()
    for info in app.registered_commands:
        for name, annotation in (info.callback.__annotations__ if info.callback else {}).items():
            assert not isinstance(annotation, (str, types.UnionType)), (info.name, name)
