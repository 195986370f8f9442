"""Request generator for the serving workloads, run as a process of its own
(its own session, as a remote client would be): `--mode http` opens one
connection per request (socket churn on the server), `--mode raw` keeps
`--conns` connections and sends length-prefixed payloads."""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import struct
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=("http", "raw"), default="http")
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--size", type=int, default=1024, help="payload bytes")
    p.add_argument("--conns", type=int, default=2)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    payload = random.randbytes(args.size)
    end = time.monotonic() + args.seconds
    conns: list[socket.socket] = []
    for _ in range(50):
        try:
            if args.mode == "raw":
                conns = [socket.create_connection(("127.0.0.1", args.port), timeout=5)
                         for _ in range(args.conns)]
            else:
                socket.create_connection(("127.0.0.1", args.port), timeout=5).close()
            break
        except OSError:
            time.sleep(0.2)
    i = 0
    next_at = time.monotonic()
    while time.monotonic() < end:
        try:
            if args.mode == "http":
                c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
                c.request("POST", "/predict", body=payload)
                c.getresponse().read()
                c.close()
            else:
                s = conns[i % len(conns)]
                s.sendall(struct.pack("!I", len(payload)) + payload)
                (n,) = struct.unpack("!I", s.recv(4, socket.MSG_WAITALL))
                s.recv(n, socket.MSG_WAITALL)
        except (OSError, struct.error):
            time.sleep(0.2)
        i += 1
        next_at += random.expovariate(args.rate)
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
