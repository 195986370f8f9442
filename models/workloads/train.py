"""Training: a PyTorch CPU training loop (forward, backward, optimizer step) on
synthetic data, optionally fed by DataLoader worker processes that build each
sample (random tensors plus a little augmentation work, as a decoding pipeline
would)."""

from __future__ import annotations

from typing import Any

from hosttune.models.workloads import _common, _nets


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--model-size", choices=_nets.SIZES, default="small")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: none)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--lr", type=float, default=0.01)
    args = p.parse_args(argv)
    torch = _common.require_torch()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _, _ = _nets.build(torch, args.model_size)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = _loader(torch, args.model_size, args.batch, args.workers, args.seed)
    clock = _common.Clock(args.seconds)
    steps = 0
    loss_value = float("nan")
    while clock.running():
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            steps += 1
            loss_value = float(loss.detach())
            if not clock.running():
                break
    _common.report(
        "train", args.quiet, model_size=args.model_size, batch=args.batch, workers=args.workers,
        steps=steps, samples_per_s=round(steps * args.batch / clock.elapsed(), 1),
        final_loss=round(loss_value, 4),
    )
    return 0


def _loader(torch: Any, size: str, batch: int, workers: int, seed: int) -> Any:
    class Synthetic(torch.utils.data.Dataset):  # type: ignore[misc]
        """Each item is made on demand, with a light augmentation, as a
        decoding dataset would; 4096 items per pass."""

        def __len__(self) -> int:
            return 4096

        def __getitem__(self, index: int) -> tuple[Any, Any]:
            g = torch.Generator().manual_seed(seed * 100003 + index)
            x, y = _nets.synthetic_batch(torch, size, 1, g)
            x, y = x[0], y[0]
            if x.is_floating_point():
                x = (x - x.mean()) / (x.std() + 1e-6)
                if x.dim() == 3 and index % 2:
                    x = torch.flip(x, dims=(2,))
            return x, y

    return torch.utils.data.DataLoader(
        Synthetic(), batch_size=batch, shuffle=True, num_workers=workers,
        persistent_workers=workers > 0, drop_last=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
