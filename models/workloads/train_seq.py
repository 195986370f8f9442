"""Training, second PyTorch program: a small LSTM over token sequences and a
1-D conv net, alternating, trained with Adam and gradient clipping (other
code, layers and shapes than `train`)."""

from __future__ import annotations

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seq", type=int, default=48)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    torch = _common.require_torch()
    nn = torch.nn
    torch.manual_seed(args.seed)

    class Seq(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(5000, 64)
            self.lstm = nn.LSTM(64, args.hidden, batch_first=True)
            self.conv = nn.Conv1d(64, args.hidden, 5, padding=2)
            self.head = nn.Linear(2 * args.hidden, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            e = self.emb(x)
            out, _ = self.lstm(e)
            c = self.conv(e.transpose(1, 2)).amax(dim=2)
            return self.head(torch.cat([out[:, -1], c], dim=1))

    model = Seq()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    clock = _common.Clock(args.seconds)
    steps = 0
    for _ in clock.ticks():
        x = torch.randint(0, 5000, (args.batch, args.seq))
        y = torch.randint(0, 10, (args.batch,))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
    _common.report("train_seq", args.quiet, steps=steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
