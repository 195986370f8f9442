"""What the CLI and the daemon need installed: scikit-learn is a main
dependency that the daemon never imports, and a command that needs an
optional package refuses before it does any work, naming the package and the
command that installs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from daemon_run import RunningDaemon

from hosttune.agent.service import optional

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = REPO / "models" / "workloads"


def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[;\s]", r, maxsplit=1)[0].lower() for r in reqs}


def test_scikit_learn_is_a_main_dependency_on_every_install_path() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "scikit-learn>=1.2.1" in project["dependencies"]  # Debian 12's python3-sklearn
    assert "rich" in _requirement_names(project["dependencies"])  # imported by commands
    control = (REPO / "packaging" / "debian" / "control").read_text()
    depends = control.split("\nDepends:", 1)[1].split("\nDescription:", 1)[0]
    assert "python3-sklearn" in depends and "Recommends" not in depends
    spec = (REPO / "packaging" / "rpm" / "hosttune.spec").read_text()
    assert re.search(r"^Requires:\s+python3-scikit-learn$", spec, re.M)
    # the README's first command installs the `nvidia` extra: nothing to add for sklearn
    setup = (REPO / "scripts" / "setup").read_text()
    assert "make_venv nvidia" in setup


def _run_python(code: str, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_tune_without_sklearn_refuses_before_the_first_trial(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = _run_python(f"""
        import sys
        sys.modules['sklearn'] = None  # stands for a missing package
        from hosttune.agent.service.cli import main
        sys.exit(main(['tune', '--objective', 'touch {marker}', '--dry-run', '--budget', '1']))
    """)
    assert out.returncode == 1, out.stderr
    assert not marker.exists()  # the objective (the baseline trial) never ran
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "`hosttune tune` needs scikit-learn" in lines[0]
    assert "scripts/setup install" in lines[0]


def test_record_of_a_torch_workload_without_torch_refuses_before_running(
        tmp_path: Path) -> None:
    trace = tmp_path / "t.csv.gz"
    out = _run_python(f"""
        import sys
        sys.modules['torch'] = None
        from hosttune.agent.service.cli import main
        sys.exit(main(['record', '-l', 'training', '-o', {str(trace)!r}, '--',
                       sys.executable, '-m', 'hosttune.models.workloads.train',
                       '--seconds', '1']))
    """)
    assert out.returncode == 1, out.stderr
    assert not trace.exists()
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "needs PyTorch" in out.stderr and "pip install 'hosttune[workloads]'" in out.stderr


def test_an_explicit_vendor_backend_without_its_package_is_refused() -> None:
    root = REPO / "tests" / "fixtures" / "hosts" / "nvidia-8gpu"
    out = _run_python(f"""
        import sys
        sys.modules['pynvml'] = None
        from hosttune.agent.service.cli import main
        sys.exit(main(['accel', '--root', {str(root)!r}, '--backend', 'nvidia']))
    """)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == (
        "hosttune: error: `hosttune accel` needs nvidia-ml-py (Python module pynvml), "
        "which is not installed; install it with: pip install 'hosttune[nvidia]'")


def test_torch_workloads_are_the_modules_that_require_torch() -> None:
    needs = {p.stem for p in WORKLOADS.glob("*.py")
             if not p.stem.startswith("_") and "require_torch()" in p.read_text()}
    assert needs == set(optional.TORCH_WORKLOADS)
    assert optional.suite_workload(["python3", "-m", "hosttune.models.workloads.serve"]) \
        == "serve"
    assert optional.suite_workload(["sleep", "1"]) is None


def test_installed_does_not_import() -> None:
    out = _run_python("""
        import sys
        from hosttune.agent.service import optional
        assert optional.installed('sklearn')
        assert not optional.installed('no_such_module_hosttune')
        assert 'sklearn' not in sys.modules
    """)
    assert out.returncode == 0, out.stderr


@pytest.mark.daemon
@pytest.mark.slow
def test_hosttuned_never_imports_sklearn(tmp_path: Path) -> None:
    """The daemon samples, classifies and recommends for a few windows; at
    exit it has imported neither scikit-learn nor scipy."""
    hook = tmp_path / "hook"
    hook.mkdir()
    modules = tmp_path / "modules.txt"
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import atexit, os, sys

        def _modules() -> None:
            with open(os.environ["HOSTTUNE_TEST_MODULES"], "w") as f:
                f.write("\\n".join(sorted(sys.modules)))

        atexit.register(_modules)
    """))
    env = {"PYTHONPATH": os.pathsep.join([str(hook), *sys.path]),
           "HOSTTUNE_TEST_MODULES": str(modules)}
    run = tmp_path / "daemon"
    run.mkdir()
    d = RunningDaemon(run, "mode: recommend\ninterval: 0.25\nwindow: 4\n", extra_env=env)
    try:
        d.wait_for("READY=1", timeout=30)
        d.read_notify(4.0)  # several classification windows
        status = d.status()
        assert status["running"] is True
        assert d.stop() == 0, d.log()
    finally:
        d.close()
    loaded = set(modules.read_text().split())
    assert "hosttune.agent.service.daemon" in loaded  # the hook saw the daemon
    assert "sklearn" not in loaded and "scipy" not in loaded
