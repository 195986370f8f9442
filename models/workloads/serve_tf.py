"""Inference serving with TensorFlow: a byte-level text classifier (embedding,
two dilated 1-D convolutions, global max pooling, a dense head) compiled once
as a `tf.function` with a fixed input signature, behind a thread-per-connection
`socketserver` TCP server that answers length-prefixed requests with the class
probabilities. A client process of its own (`_client --mode raw`) keeps a few
connections open and sends at `--rate`."""

from __future__ import annotations

import os
import socket
import socketserver
import struct
import threading

import numpy as np

from hosttune.models.workloads import _common

_LEN = 512  # bytes of a request the model reads (padded or cut)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--rate", type=float, default=40.0)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--size", type=int, default=400, help="request payload bytes")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = _common.require("tensorflow", "tensorflow-cpu==2.21.0", without=("jax",))
    keras = tf.keras
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([
        keras.Input((_LEN,), dtype="int32"),
        keras.layers.Embedding(256, 48),
        keras.layers.Conv1D(64, 5, dilation_rate=1, activation="relu"),
        keras.layers.Conv1D(64, 5, dilation_rate=4, activation="relu"),
        keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(20, activation="softmax"),
    ])

    def forward(ids: object) -> object:
        return model(ids, training=False)

    # traced once for this signature: every request runs the same graph
    score = tf.function(forward, input_signature=[tf.TensorSpec((1, _LEN), tf.int32)])

    served = [0]
    lock = threading.Lock()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn: socket.socket = self.request
            while True:
                head = conn.recv(4, socket.MSG_WAITALL)
                if len(head) < 4:
                    return
                (n,) = struct.unpack("!I", head)
                body = conn.recv(n, socket.MSG_WAITALL)
                ids = np.frombuffer(body[:_LEN].ljust(_LEN, b"\0"), np.uint8).astype(np.int32)
                reply = score(ids[None, :]).numpy().astype(np.float32).tobytes()
                conn.sendall(struct.pack("!I", len(reply)) + reply)
                with lock:
                    served[0] += 1

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    _common.serve_against_client(server, server.server_address[1], args.seconds,
                                 "--mode", "raw", "--rate", str(args.rate), "--conns",
                                 str(args.conns), "--size", str(args.size))
    server.server_close()
    _common.report("serve_tf", args.quiet, served=served[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
