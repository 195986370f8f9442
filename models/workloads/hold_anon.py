"""Private anonymous memory held the way PyTorch's CPU allocator leaves it
under THP `madvise`: one mapping, touched page by page, so it sits in 4 KiB
pages until something collapses it. Not a labelled workload: the process the
per-process huge-page tests and benchmarks/collapse_cost.py act on.

    python -m hosttune.models.workloads.hold_anon MIB [shared|churn] [marker ...]

Prints "ready" once every page is touched, then holds still for 10 minutes
(or until killed). SIGUSR1 frees the mapping and maps and touches a new one
of the same size (a job that reallocates its tensors), then prints "again".
`shared` maps MAP_SHARED instead (memory MADV_COLLAPSE refuses); `churn`
also maps, touches and frees 32 MiB over and over beside what it holds (a
training step's activations: minor faults for as long as it runs); further
words are ignored, there to be seen on the command line (e.g. "torchrun",
which makes the sampler count it as AI work)."""

from __future__ import annotations

import mmap
import signal
import sys
import time

PAGE = 4096
CHURN = 32 << 20


def _touched(size: int, flags: int) -> mmap.mmap:
    held = mmap.mmap(-1, size, flags=flags | mmap.MAP_ANONYMOUS)
    for i in range(0, size, PAGE):
        held[i] = 1
    return held


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    size = int(args[0]) << 20
    flags = mmap.MAP_SHARED if args[1:2] == ["shared"] else mmap.MAP_PRIVATE
    churn = args[1:2] == ["churn"]
    held = [_touched(size, flags)]
    again = [False]
    signal.signal(signal.SIGUSR1, lambda _s, _f: again.__setitem__(0, True))
    print("ready", flush=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if churn:
            _touched(CHURN, mmap.MAP_PRIVATE).close()
        if again[0]:
            again[0] = False
            held[0].close()
            held[0] = _touched(size, flags)
            print("again", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
