"""`hosttune capture`: copy this host's kernel view into a tree for a bug report."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.sense.host import Host
from hosttune.agent.service.commands.options import JSON_OPTION, add_command, emit_json, fail

_OUTPUT = typer.Option(..., "-o", "--output", help="Directory to create.")


def register(app: typer.Typer) -> None:
    add_command(app, "capture", capture_command)


def capture_command(
    output: Path = _OUTPUT,
    json_out: bool = JSON_OPTION,
) -> None:
    """Copy the /proc, /sys and sysctl files hosttune reads into a directory
    for a bug report or a test.

    `hosttune topology --root OUTPUT` (and every other command with --root)
    reads the tree back. Copies no process data and nothing under /etc but
    sysctl configuration."""
    # the fixture copier and the knob families: 30 ms, not for --help
    from hosttune.agent.sense.fixture import capture
    from hosttune.tuners.registry import capture_patterns

    if output.exists() and any(output.iterdir()):
        raise fail(f"{output}: exists and is not empty")
    output.mkdir(parents=True, exist_ok=True)
    report = capture(Host(), output, knob_files=capture_patterns())
    (output / "README.md").write_text(
        "Captured with `hosttune capture` from a live host.\n"
    )
    if json_out:
        emit_json({"output": str(output), "files": report.files, "links": report.links,
                   "skipped": report.skipped})
        return
    typer.echo(f"captured {report.files} files and {report.links} links into {output}"
               f" ({len(report.skipped)} unreadable, skipped)")
