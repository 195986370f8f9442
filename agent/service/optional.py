"""Python packages some commands need beyond what every install has, and the
one-line refusal a command gives, before it does any work, when one is absent.

Whether a package is there is asked of the import system without importing
it (scikit-learn alone costs 0.8 s and 110 MB to import)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hosttune.agent.sense.errors import HosttuneError


@dataclass(frozen=True)
class Package:
    module: str  # what is imported
    name: str  # what is installed
    install: str  # the command that installs it into hosttune's environment


SKLEARN = Package("sklearn", "scikit-learn",
                  "scripts/setup install (or: pip install 'scikit-learn>=1.2.1'; "
                  "Debian: apt install python3-sklearn)")
TORCH = Package("torch", "PyTorch", "pip install 'hosttune[workloads]' (the CPU build, "
                "torch==2.13.0)")
NVML = Package("pynvml", "nvidia-ml-py", "pip install 'hosttune[nvidia]'")
AMDSMI = Package("amdsmi", "amdsmi", "pip install 'hosttune[amd]' (or ROCm's own amdsmi)")

# The accelerator backends that wrap a vendor's Python package.
BACKEND_PACKAGES: dict[str, Package] = {"nvidia": NVML, "amd": AMDSMI}

# The workload-suite modules (hosttune.models.workloads.NAME) that run PyTorch;
# tests/test_cli_dependencies.py checks this against the modules' source.
TORCH_WORKLOADS = frozenset({"train", "serve", "batch_infer", "train_seq", "serve_http"})
_SUITE = "hosttune.models.workloads."


class MissingPackage(HosttuneError):
    """A command needs a Python package that is not installed."""

    def __init__(self, command: str, package: Package) -> None:
        super().__init__(f"`hosttune {command}` needs {package.name} (Python module "
                         f"{package.module}), which is not installed; install it with: "
                         f"{package.install}", subject=package.name)
        self.package = package


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(command: str, *packages: Package) -> None:
    """Refuse `command` (raise MissingPackage) unless every package is there."""
    for package in packages:
        if not installed(package.module):
            raise MissingPackage(command, package)


def require_backends(command: str, backends: Sequence[str] | None) -> None:
    """Backends named on the command line must be usable: a vendor backend
    whose package is absent would silently fall back to sysfs otherwise."""
    for name in backends or ():
        package = BACKEND_PACKAGES.get(name)
        if package is not None:
            require(command, package)


def suite_workload(argv: Sequence[str]) -> str | None:
    """The workload-suite module a command line runs (`python -m
    hosttune.models.workloads.train ...` gives "train"), else None."""
    for word in argv:
        if word.startswith(_SUITE):
            return word[len(_SUITE):].split(".")[0] or None
    return None


def require_for_command_line(command: str, argv: Sequence[str]) -> None:
    """What a recorded command line needs that can be known before it runs."""
    if suite_workload(argv) in TORCH_WORKLOADS:
        require(command, TORCH)
