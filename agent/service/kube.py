"""Kubernetes: what this node publishes for the cluster, and the small client
that writes it.

Two objects per node, rendered from the local host and the daemon's status:
- an NFD `NodeFeature` (nfd.k8s-sigs.io/v1alpha1): labels a scheduler can
  select on (workload class, accelerator vendor, count and NUMA nodes) and
  the raw features behind them; nfd-master turns its labels into node labels
  (`feature.node.kubernetes.io/hosttune-...`);
- a ConfigMap `hosttune-status-NODE` with the per-node status: the class, the
  knobs hosttune holds (applied), what it only advises, what was refused, the
  knobs someone else changed since hosttune set them (drift), and the batch
  jobs' conflicts.

Both are written with server-side apply (one PATCH, idempotent, creates the
object if missing), authenticated with the pod's service-account token; no
Kubernetes client library (urllib and the token file are enough, and the
daemon's package stays free of a large dependency).
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host

NFD_API_VERSION = "nfd.k8s-sigs.io/v1alpha1"
NFD_NODE_LABEL = "nfd.node.kubernetes.io/node-name"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "hosttune"
# The rest paths of the kinds hosttune writes: (group/version prefix, plural).
_KINDS = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    (NFD_API_VERSION, "NodeFeature"): (f"/apis/{NFD_API_VERSION}", "nodefeatures"),
}
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_DNS_NAME_BAD = re.compile(r"[^a-z0-9.-]+")


class KubeError(HosttuneError):
    """A request to the API server that failed; names the URL."""

    def __init__(self, url: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message, subject=url)
        self.status = status


def label_value(text: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both
    ends (empty is valid too)."""
    value = _LABEL_VALUE_BAD.sub("-", text)[:63]
    return value.strip("._-")


def object_name(prefix: str, node: str) -> str:
    """A DNS subdomain name for `prefix-node` (node names already are one)."""
    name = _DNS_NAME_BAD.sub("-", f"{prefix}-{node}".lower())[:253]
    return name.strip(".-")


# -- what the node publishes ------------------------------------------------------------


@dataclass(frozen=True)
class Accelerator:
    address: str
    vendor: str
    device_id: str
    numa_node: int | None
    pcie_switch: str | None
    driver: str | None


@dataclass(frozen=True)
class NodeFacts:
    node: str
    workload: str
    confidence: float | None
    mode: str | None
    accelerators: tuple[Accelerator, ...]
    version: str


def accelerators(host: Host) -> tuple[Accelerator, ...]:
    # the PCI scan alone (sense/pci): the full topology also walks CPUs and NICs
    from hosttune.agent.sense.pci import scan

    return tuple(
        Accelerator(d.address, (d.vendor_name or f"0x{d.vendor_id:04x}").lower(),
                    f"0x{d.device_id:04x}", d.numa_node, d.pcie_switch, d.driver)
        for d in scan(host, roles=("accelerator",)))


def facts(host: Host, node: str, status: Mapping[str, Any] | None, *,
          workload: str | None = None, version: str = "") -> NodeFacts:
    """The node's facts: the class from `workload`, else the daemon's status
    (`status` op of the control socket), else "unknown"."""
    confidence = None
    mode = None
    if status:
        mode = status.get("mode")
        seen = status.get("workload") or {}
        if workload is None:
            workload = seen.get("label")
            confidence = seen.get("confidence")
    return NodeFacts(node=node, workload=workload or "unknown", confidence=confidence,
                     mode=mode, accelerators=accelerators(host),
                     version=version or str((status or {}).get("version") or ""))


def node_feature(f: NodeFacts, namespace: str) -> dict[str, Any]:
    vendors = sorted({a.vendor for a in f.accelerators})
    numa = sorted({a.numa_node for a in f.accelerators if a.numa_node is not None})
    labels = {
        "hosttune-workload-class": label_value(f.workload),
        "hosttune-accelerator-count": str(len(f.accelerators)),
    }
    if vendors:
        labels["hosttune-accelerator-vendor"] = label_value("_".join(vendors))
    if numa:
        labels["hosttune-accelerator-numa-nodes"] = label_value("_".join(map(str, numa)))
    workload_attrs = {"class": f.workload}
    if f.confidence is not None:
        workload_attrs["confidence"] = f"{float(f.confidence):.4f}"
    if f.mode:
        workload_attrs["mode"] = str(f.mode)
    return {
        "apiVersion": NFD_API_VERSION,
        "kind": "NodeFeature",
        "metadata": {
            "name": object_name("hosttune", f.node),
            "namespace": namespace,
            "labels": {NFD_NODE_LABEL: f.node,
                       "app.kubernetes.io/managed-by": "hosttune"},
        },
        "spec": {
            "labels": labels,
            "features": {
                "attributes": {"hosttune.workload": {"elements": workload_attrs}},
                "flags": {"hosttune.accelerator.vendor": {
                    "elements": {v: {} for v in vendors}}},
                "instances": {"hosttune.accelerator": {"elements": [
                    {"attributes": {k: v for k, v in {
                        "address": a.address, "vendor": a.vendor, "device": a.device_id,
                        "numa_node": "" if a.numa_node is None else str(a.numa_node),
                        "pcie_switch": a.pcie_switch or "", "driver": a.driver or "",
                    }.items()}} for a in f.accelerators]}},
            },
        },
        # NFD's newest CRD lists status as required (no status subresource);
        # older ones prune the unknown field
        "status": {},
    }


def journal_view(host: Host, journal_path: Path) -> dict[str, Any]:
    """From the journal: the knobs hosttune holds (value as set), those changed
    by someone else since (drift), and the latest refusals."""
    if not journal_path.exists():
        return {"applied": {}, "drift": {}, "refused": []}
    # the act layer: only where a journal exists
    from hosttune.tuners.journal import Journal
    from hosttune.tuners.registry import bind_tuners, tuner_and_key

    applied: dict[str, str] = {}
    drift: dict[str, dict[str, str]] = {}
    refused: list[dict[str, str]] = []
    tuners = bind_tuners(host)
    with Journal(journal_path) as journal:
        for knob, baseline in journal.baseline().items():
            ours = journal.hosttune_value(knob)
            if ours is None or ours == baseline:
                continue
            try:
                tuner, key = tuner_and_key(tuners, knob)
                now = tuner.read(key) if tuner.available(key) else None
            except HosttuneError:
                now = None
            if now is not None and tuner.equal(now, ours):
                applied[knob] = ours
            elif now is not None and not tuner.equal(now, baseline):
                drift[knob] = {"hosttune_set": ours, "now": now}
        for record in journal.transactions()[-20:]:
            for step in record.steps:
                if step.state == "refused":
                    refused.append({"txn": str(record.id), "knob": step.knob,
                                    "value": step.after or "", "why": step.error or ""})
    return {"applied": applied, "drift": drift, "refused": refused[-20:]}


def node_status(f: NodeFacts, namespace: str, status: Mapping[str, Any] | None,
                journal: Mapping[str, Any], jobs: Mapping[str, Any] | None, *,
                now: float | None = None) -> dict[str, Any]:
    """The per-node status ConfigMap."""
    recommendation = (status or {}).get("recommendation") or {}
    report = recommendation.get("report") or {}
    advice = [{"knob": a.get("knob"), "value": a.get("after"), "why": a.get("why_advice")}
              for a in report.get("advice", []) if isinstance(a, Mapping)]
    body: dict[str, Any] = {
        "node": f.node,
        "published": round(time.time() if now is None else now, 3),
        "daemon": bool(status),
        "version": f.version,
        "mode": f.mode,
        "workload": {"class": f.workload, "confidence": f.confidence},
        "applied": dict(journal.get("applied", {})),
        "advice": advice,
        "refused": list(journal.get("refused", [])),
        "drift": dict(journal.get("drift", {})),
        "conflicts": {"jobs": dict((jobs or {}).get("conflicts", {}))},
        "jobs": sorted((jobs or {}).get("jobs", {})),
        "reverts": len((status or {}).get("reverts", []) or []),
    }
    summary = (f"class {f.workload}; {len(body['applied'])} applied, {len(advice)} advice, "
               f"{len(body['refused'])} refused, {len(body['drift'])} drifted")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": object_name("hosttune-status", f.node),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "hosttune",
                       "app.kubernetes.io/component": "node-status",
                       "hosttune.io/node": label_value(f.node)},
        },
        "data": {"status.json": json.dumps(body, sort_keys=True),
                 "workload-class": f.workload, "summary": summary},
    }


# -- the API client ---------------------------------------------------------------------


@dataclass
class KubeApi:
    """Server-side apply of single objects. The token is read at each request:
    projected service-account tokens are rotated by the kubelet."""

    server: str
    token_file: Path
    ca_file: Path | None = None
    timeout: float = 10.0

    @classmethod
    def in_cluster(cls, env: Mapping[str, str], sa_dir: Path = SERVICE_ACCOUNT) -> KubeApi:
        host = env.get("KUBERNETES_SERVICE_HOST")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError("in-cluster", "not in a pod: KUBERNETES_SERVICE_HOST is not set "
                                          "(give --server and --token-file)")
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", sa_dir / "token", sa_dir / "ca.crt")

    def path(self, obj: Mapping[str, Any]) -> str:
        kind = (obj.get("apiVersion"), obj.get("kind"))
        if kind not in _KINDS:
            raise KubeError(self.server, f"hosttune does not write {kind[1]} ({kind[0]})")
        prefix, plural = _KINDS[kind]
        meta = obj["metadata"]
        ns = urllib.parse.quote(meta["namespace"], safe="")
        name = urllib.parse.quote(meta["name"], safe="")
        return f"{prefix}/namespaces/{ns}/{plural}/{name}"

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        query = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER, "force": "true"})
        url = f"{self.server.rstrip('/')}{self.path(obj)}?{query}"
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KubeError(url, f"cannot read the token {self.token_file}: "
                                 f"{exc.strerror}") from None
        request = urllib.request.Request(
            url, data=json.dumps(obj).encode(), method="PATCH",
            headers={"Authorization": f"Bearer {token}",
                     # server-side apply; JSON is YAML
                     "Content-Type": "application/apply-patch+yaml",
                     "Accept": "application/json", "User-Agent": "hosttune"})
        context = None
        if url.startswith("https:"):
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file else None)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as reply:
                data = json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise KubeError(url, f"{exc.code} {exc.reason}: {_status_message(exc)}",
                            status=exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise KubeError(url, f"request failed: {exc}") from None
        return data if isinstance(data, dict) else {}


def _status_message(exc: urllib.error.HTTPError) -> str:
    """The API server's Status message, else the raw body (shortened)."""
    try:
        body = exc.read()
        data = json.loads(body)
        return str(data.get("message") or data)[:500]
    except (OSError, ValueError, AttributeError):
        return "(no body)"
