"""Batch inference with scikit-learn: fits a small gradient-boosted model
once, stages feature chunks on disk as .npy files, then reads them chunk by
chunk, predicts probabilities and writes them out, pass after pass."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--chunks", type=int, default=12)
    p.add_argument("--rows", type=int, default=50000)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(args.seed)
    X = rng.normal(size=(5000, 40))
    model = HistGradientBoostingClassifier(max_iter=30).fit(X, X[:, 0] + X[:, 1] > 0)
    work = Path(tempfile.mkdtemp(prefix="batch-skl-", dir=args.dir))
    try:
        for i in range(args.chunks):
            np.save(work / f"in-{i}.npy", rng.normal(size=(args.rows, 40)).astype(np.float32))
        clock = _common.Clock(args.seconds)
        scored = 0
        for t in clock.ticks():
            i = t % args.chunks
            chunk = np.load(work / f"in-{i}.npy")
            out = model.predict_proba(chunk)[:, 1].astype(np.float32)
            np.save(work / f"out-{i}.npy", out)
            scored += len(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("batch_sklearn", args.quiet, scored=scored)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
