"""Batch inference: forward passes over large batches without gradients, as
an offline scoring job does, with the inputs staged in a reusable buffer and
the outputs reduced to predictions."""

from __future__ import annotations

from hosttune.models.workloads import _common, _nets


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--model-size", choices=_nets.SIZES, default="medium")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    args = p.parse_args(argv)
    torch = _common.require_torch()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _, _ = _nets.build(torch, args.model_size)
    model.eval()
    g = torch.Generator().manual_seed(args.seed)
    clock = _common.Clock(args.seconds)
    batches = 0
    histogram = torch.zeros(1000, dtype=torch.int64)
    with torch.inference_mode():
        while clock.running():
            x, _ = _nets.synthetic_batch(torch, args.model_size, args.batch, g)
            predictions = model(x).argmax(dim=1)
            histogram += torch.bincount(predictions, minlength=1000)[:1000]
            batches += 1
    _common.report(
        "batch_infer", args.quiet, model_size=args.model_size, batch=args.batch, batches=batches,
        samples_per_s=round(batches * args.batch / clock.elapsed(), 1),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
