"""Data preparation for a language model: generates a text corpus, then
streams it in chunks, normalises and splits words with a regular
expression, maps them to ids with a growing vocabulary and appends the ids
as uint32 arrays to binary shards with an offsets index (numpy), as a
pre-tokenisation pass would."""

from __future__ import annotations

import random
import re
import shutil
import tempfile
from pathlib import Path

from hosttune.models.workloads import _common

_WORD = re.compile(r"[a-z0-9']+")


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--lines", type=int, default=40000)
    p.add_argument("--chunk-kb", type=int, default=256)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    import numpy as np

    rnd = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="prep-tok-", dir=args.dir))
    words = [f"Word{i}" if i % 7 else f"it's{i}" for i in range(20000)]
    try:
        for i in range(args.files):
            with open(work / f"corpus-{i}.txt", "w") as fh:
                for _ in range(args.lines):
                    fh.write(" ".join(rnd.choices(words, k=14)) + ".\n")
        vocab: dict[str, int] = {}
        clock = _common.Clock(args.seconds)
        tokens = 0
        for t in clock.ticks():
            src = work / f"corpus-{t % args.files}.txt"
            offsets = [0]
            with open(src) as fh, open(work / f"shard-{t % 3}.bin", "wb") as out:
                while chunk := fh.read(args.chunk_kb * 1024):
                    ids = [vocab.setdefault(w, len(vocab)) for w in _WORD.findall(chunk.lower())]
                    arr = np.asarray(ids, dtype=np.uint32)
                    arr.tofile(out)
                    offsets.append(offsets[-1] + arr.size)
                    tokens += arr.size
                    if not clock.running():
                        break
            np.save(work / f"shard-{t % 3}.idx.npy", np.asarray(offsets, dtype=np.int64))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("prep_tokens", args.quiet, tokens=tokens, vocab=len(vocab))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
