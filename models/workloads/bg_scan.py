"""Background noise, an integrity scan: generates a tree of files, then
walks it over and over with find piped to xargs md5sum, comparing the sums
with the last pass's (sort + comm), as a file-integrity checker or a
nightly indexer would."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hosttune.models.workloads import _common

_PASS = ('cd "$1" && find tree -type f -print0 | xargs -0 -n 64 md5sum | sort -k 2 > sums.new '
         '&& { [ -f sums.old ] && comm -3 sums.old sums.new | wc -l; true; } '
         '&& mv sums.new sums.old')


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=600)
    p.add_argument("--size-kb", type=int, default=256)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bg-scan-", dir=args.dir))
    try:
        data = os.urandom(args.size_kb * 1024)
        for i in range(args.files):
            d = work / "tree" / f"d{i % 24:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:05d}").write_bytes(data[i % 97:] + bytes([i % 256]))
        clock = _common.Clock(args.seconds)
        passes = 0
        while clock.running():
            left = max(1.0, args.seconds - clock.elapsed())
            try:
                subprocess.run(["sh", "-c", _PASS, "sh", str(work)], timeout=left, check=False,
                               stdout=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                break
            passes += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("bg_scan", args.quiet, passes=passes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
