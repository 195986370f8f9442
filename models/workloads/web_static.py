"""Background noise, a web server: the standard library's threading HTTP
server serving generated static files to a client process of its own (no
model, no framework), as a site's web or package mirror would."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from hosttune.models.workloads import _common


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *a: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.path = "/page.html"
        self.do_GET()


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--rate", type=float, default=80.0)
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="web-")
    try:
        with open(os.path.join(work, "page.html"), "wb") as fh:
            fh.write(os.urandom(32768))
        handler = functools.partial(_Quiet, directory=work)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        _common.serve_against_client(server, server.server_address[1], args.seconds,
                                     "--mode", "http", "--rate", str(args.rate))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("web_static", args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
