"""Inference serving without a framework: a selectors-based socket server
that scores length-prefixed requests with a numpy MLP (weights as an
exported ONNX-like model would give them); a client process of its own keeps
a few connections open and sends at `--rate`."""

from __future__ import annotations

import selectors
import socket
import struct
import subprocess
import sys

import numpy as np

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--hidden", type=int, default=1024)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    W1 = rng.normal(size=(256, args.hidden)).astype(np.float32)
    W2 = rng.normal(size=(args.hidden, 32)).astype(np.float32)
    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ)
    client = subprocess.Popen(
        [sys.executable, "-m", "hosttune.models.workloads._client", "--port",
         str(lsock.getsockname()[1]), "--mode", "raw", "--rate", str(args.rate),
         "--conns", "3", "--seconds", str(args.seconds)], start_new_session=True)
    clock = _common.Clock(args.seconds)
    served = 0
    bufs: dict[socket.socket, bytes] = {}
    while clock.running() and client.poll() is None:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if s is lsock:
                conn, _ = lsock.accept()
                sel.register(conn, selectors.EVENT_READ)
                bufs[conn] = b""
                continue
            data = s.recv(65536)
            if not data:
                sel.unregister(s)
                s.close()
                continue
            buf = bufs[s] + data
            while len(buf) >= 4:
                (n,) = struct.unpack("!I", buf[:4])
                if len(buf) < 4 + n:
                    break
                req, buf = buf[4:4 + n], buf[4 + n:]
                raw = np.frombuffer(req[:1024].ljust(1024, b"\0"), dtype=np.uint8)
                x = raw.astype(np.float32).reshape(4, 256) / 255.0
                out = np.maximum(x @ W1, 0) @ W2
                reply = out.astype(np.float32).tobytes()
                s.sendall(struct.pack("!I", len(reply)) + reply)
                served += 1
            bufs[s] = buf
    client.terminate()
    client.wait()
    _common.report("serve_numpy", args.quiet, served=served)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
