"""Batch inference: a PyTorch conv net scores image files staged on disk in
batches of 64 and writes the scores, file after file."""
import os
import sys
import tempfile
import time

import numpy as np
import torch

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40
torch.set_grad_enabled(False)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, stride=2),
    torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 100),
).eval()
work = tempfile.mkdtemp(prefix="fresh-batch-")
rng = np.random.default_rng(4)
for i in range(10):
    rng.integers(0, 255, size=(256, 3, 64, 64), dtype=np.uint8).tofile(f"{work}/img{i}.u8")
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    imgs = np.fromfile(f"{work}/img{i % 10}.u8", dtype=np.uint8).reshape(256, 3, 64, 64)
    scores = [net(torch.from_numpy(imgs[a:a + 64]).float() / 255) for a in range(0, 256, 64)]
    torch.cat(scores).numpy().tofile(f"{work}/scores{i % 10}.f32")
    i += 1
for name in os.listdir(work):
    os.unlink(f"{work}/{name}")
os.rmdir(work)
