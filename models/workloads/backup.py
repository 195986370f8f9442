"""Background noise, backup: generates a tree of files (text-like and
binary-like), then repeatedly archives it with tar (optionally gzip) and
copies it with cp -a, fsyncing the result, as a nightly backup would."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hosttune.models.workloads import _common


def _make_tree(root: Path, files: int, size_kb: int, seed: int) -> None:
    data = os.urandom(size_kb * 1024)
    words = (b"the host tunes itself while the backup runs " * (size_kb * 24))[: size_kb * 1024]
    for i in range(files):
        d = root / f"d{i % 16:02d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(data if (i + seed) % 3 == 0 else words)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=400)
    p.add_argument("--size-kb", type=int, default=512, help="size of each file")
    p.add_argument("--gzip", action="store_true", help="compress the archive")
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="hosttune-backup-", dir=args.dir))
    rounds = 0
    try:
        src = root / "src"
        src.mkdir()
        _make_tree(src, args.files, args.size_kb, args.seed)
        clock = _common.Clock(args.seconds)
        while clock.running():
            archive = root / ("backup.tar.gz" if args.gzip else "backup.tar")
            subprocess.run(
                ["tar", "-czf" if args.gzip else "-cf", str(archive), "-C", str(src), "."],
                check=True,
            )
            copy = root / "copy"
            subprocess.run(["cp", "-a", str(src), str(copy)], check=True)
            subprocess.run(["sync", "-f", str(copy)], check=True)
            shutil.rmtree(copy)
            archive.unlink()
            rounds += 1
        _common.report("backup", args.quiet, files=args.files, size_kb=args.size_kb, rounds=rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
