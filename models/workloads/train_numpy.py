"""Training by hand in numpy: a two-layer network with ReLU, forward and
backward written out, mini-batch gradient descent with momentum."""

from __future__ import annotations

import numpy as np

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    d_in, d_out = 256, 16
    W1 = rng.normal(scale=0.05, size=(d_in, args.hidden)).astype(np.float32)
    W2 = rng.normal(scale=0.05, size=(args.hidden, d_out)).astype(np.float32)
    V1, V2 = np.zeros_like(W1), np.zeros_like(W2)
    target = rng.normal(size=(d_in, d_out)).astype(np.float32)
    clock = _common.Clock(args.seconds)
    steps = 0
    for _ in clock.ticks():
        X = rng.normal(size=(args.batch, d_in)).astype(np.float32)
        Y = X @ target
        H = np.maximum(X @ W1, 0)
        err = H @ W2 - Y
        gW2 = H.T @ err / args.batch
        gH = (err @ W2.T) * (H > 0)
        gW1 = X.T @ gH / args.batch
        V1 = 0.9 * V1 - 1e-3 * gW1
        V2 = 0.9 * V2 - 1e-3 * gW2
        W1 += V1
        W2 += V2
        steps += 1
    _common.report("train_numpy", args.quiet, steps=steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
