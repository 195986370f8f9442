"""The networks the workloads train and serve, by size. Built lazily so that
importing this module needs no PyTorch."""

from __future__ import annotations

from types import ModuleType
from typing import Any

SIZES = ("small", "medium", "large")


def build(torch: ModuleType, size: str) -> tuple[Any, tuple[int, ...], int]:
    """(model, shape of one input without the batch dimension, classes)."""
    nn = torch.nn
    if size == "small":
        # an MLP on tabular features
        model = nn.Sequential(
            nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )
        return model, (256,), 10
    if size == "medium":
        # a small convolutional net on 3x32x32 images
        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(128, 10),
        )
        return model, (3, 32, 32), 10
    if size == "large":
        # a transformer encoder over token embeddings (embedding lookups, attention, MLPs)
        return _Transformer(torch), (64,), 1000
    raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")


def _Transformer(torch: ModuleType) -> Any:
    nn = torch.nn

    class Transformer(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(1000, 256)
            layer = nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True, dropout=0.0)
            self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
            self.head = nn.Linear(256, 1000)

        def forward(self, tokens: Any) -> Any:
            return self.head(self.encoder(self.embed(tokens)).mean(dim=1))

    return Transformer()


def synthetic_batch(torch: ModuleType, size: str, batch: int, generator: Any) -> tuple[Any, Any]:
    """A batch of random inputs and labels of the right shape and dtype."""
    model_shape: dict[str, tuple[int, ...]] = {
        "small": (256,), "medium": (3, 32, 32), "large": (64,)
    }
    shape = model_shape[size]
    classes = 1000 if size == "large" else 10
    if size == "large":
        x = torch.randint(0, 1000, (batch, *shape), generator=generator)
    else:
        x = torch.randn((batch, *shape), generator=generator)
    y = torch.randint(0, classes, (batch,), generator=generator)
    return x, y
