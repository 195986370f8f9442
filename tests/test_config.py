"""The configuration schema: defaults, the shipped file, and errors that name
file, key and line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hosttune.agent.sense.errors import ConfigError
from hosttune.agent.service import config as cfg

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "hosttune.yaml"


def test_shipped_file_is_exactly_the_defaults() -> None:
    loaded = cfg.load(SHIPPED, missing_ok=False)
    assert loaded.to_dict() | {"source": None} == cfg.Config().to_dict()


def test_shipped_file_documents_every_key() -> None:
    text = SHIPPED.read_text()
    for key in cfg.DOC:
        assert f"\n{key}:" in text, key


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert cfg.load(tmp_path / "absent.yaml") == cfg.Config()
    with pytest.raises(ConfigError, match="no such file"):
        cfg.load(tmp_path / "absent.yaml", missing_ok=False)


def test_empty_file_means_defaults() -> None:
    assert cfg.parse("", "x.yaml").to_dict() | {"source": None} == cfg.Config().to_dict()


def test_values_are_read() -> None:
    c = cfg.parse(
        "mode: auto\ninterval: 2.5\nallowlist:\n  sysctl:vm.swappiness: {min: 1, max: 30}\n"
        "  thp:enabled: {choices: [always, madvise]}\n  sysctl:vm.dirty_ratio: false\n"
        "overrides: [sysctl:vm.max_map_count]\nmetrics: {enabled: true, port: 9100}\n"
        "objective: {metric: cpu.util, higher_is_better: false}\n"
        "accelerators: {pcie_every: 0}\n",
        "x.yaml",
    )
    assert c.accelerators.pcie_every == 0
    assert c.mode == "auto" and c.interval == 2.5
    assert c.allowlist["sysctl:vm.swappiness"] == {"min": 1, "max": 30}
    assert c.allowlist["sysctl:vm.dirty_ratio"] is None
    assert c.metrics.enabled and c.metrics.port == 9100 and c.metrics.address == "127.0.0.1"
    assert c.objective.metric == "cpu.util" and not c.objective.higher_is_better
    defaults = {
        "sysctl:vm.dirty_ratio": {"min": 5, "max": 40},
        "sysctl:vm.max_map_count": {"min": 65530, "max": 1 << 24},
        "sysctl:vm.swappiness": {"min": 0, "max": 60},
        "sysctl:kernel.numa_balancing": {"min": 0, "max": 1},
    }
    eff = c.effective_allowlist(defaults)
    assert set(eff) == {"sysctl:vm.swappiness", "thp:enabled", "sysctl:kernel.numa_balancing"}
    assert eff["sysctl:vm.swappiness"]["max"] == 30
    assert eff["thp:enabled"] == {"choices": ["always", "madvise"]}


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        ("mode: observe\nintervall: 5\n", "intervall", 2, "unknown key"),
        ("mode: observe\nmetrics:\n  enabled: true\n  prot: 1\n", "metrics.prot", 4,
         "unknown key"),
        ("interval: fast\n", "interval", 1, "expected a number"),
        ("interval: true\n", "interval", 1, "got a boolean"),
        ("interval: 0.05\n", "interval", 1, "out of range"),
        ("\nwindow: 2.5\n", "window", 2, "expected an integer"),
        ("mode: turbo\n", "mode", 1, "not one of"),
        ("metrics: [1, 2]\n", "metrics", 1, "expected a mapping"),
        ("revert_on_stop: 1\n", "revert_on_stop", 1, "true or false"),
        ("mode: observe\nmode: auto\n", "mode", 2, "duplicate"),
        ("allowlist:\n  vm.swappiness: {min: 1}\n", "allowlist.vm.swappiness", 2,
         "family:key"),
        ("allowlist:\n  sysctl:vm.swappiness: {min: 9, max: 1}\n",
         "allowlist.sysctl:vm.swappiness", 2, "above max"),
        ("allowlist:\n  sysctl:vm.swappiness: {values: [1]}\n",
         "allowlist.sysctl:vm.swappiness.values", 2, "unknown key"),
        ("allowlist:\n  hugepages:*: {max_memory_fraction: 2}\n",
         "allowlist.hugepages:*.max_memory_fraction", 2, "out of range"),
        ("backends: [nvidia, cuda]\n", "backends", 1, "not one of"),
        ("accelerators:\n  pcie_every: -1\n", "accelerators.pcie_every", 2, "out of range"),
        ("accelerators:\n  pcie_every: 2.5\n", "accelerators.pcie_every", 2,
         "expected an integer"),
        ("metrics:\n  enabled: true\n  address: example.com\n", "metrics.address", 2,
         "not an IP address"),
        ("socket:\n  group: 'Bad Group'\n", "socket.group", 2, "not valid"),
        ("objective:\n  command: ./bench\n  metric: cpu.util\n", "objective", 2, "not both"),
    ],
)
def test_errors_name_key_and_line(text: str, key: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.parse(text, "/etc/hosttune/hosttune.yaml")
    err = info.value
    assert err.key == key and err.line == line, str(err)
    assert words in str(err)
    assert str(err).startswith(f"/etc/hosttune/hosttune.yaml: line {line}: {key}")


def test_bad_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        cfg.parse("mode: observe\nmetrics:\n  enabled: [true\n", "h.yaml")
    assert info.value.line is not None and info.value.line >= 3
    assert "not valid YAML" in str(info.value)
    with pytest.raises(ConfigError, match="line 2"):
        cfg.parse("mode: observe\n\tinterval: 3\n", "h.yaml")


def _cli(*args: str, env_config: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, HOSTTUNE_CONFIG=str(env_config))
    return subprocess.run([sys.executable, "-m", "hosttune.agent.service.cli", *args],
                          check=False, capture_output=True, text=True, env=env,
                          timeout=60)


def test_cli_validate_and_show(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("mode: recommend\ninterval: 10\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: recommend\nretention:\n  rows: many\n")
    res = _cli("config", "validate", str(good), env_config=good)
    assert res.returncode == 0 and "valid" in res.stdout
    res = _cli("config", "validate", str(bad), env_config=good)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"hosttune: error: {bad}: line 3: retention.rows: expected an integer, got a string 'many'"
    ]
    assert "Traceback" not in res.stderr
    res = _cli("config", "show", "--json", env_config=good)
    data = json.loads(res.stdout)
    assert data["mode"] == "recommend" and data["interval"] == 10.0
    assert data["metrics"]["enabled"] is False and data["retention"]["rows"] == 10000
    res = _cli("config", "show", env_config=tmp_path / "absent.yaml")
    assert res.returncode == 0 and "mode: observe" in res.stdout and "defaults" in res.stdout


def test_cli_validate_without_a_file_checks_the_defaults(tmp_path: Path) -> None:
    """No /etc/hosttune/hosttune.yaml: the daemon runs on the defaults, so
    `config validate` says so and checks them (rc 0); a FILE named on the
    command line must exist."""
    absent = tmp_path / "absent.yaml"
    res = _cli("config", "validate", env_config=absent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (f"{absent}: no such file; the defaults are in force "
                                  "(mode observe), and they are valid")
    assert "Traceback" not in res.stderr
    res = _cli("config", "validate", "--json", env_config=absent)
    data = json.loads(res.stdout)
    assert res.returncode == 0 and data["valid"] is True and data["defaults"] is True
    assert data["source"] == f"defaults ({absent} absent)" and data["mode"] == "observe"
    assert data["allowlisted_knobs"] > 0
    res = _cli("config", "validate", str(absent), env_config=absent)
    assert res.returncode == 1
    assert res.stderr.strip() == f"hosttune: error: {absent}: no such file"


def test_a_config_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "hosttune.yaml"
    junk.write_bytes(b"mode: observe\n\xff\xfe\x00garbage")
    expected = (f"hosttune: error: {junk}: not UTF-8 text (byte 0xff at offset 14); "
                "expected a YAML file")
    for args in (("config", "validate"), ("config", "validate", str(junk)),
                 ("config", "show")):
        res = _cli(*args, env_config=junk)
        assert res.returncode == 1, args
        assert res.stderr.strip().splitlines() == [expected], args
    with pytest.raises(ConfigError, match="not UTF-8 text") as info:
        cfg.load(junk)
    assert info.value.path == str(junk)
    # `status` without a daemon reports it and still answers
    env = dict(os.environ, HOSTTUNE_CONFIG=str(junk), HOSTTUNE_RUN_DIR=str(tmp_path / "run"),
               HOSTTUNE_STATE_DIR=str(tmp_path / "state"))
    status = subprocess.run([sys.executable, "-m", "hosttune.agent.service.cli", "status",
                             "--json"], check=False, capture_output=True, text=True, env=env,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    assert "not UTF-8 text" in json.loads(status.stdout)["config_error"]
