"""The `hosttuned` command: parse the arguments, load the configuration, wire
the host access to the loop and run it."""

from __future__ import annotations

import os
import sys

# Before anything imports numpy: one BLAS/OpenMP thread is plenty for a model
# evaluated once a window, and pools of idle threads cost memory.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402

from hosttune.agent.sense.errors import ConfigError, HosttuneError  # noqa: E402
from hosttune.agent.sense.host import Host  # noqa: E402
from hosttune.agent.sense.paths import Paths  # noqa: E402
from hosttune.agent.service import config as cfg  # noqa: E402
from hosttune.agent.service.daemon.host_access import HostTools  # noqa: E402
from hosttune.agent.service.daemon.loop import Daemon  # noqa: E402
from hosttune.agent.service.log import Log  # noqa: E402
from hosttune.agent.service.notify import Notifier  # noqa: E402

# Exit status for a configuration that does not load (sysexits' EX_CONFIG,
# systemd's "CONFIG"): the unit's RestartPreventExitStatus= stops a restart
# loop that could only fail the same way.
EXIT_CONFIG = 78


def check_config(path: str | None) -> int:
    """`hosttuned --check-config [FILE]`: 0 when the file loads, else one line
    naming file, key and line on stderr and 1 (ExecStartPre, packaging)."""
    target = path if path is not None else str(Paths.from_env().config)
    try:
        cfg.load(target, missing_ok=path is None)
    except ConfigError as exc:
        print(f"hosttuned: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hosttuned", description="hosttune host daemon")
    parser.add_argument("--check-config", nargs="?", const="", default=None, metavar="FILE",
                        help="check the configuration (default file if none given) and exit")
    parser.add_argument("--foreground", action="store_true",
                        help="run in the foreground (the only way it runs; for systemd)")
    parser.add_argument("--mode", choices=cfg.MODES,
                        help="override the configured mode for this run")
    parser.add_argument("--root", default="/", metavar="DIR",
                        help="act on the host tree under DIR instead of / (trials on a "
                        "copy or a fixture tree)")
    args = parser.parse_args(argv)
    if args.check_config is not None:
        return check_config(args.check_config or None)
    paths = Paths.from_env()
    try:
        config = cfg.load(paths.config)
        if args.mode:
            config = cfg.with_mode(config, args.mode)
    except ConfigError as exc:
        print(f"hosttuned: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log = Log(config.log_level)
    try:
        # The AI-process scan is most of a sample's cost (13 ms over ~90
        # processes here, against ~1.5 ms for everything else): once a minute
        # is enough to know which processes are AI work.
        access = HostTools(Host(args.root), paths.state_dir, backends=config.backends,
                           process_every=max(1, round(60 / config.interval)),
                           pcie_every=config.accelerators.pcie_every, roles=config.roles)
        daemon = Daemon(paths, config, access, log, Notifier())
        daemon.install_signals()
        return daemon.run()
    except HosttuneError as exc:
        log("error", f"hosttuned cannot run: {exc}")
        return 1
