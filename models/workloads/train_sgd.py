"""Training with scikit-learn: an SGDClassifier fed by partial_fit over
mini-batches generated on the fly (no framework beyond numpy and
scikit-learn), scoring a held-out batch now and then."""

from __future__ import annotations

import numpy as np

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--features", type=int, default=400)
    p.add_argument("--batch", type=int, default=2000)
    args = p.parse_args(argv)
    from sklearn.linear_model import SGDClassifier

    rng = np.random.default_rng(args.seed)
    w = rng.normal(size=args.features)
    model = SGDClassifier(loss="log_loss", alpha=1e-4)
    clock = _common.Clock(args.seconds)
    batches = 0
    score = 0.0
    for i in clock.ticks():
        X = rng.normal(size=(args.batch, args.features))
        y = (X @ w + rng.normal(size=args.batch) > 0).astype(int)
        model.partial_fit(X, y, classes=[0, 1])
        batches += 1
        if i % 20 == 19:
            score = float(model.score(X, y))
    _common.report("train_sgd", args.quiet, batches=batches, score=score)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
