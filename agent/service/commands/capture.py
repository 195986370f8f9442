"""`hosttune capture`: copy this host's kernel view into a tree for a bug report."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.service.commands.output import JSON_OPTION, emit_json, fail

OUTPUT_OPTION = typer.Option(..., "-o", "--output", help="Directory to create.")


def register(app: typer.Typer) -> None:
    @app.command()
    def capture(
        output: Path = OUTPUT_OPTION,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Copy the /proc, /sys and sysctl files hosttune reads into OUTPUT, a tree
        `hosttune topology --root OUTPUT` reads back. Copies no process data and
        nothing under /etc but sysctl configuration."""
        from hosttune.agent.sense.fixture import capture as run_capture
        from hosttune.agent.sense.host import Host
        from hosttune.tuners.registry import capture_patterns

        if output.exists() and any(output.iterdir()):
            raise fail(f"{output}: exists and is not empty")
        output.mkdir(parents=True, exist_ok=True)
        report = run_capture(Host(), output, knob_files=capture_patterns())
        (output / "README.md").write_text(
            "Captured with `hosttune capture` from a live host.\n"
        )
        if json_out:
            emit_json({"output": str(output), "files": report.files, "links": report.links,
                       "skipped": report.skipped})
            return
        typer.echo(f"captured {report.files} files and {report.links} links into {output}"
                   f" ({len(report.skipped)} unreadable, skipped)")
