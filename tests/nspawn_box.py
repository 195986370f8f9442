"""A booted Debian 12 container for testing the packaged daemon under a real
systemd: `systemd-nspawn --boot` on a debootstrap root.

- The root is made once by debootstrap (minbase plus systemd, dbus, python3
  and the .deb's runtime dependencies) from the mirror in this host's own apt
  sources, and kept under /var/cache/hosttune-nspawn/, keyed by the package
  list: a second run reuses it. Other cached roots of ours are removed when a
  new one is made.
- The container runs with `--volatile=overlay`: every write (dpkg, journal,
  /etc) goes to a tmpfs over the cached root and is gone when it stops, so the
  cache is never changed and two runs never see each other's state.
- nspawn creates its cgroups under its caller's (and with --register=no the
  container's systemd manages that cgroup as its root), so it is started from
  a throwaway child of our cgroup in the name=systemd and cgroup2
  hierarchies, which `Container.stop` removes again.
- With --register=no there is no machinectl or `systemd-run --machine`:
  commands run inside through `nsenter --all` into the container's PID 1
  namespaces, with a clean environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

SUITE = "bookworm"
# Bump when the way the root is made changes: the key then names a new root.
RECIPE = 1
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3")
CACHE = Path(os.environ.get("HOSTTUNE_NSPAWN_CACHE", "/var/cache/hosttune-nspawn"))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Our throwaway cgroups are this prefix and the pid of the process that made them.
CGROUP_PREFIX = "hosttune-nspawn-"
MACHINE_PREFIX = "hosttune-t"
INSIDE_ENV = ("PATH=" + SYSTEM_PATH, "LANG=C.UTF-8", "HOME=/root", "TERM=dumb",
              "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "PYTHONDONTWRITEBYTECODE=1")


class BoxError(Exception):
    """The container could not be made, started or reached."""


# -- the mirror --------------------------------------------------------------


def _deb822_entries(text: str) -> Iterator[dict[str, list[str]]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        last = None
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and last is not None:  # continuation line
                fields[last] += line.split()
                continue
            name, _, value = line.partition(":")
            last = name.strip().lower()
            fields[last] = value.split()
        if fields:
            yield fields


def _one_line_entries(text: str) -> Iterator[dict[str, list[str]]]:
    for raw in text.splitlines():
        # deb [arch=amd64 signed-by=...] URI SUITE COMPONENT...
        words = re.sub(r"\[[^]]*\]", " ", raw.split("#", 1)[0]).split()
        if len(words) >= 3:
            yield {"types": [words[0]], "uris": [words[1]], "suites": [words[2]],
                   "components": words[3:]}


def host_mirror(suite: str = SUITE, apt_etc: Path = Path("/etc/apt")) -> str | None:
    """The first `deb` source of this host that serves `suite` main, or
    HOSTTUNE_NSPAWN_MIRROR when set. Nothing about any mirror is written in
    the repository: the host says where its packages come from."""
    if os.environ.get("HOSTTUNE_NSPAWN_MIRROR"):
        return os.environ["HOSTTUNE_NSPAWN_MIRROR"]
    files = [apt_etc / "sources.list"]
    listed = apt_etc / "sources.list.d"
    if listed.is_dir():
        files += sorted(p for p in listed.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for entry in entries:
            if entry.get("enabled", ["yes"])[0].lower() == "no":
                continue
            if ("deb" in entry.get("types", []) and suite in entry.get("suites", [])
                    and "main" in entry.get("components", [])):
                for uri in entry.get("uris", []):
                    if uri.startswith(("http://", "https://", "file:/")):
                        return uri.rstrip("/")
    return None


# -- the cached root ---------------------------------------------------------


def deb_depends(deb: Path) -> list[str]:
    """Package names from the .deb's Depends (first of each alternative)."""
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    names = []
    for item in out.split(","):
        first = item.split("|")[0].strip()
        name = re.split(r"[\s(:]", first, maxsplit=1)[0]
        if name:
            names.append(name)
    return names


def root_packages(deb: Path) -> list[str]:
    return sorted(set(BASE_PACKAGES) | set(deb_depends(deb)))


def _key(packages: Sequence[str]) -> str:
    text = f"{RECIPE}|{SUITE}|{platform.machine()}|minbase|{','.join(sorted(packages))}"
    return f"{SUITE}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@contextlib.contextmanager
def cached_root(packages: Sequence[str], mirror: str, timeout: float = 1500.0
                ) -> Iterator[tuple[Path, bool]]:
    """The root for `packages` (made now if missing) and whether it was made
    now, held in use (a shared lock) until the block ends, so that a run with
    another package list never removes it under a running container."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = _key(packages)
    root = CACHE / name
    ready = CACHE / f"{name}.ready"
    in_use = open(CACHE / f"{name}.use", "a")  # noqa: SIM115 (held until the block ends)
    try:
        with open(CACHE / ".lock", "a") as lock:
            # Another run (another helper's suite) may be making the same root.
            fcntl.flock(lock, fcntl.LOCK_EX)
            fcntl.flock(in_use, fcntl.LOCK_SH)
            made = not (ready.is_file() and root.is_dir())
            if made:
                _remove_unused_roots(keep=name)
                _debootstrap(packages, mirror, root, timeout)
                ready.write_text("\n".join(packages) + "\n")
        yield root, made
    finally:
        in_use.close()


def _remove_unused_roots(keep: str) -> None:
    """Our roots for other package lists, unless a run still uses them."""
    names = {re.sub(r"\.(ready|log|partial|use)$", "", p.name) for p in CACHE.iterdir()
             if re.fullmatch(rf"{SUITE}-[0-9a-f]{{16}}(\.(ready|log|partial|use))?", p.name)}
    for name in names - {keep}:
        with open(CACHE / f"{name}.use", "a") as use:
            try:
                fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            for suffix in (".ready", "", ".partial", ".log", ".use"):
                _remove_tree(CACHE / f"{name}{suffix}")


def _debootstrap(packages: Sequence[str], mirror: str, root: Path, timeout: float) -> None:
    partial = root.with_name(f"{root.name}.partial")
    _remove_tree(partial)
    _remove_tree(root)
    log = root.with_name(f"{root.name}.log")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
           SUITE, str(partial), mirror]
    env = {**os.environ, "PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    with open(log, "w") as out:
        try:
            res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                 timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            _remove_tree(partial)
            raise BoxError(f"debootstrap ran longer than {timeout:.0f} s (log: {log})"
                           ) from None
    if res.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        _remove_tree(partial)
        raise BoxError(f"{' '.join(cmd)} exited {res.returncode}:\n{tail}")
    for deb in (partial / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    partial.rename(root)


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# -- cgroups -----------------------------------------------------------------


def _cgroup_mounts() -> dict[str, Path]:
    """Hierarchy (as /proc/self/cgroup names it: "name=systemd", "" for
    cgroup2) -> its mount point, first mount of each."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype, _source, options = [*post.split(), "", "", ""][:3]
        point = Path(pre.split()[4])
        if fstype == "cgroup2":
            mounts.setdefault("", point)
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            mounts.setdefault("name=systemd", point)
    return mounts


def make_cgroup_children(name: str) -> list[Path]:
    """A child of our own cgroup in each hierarchy systemd manages."""
    mounts = _cgroup_mounts()
    made: list[Path] = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _num, controllers, path = line.split(":", 2)
        if controllers not in mounts:
            continue
        child = mounts[controllers] / path.lstrip("/") / name
        child.mkdir()
        made.append(child)
    if not made:
        raise BoxError("no name=systemd or cgroup2 hierarchy is mounted")
    return made


def remove_stale_children(prefix: str) -> list[Path]:
    """Children named `prefix<pid>` whose pid (the test run that made them)
    is gone: a run killed with SIGKILL could not tear its container down, so
    the next one does. Returns what it removed."""
    mounts = _cgroup_mounts()
    stale: list[Path] = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _num, controllers, path = line.split(":", 2)
        if controllers not in mounts:
            continue
        for child in (mounts[controllers] / path.lstrip("/")).glob(f"{prefix}*"):
            owner = child.name[len(prefix):]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                stale.append(child)
                shutil.rmtree(f"/run/systemd/nspawn/propagate/{MACHINE_PREFIX}{owner}",
                              ignore_errors=True)
    remove_cgroup_children(stale)
    return stale


def _cgroup_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for dirpath, _dirs, _files in os.walk(top):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()}
    return pids


def remove_cgroup_children(children: Sequence[Path], timeout: float = 15.0) -> list[str]:
    """Kill what is left in them and remove them, deepest first. Returns what
    could not be removed (empty when all went)."""
    deadline = time.monotonic() + timeout
    left: list[str] = []
    for top in children:
        while top.exists():
            for pid in _cgroup_pids(top):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for dirpath, _dirs, _files in os.walk(top, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
            if not top.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if top.exists():
            left.append(f"{top} (pids {sorted(_cgroup_pids(top))})")
    return left


# -- the container -----------------------------------------------------------


class Container:
    """`systemd-nspawn --boot` of `root` (read-only, tmpfs overlay on top)."""

    def __init__(self, root: Path, workdir: Path, *, name: str,
                 bind_ro: Sequence[tuple[Path, str]] = ()) -> None:
        self.root = root
        self.workdir = workdir
        self.name = name
        self.bind_ro = list(bind_ro)
        self.console = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        self.cgroups: list[Path] = []

    # starting

    def start(self, timeout: float = 90.0) -> str:
        """Boot; returns `systemctl is-system-running` once booted."""
        remove_stale_children(CGROUP_PREFIX)
        self.cgroups = make_cgroup_children(f"{CGROUP_PREFIX}{os.getpid()}")
        procs = " ".join(str(c / "cgroup.procs") for c in self.cgroups)
        cmd = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
               "--private-network", "--boot", "--volatile=overlay", "--link-journal=no",
               "--resolv-conf=off", "--timezone=off", f"--machine={self.name}",
               f"--directory={self.root}"]
        cmd += [f"--bind-ro={src}:{dst}" for src, dst in self.bind_ro]
        # The shell moves itself into the throwaway cgroups, then becomes nspawn.
        wrapper = 'for f in $HOSTTUNE_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"'
        with open(self.console, "wb") as console:
            self.proc = subprocess.Popen(
                ["sh", "-c", wrapper, "sh", *cmd], stdin=subprocess.DEVNULL, stdout=console,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8",
                     "HOSTTUNE_CGROUP_PROCS": procs})
        deadline = time.monotonic() + timeout
        self.pid1 = self._find_pid1(deadline)
        while True:
            res = self.run("systemctl is-system-running --wait", check=False,
                           timeout=max(1.0, deadline - time.monotonic()))
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if time.monotonic() > deadline:
                raise BoxError(f"the container did not boot in {timeout:.0f} s "
                               f"(state {state!r}): {self.console_tail()}")
            time.sleep(0.2)

    def _find_pid1(self, deadline: float) -> int:
        """nspawn is the subreaper of the container's init: its child whose
        innermost pid is 1."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BoxError(f"systemd-nspawn exited {self.proc.returncode}: "
                               f"{self.console_tail()}")
            for pid in _children(self.proc.pid):
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{pid}/status").read_text()
                    nspid = (re.findall(r"^NSpid:\s+(.*)$", status, re.M) or [""])[0].split()
                    # only once it is systemd: before its exec, nspawn is still
                    # setting up the mounts a command inside would see
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                    if len(nspid) > 1 and nspid[-1] == "1" and name == "systemd":
                        return pid
            time.sleep(0.05)
        raise BoxError(f"no container init under systemd-nspawn: {self.console_tail()}")

    def console_tail(self, size: int = 3000) -> str:
        try:
            return self.console.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    # commands inside

    def run(self, script: str, *, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`sh -c script` inside the container (all its namespaces, clean env)."""
        if self.pid1 is None:
            raise BoxError("the container is not running")
        cmd = ["nsenter", f"--target={self.pid1}", "--all", "env", "-i", *INSIDE_ENV,
               "sh", "-c", script]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                 input=input, check=False, env={"PATH": SYSTEM_PATH})
        except subprocess.TimeoutExpired as exc:
            raise BoxError(f"inside the container, {script!r} ran past {timeout:g} s; "
                           f"output so far: {exc.stdout!r} {exc.stderr!r}") from None
        if check and res.returncode != 0:
            raise BoxError(f"inside the container, {script!r} exited {res.returncode}:\n"
                           f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res

    def write(self, path: str, text: str) -> None:
        self.run(f"cat > '{path}'", input=text)

    # stopping

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Shut down (SIGTERM asks nspawn for an orderly poweroff), kill what
        does not go in time, remove the cgroups and what nspawn left in /run.
        Safe to call in any state; returns problems (empty when clean)."""
        problems: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"the container did not power off in {timeout:g} s; killed")
                if self.pid1 is not None:  # the whole PID namespace dies with it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid1, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(10)
        self.pid1 = None
        left = remove_cgroup_children(self.cgroups)
        problems += [f"cgroup left: {c}" for c in left]
        # nspawn keeps a mount propagation directory per machine (and lock
        # files) under /run/systemd/nspawn, and leaves the directories behind.
        # Empty, they hold nothing (nspawn makes them again); while another
        # container runs they are not empty and stay.
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)
        for empty in ("/run/systemd/nspawn/propagate", "/run/systemd/nspawn/locks",
                      "/run/systemd/nspawn"):
            with contextlib.suppress(OSError):
                os.rmdir(empty)
        return problems


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
