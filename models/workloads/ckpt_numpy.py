"""Checkpoint writing with numpy: every `--every` seconds, a state dict of
float32 arrays (layers of a model plus optimizer moments) goes to
np.savez into a temporary file, which is fsynced and renamed into place;
the last two are kept."""

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
    p.add_argument("--size-mb", type=int, default=192)
    p.add_argument("--every", type=float, default=1.0)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n = args.size_mb * (1 << 20) // 4 // 24
    state = {f"layer{i}.{k}": rng.normal(size=n).astype(np.float32)
             for i in range(8) for k in ("w", "m", "v")}
    work = Path(tempfile.mkdtemp(prefix="ckpt-np-", dir=args.dir))
    try:
        clock = _common.Clock(args.seconds)
        saved = 0
        for t in clock.ticks():
            tmp = work / f"step-{t}.npz.tmp"
            with open(tmp, "wb") as fh:
                np.savez(fh, **state)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, work / f"step-{t}.npz")
            old = work / f"step-{t - 2}.npz"
            if old.exists():
                old.unlink()
            saved += 1
            for key in list(state)[:3]:
                state[key] += 1e-3  # the training step between saves, in brief
            time.sleep(max(0.0, min(args.every, args.seconds - clock.elapsed())))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("ckpt_numpy", args.quiet, saved=saved)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
