"""Data preparation in plain Python: generates CSV files, then streams them
through csv.reader, cleans and normalises fields, tokenises a text column,
hashes rows into train/validation splits and writes sharded CSV outputs."""

from __future__ import annotations

import csv
import random
import shutil
import tempfile
import zlib
from pathlib import Path

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    rnd = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="prep-csv-", dir=args.dir))
    vocab = [f"tok{i}" for i in range(5000)]
    try:
        for i in range(args.files):
            with open(work / f"raw-{i}.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                for n in range(args.rows):
                    w.writerow([n, f" {rnd.random() * 100:.3f} ", rnd.choice(("a", "B", "c ")),
                                " ".join(rnd.choices(vocab, k=12))])
        clock = _common.Clock(args.seconds)
        rows = 0
        for t in clock.ticks():
            src = work / f"raw-{t % args.files}.csv"
            outs = [open(work / f"shard-{s}.csv", "w", newline="")  # noqa: SIM115
                    for s in range(args.shards)]
            writers = [csv.writer(o) for o in outs]
            with open(src, newline="") as fh:
                for rec in csv.reader(fh):
                    value = float(rec[1].strip()) / 100.0
                    cat = rec[2].strip().lower()
                    toks = [str(zlib.crc32(tok.encode()) % 30000) for tok in rec[3].split()]
                    shard = zlib.crc32(rec[0].encode()) % args.shards
                    writers[shard].writerow([rec[0], f"{value:.5f}", cat, " ".join(toks)])
                    rows += 1
            for o in outs:
                o.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("prep_csv", args.quiet, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
