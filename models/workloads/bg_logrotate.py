"""Background noise, log rotation: an application keeps appending to its
log files while a rotation loop moves the full ones aside, compresses them
with xz or bzip2 (one command per file), verifies them with sha256sum and
drops the oldest, as logrotate and a log archiver would."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--logs", type=int, default=3)
    p.add_argument("--rotate-mb", type=int, default=8, help="rotate a log at this size")
    p.add_argument("--tool", choices=("xz", "bzip2"), default="xz")
    p.add_argument("--keep", type=int, default=4)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    if shutil.which(args.tool) is None or shutil.which("sha256sum") is None:
        raise SystemExit(f"bg_logrotate needs {args.tool} and sha256sum")
    rnd = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bg-logrot-", dir=args.dir))
    paths = ["/api/v1/items", "/login", "/static/app.js", "/health", "/api/v1/orders"]
    try:
        logs = [open(work / f"app{i}.log", "a")  # noqa: SIM115
                for i in range(args.logs)]
        clock = _common.Clock(args.seconds)
        rotated = 0
        while clock.running():
            for i, fh in enumerate(logs):
                fh.write("".join(
                    f"{time.time():.3f} 10.0.{rnd.randrange(256)}.{rnd.randrange(256)} GET "
                    f"{rnd.choice(paths)} {rnd.choice((200, 200, 200, 404, 500))} "
                    f"{rnd.randrange(100, 90000)}\n" for _ in range(3000)))
                fh.flush()
                if fh.tell() >= args.rotate_mb << 20:
                    fh.close()
                    old = work / f"app{i}.log.{rotated}"
                    (work / f"app{i}.log").rename(old)
                    logs[i] = open(work / f"app{i}.log", "a")  # noqa: SIM115
                    subprocess.run([args.tool, "-q", "-6" if args.tool == "xz" else "-9",
                                    str(old)], check=True)
                    packed = next(work.glob(f"app{i}.log.{rotated}.*"))
                    subprocess.run(["sha256sum", str(packed)], stdout=subprocess.DEVNULL,
                                   check=True)
                    rotated += 1
                    for stale in sorted(work.glob(f"app{i}.log.*.*"))[:-args.keep]:
                        stale.unlink()
            time.sleep(0.02)
        for fh in logs:
            fh.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("bg_logrotate", args.quiet, rotated=rotated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
