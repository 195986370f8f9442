"""Batch inference: an offline scoring job. It stages input shards on disk
(in a temporary directory), then reads them shard by shard, runs forward
passes over large batches without gradients, and writes each shard's outputs
(the model's output rows, float16, as an embedding or scoring job does) next
to it, pass after pass."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from hosttune.models.workloads import _common, _nets


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--model-size", choices=_nets.SIZES, default="medium")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--shards", type=int, default=8, help="input shards staged on disk")
    p.add_argument("--shard-batches", type=int, default=4, help="batches per shard")
    p.add_argument("--dir", default=None, help="where to stage inputs and outputs")
    args = p.parse_args(argv)
    torch = _common.require_torch()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _, _ = _nets.build(torch, args.model_size)
    model.eval()
    g = torch.Generator().manual_seed(args.seed)
    root = Path(tempfile.mkdtemp(prefix="hosttune-batch-", dir=args.dir))
    clock = _common.Clock(args.seconds)
    batches = 0
    written = 0
    try:
        inputs = []
        for i in range(args.shards):
            x, _ = _nets.synthetic_batch(torch, args.model_size, args.batch * args.shard_batches, g)
            path = root / f"input-{i:04d}.npy"
            np.save(path, x.numpy())
            inputs.append(path)
        with torch.inference_mode():
            while clock.running():
                for path in inputs:
                    shard = torch.from_numpy(np.load(path))
                    outputs = []
                    for chunk in torch.split(shard, args.batch):
                        outputs.append(model(chunk).to(torch.float16).numpy())
                        batches += 1
                        if not clock.running():
                            break
                    out = np.concatenate(outputs)
                    np.save(path.with_name(path.name.replace("input", "output")), out)
                    written += out.nbytes
                    if not clock.running():
                        break
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _common.report(
        "batch_infer", args.quiet, model_size=args.model_size, batch=args.batch, batches=batches,
        samples_per_s=round(batches * args.batch / clock.elapsed(), 1),
        output_mb=round(written / 2**20, 1),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
