"""The programs added to the role dataset run, briefly, and report what they
did (their tools: jq, zstd, xz, bzip2, from scripts/setup)."""

from __future__ import annotations

import pytest

from tests.test_workloads import run


@pytest.mark.parametrize(("module", "args", "figure"), [
    ("prep_tokens", ["--files", "1", "--lines", "2000"], "tokens"),
    ("prep_features", ["--files", "2", "--seconds-audio", "2"], "clips"),
    ("prep_jsonl", ["--files", "1", "--lines", "3000"], "passes"),
    ("bg_sqlite", ["--batch", "200", "--queries", "5"], "rows"),
    ("bg_logrotate", ["--rotate-mb", "1"], "rotated"),
    ("bg_scan", ["--files", "40", "--size-kb", "16"], "passes"),
])
def test_role_workload_runs(module: str, args: list[str], figure: str) -> None:
    done = run(module, "--seconds", "2", *args)[figure]
    assert isinstance(done, int) and done >= 1
