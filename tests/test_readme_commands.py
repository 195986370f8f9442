"""Every command README.md documents, run in an environment installed the
README's way (`HOSTTUNE_VENV=DIR scripts/setup install`, what `scripts/setup
recommend` does before it runs `hosttune recommend`).

Commands that change the host run with --dry-run or against a host tree
(--root) built here; those the README shows with `sudo` run as this user
(root in CI) on that tree; `status` and `history` run with no daemon and then
against a hosttuned started from the same environment. A command fails the
test when it ends in a traceback or a ModuleNotFoundError, or exits with
another code than the one listed for it. A command documented in README.md
that this file does not know fails the test too: add it to RUNS.

HOSTTUNE_README_VENV=DIR keeps the environment between runs (scripts/setup
refreshes it only when pyproject.toml changes); by default it is made anew
(about a minute, from the package index).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SHIPPED_TRACE = REPO / "models" / "data" / "idle-hb1.csv.gz"


@dataclass
class Run:
    argv: list[str]
    codes: tuple[int, ...] = (0,)
    # text the output must hold (e.g. the refusal of a missing optional package)
    expect: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 300.0


# What each documented command is, as README.md spells it: the executable and
# its command words, up to the first argument or option.
def documented_commands(text: str) -> set[str]:
    spans: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        spans += [line.split("#", 1)[0] for line in block.splitlines()]
    # every fenced block out (sh, ini, json, ...): only prose spans are left
    rest = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    spans += re.findall(r"`([^`]+)`", rest)
    found: set[str] = set()
    for span in spans:
        words = span.split()
        while (words and words[0] in ("sudo", "env")) or (words and "=" in words[0]):
            words = words[1:]
        if not words:
            continue
        exe = words[0].rsplit("/", 1)[-1] if words[0].endswith(("hosttune", "hosttuned")) \
            else words[0]
        if exe in ("hosttune", "hosttuned"):
            path = [exe]
            for w in words[1:]:
                if not re.fullmatch(r"[a-z][a-z-]*", w):
                    break
                path.append(w)
            found.add(" ".join(path))
        elif exe == "scripts/setup" and len(words) > 1:
            found.add(f"scripts/setup {words[1]}")
        elif exe.endswith("python") and words[1:2] == ["-m"] and len(words) > 2:
            found.add(f"python -m {words[2]}")
        elif exe.endswith("python") and len(words) > 1 and words[1].endswith(".py"):
            found.add(words[1])
    return found


def _host_tree(root: Path) -> Path:
    """The knobs the documented commands change, as files under a tree."""
    files = {
        "proc/sys/vm/swappiness": "60\n",
        "proc/sys/vm/dirty_ratio": "20\n",
        "proc/sys/vm/dirty_background_ratio": "10\n",
        "sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never\n",
    }
    for name, value in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(value)
    (root / "etc/sysctl.d").mkdir(parents=True, exist_ok=True)
    return root


def runs(venv: Path, work: Path) -> dict[str, list[Run]]:
    """The documented command -> how it runs here."""
    py = str(venv / "bin" / "python")
    tree = str(_host_tree(work / "host"))
    # the tree's own journal: the live host's dry runs must not see its changes
    on_tree = {"HOSTTUNE_STATE_DIR": str(work / "tree-state")}
    plan = work / "plan.yaml"
    plan.write_text("changes:\n  - knob: sysctl:vm.swappiness\n    value: 10\n"
                    "    reason: dataset stays in page cache\n")
    (work / "train.py").write_text("import time\ntime.sleep(2)\n")
    # what a sibling host of a fleet exported (README, "Fleet learning")
    host = {"host_id": "readme0sibling00", "cpu_model": "x", "cores": 2, "kernel": "6.1.0",
            "mem_bytes": 1 << 30, "accel_vendor": "", "accel_model": "", "accel_count": 0}
    (work / "fleet.jsonl").write_text(json.dumps(
        {"format": "hosttune-outcomes/1", "host": host, "class": "training",
         "knobs": {"sysctl:vm.swappiness": "10"}, "effect": 1.1}) + "\n")
    shutil.copy(SHIPPED_TRACE, work / "run.csv.gz")
    site = work / "site-traces"
    site.mkdir()
    for trace in sorted((REPO / "models" / "data").glob("idle-*.csv.gz"))[:3]:
        shutil.copy(trace, site)
    fast = ["--candidate", "logistic"]  # one estimator of three: the same code path
    # a site plan for the class a batch job declares (beside HOSTTUNE_CONFIG, as `work` sets it)
    (work / "etc" / "jobs.d").mkdir(parents=True, exist_ok=True)
    (work / "etc" / "jobs.d" / "training.yaml").write_text(plan.read_text())
    return {
        "scripts/setup recommend": [Run([str(REPO / "scripts" / "setup"), "recommend"],
                                        env={"HOSTTUNE_VENV": str(venv)})],
        "hosttune": [Run(["hosttune", "--help"]), Run(["hosttune", "--version"])],
        "hosttune accel": [Run(["hosttune", "accel"]), Run(["hosttune", "accel", "--json"])],
        "hosttune doctor": [Run(["hosttune", "doctor"]), Run(["hosttune", "doctor", "--json"])],
        "hosttune classify": [
            Run(["hosttune", "classify"]),
            Run(["hosttune", "classify", "--trace", "run.csv.gz"]),
            Run(["hosttune", "classify", "--trace", "run.csv.gz", "-i", "5", "-w", "30"]),
        ],
        "hosttune record": [Run(["hosttune", "record", "-l", "training", "-o", "rec.csv.gz",
                                 "--", py, "train.py"])],
        "hosttune model info": [Run(["hosttune", "model", "info"])],
        "hosttune model evaluate": [
            Run(["hosttune", "model", "evaluate", *fast]),
            Run(["hosttune", "model", "evaluate", "--interval", "5", "--window", "30", *fast]),
        ],
        "hosttune model train": [Run(["hosttune", "model", "train", "--data", str(site),
                                      *fast])],
        "hosttune config validate": [Run(["hosttune", "config", "validate"]),
                                     Run(["hosttune", "config", "validate",
                                          str(REPO / "config" / "hosttune.yaml")])],
        "hosttune config show": [Run(["hosttune", "config", "show"]),
                                 Run(["hosttune", "config", "show", "--json"])],
        "hosttune status": [Run(["hosttune", "status"]), Run(["hosttune", "status", "--json"])],
        "hosttuned": [Run(["hosttuned", "--check-config"]),
                      Run(["hosttuned", "--check-config",
                           str(REPO / "config" / "hosttune.yaml")])],
        "hosttune show": [Run(["hosttune", "show", "sysctl:vm.swappiness", "thp:enabled"])],
        # no AI process runs here: nothing to collapse (and a dry run changes nothing)
        "hosttune collapse": [Run(["hosttune", "collapse", "--dry-run"],
                                  expect="nothing to collapse")],
        "hosttune set": [
            Run(["hosttune", "set", "sysctl:vm.swappiness", "10", "--dry-run"]),
            Run(["hosttune", "set", "sysctl:vm.swappiness", "10", "--reason",
                 "dataset stays in page cache", "--root", tree], env=on_tree),
        ],
        "hosttune apply": [Run(["hosttune", "apply", str(plan), "--root", tree], env=on_tree),
                           Run(["hosttune", "apply", "recommended.yaml", "--dry-run"])],
        "hosttune history": [Run(["hosttune", "history"]),
                             Run(["hosttune", "history"], env=on_tree)],
        "hosttune rollback": [
            Run(["hosttune", "rollback", "1", "--dry-run", "--root", tree], env=on_tree),
            Run(["hosttune", "rollback", "--baseline", "--root", tree], env=on_tree),
        ],
        "hosttune recommend": [
            Run(["hosttune", "recommend"]),
            Run(["hosttune", "recommend", "--workload", "training", "--explain", "--json",
                 "--output", "recommended.yaml"]),
        ],
        "hosttune tune": [Run(["hosttune", "tune", "--objective", "echo 5", "--metric",
                               r"(\d+)", "--budget", "4", "--root", tree], env=on_tree)],
        "hosttune outcomes record": [Run(["hosttune", "outcomes", "record", "-w", "training",
                                          "--effect", "1.1", "--plan", str(plan)])],
        "hosttune job start": [
            Run(["hosttune", "job", "start", "--id", "4242", "--class", "training", "--root",
                 tree], env=on_tree),
            Run(["hosttune", "job", "start", "--id", "4243", "--plan", str(plan), "--root",
                 tree], env=on_tree)],
        "hosttune job end": [Run(["hosttune", "job", "end", "--id", "4242", "--root", tree],
                                 env=on_tree)],
        # no job recorded on this tree's state: squeue is not asked
        "hosttune job reconcile": [Run(["hosttune", "job", "reconcile", "--root", tree],
                                       env=on_tree)],
        "hosttune job status": [Run(["hosttune", "job", "status"], env=on_tree),
                                Run(["hosttune", "job", "status", "--json"], env=on_tree)],
        "hosttune k8s nodefeature": [Run(["hosttune", "k8s", "nodefeature", "--node", "gpu-7"])],
        "hosttune k8s status": [Run(["hosttune", "k8s", "status", "--node", "gpu-7"])],
        # outside a pod: refused, naming what is missing
        "hosttune k8s publish": [Run(["hosttune", "k8s", "publish", "--once"], codes=(1,),
                                     expect="KUBERNETES_SERVICE_HOST")],

        "hosttune outcomes export": [Run(["hosttune", "outcomes", "export", "-o",
                                          "exported.jsonl"])],
        "hosttune outcomes import": [Run(["hosttune", "outcomes", "import", "--json",
                                          "fleet.jsonl"], expect='"added": 1')],
        "hosttune outcomes show": [Run(["hosttune", "outcomes", "show", "--json"],
                                       expect="readme0sibling00")],
        "python -m hosttune.models.workloads.<name>": [
            Run([py, "-m", "hosttune.models.workloads.idle", "--seconds", "1"]),
            # PyTorch is the `workloads` extra, not in this install: a clear refusal
            Run([py, "-m", "hosttune.models.workloads.train", "--seconds", "1"], codes=(2,),
                expect="pip install 'hosttune[workloads]'"),
        ],
        "python -m hosttune.agent.service.record_dataset": [
            Run([py, "-m", "hosttune.agent.service.record_dataset", "--help"])],
        "benchmarks/effectiveness.py": [
            Run([py, str(REPO / "benchmarks" / "effectiveness.py"), "--help"])],
        # a pass over a fresh 1 GiB holder per round (root, minutes): its help here
        "benchmarks/collapse_cost.py": [
            Run([py, str(REPO / "benchmarks" / "collapse_cost.py"), "--help"])],
        # three 45 s jobs, each collapsed in mid-run (root): its help here
        "benchmarks/collapse_effect.py": [
            Run([py, str(REPO / "benchmarks" / "collapse_effect.py"), "--help"],
                expect="within the job's")],
        # the role model's evaluation (both cross-validations, ~1 min of CPU) and
        # training (which rewrites the shipped artifact): their help here
        "python -m hosttune.models.role_model": [
            Run([py, "-m", "hosttune.models.role_model", "--help"])],
        "python -m hosttune.agent.service.record_roles": [
            Run([py, "-m", "hosttune.agent.service.record_roles", "--help"])],
    }


# Documented, and deliberately not run here (with the reason).
NOT_RUN = {
    "scripts/setup test": "runs this very suite",
}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("HOSTTUNE_README_VENV")
    path = Path(where) if where else tmp_path_factory.mktemp("readme") / "venv"
    res = subprocess.run([str(REPO / "scripts" / "setup"), "install"], check=False,
                         capture_output=True, text=True, timeout=1200, cwd=REPO,
                         env={**os.environ, "HOSTTUNE_VENV": str(path)})
    assert res.returncode == 0, res.stdout + res.stderr
    return path


@pytest.fixture
def work(tmp_path: Path, venv: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSTTUNE_", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               HOSTTUNE_STATE_DIR=str(tmp_path / "state"), HOSTTUNE_RUN_DIR=str(tmp_path / "run"),
               HOSTTUNE_CONFIG=str(tmp_path / "etc" / "hosttune.yaml"), COLUMNS="100")
    yield tmp_path, env


def _run(run: Run, cwd: Path, env: dict[str, str]) -> str | None:
    """None when the command did as documented, else what went wrong."""
    try:
        res = subprocess.run(run.argv, check=False, capture_output=True, text=True, cwd=cwd,
                             env={**env, **run.env}, timeout=run.timeout,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"`{' '.join(run.argv)}`: still running after {run.timeout:g} s"
    out = res.stdout + res.stderr
    problems = [p for p in ("Traceback", "ModuleNotFoundError") if p in out]
    if res.returncode not in run.codes:
        problems.append(f"exit code {res.returncode}")
    if run.expect and run.expect not in out:
        problems.append(f"no {run.expect!r}")
    if problems:
        return f"`{' '.join(run.argv)}`: {', '.join(problems)}\n{out[-3000:]}"
    return None


def test_readme_documents_only_known_commands(tmp_path: Path) -> None:
    documented = documented_commands(README.read_text())
    assert {"hosttune recommend", "hosttune apply", "scripts/setup recommend"} <= documented
    known = set(runs(tmp_path / "venv", tmp_path)) | set(NOT_RUN)
    assert documented - known == set(), "documented commands this test does not run"


def test_every_documented_command_runs(venv: Path, work: tuple[Path, dict[str, str]]) -> None:
    cwd, env = work
    documented = documented_commands(README.read_text())
    table = runs(venv, cwd)
    failures = []
    # in README order of need: recommend writes the plan that apply reads, set
    # makes transaction 1 that rollback goes back to
    order = sorted(table, key=lambda k: (k not in ("hosttune recommend", "hosttune set"), k))
    for key in order:
        if key not in documented:
            continue
        for run in table[key]:
            problem = _run(run, cwd, env)
            if problem:
                failures.append(problem)
    assert not failures, "\n\n".join(failures)


def test_status_and_history_against_a_running_daemon(
        venv: Path, work: tuple[Path, dict[str, str]]) -> None:
    cwd, env = work
    config = Path(env["HOSTTUNE_CONFIG"])
    config.parent.mkdir(parents=True)
    config.write_text("mode: recommend\ninterval: 0.5\nwindow: 4\n")
    with open(cwd / "hosttuned.log", "w") as log:
        daemon = subprocess.Popen([str(venv / "bin" / "hosttuned"), "--foreground"], env=env,
                                  cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            sock = Path(env["HOSTTUNE_RUN_DIR"]) / "hosttune.sock"
            deadline = time.monotonic() + 60
            while not sock.exists() and time.monotonic() < deadline and daemon.poll() is None:
                time.sleep(0.2)
            assert sock.exists(), (cwd / "hosttuned.log").read_text()
            time.sleep(3)  # a few samples and a classification window
            failures = [p for p in (
                _run(Run(["hosttune", "status"], expect="hosttuned: running"), cwd, env),
                _run(Run(["hosttune", "status", "--json"]), cwd, env),
                _run(Run(["hosttune", "history"]), cwd, env),
                _run(Run(["hosttune", "recommend"]), cwd, env),
            ) if p]
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
    text = (cwd / "hosttuned.log").read_text()
    assert not failures, "\n\n".join(failures)
    assert code == 0 and "Traceback" not in text and "ModuleNotFoundError" not in text, text
