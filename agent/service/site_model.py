"""Which workload model this host uses, and what to say about it: the model
`--model` names, else the site model `hosttune model train` wrote into the
state directory, else the one shipped with hosttune. Used by `classify`,
`model`, `status` and `config validate`."""

from __future__ import annotations

from pathlib import Path

from hosttune.agent.sense.errors import ModelError
from hosttune.agent.sense.paths import Paths
from hosttune.models import classifier
from hosttune.models.classifier import WorkloadModel


def site_model() -> Path:
    """Where `hosttune model train` writes the site's own model (a stem)."""
    return Paths.from_env().state_dir / "models" / "workload"


def resolve_model(path: Path | None) -> Path:
    """`path`, else the site model when one was trained, else the shipped one."""
    if path is not None:
        return path
    site = site_model()
    if classifier.model_files(site)[0].exists():
        return site
    return classifier.shipped_model()


def load_model(path: Path | None) -> WorkloadModel:
    """The model `resolve_model` picks, loaded; a ModelError names the file."""
    return classifier.load(resolve_model(path))


def geometry_warning(interval: float, window: int) -> str | None:
    """What to tell an admin whose daemon configuration (`interval` seconds,
    `window` samples) classifies windows the model in use was not validated
    on; None when it was, or when there is no readable model."""
    try:
        geometry = classifier.schema_geometry(resolve_model(None))
    except ModelError:
        return None
    return classifier.geometry_problem(geometry, interval, interval * window)
