"""The control socket on a real Unix socket: protocol errors, limits, slow and
hostile clients, and who may do what (SO_PEERCRED)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from hosttune.agent.sense.errors import PermissionRefused
from hosttune.agent.service.client import DaemonClient, DaemonError, DaemonUnavailable, via_daemon
from hosttune.agent.service.control import ControlServer, Peer, RequestError

READ = frozenset({"ping", "status", "slow", "fail"})
ADMIN = frozenset({"apply"})


class Handler:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Peer, str]] = []

    def __call__(self, op: str, args: dict[str, Any], peer: Peer, role: str) -> Any:
        self.calls.append((op, peer, role))
        if op == "fail":
            raise RequestError("bad_request", "told to fail")
        if op == "slow":
            fut: Future[Any] = Future()
            threading.Timer(0.3, lambda: fut.set_result({"slept": True})).start()
            return fut
        return {"op": op, "uid": peer.uid, "role": role, "args": args}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ControlServer, Handler]]:
    handler = Handler()
    srv = ControlServer(tmp_path / "run" / "hosttune.sock", handler, read_ops=READ,
                        admin_ops=ADMIN, group_gid=os.getgid(), max_clients=8, timeout=0.5,
                        max_request_bytes=4096)
    srv.start()
    yield srv, handler
    srv.stop()


def _raw(path: Path, data: bytes, *, shutdown: bool = False, timeout: float = 5.0) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        if data:
            s.sendall(data)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def test_request_and_reply(server: tuple[ControlServer, Handler]) -> None:
    srv, _ = server
    result = DaemonClient(srv.path).request("status", verbose=True)
    assert result == {"op": "status", "uid": 0, "role": "admin", "args": {"verbose": True}}
    # Without a newline, shutting down the write side ends the request.
    reply = _raw(srv.path, b'{"version": 1, "op": "ping"}', shutdown=True)
    assert reply["ok"] and reply["version"] == 1
    assert DaemonClient(srv.path).request("slow") == {"slept": True}


def test_socket_mode_and_group(server: tuple[ControlServer, Handler]) -> None:
    srv, _ = server
    st = srv.path.stat()
    assert st.st_mode & 0o777 == 0o660 and st.st_gid == os.getgid()


@pytest.mark.parametrize(("data", "code"), [
    (b"not json\n", "bad_request"),
    (b"[1, 2]\n", "bad_request"),
    (b'{"version": 2, "op": "status"}\n', "bad_version"),
    (b'{"op": "status"}\n', "bad_version"),
    (b'{"version": 1, "op": 5}\n', "bad_request"),
    (b'{"version": 1, "op": "status", "args": []}\n', "bad_request"),
    (b'{"version": 1, "op": "format_disk"}\n', "unknown_op"),
    (b'{"version": 1, "op": "fail"}\n', "bad_request"),
    (b"\xff\xfe\n", "bad_request"),
])
def test_malformed_requests_get_errors(server: tuple[ControlServer, Handler], data: bytes,
                                       code: str) -> None:
    srv, _ = server
    reply = _raw(srv.path, data)
    assert reply["ok"] is False and reply["error"]["code"] == code
    assert DaemonClient(srv.path).request("ping")["op"] == "ping"


def test_oversized_request(server: tuple[ControlServer, Handler]) -> None:
    srv, _ = server
    payload = b'{"version": 1, "op": "status", "args": {"x": "' + b"a" * 100_000
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(srv.path))
        # The server may close after answering; the answer is still readable.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(payload)
        reply = json.loads(s.recv(65536).split(b"\n")[0])
    assert reply["error"]["code"] == "too_large"
    assert DaemonClient(srv.path).request("ping")["op"] == "ping"


def test_slowloris_is_cut_off_and_others_are_served(server: tuple[ControlServer, Handler]
                                                     ) -> None:
    srv, _ = server
    slow = []
    for _ in range(5):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(srv.path))
        s.sendall(b'{"vers')
        slow.append(s)
    # While the slow clients dribble, a normal client is served at once.
    t0 = time.monotonic()
    assert DaemonClient(srv.path).request("ping")["op"] == "ping"
    assert time.monotonic() - t0 < 0.3
    for s in slow:
        s.settimeout(3)
        with contextlib.suppress(OSError):
            s.sendall(b"i")
        reply = json.loads(s.recv(4096).split(b"\n")[0])
        assert reply["error"]["code"] == "timeout"
        s.close()
    deadline = time.monotonic() + 2
    while srv.clients and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.clients == 0


def test_too_many_clients_are_told_busy(server: tuple[ControlServer, Handler]) -> None:
    srv, _ = server
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(8)]
    for s in idle:
        s.connect(str(srv.path))
    time.sleep(0.1)
    with pytest.raises(DaemonError) as info:
        DaemonClient(srv.path).request("ping")
    assert info.value.code == "busy"
    for s in idle:
        s.close()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            DaemonClient(srv.path).request("ping")
            break
        except DaemonError:
            time.sleep(0.05)
    else:
        pytest.fail("server stayed busy after clients left")


def test_no_daemon_means_direct(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnavailable):
        DaemonClient(tmp_path / "absent.sock").request("ping")
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on, as after a crash
    result, where = via_daemon("status", {}, lambda: {"direct": True}, path=stale)
    assert (result, where) == ({"direct": True}, "direct")


def _as_user(path: Path, uid: int, gid: int, groups: list[int], op: str) -> Any:
    """Connect as another user (a child with dropped credentials)."""
    code = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5)\n"
        f"s.connect({str(path)!r})\n"
        f"s.sendall(json.dumps({{'version': 1, 'op': {op!r}}}).encode() + b'\\n')\n"
        "print(s.recv(65536).decode())\n"
    )
    res = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}",
         "--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups",
         "/usr/bin/python3", "-c", code],
        capture_output=True, text=True, timeout=30, check=True)
    return json.loads(res.stdout)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None
                    or not Path("/usr/bin/python3").exists(),
                    reason="needs root, setpriv and /usr/bin/python3 to act as other users")
def test_peer_credentials_decide() -> None:
    handler = Handler()
    group = 4242  # no user has it: only a peer given it explicitly is a member
    # pytest's tmp dirs are private to root; other users must reach this one.
    tmp_path = Path(tempfile.mkdtemp(prefix="hosttune-peercred-"))
    run = tmp_path / "run"
    srv = ControlServer(run / "hosttune.sock", handler, read_ops=READ, admin_ops=ADMIN,
                        group_gid=None, timeout=2.0)
    srv.start()
    try:
        # The socket file's mode is the first gate; open it up so the test
        # reaches the second one, SO_PEERCRED.
        os.chmod(tmp_path, 0o755)
        os.chmod(run, 0o755)
        os.chmod(srv.path, 0o666)
        srv.group_gid = group
        stranger = _as_user(srv.path, 65534, 65534, [], "status")
        assert stranger["error"]["code"] == "refused"
        member = _as_user(srv.path, 65534, 65534, [group], "status")
        assert member["ok"] and member["result"]["role"] == "reader"
        member_apply = _as_user(srv.path, 65534, 65534, [group], "apply")
        assert member_apply["error"]["code"] == "refused"
        assert "only root" in member_apply["error"]["message"]
        primary = _as_user(srv.path, 65534, group, [], "status")
        assert primary["ok"]
        assert DaemonClient(srv.path).request("apply")["role"] == "admin"
        # Refused peers never reached the handler.
        assert [c[0] for c in handler.calls] == ["status", "status", "apply"]
    finally:
        srv.stop()
        shutil.rmtree(tmp_path)


def test_client_maps_refusal_to_permission_error(server: tuple[ControlServer, Handler]) -> None:
    srv, _ = server
    srv.group_gid = None
    srv.admin_ops = frozenset()
    srv.read_ops = frozenset({"ping"})
    # root is always admin; a refusal is only reachable as another user, so
    # check the client's mapping on a hand-made reply instead.
    reply = {"version": 1, "ok": False, "error": {"code": "refused", "message": "no"}}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = srv.path.parent / "fake.sock"
    listener.bind(str(path))
    listener.listen(1)

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(json.dumps(reply).encode() + b"\n")
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    with pytest.raises(PermissionRefused):
        DaemonClient(path).request("status")
    t.join()
    listener.close()
