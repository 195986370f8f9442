"""Where hosttune keeps its own files. Defaults are the packaged locations;
environment variables move them (tests, a second instance, a non-root trial)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    state_dir: Path  # journal, history store (StateDirectory=hosttune)
    run_dir: Path  # control socket, lock (RuntimeDirectory=hosttune)
    config: Path  # hosttune.yaml (read-only to the daemon)

    @property
    def journal(self) -> Path:
        return self.state_dir / "journal.db"

    @property
    def store(self) -> Path:
        return self.state_dir / "store.db"

    @property
    def socket(self) -> Path:
        return self.run_dir / "hosttune.sock"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Paths:
        env = dict(os.environ) if env is None else env
        return cls(
            state_dir=Path(env.get("HOSTTUNE_STATE_DIR", "/var/lib/hosttune")),
            run_dir=Path(env.get("HOSTTUNE_RUN_DIR", "/run/hosttune")),
            config=Path(env.get("HOSTTUNE_CONFIG", "/etc/hosttune/hosttune.yaml")),
        )
