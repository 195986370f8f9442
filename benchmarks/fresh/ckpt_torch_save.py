"""Checkpoint writing: torch.save of a 160 MB state dict to a temporary file,
fsync, rename, every 1.5 s."""
import os
import sys
import tempfile
import time

import torch

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40
state = {f"block{i}.weight": torch.randn(1024, 4096) for i in range(10)}
work = tempfile.mkdtemp(prefix="fresh-ckpt-")
end = time.monotonic() + seconds
step = 0
while time.monotonic() < end:
    tmp = f"{work}/ckpt.pt.tmp"
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, f"{work}/ckpt-{step % 2}.pt")
    step += 1
    time.sleep(1.5)
for name in os.listdir(work):
    os.unlink(f"{work}/{name}")
os.rmdir(work)
