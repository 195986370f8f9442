"""`hosttune k8s nodefeature|status|publish`: the node's NFD NodeFeature and
its status ConfigMap, rendered from the local host and the running daemon,
printed or written to the API server (packaging/kubernetes/). The logic is in
`service/kube.py`, imported inside the commands: `hosttune --help` imports
this module too."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    ROOT_OPTION,
    add_command,
    add_group,
    emit_json,
    fail,
    host_root,
)

if TYPE_CHECKING:
    from hosttune.agent.service.kube import NodeFacts

_NODE = typer.Option(None, "--node", help="The Kubernetes node name (default: $NODE_NAME, "
                                          "else the host name).")
_NAMESPACE = typer.Option(None, "--namespace", help="Namespace of the objects (default: "
                                                    "$POD_NAMESPACE, else the pod's service "
                                                    "account's, else hosttune).")
_CLASS = typer.Option(None, "--class", help="Publish this workload class instead of the "
                                            "daemon's.")
_INTERVAL = typer.Option(60.0, "--interval", min=1.0, help="Seconds between publications.")
_ONCE = typer.Option(False, "--once", help="Publish once and exit.")
_SERVER = typer.Option(None, "--server", help="API server URL (default: the in-cluster one "
                                              "from $KUBERNETES_SERVICE_HOST).")
_TOKEN = typer.Option(None, "--token-file", help="Bearer token file (default: the pod's "
                                                 "service-account token).")
_CA = typer.Option(None, "--ca-file", help="CA bundle for the API server's certificate.")


def register(app: typer.Typer) -> None:
    group = add_group(app, "k8s", "Kubernetes: the node's NFD NodeFeature and status, "
                                  "rendered or published.")
    add_command(group, "nodefeature", nodefeature_command)
    add_command(group, "status", status_command)
    add_command(group, "publish", publish_command)


def _node(given: str | None) -> str:
    return given or os.environ.get("NODE_NAME") or socket.gethostname().split(".")[0]


def _namespace(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    from hosttune.agent.service.kube import SERVICE_ACCOUNT

    try:
        return (SERVICE_ACCOUNT / "namespace").read_text(encoding="utf-8").strip() or "hosttune"
    except OSError:
        return "hosttune"


def _daemon_status() -> dict[str, Any] | None:
    from hosttune.agent.service.client import DaemonClient, DaemonError, DaemonUnavailable

    try:
        reply = DaemonClient(timeout=10.0).request("status")
    except (DaemonUnavailable, DaemonError):
        return None
    return reply if isinstance(reply, dict) else None


def _gather(root: Path | None, node: str | None, workload: str | None
            ) -> tuple[NodeFacts, dict[str, Any] | None, Host]:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    from hosttune.agent.service import kube

    try:
        version = dist_version("hosttune")
    except PackageNotFoundError:
        version = "0+unknown"
    host = Host(host_root(root))
    status = _daemon_status()
    return (kube.facts(host, _node(node), status, workload=workload, version=version),
            status, host)


def _status_object(root: Path | None, node: str | None, namespace: str | None
                   ) -> dict[str, Any]:
    from hosttune.agent.service import jobs, kube

    f, status, host = _gather(root, node, None)
    paths = Paths.from_env()
    book = jobs.status(paths) if (paths.state_dir / "jobs.json").exists() else None
    return kube.node_status(f, _namespace(namespace), status,
                            kube.journal_view(host, paths.journal), book)


def _emit(obj: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(obj)
        return
    import yaml  # 28 ms: only here

    typer.echo(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).rstrip())


def nodefeature_command(
    node: str | None = _NODE,
    namespace: str | None = _NAMESPACE,
    workload: str | None = _CLASS,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Print this node's NFD NodeFeature: labels for the workload class and the
    accelerators (vendor, count, NUMA nodes), and the features behind them."""
    from hosttune.agent.service import kube

    f, _, _ = _gather(root, node, workload)
    _emit(kube.node_feature(f, _namespace(namespace)), json_out)


def status_command(
    node: str | None = _NODE,
    namespace: str | None = _NAMESPACE,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Print this node's status ConfigMap: workload class, knobs applied,
    advice, refusals, drift and the batch jobs' conflicts."""
    try:
        _emit(_status_object(root, node, namespace), json_out)
    except HosttuneError as exc:
        raise fail(str(exc)) from None


def publish_command(  # noqa: PLR0917 (typer maps parameters to options)
    node: str | None = _NODE,
    namespace: str | None = _NAMESPACE,
    interval: float = _INTERVAL,
    once: bool = _ONCE,
    server: str | None = _SERVER,
    token_file: Path | None = _TOKEN,
    ca_file: Path | None = _CA,
    root: Path | None = ROOT_OPTION,
) -> None:
    """Write this node's NodeFeature and status ConfigMap to the API server
    (server-side apply), every --interval seconds until SIGTERM.

    A failed publication is reported and retried at the next interval; with
    --once it fails the command."""
    from hosttune.agent.service import kube

    if server:
        if token_file is None:
            raise fail("--server needs --token-file")
        api = kube.KubeApi(server, token_file, ca_file)
    else:
        api = kube.KubeApi.in_cluster(os.environ)
    stop = threading.Event()
    if not once:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    while True:
        try:
            f, _, _ = _gather(root, node, None)
            ns = _namespace(namespace)
            api.apply(kube.node_feature(f, ns))
            api.apply(_status_object(root, node, namespace))
            typer.echo(f"published {f.node}: class {f.workload}, "
                       f"{len(f.accelerators)} accelerator(s)")
        except HosttuneError as exc:
            typer.echo(f"hosttune: publish failed: {exc}", err=True)
            if once:
                raise typer.Exit(1) from None
        if once or stop.wait(interval):
            return
