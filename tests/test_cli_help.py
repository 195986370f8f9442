"""`--help` of every command and subcommand reads as whole sentences: the
summaries in a group's listing are never cut off or broken at the source's
hard line breaks, and each command's own help carries its whole text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from hosttune.agent.service.cli import build_app, main
from hosttune.agent.service.commands.options import paragraphs

SENTENCE_END = (".", ".)", ")")


def _commands() -> Iterator[tuple[list[str], Any]]:
    """(path, command) for every group, command and subcommand."""
    root = typer.main.get_command(build_app())
    pending: list[tuple[list[str], Any]] = [([], root)]
    while pending:
        path, cmd = pending.pop()
        yield path, cmd
        if hasattr(cmd, "commands"):  # a group (typer may bundle its own click)
            pending += [([*path, name], sub) for name, sub in cmd.commands.items()]


ALL = sorted(" ".join(path) for path, _ in _commands())
SUBCOMMANDS = [p for p in ALL if p]


def _unwrap(block: list[str]) -> str:
    """Lines of one wrapped entry back into one line (a line ending in a hyphen
    was broken at it)."""
    text = ""
    for line in (b.strip() for b in block):
        text += line if text.endswith("-") or not text else " " + line
    return text


def _listing(out: str) -> dict[str, str]:
    """name -> summary from the `Commands:` section of a group's help."""
    section = out.split("\nCommands:\n", 1)[1]
    entries: dict[str, list[str]] = {}
    name = ""
    for line in section.splitlines():
        m = re.match(r"^  (\S+)\s+(.*)$", line)
        if m:
            name = m.group(1)
            entries[name] = [m.group(2)]
        elif line.startswith("   ") and name:
            entries[name].append(line)
        elif not line.strip():
            break
    return {n: _unwrap(b) for n, b in entries.items()}


def test_every_command_is_listed() -> None:
    top = {p.split()[0] for p in SUBCOMMANDS}
    assert {"recommend", "tune", "apply", "rollback", "status", "config", "model"} <= top
    assert {"config validate", "config show", "model train", "outcomes record"} <= set(ALL)


@pytest.mark.parametrize("path", ALL)
def test_help_reads_as_whole_sentences(path: str, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    cmd = dict((" ".join(p), c) for p, c in _commands())[path]
    assert main([*path.split(), "--help"]) == 0
    out = capsys.readouterr().out
    text = cmd.help or ""
    parts = paragraphs(text)
    assert parts, f"`hosttune {path}` has no help text"
    for part in parts:
        assert part.endswith(SENTENCE_END), f"{path}: {part!r} stops mid-sentence"
        # the whole paragraph is there, wrapped to the terminal, not to the source
        assert part in " ".join(out.split()), f"{path}: {part!r} not shown whole"
    if hasattr(cmd, "commands"):
        listed = _listing(out)
        assert set(listed) == set(cmd.commands)
        for name, summary in listed.items():
            sub = cmd.commands[name]
            assert not summary.endswith("..."), f"{path} {name}: summary cut off"
            assert summary.endswith(SENTENCE_END), f"{path} {name}: {summary!r}"
            assert summary == paragraphs(sub.short_help or sub.help)[0]


def test_completion_and_man_page_name_every_command() -> None:
    packaging = Path(__file__).resolve().parent.parent / "packaging"
    top = {p.split()[0] for p in SUBCOMMANDS}
    words = set((packaging / "completion" / "hosttune.bash").read_text().split())
    assert top <= {w.strip('"') for w in words}
    man = (packaging / "man" / "hosttune.1").read_text()
    assert top <= set(re.findall(r"^\.B (\S+)$", man, re.M))
