"""Talking to hosttuned from the CLI (and from any other command).

`DaemonClient.request(op, **args)` sends one request over the control socket.
`via_daemon(op, args, direct)` is what commands use: when the daemon runs,
the request goes to it (so its journal stays the single writer of host
changes); when it does not, `direct()` does the work in-process.

    from hosttune.agent.service.client import via_daemon
    result, where = via_daemon("rollback", {"to": "baseline"}, lambda: local_rollback())

`where` is "daemon" or "direct", for the command to say which it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hosttune.agent.sense.errors import HosttuneError, PermissionRefused
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service.control import PROTOCOL_VERSION

T = TypeVar("T")
_MAX_REPLY = 64 << 20


class DaemonUnavailable(HosttuneError):
    """No daemon answers on the socket (not running, or not started yet)."""


class DaemonError(HosttuneError):
    """The daemon answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, subject="hosttuned")
        self.code = code


class DaemonClient:
    def __init__(self, path: str | Path | None = None, timeout: float = 10.0) -> None:
        if path is None:
            path = Paths.from_env().socket
        self.path = Path(path)
        self.timeout = timeout

    def request(self, op: str, **args: Any) -> Any:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(str(self.path))
            except FileNotFoundError:
                raise DaemonUnavailable(f"hosttuned is not running (no socket at {self.path})"
                                        ) from None
            except PermissionError:
                raise PermissionRefused(
                    f"cannot open {self.path}: only root and members of the hosttune group "
                    "may talk to hosttuned") from None
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    raise DaemonUnavailable(
                        f"hosttuned is not running (nothing listens on {self.path})") from None
                raise DaemonUnavailable(f"cannot reach hosttuned at {self.path}: "
                                        f"{exc.strerror}") from None
            payload = json.dumps({"version": PROTOCOL_VERSION, "op": op, "args": args})
            # A daemon that answers at once (busy, refused) may close before it
            # has read everything: its answer is still there to read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload.encode() + b"\n")
            chunks = []
            size = 0
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
                if data.endswith(b"\n") or size > _MAX_REPLY:
                    break
        # Connected means a daemon runs: from here on, failures are its errors,
        # never a reason for the caller to go and work on the host directly.
        except TimeoutError:
            raise DaemonError("timeout", f"hosttuned did not answer within {self.timeout:g} s"
                              ) from None
        except (BrokenPipeError, ConnectionResetError):
            raise DaemonError("closed", "hosttuned closed the connection") from None
        finally:
            sock.close()
        if not chunks:
            raise DaemonError("closed", "hosttuned closed the connection without an answer")
        try:
            reply = json.loads(b"".join(chunks))
        except json.JSONDecodeError:
            raise DaemonError("bad_reply", "hosttuned sent a reply that is not JSON") from None
        if not isinstance(reply, dict) or reply.get("version") != PROTOCOL_VERSION:
            raise DaemonError("bad_version", f"hosttuned speaks another protocol version "
                              f"({reply.get('version') if isinstance(reply, dict) else '?'})")
        if not reply.get("ok"):
            err = reply.get("error") or {}
            code = str(err.get("code", "failed"))
            message = str(err.get("message", "request failed"))
            if code == "refused":
                raise PermissionRefused(message, subject="hosttuned")
            raise DaemonError(code, message)
        return reply.get("result")


def daemon_running(path: str | Path | None = None) -> bool:
    try:
        DaemonClient(path, timeout=2.0).request("ping")
    except (DaemonUnavailable, DaemonError, PermissionRefused):
        return False
    return True


def via_daemon(op: str, args: dict[str, Any], direct: Callable[[], T],
               path: str | Path | None = None, timeout: float = 130.0
               ) -> tuple[Any, str]:
    """Ask the daemon when it runs, else do the work directly."""
    client = DaemonClient(path, timeout=timeout)
    try:
        return client.request(op, **args), "daemon"
    except DaemonUnavailable:
        return direct(), "direct"
