"""Data preparation for an audio model: generates raw signal files, then
loads them, frames each signal, computes log-mel-like spectral features
with scipy's short-time Fourier transform, normalises them per file and
writes float16 feature shards, as a feature-extraction pass would."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=24)
    p.add_argument("--seconds-audio", type=int, default=20, help="length of each clip")
    p.add_argument("--rate", type=int, default=16000)
    p.add_argument("--bands", type=int, default=64)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    import numpy as np
    from scipy import signal  # type: ignore[import-untyped]  # (comes with scikit-learn)

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="prep-feat-", dir=args.dir))
    n = args.seconds_audio * args.rate
    try:
        for i in range(args.files):
            t = np.arange(n) / args.rate
            clip = (np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.3 * rng.standard_normal(n))
            np.save(work / f"clip-{i}.npy", clip.astype(np.float32))
        clock = _common.Clock(args.seconds)
        done = 0
        for k in clock.ticks():
            clip = np.load(work / f"clip-{k % args.files}.npy")
            _, _, spec = signal.stft(clip, fs=args.rate, nperseg=400, noverlap=240)
            power = np.abs(spec) ** 2
            edges = np.linspace(0, power.shape[0], args.bands + 1).astype(int)
            bands = np.stack([power[a:b].sum(axis=0) for a, b in itertools.pairwise(edges)])
            feats = np.log(bands + 1e-6)
            feats = (feats - feats.mean(axis=1, keepdims=True)) / (
                feats.std(axis=1, keepdims=True) + 1e-6)
            np.save(work / f"feat-{k % 8}.npy", feats.astype(np.float16))
            done += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("prep_features", args.quiet, clips=done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
