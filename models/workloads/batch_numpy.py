"""Batch inference in numpy: an embedding scorer. Stages a memory-mapped
matrix of item vectors on disk, then scores it block by block against a
fixed set of queries and writes the top-k ids of each block."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--items", type=int, default=400000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--block", type=int, default=20000)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="batch-np-", dir=args.dir))
    try:
        items = np.lib.format.open_memmap(work / "items.npy", mode="w+", dtype=np.float32,
                                          shape=(args.items, args.dim))
        for a in range(0, args.items, args.block):
            items[a:a + args.block] = rng.normal(size=(min(args.block, args.items - a), args.dim))
        items.flush()
        del items
        queries = rng.normal(size=(64, args.dim)).astype(np.float32)
        items = np.load(work / "items.npy", mmap_mode="r")
        clock = _common.Clock(args.seconds)
        blocks = 0
        with open(work / "topk.bin", "wb") as out:
            for t in clock.ticks():
                a = (t * args.block) % args.items
                scores = np.asarray(items[a:a + args.block]) @ queries.T
                top = np.argpartition(-scores, 10, axis=0)[:10]
                out.write(top.astype(np.int32).tobytes())
                blocks += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("batch_numpy", args.quiet, blocks=blocks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
