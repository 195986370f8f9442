"""Run a command as one container of hosttune's DaemonSet would see the node,
as far as this machine allows: run inside `unshare --mount --net` (root).

    python k8s_pod.py SPEC.json

SPEC: {"container": the container from daemonset.yaml, "volumes": the pod's
volumes, "configmaps": {name: data}, "scratch": a directory for this run,
"substitute": {hostPath: directory standing in for it}, "bin": directory of
the hosttune executables standing in for /usr/bin, "steps": [[argv...] or
{"background": argv} or {"stop": true}]}.

The container's volumes are mounted at their mountPaths (configMap: the data
as files; emptyDir: a tmpfs; hostPath: the host's path, or its stand-in),
read-only where the DaemonSet says so; a mountPath that does not exist is made
in an overlay (never on the host's disk); then every other mount but /proc,
/sys and /dev is remounted read-only (readOnlyRootFilesystem). Prints one JSON
line per step: argv, rc, stdout, stderr.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        points.append(point)
    return points


def ensure_dir(path: Path, scratch: Path, overlays: set[str], *, is_file: bool = False) -> None:
    """Make `path` exist without writing to the host's disk: an overlay on its
    nearest existing parent takes the new entries."""
    if path.exists():
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if str(parent) not in overlays:
        key = str(parent).strip("/").replace("/", "_") or "root"
        upper, work = scratch / "ovl" / key / "u", scratch / "ovl" / key / "w"
        upper.mkdir(parents=True)
        work.mkdir(parents=True)
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={parent},upperdir={upper},workdir={work}", str(parent))
        overlays.add(str(parent))
    if is_file:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    else:
        path.mkdir(parents=True, exist_ok=True)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    scratch = Path(spec["scratch"])
    sh("mount", "-t", "tmpfs", "tmpfs", str(scratch))
    sh("ip", "link", "set", "lo", "up")
    volumes = {v["name"]: v for v in spec["volumes"]}
    overlays: set[str] = set()
    kept: list[str] = []
    # The stand-in for the image's files (this checkout and its virtualenv):
    # held aside first, so a volume mounted over them (the emptyDir on /tmp
    # over a checkout under /tmp, as in CI) cannot hide them.
    saved: list[tuple[Path, Path]] = []
    for n, held in enumerate(Path(p) for p in spec.get("image", [])):
        keep = scratch / "image" / str(n)
        keep.mkdir(parents=True)
        sh("mount", "--bind", str(held), str(keep))
        saved.append((held, keep))
    for mount in spec["container"].get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target = Path(mount["mountPath"])
        read_only = bool(mount.get("readOnly"))
        if "configMap" in volume:
            source = scratch / "cm" / mount["name"]
            source.mkdir(parents=True)
            for key, text in spec["configmaps"][volume["configMap"]["name"]].items():
                (source / key).write_text(text)
        elif "emptyDir" in volume:
            source = None
        elif "hostPath" in volume:
            host_path = volume["hostPath"]["path"]
            source = Path(spec["substitute"].get(host_path, host_path))
            kind = volume["hostPath"].get("type", "")
            if not source.exists():
                if kind not in ("DirectoryOrCreate", "FileOrCreate"):
                    print(json.dumps({"error": f"hostPath {host_path} missing ({kind})"}))
                    return 2
                # the kubelet would create it on the node: here in scratch
                source = scratch / "created" / host_path.strip("/")
                if kind == "FileOrCreate":
                    source.parent.mkdir(parents=True, exist_ok=True)
                    source.touch()
                else:
                    source.mkdir(parents=True)
        else:
            continue  # projected token: the publisher's, not exercised here
        is_file = source is not None and source.is_file()
        ensure_dir(target, scratch, overlays, is_file=is_file)
        if source is None:
            sh("mount", "-t", "tmpfs", "tmpfs", str(target))
        elif str(source) != str(target):
            sh("mount", "--bind", str(source), str(target))
        else:
            sh("mount", "--bind", str(source), str(target))
        if read_only:
            sh("mount", "-o", "remount,bind,ro", str(target))
        kept.append(str(target))
    for held, keep in saved:
        if not held.exists() or not any(held.iterdir()):
            ensure_dir(held, scratch, overlays)
            sh("mount", "--bind", str(keep), str(held))
    # readOnlyRootFilesystem: everything else read-only, but the kernel's own
    # trees (a privileged container's /proc/sys and /sys are writable)
    for point in sorted(set(mountpoints()), key=len):
        if point in ("/proc", "/sys", "/dev") or point.startswith(("/proc/", "/sys/", "/dev/")):
            continue
        if any(point == k or point.startswith(k.rstrip("/") + "/") for k in kept):
            continue
        if point == str(scratch):
            continue
        subprocess.run(["mount", "-o", "remount,bind,ro", point], check=False,
                       stderr=subprocess.DEVNULL)
    env = {"PATH": f"{spec['bin']}:/usr/sbin:/usr/bin:/sbin:/bin"}
    for item in spec["container"].get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    env.update(spec.get("env", {}))
    background: subprocess.Popen[str] | None = None
    for step in spec["steps"]:
        result: dict[str, Any]
        if isinstance(step, dict) and "background" in step:
            background = subprocess.Popen(step["background"], env=env, text=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            result = {"argv": step["background"], "pid": background.pid}
        elif isinstance(step, dict) and "wait_for" in step:
            deadline = time.monotonic() + 30
            while not Path(step["wait_for"]).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            result = {"wait_for": step["wait_for"], "found": Path(step["wait_for"]).exists()}
        elif isinstance(step, dict) and "stop" in step:
            assert background is not None
            background.send_signal(signal.SIGTERM)
            try:
                _, err = background.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                background.kill()
                _, err = background.communicate()
            result = {"stop": True, "rc": background.returncode, "stderr": err[-3000:]}
            background = None
        else:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=120,
                                  check=False)
            result = {"argv": step, "rc": done.returncode, "stdout": done.stdout[-20000:],
                      "stderr": done.stderr[-3000:]}
        print(json.dumps(result), flush=True)
    if background is not None:
        background.kill()
        background.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
