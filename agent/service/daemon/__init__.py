"""`hosttuned`: the host daemon, in three parts over one shared `Services`:

- `loop.py`: start-up, signals, ticks, sample windows, classification;
- `policy.py`: auto mode (plan, apply, watch, revert, the avoid set);
- `handlers.py`: the control socket's requests, status and metrics;

and `host_access.py`, what all three do to the host (sample, classify,
recommend, apply and roll back through the journal). `main` is the
`hosttuned` command."""

from hosttune.agent.service.daemon.main import main

__all__ = ["main"]
