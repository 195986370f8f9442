"""The only code that knows where /proc, /sys, /etc and /dev are.

Every read and write of the host goes through a `Host`. Tests point it at a
fixture tree (`Host(root="tests/fixtures/hosts/<name>")`); the daemon uses
`Host()` for the live machine. Paths given to a Host are absolute host paths
("/proc/stat"); errors name that host path, plus the root when it is not "/",
so a message read off a fixture says which fixture.
"""

from __future__ import annotations

import errno as errno_mod
import os
import shlex
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hosttune.agent.sense.errors import HostCommandError, HostReadError, HostWriteError, ParseError

# First size of a kept file's buffer; it doubles whenever a read fills it and
# stays at that size, so each file settles on one buffer that holds it.
_KEPT_BUFFER = 16384


class KeptFile:
    """A file kept open and re-read with pread: about half the cost of
    open+read+close for the /proc files the sampler reads every interval."""

    def __init__(self, host: Host, path: str) -> None:
        self.path = path
        self._host = host
        self._fd: int | None = None
        self._buf = bytearray(_KEPT_BUFFER)
        self._view = memoryview(self._buf)

    def read(self) -> str:
        if self._fd is None:
            try:
                self._fd = os.open(self._host.path(self.path), os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise self._host.read_error(self.path, exc) from exc
        # preadv into a buffer kept between reads: os.pread would allocate
        # (and for a large size mmap and unmap) a new bytes object each time,
        # which costs more than the read itself. The text is decoded straight
        # from the buffer, without a copy of the bytes first.
        view = self._view
        total = 0
        try:
            while True:
                got = os.preadv(self._fd, [view[total:]], total)
                total += got
                if total < len(view) or got == 0:
                    break
                view.release()  # a bytearray with a view on it cannot grow
                self._buf.extend(bytes(len(self._buf)))
                view = self._view = memoryview(self._buf)
        except OSError as exc:
            self.close()
            raise self._host.read_error(self.path, exc) from exc
        return str(view[:total], "utf-8", "replace")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class CommandResult:
    """What a host command printed. A non-zero exit is not an error here:
    vendor tools use it for "no device", and the caller knows what it means."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def command_record_name(argv: Sequence[str]) -> str:
    """The file name under <root>/commands/ that holds the recorded output of
    `argv` on a fixture tree: the words joined with "_", any character other
    than [A-Za-z0-9.-] written as %XX ("npu-smi info -t usages -i 0" ->
    "npu-smi_info_-t_usages_-i_0.txt")."""
    def quote(word: str) -> str:
        return "".join(c if c.isascii() and (c.isalnum() or c in ".-") else f"%{ord(c):02X}"
                       for c in word)
    return "_".join(quote(w) for w in argv) + ".txt"


class Host:
    """A view of one machine's kernel interfaces rooted at `root`."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)
        self.is_live = self.root.resolve() == Path("/")

    def __repr__(self) -> str:
        return f"Host(root={str(self.root)!r})"

    # -- paths -------------------------------------------------------------

    def path(self, path: str) -> Path:
        """The real filesystem path of host path `path` ("/proc/stat")."""
        if not path.startswith("/"):
            raise ValueError(f"host paths are absolute: {path!r}")
        if self.is_live:
            return Path(path)
        return self.root / path.lstrip("/")

    def describe(self, path: str) -> str:
        return path if self.is_live else f"{path} (under {self.root})"

    def read_error(self, path: str, exc: OSError) -> HostReadError:
        reason = exc.strerror or str(exc)
        return HostReadError(self.describe(path), f"cannot read: {reason}", errno=exc.errno)

    @staticmethod
    def sysctl_path(key: str) -> str:
        """`vm.swappiness` -> `/proc/sys/vm/swappiness`. As in sysctl(8), a '/'
        in a key stands for a '.' inside one name (`net.ipv4.conf.eth0/100.rp_filter`)."""
        if not key or key.startswith(".") or ".." in key:
            raise ValueError(f"not a sysctl key: {key!r}")
        parts = key.replace("/", "\0").split(".")
        return "/proc/sys/" + "/".join(p.replace("\0", ".") for p in parts)

    # -- reads -------------------------------------------------------------

    def read_text(self, path: str) -> str:
        try:
            with open(self.path(path), "rb") as fh:
                return fh.read().decode("utf-8", "replace")
        except OSError as exc:
            raise self.read_error(path, exc) from exc

    def read_bytes(self, path: str) -> bytes:
        try:
            with open(self.path(path), "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise self.read_error(path, exc) from exc

    def read_str(self, path: str) -> str:
        """One value file (sysfs style): its contents without surrounding space."""
        return self.read_text(path).strip()

    def read_int(self, path: str) -> int:
        text = self.read_str(path)
        try:
            return int(text, 0) if text.startswith("0x") else int(text)
        except ValueError:
            raise ParseError(
                self.describe(path), f"expected an integer, got {text[:40]!r}"
            ) from None

    def read_optional(self, path: str) -> str | None:
        """The stripped contents, or None when the file is missing or unreadable:
        for the many sysfs attributes that only some drivers and kernels have."""
        try:
            return self.read_str(path)
        except HostReadError:
            return None

    def read_optional_int(self, path: str) -> int | None:
        text = self.read_optional(path)
        if text is None:
            return None
        try:
            return int(text, 0) if text.startswith("0x") else int(text)
        except ValueError:
            return None

    def kept(self, path: str) -> KeptFile:
        return KeptFile(self, path)

    def exists(self, path: str) -> bool:
        return os.path.exists(self.path(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self.path(path))

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(path)))
        except OSError as exc:
            raise self.read_error(path, exc) from exc

    def listdir_optional(self, path: str) -> list[str]:
        try:
            return self.listdir(path)
        except HostReadError:
            return []

    def readlink_name(self, path: str) -> str | None:
        """The last component of a symlink's target (a driver's name, say), or None."""
        try:
            return os.path.basename(os.readlink(self.path(path)))
        except OSError:
            return None

    def readlink(self, path: str) -> str | None:
        """A symlink's target as the kernel wrote it (/proc/PID/fd/N ->
        "/dev/nvidia0"), or None if it is gone or not a link."""
        try:
            return os.readlink(self.path(path))
        except (OSError, ValueError):
            return None

    def resolve(self, path: str) -> str | None:
        """The host path a sysfs symlink points to, or None if it does not exist.
        Fixture trees keep relative links, so resolving stays inside the root."""
        real = self.path(path)
        try:
            target = real.resolve(strict=True)
        except OSError:
            return None
        if self.is_live:
            return str(target)
        try:
            return "/" + str(target.relative_to(self.root.resolve()))
        except ValueError:
            return None

    def pids(self) -> Iterator[int]:
        for name in self.listdir_optional("/proc"):
            if name.isdigit():
                yield int(name)

    # -- commands ----------------------------------------------------------

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run a read-only host command (vendor tools such as `npu-smi`) with a
        time limit. On a fixture tree nothing runs: the recorded stdout is read
        from <root>/commands/<command_record_name(argv)>, and a missing record
        behaves like a command that is not installed. A recorded exit status,
        when not 0, sits in the same file name with ".rc" instead of ".txt"."""
        argv = tuple(argv)
        line = shlex.join(argv)
        if not argv:
            raise ValueError("empty command")
        if not self.is_live:
            record = self.root / "commands" / command_record_name(argv)
            try:
                stdout = record.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                raise HostCommandError(
                    f"{line} (under {self.root})", "command not found",
                    errno=errno_mod.ENOENT) from None
            rc_file = record.with_suffix(".rc")
            rc = int(rc_file.read_text().strip()) if rc_file.exists() else 0
            return CommandResult(argv, rc, stdout, "")
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"},
            )
        except FileNotFoundError:
            raise HostCommandError(line, "command not found", errno=errno_mod.ENOENT) from None
        except subprocess.TimeoutExpired:
            raise HostCommandError(line, f"timed out after {timeout:g} s",
                                   errno=errno_mod.ETIMEDOUT) from None
        except OSError as exc:
            raise HostCommandError(line, f"cannot run: {exc.strerror or exc}",
                                   errno=exc.errno) from None
        return CommandResult(argv, proc.returncode,
                             proc.stdout.decode("utf-8", "replace"),
                             proc.stderr.decode("utf-8", "replace"))

    # -- writes ------------------------------------------------------------

    def write_text(self, path: str, value: str) -> None:
        """Write `value` in one write(2), as sysfs and procfs expect. Never
        creates a file: a knob that does not exist is an error, not a new file."""
        data = value.encode()
        try:
            # No O_TRUNC: the old contents stay until the write itself (a
            # fixture file must not read empty while a write is in flight).
            fd = os.open(self.path(path), os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._write_error(path, exc) from exc
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise HostWriteError(
                    self.describe(path), f"short write ({written} of {len(data)} bytes)",
                    errno=errno_mod.EIO,
                )
            # A plain file (a fixture, or a fake bind-mounted over a /proc path)
            # is cut to what was written; procfs reports size 0 and kernfs
            # (sysfs) files are left alone.
            if os.fstat(fd).st_size > written and not (self.is_live and path.startswith("/sys/")):
                os.ftruncate(fd, written)
        except OSError as exc:
            raise self._write_error(path, exc) from exc
        finally:
            os.close(fd)

    def _write_error(self, path: str, exc: OSError) -> HostWriteError:
        reason = exc.strerror or str(exc)
        return HostWriteError(self.describe(path), f"kernel refused write: {reason}",
                              errno=exc.errno)

    # -- processes and placement (the numa and irq tuners) -------------------

    def cmdline(self) -> str:
        """The kernel command line (/proc/cmdline), empty when absent."""
        return self.read_optional("/proc/cmdline") or ""

    def uname(self) -> str:
        """What `uname -a` shows, as os.uname() joined by spaces (tuned matches
        its uname_regex against that); on a fixture tree, from its
        /proc/sys/kernel files (arch exists from Linux 6.1)."""
        if self.is_live:
            return " ".join(os.uname())
        names = ("ostype", "hostname", "osrelease", "version", "arch")
        return " ".join(self.read_optional(f"/proc/sys/kernel/{n}") or "" for n in names)

    def proc_comms(self) -> dict[int, str]:
        """pid -> comm of every process; processes that exit meanwhile are skipped."""
        comms: dict[int, str] = {}
        for pid in self.pids():
            comm = self.read_optional(f"/proc/{pid}/comm")
            if comm is not None:
                comms[pid] = comm
        return comms

    def thread_ids(self, pid: int) -> list[int]:
        return [int(t) for t in self.listdir(f"/proc/{pid}/task") if t.isdigit()]

    def _refuse_unless_live(self, what: str) -> None:
        # A syscall cannot be pointed at a fixture tree: on one it would act on
        # the live machine's process with that pid, so it is refused outright.
        if not self.is_live:
            raise HostWriteError(
                self.describe(what),
                "refusing a process syscall on a fixture host (it would act on the live machine)",
                errno=errno_mod.EPERM,
            )

    def set_affinity(self, pid: int, cpus: Iterable[int]) -> None:
        """sched_setaffinity for every thread of `pid` (os.sched_setaffinity
        acts on one thread only). Threads that exit meanwhile are skipped."""
        self._refuse_unless_live(f"/proc/{pid}")
        wanted = set(cpus)
        try:
            tids = self.thread_ids(pid)
        except HostReadError as exc:
            raise HostWriteError(exc.path, "no such process", errno=errno_mod.ESRCH) from exc
        for tid in tids:
            try:
                os.sched_setaffinity(tid, wanted)
            except ProcessLookupError:
                continue
            except OSError as exc:
                raise HostWriteError(
                    self.describe(f"/proc/{pid}/task/{tid}"),
                    f"sched_setaffinity refused: {exc.strerror or exc}", errno=exc.errno,
                ) from exc

    def open_pidfd(self, pid: int) -> int:
        """pidfd_open(2): a file descriptor that names process `pid` for as long
        as it is open, so a later syscall through it can never reach another
        process that got the same pid. The caller closes it (os.close)."""
        self._refuse_unless_live(f"/proc/{pid}")
        result, err = _syscall(_PIDFD_OPEN, pid, 0)
        if result < 0:
            raise HostWriteError(self.describe(f"/proc/{pid}"),
                                 f"pidfd_open refused: {os.strerror(err)}", errno=err)
        return result

    def process_madvise(self, pidfd: int, start: int, length: int, advice: int) -> int:
        """process_madvise(2) of one range of the process behind `pidfd`:
        the bytes advised, or HostWriteError carrying the kernel's errno (the
        caller decides which refusals are results and which are failures)."""
        self._refuse_unless_live("/proc/self")
        # ctypes: see migrate_pages
        import ctypes

        class _Iovec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        iov = _Iovec(start, length)
        result, err = _syscall(_PROCESS_MADVISE, pidfd, ctypes.addressof(iov), 1, advice, 0)
        if result < 0:
            raise HostWriteError(self.describe(f"pidfd {pidfd}"),
                                 f"process_madvise({start:#x}+{length >> 20} MiB) refused: "
                                 f"{os.strerror(err)}", errno=err)
        return result

    def migrate_pages(self, pid: int, from_nodes: Iterable[int], to_nodes: Iterable[int]) -> int:
        """migrate_pages(2): move `pid`'s pages on `from_nodes` to `to_nodes`.
        Returns how many pages could not be moved."""
        self._refuse_unless_live(f"/proc/{pid}")
        # ctypes: 3 ms and 0.4 MB RSS in every process holding a Host; only this needs it
        import ctypes

        numbers = {"x86_64": 256, "aarch64": 238, "ppc64le": 258, "s390x": 287, "riscv64": 238}
        machine = os.uname().machine
        number = numbers.get(machine)
        old, new = set(from_nodes), set(to_nodes)
        if number is None:
            raise HostWriteError(self.describe(f"/proc/{pid}"),
                                 f"migrate_pages: unknown syscall number on {machine}",
                                 errno=errno_mod.ENOSYS)
        bits = max([*old, *new, 0]) + 1
        words = (bits + 63) // 64
        mask_t = ctypes.c_ulong * words

        def mask(nodes: set[int]) -> ctypes.Array[ctypes.c_ulong]:
            arr = mask_t()
            for n in nodes:
                arr[n // 64] |= 1 << (n % 64)
            return arr

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        old_mask, new_mask = mask(old), mask(new)
        # The kernel reads maxnode-1 bits (a historical off-by-one libnuma also follows).
        result = libc.syscall(ctypes.c_long(number), ctypes.c_long(pid),
                              ctypes.c_ulong(words * 64 + 1), old_mask, new_mask)
        if result < 0:
            err = ctypes.get_errno()
            raise HostWriteError(self.describe(f"/proc/{pid}"),
                                 f"migrate_pages refused: {os.strerror(err)}", errno=err)
        return int(result)


# Syscall numbers of the same generic table on every 64-bit Linux hosttune
# runs on (x86_64, aarch64, ppc64le, s390x, riscv64 share 434 and 440).
_PIDFD_OPEN = 434
_PROCESS_MADVISE = 440


def _syscall(number: int, *args: int) -> tuple[int, int]:
    """syscall(2) with integer arguments: (result, errno). ENOSYS where the
    kernel is too old for the call, EPERM where seccomp forbids it."""
    import ctypes  # see Host.migrate_pages

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    return int(result), ctypes.get_errno() if result < 0 else 0
