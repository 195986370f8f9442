"""Checkpoint writing as sharded files: `--shards` writer threads each dump
one shard of model state with os.write in 4 MiB pieces and fdatasync it, then
a small index file is written and fsynced, as a distributed checkpoint's
per-rank shards are."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--shard-mb", type=int, default=48)
    p.add_argument("--every", type=float, default=2.0)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    piece = os.urandom(4 << 20)
    work = Path(tempfile.mkdtemp(prefix="ckpt-sh-", dir=args.dir))

    def write_shard(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(max(1, args.shard_mb // 4)):
                os.write(fd, piece)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    try:
        clock = _common.Clock(args.seconds)
        rounds = 0
        for t in clock.ticks():
            step = work / f"step{t % 2}"
            step.mkdir(exist_ok=True)
            threads = [threading.Thread(target=write_shard, args=(step / f"rank{r}.bin",))
                       for r in range(args.shards)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            index = step / "index.json"
            with open(index, "w") as fh:
                json.dump({"step": t, "shards": args.shards}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            rounds += 1
            time.sleep(max(0.0, min(args.every, args.seconds - clock.elapsed())))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("ckpt_shards", args.quiet, rounds=rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
