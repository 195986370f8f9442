"""A suite of real AI-host workloads for a CPU-only machine, used to record the
labelled traces the workload classifier learns from. Each is a runnable module
(`python -m hosttune.models.workloads.train --help`) with parameters for size
and intensity. Those that need PyTorch say so when it is absent
(`pip install 'hosttune[workloads]'`).

| module | class label | what it does |
| --- | --- | --- |
| `train` | training | PyTorch training loop on synthetic data, optional DataLoader workers |
| `serve` | inference_serving | batch-1 requests over loopback TCP at a target rate |
| `batch_infer` | batch_inference | offline scoring: read shards, big-batch forward, write outputs |
| `dataprep` | data_preparation | decode, transform, shuffle and re-shard files on disk |
| `checkpoint` | checkpoint_io | large sequential writes with fsync, keeping the last k |
| `idle` | idle | nothing but a rare heartbeat |
| `build` | background | compiles generated C files with gcc through make -j |
| `backup` | background | tar/gzip and cp of a generated file tree |
"""

# label of each workload module: the record_dataset script and the tests use
# it. Every label is a class of hosttune.models.workload_classes, and every
# class has a module here (tests/test_workloads.py).
LABELS: dict[str, str] = {
    "train": "training",
    "serve": "inference_serving",
    "batch_infer": "batch_inference",
    "dataprep": "data_preparation",
    "checkpoint": "checkpoint_io",
    "idle": "idle",
    "build": "background",
    "backup": "background",
}
