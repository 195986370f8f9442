"""Background noise, CPU stress: `--procs` processes of pure-Python integer
work (a prime sieve and SHA-256 over a buffer, alternating), no I/O, as a
stress test or a CPU-bound service shares a host."""

from __future__ import annotations

import hashlib
import multiprocessing
import time

from hosttune.models.workloads import _common


def _work(seconds: float, duty: float) -> None:
    end = time.monotonic() + seconds
    buf = bytes(65536)
    while time.monotonic() < end:
        t0 = time.monotonic()
        n = 20000
        sieve = bytearray([1]) * n
        for i in range(2, int(n ** 0.5) + 1):
            if sieve[i]:
                sieve[i * i::i] = bytearray(len(range(i * i, n, i)))
        for _ in range(20):
            buf = hashlib.sha256(buf).digest() * 2048
        if duty < 1.0:
            time.sleep((time.monotonic() - t0) * (1 - duty) / duty)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--duty", type=float, default=1.0, help="busy fraction of each process")
    args = p.parse_args(argv)
    procs = [multiprocessing.Process(target=_work, args=(args.seconds, args.duty))
             for _ in range(args.procs)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    _common.report("burn", args.quiet, procs=args.procs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
