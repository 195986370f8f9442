"""Batch inference with TensorFlow/Keras: a small conv net scores 28x28
grey images stored as TFRecord shards (serialised tf.train.Example records)
on disk. Each pass reads every shard through a tf.data pipeline (parse,
decode, normalise, batch, prefetch), calls `model.predict` on it and writes
the top class and its score per record to a CSV file beside the shard."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from hosttune.models.workloads import _common


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--shards", type=int, default=6)
    p.add_argument("--records", type=int, default=4096, help="images per shard")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dir", default=None, help="where to stage shards and outputs")
    args = p.parse_args(argv)
    # C++ start-up chatter (oneDNN, cpu feature notes) would flood the log
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = _common.require("tensorflow", "tensorflow-cpu==2.21.0", without=("jax",))
    # predict over a finite dataset ends it on purpose; keras warns each time
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    keras = tf.keras
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    rng = np.random.default_rng(args.seed)
    root = Path(tempfile.mkdtemp(prefix="hosttune-keras-", dir=args.dir))
    feature = {"image": tf.io.FixedLenFeature([], tf.string),
               "id": tf.io.FixedLenFeature([], tf.int64)}

    def parse(record: object) -> object:
        ex = tf.io.parse_single_example(record, feature)
        img = tf.io.decode_raw(ex["image"], tf.uint8)
        return tf.cast(tf.reshape(img, (28, 28, 1)), tf.float32) / 255.0

    scored = passes = 0
    try:
        shards = []
        for s in range(args.shards):
            path = root / f"images-{s:03d}.tfrecord"
            with tf.io.TFRecordWriter(str(path)) as w:
                for i in range(args.records):
                    img = rng.integers(0, 256, size=28 * 28, dtype=np.uint8).tobytes()
                    ex = tf.train.Example(features=tf.train.Features(feature={
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[img])),
                        "id": tf.train.Feature(int64_list=tf.train.Int64List(
                            value=[s * args.records + i])),
                    }))
                    w.write(ex.SerializeToString())
            shards.append(path)
        clock = _common.Clock(args.seconds)
        while clock.running():
            for path in shards:
                ds = (tf.data.TFRecordDataset(str(path)).map(parse)
                      .batch(args.batch).prefetch(2))
                probs = model.predict(ds, verbose=0)
                top = probs.argmax(axis=1)
                rows = np.stack([top, probs.max(axis=1)], axis=1)
                np.savetxt(path.with_suffix(".scores.csv"), rows, fmt=("%d", "%.5f"),
                           delimiter=",", header="class,score", comments="")
                scored += len(rows)
                if not clock.running():
                    break
            passes += 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _common.report("batch_keras", args.quiet, scored=scored, passes=passes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
