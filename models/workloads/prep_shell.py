"""Data preparation with standard tools: generates text log files, then
loops a shell pipeline over them (zcat | awk field extraction | sort | uniq
-c | gzip into shards), as an ETL script would."""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hosttune.models.workloads import _common

_PIPE = (
    'for f in "$1"/in-*.gz; do zcat "$f" | awk -F"\\t" \'{print $2"\\t"$4}\' | sort | '
    'uniq -c | gzip -1 > "$f.out"; done'
)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=6)
    p.add_argument("--lines", type=int, default=60000)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    rnd = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="prep-sh-", dir=args.dir))
    words = [f"w{i}" for i in range(3000)]
    try:
        for i in range(args.files):
            with gzip.open(work / f"in-{i}.gz", "wt", compresslevel=1) as fh:
                for n in range(args.lines):
                    fh.write(f"{n}\t{rnd.choice(words)}\t{rnd.random():.5f}\t{rnd.choice(words)}\n")
        clock = _common.Clock(args.seconds)
        passes = 0
        while clock.running():
            left = max(1.0, args.seconds - clock.elapsed())
            try:
                subprocess.run(["bash", "-c", _PIPE, "prep", str(work)], timeout=left, check=False)
            except subprocess.TimeoutExpired:
                break
            passes += 1
            time.sleep(0.05)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("prep_shell", args.quiet, passes=passes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
