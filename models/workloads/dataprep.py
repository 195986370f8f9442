"""Data preparation: generates a corpus of compressed image-like records in a
temporary directory, then repeatedly reads them in shuffled order, decodes
(zlib), transforms (normalise, random crop and flip), shuffles across files
and writes training shards, with a pool of worker processes. Needs numpy
only."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from hosttune.models.workloads import _common

_SIDE = 64  # decoded records are 64x64x3 uint8


def _make_corpus(root: Path, files: int, records: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(files):
        # smooth images compress like photos do, unlike white noise
        base = rng.integers(0, 255, size=(records, 8, 8, 3), dtype=np.uint8)
        img = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)
        img = (img + rng.integers(0, 8, size=img.shape, dtype=np.uint8)).astype(np.uint8)
        (root / f"raw-{i:05d}.z").write_bytes(zlib.compress(img.tobytes(), 6))


def _process(task: tuple[str, str, int, int]) -> int:
    src, dst, records, seed = task
    rng = np.random.default_rng(seed)
    raw = np.frombuffer(zlib.decompress(Path(src).read_bytes()), dtype=np.uint8)
    img = raw.reshape(records, _SIDE, _SIDE, 3).astype(np.float32) / 255.0
    mean = img.mean(axis=(1, 2), keepdims=True)
    img = (img - mean) / (img.std(axis=(1, 2), keepdims=True) + 1e-6)
    crop = 56
    ox, oy = rng.integers(0, _SIDE - crop, size=2)
    img = img[:, oy:oy + crop, ox:ox + crop, :]
    flip = rng.random(records) < 0.5
    img[flip] = img[flip, :, ::-1, :]
    img = img[rng.permutation(records)].astype(np.float16)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(zlib.compress(img.tobytes(), 1))
    os.replace(tmp, dst)
    return records


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=64, help="files in the generated corpus")
    p.add_argument("--records", type=int, default=64, help="records (64x64x3 images) per file")
    p.add_argument("--workers", type=int, default=2, help="worker processes (0: in process)")
    p.add_argument("--dir", default=None, help="where to make the temporary corpus")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="hosttune-dataprep-", dir=args.dir))
    try:
        clock = _common.Clock(args.seconds)
        _make_corpus(root, args.files, args.records, args.seed)
        out = root / "shards"
        out.mkdir()
        shuffler = random.Random(args.seed)
        done = epochs = 0
        pool = multiprocessing.get_context("fork").Pool(args.workers) if args.workers else None
        try:
            while clock.running():
                names = sorted(root.glob("raw-*.z"))
                shuffler.shuffle(names)
                tasks = [
                    (str(n), str(out / f"shard-{j:05d}.z"), args.records, epochs * 7 + j)
                    for j, n in enumerate(names)
                ]
                results = pool.imap_unordered(_process, tasks) if pool else map(_process, tasks)
                for count in results:
                    done += count
                    if not clock.running():
                        break
                epochs += 1
        finally:
            if pool:
                pool.terminate()
                pool.join()
        _common.report(
            "dataprep", args.quiet, files=args.files, records=args.records, workers=args.workers,
            epochs=epochs, records_per_s=round(done / clock.elapsed(), 1),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
