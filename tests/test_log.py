from __future__ import annotations

import io

from hosttune.agent.log import Log


def test_stderr_lines_carry_fields_and_respect_level() -> None:
    out = io.StringIO()
    log = Log("info", use_journal=False, stream=out)
    log("debug", "hidden")
    log("warning", "configuration not reloaded", key="interval", line=2)
    text = out.getvalue()
    assert "hidden" not in text
    assert text.count("\n") == 1
    assert " warning: configuration not reloaded key=interval line=2" in text
    log.set_level("debug")
    log("debug", "shown")
    assert "debug: shown" in out.getvalue()


def test_journal_fields_are_prefixed() -> None:
    sent: list[tuple[str, dict[str, object]]] = []
    log = Log("info", use_journal=False)
    log._send = lambda message, **fields: sent.append((message, fields))
    log("error", "apply failed", knob="sysctl:vm.swappiness")
    assert sent == [("apply failed", {"PRIORITY": 3, "SYSLOG_IDENTIFIER": "hosttuned",
                                      "HOSTTUNE_KNOB": "sysctl:vm.swappiness"})]
