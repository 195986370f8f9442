"""Inference serving: an asyncio line-protocol server scoring requests with
numpy; the client is a process of its own sending at ~40 requests/s."""
import asyncio
import subprocess
import sys
import time

import numpy as np

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40
W = np.random.default_rng(3).normal(size=(128, 512)).astype(np.float32)
CLIENT = """
import socket, sys, time, random
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rwb")
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    f.write((",".join(str(random.random()) for _ in range(128)) + "\\n").encode()); f.flush()
    f.readline()
    time.sleep(random.expovariate(40))
"""


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        x = np.array([float(v) for v in line.split(b",")], dtype=np.float32)
        y = np.tanh(x @ W)
        writer.write(f"{int(y.argmax())}\n".encode())
        await writer.drain()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(seconds)],
                              start_new_session=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end and client.poll() is None:
        await asyncio.sleep(0.5)
    client.kill()
    server.close()


asyncio.run(main())
