"""Background noise, compiler build: generates a tree of C sources and builds
it with gcc through `make -j`, cleaning and rebuilding until the time is up,
as a CI job or a package build sharing the host would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from hosttune.models.workloads import _common

_FUNC = """
static double f{i}_{k}(const double *v, int n) {{
    double acc = {k}.0;
    for (int i = 0; i < n; i++) {{
        acc += v[i] * (i % {m} + 1) / (1.0 + acc * 1e-9);
        if (acc > 1e12) acc = acc / {m}.0;
    }}
    return acc;
}}
"""


def _make_tree(root: Path, files: int, functions: int) -> None:
    names = []
    for i in range(files):
        body = "".join(_FUNC.format(i=i, k=k, m=k % 7 + 2) for k in range(functions))
        calls = " + ".join(f"f{i}_{k}(v, n)" for k in range(functions))
        (root / f"unit{i}.c").write_text(
            f"#include <math.h>\n{body}\ndouble unit{i}(const double *v, int n) "
            f"{{ return {calls}; }}\n"
        )
        names.append(f"unit{i}")
    decls = "".join(f"double {n}(const double *v, int n);\n" for n in names)
    sums = " + ".join(f"{n}(v, 64)" for n in names)
    (root / "main.c").write_text(
        f"#include <stdio.h>\n{decls}int main(void) {{ double v[64] = {{0}};"
        f" printf(\"%f\\n\", {sums}); return 0; }}\n"
    )
    objs = " ".join(f"{n}.o" for n in [*names, "main"])
    (root / "Makefile").write_text(
        "CFLAGS = -O2 -g -Wall\n"
        f"prog: {objs}\n\t$(CC) -o $@ $^ -lm\n"
        "%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n"
        f"clean:\n\trm -f prog {objs}\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--files", type=int, default=40, help="C files to generate")
    p.add_argument("--functions", type=int, default=30, help="functions per file")
    p.add_argument("--jobs", type=int, default=2, help="make -j")
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    if not shutil.which("gcc") or not shutil.which("make"):
        sys.stderr.write("this workload needs gcc and make (apt-get install gcc make)\n")
        return 2
    root = Path(tempfile.mkdtemp(prefix="hosttune-build-", dir=args.dir))
    builds = 0
    try:
        _make_tree(root, args.files, args.functions)
        clock = _common.Clock(args.seconds)
        while clock.running():
            left = max(1.0, args.seconds - clock.elapsed())
            # its own process group, so that stopping at the deadline stops the
            # compilers make started too
            proc = subprocess.Popen(
                ["make", "-s", f"-j{args.jobs}", "prog"], cwd=root,
                stdout=subprocess.DEVNULL, start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                break
            if rc != 0:
                raise subprocess.CalledProcessError(rc, "make")
            builds += 1
            subprocess.run(["make", "-s", "clean"], cwd=root, check=True)
        _common.report("build", args.quiet, files=args.files, jobs=args.jobs, builds=builds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
