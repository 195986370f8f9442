"""Idle: the host with nothing of ours running, apart from a heartbeat every
`--heartbeat` seconds (as an idle agent or a sleeping job would have)."""

from __future__ import annotations

import time

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats")
    args = p.parse_args(argv)
    clock = _common.Clock(args.seconds)
    beats = 0
    while clock.running():
        time.sleep(max(0.0, min(args.heartbeat, args.seconds - clock.elapsed())))
        beats += 1
    _common.report("idle", args.quiet, heartbeats=beats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
