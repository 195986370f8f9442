"""The control socket: JSON over a Unix stream socket, one request per
connection, served from one thread with a selector.

Protocol (version 1): the client sends one JSON object and a newline (or
shuts down its write side):

    {"version": 1, "op": "status", "args": {}}

and reads one JSON object and a newline back:

    {"version": 1, "ok": true, "result": {...}}
    {"version": 1, "ok": false, "error": {"code": "refused", "message": "..."}}

Who may do what is decided from the peer's credentials (SO_PEERCRED, and
SO_PEERGROUPS for its supplementary groups), never from anything it sends:
root may change the host, members of the socket's group may read, everyone
else is refused.

Nothing a client does can stall the daemon or the other clients: a request
larger than the limit, one that is not JSON, one that trickles in too slowly
(slowloris) or a client that never reads its answer each get an error or are
dropped when their deadline passes, and connections beyond `max_clients` are
answered "busy" at once. Requests that change the host are handed to the
daemon's main loop (the single writer of the journal) as futures; the
selector thread only waits for them.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hosttune.agent.sense.errors import HosttuneError

PROTOCOL_VERSION = 1
# The headline metrics a status reply carries (when the host has them).
STATUS_METRICS = ("cpu.util", "mem.used_ratio", "load.1", "psi.cpu.some.avg10",
                  "psi.memory.some.avg10", "psi.io.some.avg10", "ai.processes")
# Not in Python's socket module on every version; Linux's value since 4.13.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_RECV = 65536
# How long a request handed to the main loop may take before the client gets
# an error (an apply of a large plan, a rollback).
JOB_TIMEOUT = 120.0


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def in_group(self, gid: int | None) -> bool:
        return gid is not None and (self.gid == gid or gid in self.groups)


def peer_of(sock: socket.socket) -> Peer:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    groups: tuple[int, ...] = ()
    try:
        # CPython caps the buffer at 1024 bytes: 256 groups; more fall back below.
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    except OSError:
        # Kernels before 4.13: fall back to the group database.
        groups = _groups_from_db(uid)
    return Peer(pid=pid, uid=uid, gid=gid, groups=tuple(groups))


def _groups_from_db(uid: int) -> tuple[int, ...]:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return ()
    return tuple(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)


class RequestError(HosttuneError):
    """An error answered to the client: `code` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# handler(op, args, peer, role) -> result, or a Future the main loop completes.
Handler = Callable[[str, dict[str, Any], Peer, str], Any]


@dataclass
class _Conn:
    sock: socket.socket
    peer: Peer | None
    deadline: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytes = b""
    waiting: Future[Any] | None = None
    closing: bool = False


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def error_reply(code: str, message: str) -> dict[str, Any]:
    return {"version": PROTOCOL_VERSION, "ok": False,
            "error": {"code": code, "message": message}}


class ControlServer:
    """Serves the control socket from its own thread until `stop()`."""

    def __init__(self, path: Path, handler: Handler, *, read_ops: frozenset[str],
                 admin_ops: frozenset[str], group_gid: int | None, max_clients: int = 32,
                 timeout: float = 2.0, max_request_bytes: int = 65536,
                 log: Callable[..., None] | None = None) -> None:
        self.path = Path(path)
        self.handler = handler
        self.read_ops = read_ops
        self.admin_ops = admin_ops
        self.group_gid = group_gid
        self.max_clients = max_clients
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self._log = log or (lambda *a, **k: None)
        self._sel = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.served = 0
        self.rejected = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        # Create it unreachable, then open it to the group: no window in which
        # the socket exists with looser permissions.
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        self.apply_group(self.group_gid)
        sock.listen(min(self.max_clients * 2, socket.SOMAXCONN))
        sock.setblocking(False)
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="hosttune-control", daemon=True)
        self._thread.start()

    def apply_group(self, gid: int | None) -> None:
        """Owner root (rw), the group (rw) when there is one, nobody else."""
        self.group_gid = gid
        if gid is not None and os.stat(self.path).st_gid != gid:
            try:
                os.chown(self.path, -1, gid)
            except OSError as exc:
                self._log("warning", f"cannot give the control socket to group {gid}: "
                          f"{exc.strerror}; only root can use it", path=str(self.path))
                gid = None
        os.chmod(self.path, 0o660 if gid is not None else 0o600)

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in list(self._conns.values()):
            self._close(conn)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # -- the loop ------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            deadlines = [c.deadline for c in self._conns.values()]
            # Idle, it sleeps until a client or the wake pipe (stop, a job's
            # answer) needs it: no polling while nobody is connected.
            wait = max(0.0, min(deadlines) - now) if deadlines else None
            for key, events in self._sel.select(wait):
                try:
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        conn = key.data
                        if events & selectors.EVENT_READ:
                            self._on_read(conn)
                        if events & selectors.EVENT_WRITE and conn.sock.fileno() >= 0:
                            self._on_write(conn)
                except Exception as exc:  # one bad connection never stops the server
                    self._log("error", f"control socket: {type(exc).__name__}: {exc}")
                    if isinstance(key.data, _Conn):
                        self._close(key.data)
            self._collect_jobs()
            self._expire(time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(64):
            try:
                sock, _addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._log("warning", f"control socket: accept: {exc.strerror}")
                    return
                raise
            sock.setblocking(False)
            if len(self._conns) >= self.max_clients:
                self.rejected += 1
                with contextlib.suppress(OSError):
                    sock.send(encode(error_reply("busy", "too many clients; try again")))
                sock.close()
                continue
            conn = _Conn(sock=sock, peer=None, deadline=time.monotonic() + self.timeout)
            try:
                conn.peer = peer_of(sock)
            except OSError:
                sock.close()
                continue
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _on_read(self, conn: _Conn) -> None:
        if conn.waiting is not None or conn.outbuf:
            # A client talking while its answer is pending: read and discard, so
            # EOF is seen, but never start a second request.
            try:
                if not conn.sock.recv(_RECV):
                    if conn.waiting is not None:
                        conn.waiting.cancel()
                    self._close(conn)
            except OSError:
                self._close(conn)
            return
        try:
            data = conn.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if data:
            conn.inbuf += data
        if len(conn.inbuf) > self.max_request_bytes:
            self._reply(conn, error_reply(
                "too_large", f"request larger than {self.max_request_bytes} bytes"))
            return
        newline = conn.inbuf.find(b"\n")
        if newline >= 0:
            self._dispatch(conn, bytes(conn.inbuf[:newline]))
        elif not data:
            if conn.inbuf:
                self._dispatch(conn, bytes(conn.inbuf))
            else:
                self._close(conn)

    def _dispatch(self, conn: _Conn, raw: bytes) -> None:
        assert conn.peer is not None
        try:
            op, args = self._parse(raw)
            role = self._role(conn.peer)
            if op not in self.read_ops and op not in self.admin_ops:
                raise RequestError("unknown_op", f"unknown operation {op!r}; known: "
                                   f"{', '.join(sorted(self.read_ops | self.admin_ops))}")
            if role is None:
                raise RequestError("refused", "not allowed: only root and members of the "
                                   "hosttune group may use this socket")
            if op in self.admin_ops and role != "admin":
                raise RequestError("refused", f"{op} changes the host: only root may do it")
            result = self.handler(op, args, conn.peer, role)
        except RequestError as exc:
            self._reply(conn, error_reply(exc.code, exc.message))
            return
        except HosttuneError as exc:
            self._reply(conn, error_reply("failed", str(exc)))
            return
        if isinstance(result, Future):
            conn.waiting = result
            conn.deadline = time.monotonic() + JOB_TIMEOUT
            result.add_done_callback(lambda _f: self._wake())
            return
        self._reply(conn, {"version": PROTOCOL_VERSION, "ok": True, "result": result})

    def _parse(self, raw: bytes) -> tuple[str, dict[str, Any]]:
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError("bad_request", f"request is not JSON: {exc}") from None
        if not isinstance(req, dict):
            raise RequestError("bad_request", "request must be a JSON object")
        version = req.get("version")
        if version != PROTOCOL_VERSION:
            raise RequestError("bad_version", f"protocol version {version!r} not supported; "
                               f"this daemon speaks version {PROTOCOL_VERSION}")
        op = req.get("op")
        args = req.get("args", {})
        if not isinstance(op, str) or not isinstance(args, dict):
            raise RequestError("bad_request", "request needs \"op\" (text) and \"args\" (object)")
        return op, args

    def _role(self, peer: Peer) -> str | None:
        if peer.uid == 0:
            return "admin"
        if peer.in_group(self.group_gid):
            return "reader"
        return None

    def _collect_jobs(self) -> None:
        for conn in list(self._conns.values()):
            fut = conn.waiting
            if fut is None or not fut.done():
                continue
            conn.waiting = None
            if fut.cancelled():
                self._reply(conn, error_reply("failed", "request cancelled (daemon stopping)"))
                continue
            exc = fut.exception()
            if isinstance(exc, RequestError):
                self._reply(conn, error_reply(exc.code, exc.message))
            elif isinstance(exc, HosttuneError):
                self._reply(conn, error_reply("failed", str(exc)))
            elif exc is not None:
                self._reply(conn, error_reply("internal", f"{type(exc).__name__}: {exc}"))
            else:
                self._reply(conn, {"version": PROTOCOL_VERSION, "ok": True,
                                   "result": fut.result()})

    def _reply(self, conn: _Conn, reply: dict[str, Any]) -> None:
        self.served += 1
        conn.outbuf = encode(reply)
        conn.closing = True
        # The answer gets its own deadline: a client that never reads is dropped.
        conn.deadline = time.monotonic() + self.timeout
        self._on_write(conn)
        if conn.outbuf and conn.sock.fileno() >= 0:
            self._sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _on_write(self, conn: _Conn) -> None:
        if not conn.outbuf:
            return
        try:
            sent = conn.sock.send(conn.outbuf)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        conn.outbuf = conn.outbuf[sent:]
        if not conn.outbuf and conn.closing:
            self._close(conn)

    def _expire(self, now: float) -> None:
        for conn in list(self._conns.values()):
            if now < conn.deadline:
                continue
            if conn.waiting is not None:
                conn.waiting.cancel()
                conn.waiting = None
                self._reply(conn, error_reply("timeout", "the daemon did not finish in time"))
            elif conn.outbuf:
                self._close(conn)  # the client does not read its answer
            else:
                self._reply(conn, error_reply(
                    "timeout", f"no complete request within {self.timeout:g} s"))
                self._drop_if_unsent(conn)

    def _drop_if_unsent(self, conn: _Conn) -> None:
        if conn.outbuf:  # cannot even take the error: drop it
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
            self._conns.pop(fd, None)
        conn.sock.close()

    @property
    def clients(self) -> int:
        return len(self._conns)
