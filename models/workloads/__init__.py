"""A suite of real AI-host workloads for a CPU-only machine, used to record the
labelled traces the workload classifier learns from. Each is a runnable module
(`python -m hosttune.models.workloads.train --help`) with parameters for size
and intensity. Those that need PyTorch say so when it is absent
(`pip install 'hosttune[workloads]'`); the JAX and TensorFlow ones name
their package likewise (`jax==0.10.2`, `tensorflow-cpu==2.21.0`), which no
extra installs.

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
| `train_seq` | training | LSTM and 1-D conv in PyTorch, Adam |
| `train_sgd` | training | scikit-learn SGDClassifier partial_fit |
| `train_numpy` | training | a two-layer network written out in numpy |
| `serve_http` | inference_serving | PyTorch conv net behind http.server |
| `serve_numpy` | inference_serving | numpy MLP behind a selectors socket server |
| `batch_sklearn` | batch_inference | scikit-learn predict_proba over .npy chunks |
| `batch_numpy` | batch_inference | numpy embedding top-k over a memmap |
| `prep_shell` | data_preparation | zcat/awk/sort/uniq/gzip pipelines |
| `prep_csv` | data_preparation | csv clean, tokenise and shard in Python |
| `ckpt_numpy` | checkpoint_io | np.savez + fsync + rename |
| `ckpt_shards` | checkpoint_io | threaded shard files with fdatasync |
| `burn` | background | pure-Python CPU stress processes |
| `web_static` | background | a static-file HTTP server |
| `prep_tokens` | data_preparation | regex word split, vocabulary ids, uint32 shards (numpy) |
| `prep_features` | data_preparation | STFT features of signal files (scipy), float16 shards |
| `prep_jsonl` | data_preparation | zstd -dc / jq / shuf / split into zstd shards |
| `bg_sqlite` | background | an SQLite database in WAL mode: inserts, updates, range queries |
| `bg_logrotate` | background | appending logs, rotated and compressed with xz/bzip2, sha256sum |
| `bg_scan` | background | find / xargs md5sum / sort / comm integrity passes over a tree |
| `train_jax` | training | JAX transformer, jit + value_and_grad, plain SGD, synthetic tokens |
| `batch_keras` | batch_inference | Keras conv net, `model.predict` over TFRecord shards |
| `serve_tf` | inference_serving | TensorFlow `tf.function` behind a threaded TCP server |

The serving programs' clients run in a session of their own, as remote
clients would be.
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
    # more programs per class, for the per-process role model
    "train_seq": "training",
    "train_sgd": "training",
    "train_numpy": "training",
    "serve_http": "inference_serving",
    "serve_numpy": "inference_serving",
    "batch_sklearn": "batch_inference",
    "batch_numpy": "batch_inference",
    "prep_shell": "data_preparation",
    "prep_csv": "data_preparation",
    "ckpt_numpy": "checkpoint_io",
    "ckpt_shards": "checkpoint_io",
    "burn": "background",
    "web_static": "background",
    # programs added for the weak classes of the role model (issue 15)
    "prep_tokens": "data_preparation",
    "prep_features": "data_preparation",
    "prep_jsonl": "data_preparation",
    "bg_sqlite": "background",
    "bg_logrotate": "background",
    "bg_scan": "background",
    # a second and third framework (issue 15): JAX and TensorFlow
    "train_jax": "training",
    "batch_keras": "batch_inference",
    "serve_tf": "inference_serving",
}
