"""Workloads whose speed depends on host knobs, one per invocation so each
starts in a fresh process (THP applies when memory is first touched).

    python benchmarks/effect_workloads.py embedding|training|checkpoint|loader [--scale S]

Each prints one line `throughput: <number> <unit>` (higher is better) and
nothing else on stdout. Needs PyTorch CPU (`pip install torch==2.13.0`) for
embedding, training and checkpoint; loader needs only the standard library.

With --stream SECONDS, a long-running job instead (gather, embedding,
training, numpy, checkpoint, loader): it allocates its data once, at start,
as AI jobs do, then works in a loop and prints `ready <setup seconds>` and
then `rate <seconds since ready> <value> <unit>` about once a second, so a
change made while it runs shows in its own numbers (the end-to-end rows of
benchmarks/effectiveness.py --e2e):

- gather: random index_select gathers from a 2 GiB float tensor, one thread;
- embedding: random nn.Embedding lookups in a 1 GiB table, one thread;
- training: the DLRM-style loop below, endlessly;
- numpy: random np.take gathers from a 1 GiB array, one thread: numpy 2
  madvises large arrays, so it has huge pages already and must not change;
- checkpoint: torch.save + fsync of the 768 MiB state dict, shard after shard;
- loader: cold sequential 64 KiB reads of the loader's files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

DATA_DIR = Path(os.environ.get("HOSTTUNE_BENCH_DIR", "/var/tmp/hosttune-effectiveness"))


def loader_files(scale: float) -> list[Path]:
    """The loader's dataset: 512 files of 2 MiB, written once and reused."""
    folder = DATA_DIR / "dataset"
    count = int(512 * scale)
    files = [folder / f"shard-{i:04d}.bin" for i in range(count)]
    if not all(f.exists() and f.stat().st_size == 2 << 20 for f in files):
        folder.mkdir(parents=True, exist_ok=True)
        block = os.urandom(2 << 20)
        for f in files:
            f.write_bytes(block)
        os.sync()
    return files


Step = Callable[[], float]  # one unit of work -> how much was done


def stream_gather(scale: float) -> tuple[Step, str]:
    import torch

    torch.set_num_threads(1)
    n = int(512 * 1024 * 1024 * scale)  # 2 GiB of float32
    data = torch.empty(n, dtype=torch.float32).fill_(1.0)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, n, (65536,), generator=gen) for _ in range(16)]
    state = {"i": 0}

    def step() -> float:
        idx = batches[state["i"] % len(batches)]
        state["i"] += 1
        data.index_select(0, idx)
        return float(idx.numel()) / 1e6

    return step, "Mgathers/s"


def stream_embedding(scale: float) -> tuple[Step, str]:
    import torch

    torch.set_num_threads(1)
    rows = int(8_000_000 * scale)
    table = torch.nn.Embedding(rows, 32)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, rows, (16384,), generator=gen) for _ in range(8)]
    state = {"i": 0}

    def step() -> float:
        idx = batches[state["i"] % len(batches)]
        state["i"] += 1
        with torch.no_grad():
            table(idx)
        return float(idx.numel()) / 1e6

    return step, "Mlookups/s"


def stream_training(scale: float) -> tuple[Step, str]:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = int(1_000_000 * scale)
    bag = torch.nn.EmbeddingBag(rows, 128, mode="sum", sparse=True)
    mlp = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 1))
    opt_sparse = torch.optim.SGD(bag.parameters(), lr=0.01)
    opt_dense = torch.optim.SGD(mlp.parameters(), lr=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    batch, per_sample = 512, 32
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randint(0, rows, (batch * per_sample,), generator=gen),
             torch.rand(batch, 1, generator=gen).round()) for _ in range(8)]
    offsets = torch.arange(0, batch * per_sample, per_sample)
    state = {"i": 0}

    def step() -> float:
        idx, target = data[state["i"] % len(data)]
        state["i"] += 1
        opt_sparse.zero_grad()
        opt_dense.zero_grad()
        loss_fn(mlp(bag(idx, offsets)), target).backward()
        opt_sparse.step()
        opt_dense.step()
        return batch / 1e3

    return step, "k samples/s"


def stream_numpy(scale: float) -> tuple[Step, str]:
    import numpy as np

    n = int(256 * 1024 * 1024 * scale)  # 1 GiB of float32
    data = np.ones(n, dtype=np.float32)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, n, 65536) for _ in range(16)]
    state = {"i": 0}

    def step() -> float:
        idx = batches[state["i"] % len(batches)]
        state["i"] += 1
        np.take(data, idx)
        return idx.size / 1e6

    return step, "Mgathers/s"


def stream_checkpoint(scale: float) -> tuple[Step, str]:
    import torch

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    shard_mib = int(192 * scale)
    shards = [{"w": torch.randn(shard_mib * (1 << 20) // 4)} for _ in range(4)]
    state = {"i": 0}

    def step() -> float:
        i = state["i"] % len(shards)
        state["i"] += 1
        path = DATA_DIR / f"ckpt-run-{os.getpid()}-{i}.pt"
        with open(path, "wb") as fh:
            torch.save(shards[i], fh)
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
        return float(shard_mib)

    return step, "MiB/s"


def stream_loader(scale: float) -> tuple[Step, str]:
    files = loader_files(scale)
    state = {"i": 0}

    def step() -> float:
        f = files[state["i"] % len(files)]
        state["i"] += 1
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        total = 0
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(64 << 10):
                total += len(chunk)
        return total / (1 << 20)

    return step, "MiB/s"


# Jobs for `--stream`: each allocates at start, then works in a loop.
JOBS: dict[str, Callable[[float], tuple[Step, str]]] = {
    "gather": stream_gather, "embedding": stream_embedding, "training": stream_training,
    "numpy": stream_numpy, "checkpoint": stream_checkpoint, "loader": stream_loader}




def stream(job: str, seconds: float, scale: float, every: float = 1.0) -> int:
    """`ready <setup seconds>`, then `rate <seconds since ready> <value> <unit>`
    about every `every` seconds, for `seconds`."""
    t0 = time.perf_counter()
    step, unit = JOBS[job](scale)
    ready = time.perf_counter()
    print(f"ready {ready - t0:.2f}", flush=True)
    done, mark = 0.0, ready
    while True:
        done += step()
        now = time.perf_counter()
        if now - mark >= every:
            print(f"rate {now - ready:.2f} {done / (now - mark):.4f} {unit}", flush=True)
            done, mark = 0.0, now
            if now - ready >= seconds:
                return 0


def _timed(job: str, scale: float, *, seconds: float = 0.0, steps: int = 0
           ) -> tuple[float, str]:
    """One fresh job's throughput: its steps for `seconds`, or exactly `steps`
    of them (a whole checkpoint, the whole dataset), after one warm-up step
    where the step is cheap enough to repeat."""
    step, unit = JOBS[job](scale)
    if seconds:
        step()  # touch the code path once
    done, start = 0.0, time.perf_counter()
    count = 0
    while (seconds and time.perf_counter() - start < seconds) or (steps and count < steps):
        done += step()
        count += 1
    return done / (time.perf_counter() - start), unit


def embedding(scale: float) -> tuple[float, str]:
    """Random lookups in a 1 GiB nn.Embedding table, one thread: bound by TLB
    and memory latency, the case THP helps."""
    return _timed("embedding", scale, seconds=2.0)


def training(scale: float) -> tuple[float, str]:
    """A small recommendation-model training loop on CPU: a 512 MiB sparse
    EmbeddingBag feeding an MLP, SGD, synthetic data. Samples per second."""
    return _timed("training", scale, seconds=3.0)


def checkpoint(scale: float) -> tuple[float, str]:
    """torch.save of a 768 MiB state dict in four shards, each fsynced, the
    way a trainer writes a checkpoint: MiB/s from first write to last fsync."""
    return _timed("checkpoint", scale, steps=4)


def loader(scale: float) -> tuple[float, str]:
    """A data loader reading each sample file sequentially in 64 KiB reads
    from a cold page cache: each file's cached pages are dropped first
    (POSIX_FADV_DONTNEED, so other processes' caches stay as they are)."""
    return _timed("loader", scale, steps=len(loader_files(scale)))


WORKLOADS = {"embedding": embedding, "training": training, "checkpoint": checkpoint,
             "loader": loader}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(set(WORKLOADS) | set(JOBS)))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--prepare", action="store_true", help="only create the loader's files")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="repeat the workload for this many seconds (to be observed)")
    parser.add_argument("--stream", type=float, default=0.0, metavar="SECONDS",
                        help="run the long-running job for this long, printing its rate "
                             "about once a second (the end-to-end rows)")
    args = parser.parse_args(argv)
    if args.stream:
        return stream(args.workload, args.stream, args.scale)
    if args.prepare:
        loader_files(args.scale)
        return 0
    if args.hold:
        deadline = time.monotonic() + args.hold
        while time.monotonic() < deadline:
            WORKLOADS[args.workload](args.scale)
        return 0
    value, unit = WORKLOADS[args.workload](args.scale)
    print(f"throughput: {value:.4f} {unit}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
