"""The Kubernetes base (packaging/kubernetes/): every manifest validated
against the API schemas of two Kubernetes versions (kubernetes-validate,
offline, strict) and the two CRDs it uses against their schemas; what the
DaemonSet promises checked against the code (paths, ports, RBAC for exactly
what the publisher writes); the rendered NodeFeature and status ConfigMap
validated; the publisher's requests checked by a fake API server; and the
agent run with the DaemonSet's mounts, environment and read-only root."""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hosttune.agent.sense.host import Host
from hosttune.agent.service import kube
from hosttune.agent.service.config import parse

pytestmark = pytest.mark.kubernetes

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "packaging/kubernetes"
FIXTURES = Path(__file__).parent / "fixtures"
# The oldest and the newest minor release kubernetes-validate carries that the
# Kubernetes project still supported when this was written (three minors).
VERSIONS = ("1.35.0", "1.37.0")
CRD_SCHEMAS = {("nfd.k8s-sigs.io/v1alpha1", "NodeFeature"): "nodefeature.schema.json",
               ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.schema.json"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    out = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            out.append((name, doc))
    return out


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for _, d in manifests() if d["kind"] == kind]
    return dict(doc)


def validate(doc: dict[str, Any]) -> None:
    """Against each version's schema (strict: unknown fields fail), or the
    CRD's schema for a custom resource."""
    schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.validate(doc, json.loads((FIXTURES / "k8s" / schema).read_text()))
        return
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("name", sorted(yaml.safe_load(
    (BASE / "kustomization.yaml").read_text())["resources"]))
def test_manifest_valid_for_two_kubernetes_versions(name: str) -> None:
    docs = list(yaml.safe_load_all((BASE / name).read_text()))
    assert docs
    for doc in docs:
        validate(doc)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_validation_can_fail() -> None:
    daemonset = by_kind("DaemonSet")
    bad = copy.deepcopy(daemonset)
    bad["spec"]["template"]["spec"]["hostPid"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)
    monitor = copy.deepcopy(by_kind("ServiceMonitor"))
    del monitor["spec"]["selector"]
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def _container(name: str) -> dict[str, Any]:
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == name]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def test_daemonset_matches_the_agent() -> None:
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    agent = _container("hosttuned")
    env, mounts = _env(agent), _mounts(agent)
    assert pod["hostPID"] and pod["hostNetwork"]
    assert agent["securityContext"]["privileged"] is True
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    # the journal on the node: a restarted pod finds an unfinished transaction
    state = mounts[env["HOSTTUNE_STATE_DIR"]]
    assert volumes[state["name"]]["hostPath"]["path"] == "/var/lib/hosttune"
    assert not state.get("readOnly")
    assert volumes[mounts[env["HOSTTUNE_RUN_DIR"]]["name"]].get("emptyDir") is not None
    config_dir = str(Path(env["HOSTTUNE_CONFIG"]).parent)
    config_map = volumes[mounts[config_dir]["name"]]["configMap"]["name"]
    (cm,) = [d for _, d in manifests() if d["kind"] == "ConfigMap"
             and d["metadata"]["name"] == config_map]
    config = parse(cm["data"][Path(env["HOSTTUNE_CONFIG"]).name], "configmap.yaml")
    assert config.revert_on_stop is False
    assert config.metrics.enabled
    # the metrics port the config binds is the one the Service and monitor scrape
    (port,) = agent["ports"]
    assert port["containerPort"] == config.metrics.port
    service = by_kind("Service")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert by_kind("ServiceMonitor")["spec"]["endpoints"][0]["port"] == \
        service["spec"]["ports"][0]["name"]
    labels = by_kind("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert by_kind("ServiceMonitor")["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    # the host's own files that say who owns a knob, read only
    for path in ("/etc/sysctl.d", "/etc/sysctl.conf", "/run/sysctl.d", "/etc/tuned"):
        assert mounts[path]["readOnly"] is True
    tolerated = {t["key"] for t in pod["tolerations"]}
    assert {"nvidia.com/gpu", "amd.com/gpu", "huawei.com/Ascend910"} <= tolerated


def test_only_the_publisher_holds_an_api_token() -> None:
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    token_dir = str(kube.SERVICE_ACCOUNT)
    holders = [c["name"] for c in pod["containers"] if token_dir in _mounts(c)]
    assert holders == ["publisher"]
    publisher = _container("publisher")
    context = publisher["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["allowPrivilegeEscalation"] is False
    assert publisher["command"][1:4] == ["k8s", "publish", "--interval"]


def test_role_grants_exactly_what_the_publisher_writes() -> None:
    role = by_kind("Role")
    granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    needed = {}
    for (api_version, _kind), (_prefix, plural) in kube._KINDS.items():
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        needed[(group, plural)] = {"get", "create", "patch"}
    assert granted == needed
    binding = by_kind("RoleBinding")
    assert binding["subjects"][0]["name"] == by_kind("ServiceAccount")["metadata"]["name"]
    assert by_kind("DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == \
        binding["subjects"][0]["name"]


# -- what the node publishes -------------------------------------------------------------


def _facts(fixture: str, status: dict[str, Any] | None = None) -> kube.NodeFacts:
    return kube.facts(Host(FIXTURES / "hosts" / fixture), "gpu-node-7", status, version="0.1.0")


def test_nodefeature_of_an_8_gpu_host_is_valid() -> None:
    status = {"mode": "auto", "workload": {"label": "training", "confidence": 0.93}}
    doc = kube.node_feature(_facts("nvidia-8gpu", status), "hosttune")
    validate(doc)
    assert doc["metadata"]["labels"][kube.NFD_NODE_LABEL] == "gpu-node-7"
    assert doc["spec"]["labels"] == {
        "hosttune-workload-class": "training", "hosttune-accelerator-count": "8",
        "hosttune-accelerator-vendor": "nvidia", "hosttune-accelerator-numa-nodes": "0_1"}
    instances = doc["spec"]["features"]["instances"]["hosttune.accelerator"]["elements"]
    assert len(instances) == 8 and {i["attributes"]["numa_node"] for i in instances} == {"0", "1"}
    assert doc["spec"]["features"]["attributes"]["hosttune.workload"]["elements"] == {
        "class": "training", "confidence": "0.9300", "mode": "auto"}


def test_nodefeature_without_accelerators_and_daemon() -> None:
    doc = kube.node_feature(_facts("this-vm"), "ns1")
    validate(doc)
    assert doc["spec"]["labels"] == {"hosttune-workload-class": "unknown",
                                     "hosttune-accelerator-count": "0"}


def test_label_values_are_made_valid() -> None:
    assert kube.label_value("Ascend 910B/x") == "Ascend-910B-x"
    assert kube.label_value("-a" * 50) == ("a-" * 32)[:61].strip("-")
    assert kube.object_name("hosttune-status", "Node_1.example") == "hosttune-status-node-1.example"


def test_status_configmap_is_valid_and_says_what_hosttune_did(tmp_path: Path) -> None:
    from hosttune.tuners.journal import Journal
    from hosttune.tuners.knobs import Change, Plan
    from hosttune.tuners.transaction import apply_plan

    root = tmp_path / "host"
    for name, value in {"swappiness": "60", "dirty_ratio": "20"}.items():
        path = root / "proc/sys/vm" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    (root / "proc/meminfo").write_text("MemTotal:       24000000 kB\n")
    host = Host(root)
    with Journal(tmp_path / "journal.db") as journal:
        apply_plan(host, Plan([Change("sysctl:vm.swappiness", "10"),
                               Change("sysctl:vm.dirty_ratio", "40")]), journal)
        apply_plan(host, Plan([Change("sysctl:vm.nonexistent", "1")]), journal)
    (root / "proc/sys/vm/dirty_ratio").write_text("25\n")  # someone else, since
    view = kube.journal_view(host, tmp_path / "journal.db")
    assert view["applied"] == {"sysctl:vm.swappiness": "10"}
    assert view["drift"] == {"sysctl:vm.dirty_ratio": {"hosttune_set": "40", "now": "25"}}
    assert [r["knob"] for r in view["refused"]] == ["sysctl:vm.nonexistent"]
    status = {"mode": "recommend", "workload": {"label": "inference", "confidence": 0.8},
              "recommendation": {"report": {"advice": [
                  {"knob": "sysctl:vm.swappiness", "after": "10",
                   "why_advice": "/etc/sysctl.d/90-ai.conf:3 sets it"}]}}}
    jobs = {"jobs": {"41": {}}, "conflicts": {"sysctl:vm.dirty_ratio": {"41": "40", "42": "30"}}}
    doc = kube.node_status(_facts("this-vm", status), "hosttune", status, view, jobs, now=5.0)
    validate(doc)
    body = json.loads(doc["data"]["status.json"])
    assert body["workload"] == {"class": "inference", "confidence": 0.8}
    assert body["applied"] == view["applied"] and body["drift"] == view["drift"]
    assert body["advice"][0]["why"].startswith("/etc/sysctl.d")
    assert body["conflicts"]["jobs"] == jobs["conflicts"] and body["jobs"] == ["41"]
    assert doc["data"]["workload-class"] == "inference"


# -- the API client against a fake API server ------------------------------------------------


class FakeApi(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    reply_status = 200

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FakeApi.requests.append({"method": "PATCH", "path": self.path,
                                 "headers": dict(self.headers.items()), "body": body})
        self.send_response(FakeApi.reply_status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if FakeApi.reply_status == 200:
            self.wfile.write(body)
        else:
            self.wfile.write(json.dumps({"kind": "Status", "status": "Failure",
                                         "message": "nodefeatures is forbidden: no RBAC",
                                         "code": FakeApi.reply_status}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[str]:
    FakeApi.requests = []
    FakeApi.reply_status = 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _publish(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    env = {**os.environ, "HOSTTUNE_STATE_DIR": str(tmp_path / "state"),
           "HOSTTUNE_RUN_DIR": str(tmp_path / "run"),
           "HOSTTUNE_CONFIG": str(tmp_path / "none.yaml"), "NODE_NAME": "gpu-node-7",
           "POD_NAMESPACE": "hosttune"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "hosttune"), "k8s", "publish", "--once",
         "--server", url, "--token-file", str(token),
         "--root", str(FIXTURES / "hosts/nvidia-8gpu")],
        env=env, capture_output=True, text=True, timeout=120, check=False)


def test_publish_writes_both_objects_by_server_side_apply(fake_api: str, tmp_path: Path) -> None:
    done = _publish(fake_api, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [r["path"].split("?")[0] for r in FakeApi.requests] == [
        "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/hosttune/nodefeatures/hosttune-gpu-node-7",
        "/api/v1/namespaces/hosttune/configmaps/hosttune-status-gpu-node-7"]
    for request in FakeApi.requests:
        assert request["method"] == "PATCH"
        assert request["path"].split("?")[1] == "fieldManager=hosttune&force=true"
        assert request["headers"]["Authorization"] == "Bearer s3cret-token"
        assert request["headers"]["Content-Type"] == "application/apply-patch+yaml"
        validate(json.loads(request["body"]))
    nodefeature = json.loads(FakeApi.requests[0]["body"])
    assert nodefeature["spec"]["labels"]["hosttune-accelerator-count"] == "8"


def test_publish_reports_the_api_servers_refusal(fake_api: str, tmp_path: Path) -> None:
    FakeApi.reply_status = 403
    done = _publish(fake_api, tmp_path)
    assert done.returncode == 1
    assert "403" in done.stderr and "nodefeatures is forbidden: no RBAC" in done.stderr
    assert "/nodefeatures/hosttune-gpu-node-7" in done.stderr


def test_in_cluster_api_from_the_pod_environment(tmp_path: Path) -> None:
    api = kube.KubeApi.in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1",
                                   "KUBERNETES_SERVICE_PORT": "6443"}, tmp_path)
    assert api.server == "https://[fd00::1]:6443"
    assert api.token_file == tmp_path / "token" and api.ca_file == tmp_path / "ca.crt"
    with pytest.raises(kube.KubeError, match="not in a pod"):
        kube.KubeApi.in_cluster({})


# -- the agent with the DaemonSet's mounts, environment and read-only root ---------------------


def _pod_run(container: str, steps: list[Any], state: Path,
             env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    daemonset = by_kind("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    configmaps = {d["metadata"]["name"]: d["data"] for _, d in manifests()
                  if d["kind"] == "ConfigMap"}
    scratch = Path(tempfile.mkdtemp(prefix="hosttune-pod-", dir="/var/tmp"))
    try:
        spec = {"container": _container(container), "volumes": pod["volumes"],
                "configmaps": configmaps, "scratch": str(scratch),
                # the node's journal dir: a stand-in, never this machine's own
                "substitute": {"/var/lib/hosttune": str(state)},
                "bin": str(Path(sys.executable).parent), "steps": steps, "env": env or {},
                # what the image would hold: the code and its interpreter's environment
                "image": sorted({str(REPO), sys.prefix})}
        spec_file = Path(tempfile.mkstemp(prefix="hosttune-pod-", suffix=".json",
                                          dir="/var/tmp")[1])
        spec_file.write_text(json.dumps(spec))
        try:
            done = subprocess.run(
                ["unshare", "--mount", "--net", "--propagation", "private", "--",
                 sys.executable, str(Path(__file__).parent / "k8s_pod.py"), str(spec_file)],
                capture_output=True, text=True, timeout=300, check=False)
        finally:
            spec_file.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == 0, done.stderr + done.stdout
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _image_argv(argv: list[str]) -> list[str]:
    """The image's /usr/bin/hosttune* are this install's."""
    bin_dir = Path(sys.executable).parent
    return [re.sub(r"/usr/bin/(hosttuned?)\b", lambda m: str(bin_dir / m.group(1)), a)
            for a in argv]


KNOB = "vm.dirty_expire_centisecs"


def _sysctl() -> str:
    return Path("/proc/sys", KNOB.replace(".", "/")).read_text().strip()


@pytest.fixture
def knob_guard() -> Iterator[str]:
    before = _sysctl()
    yield before
    after = _sysctl()
    Path("/proc/sys", KNOB.replace(".", "/")).write_text(before + "\n")
    assert after == before, f"{KNOB} left at {after} (was {before}); restored"


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="mount namespaces need root and util-linux's unshare")
def test_agent_runs_with_the_daemonsets_mounts(tmp_path: Path, knob_guard: str) -> None:
    state = tmp_path / "node-var-lib-hosttune"
    state.mkdir()
    agent = _container("hosttuned")
    hosttune = _image_argv(["/usr/bin/hosttune"])[0]
    target = str(int(knob_guard) + 7)
    results = _pod_run("hosttuned", [
        ["sh", "-c", "touch /etc/hosttune-probe 2>&1; touch /usr/probe 2>&1; echo done"],
        {"background": _image_argv(agent["command"])},
        {"wait_for": "/run/hosttune/hosttune.sock"},
        _image_argv(agent["livenessProbe"]["exec"]["command"]),
        [hosttune, "set", f"sysctl:{KNOB}", target, "--reason", "pod test"],
        ["cat", f"/proc/sys/{KNOB.replace('.', '/')}"],
        [sys.executable, "-c", "import urllib.request; print(urllib.request.urlopen("
         "'http://127.0.0.1:9464/metrics', timeout=10).read().decode()[:2000])"],
        [hosttune, "k8s", "nodefeature", "--node", "n1", "--json"],
        [hosttune, "rollback", "--baseline"],
        {"stop": True},
        _image_argv(agent["livenessProbe"]["exec"]["command"]),
    ], state)
    ro, _, _, status, set_, read, metrics, nodefeature, rollback, stop, dead = results
    # readOnlyRootFilesystem holds: nothing outside the volumes is writable
    assert ro["stdout"].count("Read-only file system") == 2, ro
    # the liveness probe passes while the daemon answers, fails once it is gone
    assert status["rc"] == 0, status
    assert dead["rc"] != 0, dead
    assert set_["rc"] == 0, set_
    assert read["stdout"].strip() == target
    assert metrics["rc"] == 0 and "hosttune" in metrics["stdout"], metrics
    validate(json.loads(nodefeature["stdout"]))
    assert rollback["rc"] == 0, rollback
    assert stop["rc"] == 0, stop
    # the journal is on the node's path, where the next pod finds it
    assert (state / "journal.db").exists()
    assert _sysctl() == knob_guard


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="mount namespaces need root and util-linux's unshare")
def test_restarted_pod_rolls_back_an_unfinished_transaction(tmp_path: Path,
                                                            knob_guard: str) -> None:
    state = tmp_path / "node-var-lib-hosttune"
    state.mkdir()
    target = str(int(knob_guard) + 9)
    # a pod killed between writing the knob and finishing its transaction
    crash = (
        "import os\n"
        "from hosttune.agent.sense.host import Host\n"
        "from hosttune.tuners.journal import Journal\n"
        "from hosttune.tuners.knobs import Change, Plan\n"
        "from hosttune.tuners.transaction import apply_plan\n"
        "def hook(point, seq, change):\n"
        "    if point == 'written':\n"
        "        os._exit(9)\n"
        "apply_plan(Host('/'), Plan([Change('sysctl:" + KNOB + "', '" + target + "')]),\n"
        "           Journal(os.environ['HOSTTUNE_STATE_DIR'] + '/journal.db'), hook=hook)\n")
    first = _pod_run("hosttuned", [[sys.executable, "-c", crash]], state)
    assert first[0]["rc"] == 9, first
    assert _sysctl() == target  # left changed, the transaction open
    agent = _container("hosttuned")
    second = _pod_run("hosttuned", [
        {"background": _image_argv(agent["command"])},
        {"wait_for": "/run/hosttune/hosttune.sock"},
        ["cat", f"/proc/sys/{KNOB.replace('.', '/')}"],
        [_image_argv(["/usr/bin/hosttune"])[0], "history", "--json"],
        {"stop": True},
    ], state)
    _, _, read, history, stop = second
    assert read["stdout"].strip() == knob_guard, (read, stop)
    assert json.loads(history["stdout"])[0]["state"] == "recovered"
    assert stop["rc"] == 0, stop


@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="mount namespaces need root and util-linux's unshare")
def test_publisher_reads_the_nodes_journal(tmp_path: Path, knob_guard: str) -> None:
    state = tmp_path / "node-var-lib-hosttune"
    state.mkdir()
    hosttune = _image_argv(["/usr/bin/hosttune"])[0]
    target = str(int(knob_guard) + 5)
    (changed,) = _pod_run("hosttuned", [[hosttune, "set", f"sysctl:{KNOB}", target]], state)
    assert changed["rc"] == 0, changed
    try:
        (published,) = _pod_run("publisher", [[hosttune, "k8s", "status", "--json"]], state,
                                env={"NODE_NAME": "n1", "POD_NAMESPACE": "hosttune"})
    finally:
        (undone,) = _pod_run("hosttuned", [[hosttune, "rollback", "--baseline"]], state)
    assert published["rc"] == 0, published
    doc = json.loads(published["stdout"])
    validate(doc)
    assert json.loads(doc["data"]["status.json"])["applied"] == {f"sysctl:{KNOB}": target}
    assert undone["rc"] == 0, undone
