"""Checkpoint writing: every `--every` seconds, writes a checkpoint of
`--size-mb` MB (model-like float32 tensors) sequentially in large chunks,
fsyncs it, renames it into place and keeps the last `--keep` checkpoints, as
a training job's checkpoint saver does. Between checkpoints it idles, or
with --busy keeps a core busy like the training step it interrupts would.
Needs numpy only."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--size-mb", type=int, default=512, help="size of one checkpoint")
    p.add_argument("--chunk-mb", type=int, default=8, help="size of one write")
    p.add_argument("--every", type=float, default=0.0, help="seconds between checkpoints")
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept on disk")
    p.add_argument("--no-fsync", action="store_true", help="leave the flushing to the kernel")
    p.add_argument("--busy", action="store_true", help="compute between checkpoints")
    p.add_argument("--dir", default=None, help="where to write (a temporary directory in it)")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="hosttune-ckpt-", dir=args.dir))
    rng = np.random.default_rng(args.seed)
    chunk = rng.standard_normal(args.chunk_mb * (1 << 20) // 4).astype(np.float32)
    written = 0
    saved: list[Path] = []
    fsync_s = 0.0
    try:
        clock = _common.Clock(args.seconds)
        n = 0
        while clock.running():
            started = time.monotonic()
            path = root / f"ckpt-{n:05d}.bin"
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb", buffering=0) as fh:
                left = args.size_mb << 20
                while left > 0 and clock.running():
                    chunk[: 1024] += 1.0  # the tensors change between saves
                    data = memoryview(chunk).cast("B")[: min(left, chunk.nbytes)]
                    fh.write(data)
                    left -= len(data)
                    written += len(data)
                if not args.no_fsync:
                    t = time.monotonic()
                    os.fsync(fh.fileno())
                    fsync_s += time.monotonic() - t
            os.replace(tmp, path)
            saved.append(path)
            while len(saved) > args.keep:
                saved.pop(0).unlink()
            n += 1
            pause_until = started + args.every
            while clock.running() and time.monotonic() < pause_until:
                if args.busy:
                    float(np.linalg.norm(chunk[: 1 << 18]))
                else:
                    time.sleep(min(0.2, pause_until - time.monotonic()))
        _common.report(
            "checkpoint", args.quiet, size_mb=args.size_mb, checkpoints=n,
            mb_per_s=round(written / (1 << 20) / clock.elapsed(), 1), fsync_s=round(fsync_s, 2),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
