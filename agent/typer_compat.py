"""Let the CLI run on the typer that distributions package.

Debian 12 ships typer 0.7.0, which does not understand PEP 604 unions
(`str | None`): building the command tree fails with "Type not yet supported:
str | None" before any command runs, so the packaged `hosttune` would not even
print its help. The command functions keep the modern spelling; before the
command tree is built, `typing.Union` replaces each `X | Y` in their evaluated
annotations. Both spellings mean the same to every typer version, so this is
done whatever version is installed.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import typer


def _as_typing_union(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType):
        return typing.Union[tuple(_as_typing_union(a) for a in annotation.__args__)]  # noqa: UP007
    return annotation


def _callbacks(app: typer.Typer) -> Iterator[Callable[..., Any]]:
    # Unset callbacks are None or typer's DefaultPlaceholder: only functions count.
    candidates: list[Any] = [app.info.callback]
    if app.registered_callback is not None:
        candidates.append(app.registered_callback.callback)
    candidates += [command.callback for command in app.registered_commands]
    for group in app.registered_groups:
        candidates.append(group.callback)
        if group.typer_instance is not None:
            yield from _callbacks(group.typer_instance)
    yield from (c for c in candidates if inspect.isfunction(c))


def normalise_unions(app: typer.Typer) -> None:
    """Rewrite `X | Y` annotations of every command, callback and sub-app of
    `app` as `typing.Union[X, Y]`, resolving string annotations first."""
    for func in _callbacks(app):
        if not any(isinstance(a, (str, types.UnionType))
                   for a in func.__annotations__.values()):
            continue
        hints = typing.get_type_hints(func)
        func.__annotations__ = {name: _as_typing_union(a) for name, a in hints.items()}
