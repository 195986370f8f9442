"""The workload classes: the one list hosttune knows.

The workload suite records traces under these labels (`models/workloads`),
the shipped classifier is trained on them, the priors (`priors.yaml`) are
written for them and checked against this list when loaded, and `hosttune
recommend --workload` (and its help) accepts these and `unknown`.

A new class: name it here; give it priors in `priors.yaml` (rules that name
it, or a `fallback`: the loader refuses a class with neither); add a
workload that runs it to the suite (`models/workloads/`, its LABELS entry)
and its runs to `agent/service/record_dataset.py`; record and retrain the
shipped model. The tests fail on any of these forgotten.

`unknown` is not a class a model learns: it is the answer when no class is
sure (the classifier below its threshold, or nothing classified yet), and it
has priors of its own that hold for any workload.
"""

from __future__ import annotations

from hosttune.agent.sense.errors import ConfigError

# name -> what runs; the order is the one help texts and errors show
CLASSES: dict[str, str] = {
    "idle": "nothing much: a heartbeat, a shell",
    "training": "a training loop (forward, backward, optimiser step)",
    "inference_serving": "small requests answered as they arrive",
    "batch_inference": "offline scoring of stored inputs in big batches",
    "data_preparation": "decode, transform, shuffle and re-shard data files",
    "checkpoint_io": "large sequential writes of model state, with fsync",
    "background": "non-AI work: builds, backups, compression",
}
UNKNOWN = "unknown"


def names() -> tuple[str, ...]:
    """The classes a model may learn."""
    return tuple(CLASSES)


def recommendable() -> tuple[str, ...]:
    """What `recommend --workload` and the priors accept: the classes and `unknown`."""
    return (*CLASSES, UNKNOWN)


def check(name: str, *, key: str = "--workload", path: str | None = None,
          line: int | None = None) -> str:
    """`name` if it is a class or `unknown`; a ConfigError naming where it
    came from and the list otherwise."""
    if name in CLASSES or name == UNKNOWN:
        return name
    raise ConfigError(f"unknown workload class {name!r} (one of {', '.join(recommendable())})",
                      path=path, key=key, line=line)

