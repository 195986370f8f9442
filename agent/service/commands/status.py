"""`hosttune status [--json]`: what the daemon is doing, or, when it does not
run, what can be known without it (configured mode, the last workload and
events it recorded, a fresh sample of the host)."""

from __future__ import annotations

import time
from typing import Any

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    add_command,
    echo_lines,
    emit_json,
)


def direct_status() -> dict[str, Any]:
    """What `status` can say when no daemon answers."""
    # config, the model, the store and the sampler: 200 ms together, none at --help,
    # and with a daemon running `status` needs none of them
    from hosttune.agent.sense.telemetry.sampler import open_sampler, rates
    from hosttune.agent.service import config as cfg
    from hosttune.agent.service.control import STATUS_METRICS
    from hosttune.agent.service.site_model import geometry_warning
    from hosttune.agent.service.store import Store

    paths = Paths.from_env()
    out: dict[str, Any] = {"running": False, "socket": str(paths.socket)}
    try:
        config = cfg.load(paths.config)
        out["mode"] = config.mode
        out["config"] = config.source or "defaults"
        out["geometry_warning"] = geometry_warning(config.interval, config.window)
    except HosttuneError as exc:
        out["mode"] = None
        out["config_error"] = str(exc)
    if paths.store.exists():
        try:
            store = Store(paths.store)
            last = store.workloads(limit=1)
            out["last_workload"] = last[-1] if last else None
            out["recent_events"] = [e.to_dict() for e in store.events(limit=5)]
            store.close()
        except HosttuneError as exc:
            out["store_error"] = str(exc)
    try:
        with open_sampler(Host(), process_every=0, accelerators=False) as sampler:
            first = sampler.sample()
            time.sleep(0.1)  # enough for utilisation; `status` must stay quick
            second = sampler.sample()
        merged = {**second.values, **rates(first, second)}
        out["sample"] = {k: merged[k] for k in STATUS_METRICS if k in merged}
    except (ImportError, HosttuneError) as exc:
        out["sample_error"] = str(exc)
    return out


def register(app: typer.Typer) -> None:
    add_command(app, "status", status_command)


def status_command(json_out: bool = JSON_OPTION) -> None:
    """Show what hosttuned is doing: mode, workload, last sample,
    recommendation, changes.

    When hosttuned does not run, says what can be known without it: the
    configured mode, the last workload and events it recorded, and a fresh
    sample of the host."""
    # the client (with the control protocol) and the renderer: not for --help
    from hosttune.agent.service.client import via_daemon
    from hosttune.agent.service.render.status import status_lines

    result, where = via_daemon("status", {}, direct_status, timeout=10.0)
    if where == "daemon":
        result["running"] = True
    if json_out:
        emit_json(result)
        return
    echo_lines(status_lines(result))
