"""Inference serving: a model behind a TCP server on loopback answers batch-1
requests that a client sends at a target rate (open loop: a late answer does
not delay the next request's schedule beyond the one in flight). Reports the
latency percentiles against the target."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from typing import Any

from hosttune.models.workloads import _common, _nets

_HEADER = struct.Struct("!I")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def _recv_msg(sock: socket.socket) -> bytes:
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return _recv_exact(sock, n)


def _send_msg(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--model-size", choices=_nets.SIZES, default="small")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second")
    p.add_argument("--latency-ms", type=float, default=50.0, help="latency target (p99)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--clients", type=int, default=1, help="client connections sharing the rate")
    args = p.parse_args(argv)
    torch = _common.require_torch()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, args.threads))
    model, shape, _ = _nets.build(torch, args.model_size)
    model.eval()
    dtype = "int64" if args.model_size == "large" else "float32"
    lock = threading.Lock()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                try:
                    payload = _recv_msg(sock)
                except ConnectionError:
                    return
                x = torch.frombuffer(bytearray(payload), dtype=getattr(torch, dtype))
                with lock, torch.inference_mode():
                    scores = model(x.reshape(1, *shape))
                _send_msg(sock, struct.pack("!I", int(scores.argmax())))

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    latencies: list[float] = []
    clock = _common.Clock(args.seconds)
    per_client = args.rate / max(1, args.clients)

    def client(index: int) -> None:
        g = torch.Generator().manual_seed(args.seed * 7919 + index)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            next_at = time.monotonic()
            while clock.running():
                x, _ = _nets.synthetic_batch(torch, args.model_size, 1, g)
                t0 = time.monotonic()
                _send_msg(sock, x.numpy().tobytes())
                _recv_msg(sock)
                latencies.append(time.monotonic() - t0)
                next_at += 1.0 / per_client
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_at = time.monotonic()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(max(1, args.clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.shutdown()
    server.server_close()
    _common.report(
        "serve", args.quiet, model_size=args.model_size, rate=args.rate, requests=len(latencies),
        achieved_rate=round(len(latencies) / clock.elapsed(), 1), **_percentiles(latencies),
        latency_target_ms=args.latency_ms,
    )
    return 0


def _percentiles(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None}
    s = sorted(latencies)
    return {
        "p50_ms": round(1000 * s[len(s) // 2], 2),
        "p99_ms": round(1000 * s[min(len(s) - 1, int(len(s) * 0.99))], 2),
    }


if __name__ == "__main__":
    raise SystemExit(main())
