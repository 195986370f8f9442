"""Data preparation with command-line JSON tools: generates zstd-compressed
JSON-lines files, then loops a shell pipeline over them (zstd -dc | jq
filter and reshape | shuf | split into zstd-compressed shards), as a
dataset-filtering script would."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from hosttune.models.workloads import _common

_PIPE = (
    'i=0; for f in "$1"/in-*.jsonl.zst; do i=$((i+1)); zstd -q -dc "$f" | '
    "jq -c 'select(.score > 0.3) | {text: (.title + \" \" + .body), label: .tag}' | "
    'shuf | split -l 4000 -d --filter=\'zstd -q -1 -o "$FILE.zst"\' - "$1/out-$i-"; done'
)


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--lines", type=int, default=20000)
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    for tool in ("zstd", "jq", "shuf", "split"):
        if shutil.which(tool) is None:
            raise SystemExit(f"prep_jsonl needs {tool} (apt-get install {tool})")
    rnd = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="prep-jsonl-", dir=args.dir))
    words = [f"w{i}" for i in range(4000)]
    try:
        for i in range(args.files):
            lines = "".join(json.dumps({
                "id": n, "score": rnd.random(), "tag": rnd.choice(("a", "b", "c")),
                "title": " ".join(rnd.choices(words, k=6)),
                "body": " ".join(rnd.choices(words, k=40))}) + "\n" for n in range(args.lines))
            subprocess.run(["zstd", "-q", "-3", "-o", str(work / f"in-{i}.jsonl.zst")],
                           input=lines.encode(), check=True)
        clock = _common.Clock(args.seconds)
        passes = 0
        while clock.running():
            left = max(1.0, args.seconds - clock.elapsed())
            try:
                subprocess.run(["sh", "-c", _PIPE, "sh", str(work)], timeout=left,
                               check=False)
            except subprocess.TimeoutExpired:
                break
            for old in work.glob("out-*"):
                old.unlink()
            passes += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _common.report("prep_jsonl", args.quiet, passes=passes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
