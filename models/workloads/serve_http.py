"""Inference serving over HTTP: a PyTorch conv net behind the standard
library's threading HTTP server; a client process of its own posts requests
at `--rate`, one connection each."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    torch = _common.require_torch()
    torch.set_num_threads(1)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 10)).eval()
    served = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            x = torch.frombuffer(bytearray(body[:1024].ljust(1024, b"\0")), dtype=torch.uint8)
            with torch.no_grad():
                out = model(x[:1024].float().reshape(1, 1, 32, 32) / 255.0)
            reply = out.numpy().tobytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            served[0] += 1

        def log_message(self, format: str, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    _common.serve_against_client(server, server.server_address[1], args.seconds,
                                 "--mode", "http", "--rate", str(args.rate))
    _common.report("serve_http", args.quiet, served=served[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
