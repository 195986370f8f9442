"""A multi-node Debian 12 guest under QEMU for the topology tests.

The guest is what a two-socket AI server looks like to the kernel, made
small: two NUMA nodes with their own CPUs and memory and a distance table,
a PCIe expander bridge (pxb-pcie) bound to each node, virtio-net and NVMe
behind root ports on them, and a PCIe switch (x3130 upstream + xio3130
downstream ports) under node 1 with an NVMe drive and a NIC behind it. The
kernel, its MSI interrupts and its sysfs are real; the distances are
emulated (every access costs the same under TCG), so the guest proves
correctness, never speed.

Build (`python3 tests/guest_box.py build`, or `scripts/guest/build`):

- debootstrap (minbase) of bookworm from this host's own apt mirror with
  Debian's kernel package, systemd, irqbalance, numactl and the .deb's
  runtime dependencies; an ext4 image made from that tree with
  `mkfs.ext4 -d` (no loop mount); the kernel and initrd copied next to it.
- Cached under /var/cache/hosttune-guest/<key>/ (key: the recipe, the
  package list and the files written into the root); a rerun reuses it.
- hosttune itself is not in the cached image: each boot gets the freshly
  built .deb on a small second disk and installs it, so the cache does not
  go stale with every commit.

Run: each boot writes to a qcow2 overlay in a scratch directory (the cached
image is never changed). The harness talks to the guest over its serial
console only: a small agent started by systemd on ttyS0 reads one
base64-encoded command per line and answers with the exit status and the
output, base64-encoded, between markers. QEMU is killed and the scratch
directory removed on every exit path: `Guest.stop` from a fixture finalizer
and an atexit hook; QEMU runs under `setpriv --pdeathsig KILL`, so it dies
with the test process even when that is killed outright, and the next run
removes the scratch directories such runs left.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nspawn_box import SUITE, SYSTEM_PATH, deb_depends, host_mirror

RECIPE = 3
CACHE = Path(os.environ.get("HOSTTUNE_GUEST_CACHE", "/var/cache/hosttune-guest"))
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "udev", "kmod", "python3", "procps", "util-linux",
    "linux-image-amd64", "initramfs-tools", "irqbalance", "numactl", "pciutils",
    "iproute2", "iputils-ping",
)
QEMU = "qemu-system-x86_64"

# What the guest is given; the tests compare `hosttune topology` against this.
NODE_CPUS = {0: [0, 1], 1: [2, 3]}
NODE_MEM_MB = {0: 1024, 1: 1024}
DISTANCE = 21
ISOLATED_CPUS = [1]
# (id, kind, node, behind the switch); serials name the NVMe drives and MACs the NICs.
DEVICES = (
    ("nic0", "virtio-net", 0, False),
    ("nvme0", "nvme", 0, False),
    ("nvme1", "nvme", 1, True),
    ("nic1", "virtio-net", 1, True),
)
MACS = {"nic0": "52:54:00:00:00:10", "nic1": "52:54:00:00:01:10"}
BUS_NR = {0: 32, 1: 64}

AGENT = r'''#!/usr/bin/python3
# The test harness's end of the serial console: one base64 JSON request a
# line ({"id", "cmd", "timeout"}), one answer line "@@R id rc b64(output)@@".
import base64, json, os, subprocess, sys, termios
fd = sys.stdin.fileno()
attrs = termios.tcgetattr(fd)
attrs[3] &= ~(termios.ECHO | termios.ICANON)  # no echo of what the harness sends
termios.tcsetattr(fd, termios.TCSANOW, attrs)
out = os.fdopen(sys.stdout.fileno(), "w", buffering=1)
boot = open("/proc/sys/kernel/random/boot_id").read().strip()
out.write("\n@@READY %s@@\n" % boot)
buf = b""
while True:
    chunk = os.read(fd, 65536)
    if not chunk:
        break
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(base64.b64decode(line))
        except ValueError:
            out.write("\n@@BAD@@\n")
            continue
        try:
            res = subprocess.run(["/bin/sh", "-c", req["cmd"]], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=req["timeout"],
                                 stdin=subprocess.DEVNULL)
            rc, data = res.returncode, res.stdout
        except subprocess.TimeoutExpired as exc:
            rc, data = 124, exc.stdout or b""
        out.write("\n@@R %s %d %s@@\n" % (req["id"], rc, base64.b64encode(data).decode()))
'''

AGENT_UNIT = """[Unit]
Description=hosttune test harness agent on the serial console
After=systemd-udev-settle.service local-fs.target
[Service]
ExecStart=/usr/local/sbin/hosttune-guest-agent
StandardInput=tty
StandardOutput=tty
TTYPath=/dev/ttyS0
TTYReset=yes
Restart=always
[Install]
WantedBy=multi-user.target
"""

# Files written into the root after debootstrap: part of the cache key.
ROOT_FILES = {
    "etc/fstab": "/dev/vda / ext4 rw,relatime 0 1\n",
    "etc/hostname": "hosttune-guest\n",
    "etc/hosts": "127.0.0.1 localhost hosttune-guest\n",
    "usr/local/sbin/hosttune-guest-agent": AGENT,
    "etc/systemd/system/hosttune-guest-agent.service": AGENT_UNIT,
    # Keep the journal across the reboot test; small, the guest disk is small.
    "etc/systemd/journald.conf.d/guest.conf": "[Journal]\nStorage=persistent\nSystemMaxUse=32M\n",
    # The initrd is made in a chroot, where MODULES=dep cannot see the guest's
    # disk: take the usual set (virtio-blk and ext4 among them).
    "etc/initramfs-tools/conf.d/guest.conf": "MODULES=most\nCOMPRESS=gzip\n",
}
# Units that cost boot time under TCG and play no part in the tests.
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
          "fstrim.timer", "man-db.timer", "dpkg-db-backup.timer", "getty@tty1.service",
          "serial-getty@ttyS0.service", "systemd-timesyncd.service",
          "systemd-networkd-wait-online.service")


class GuestError(Exception):
    """The guest could not be built, booted or reached."""


# -- the cached image --------------------------------------------------------


def guest_packages(deb: Path) -> list[str]:
    return sorted(set(BASE_PACKAGES) | set(deb_depends(deb)))


def _key(packages: Sequence[str]) -> str:
    files = json.dumps(ROOT_FILES, sort_keys=True) + ",".join(MASKED)
    text = f"{RECIPE}|{SUITE}|{platform.machine()}|{','.join(sorted(packages))}|{files}"
    return f"{SUITE}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def cached_image(packages: Sequence[str], mirror: str | None = None,
                 timeout: float = 1800.0) -> tuple[Path, bool]:
    """The directory holding disk.img, vmlinuz and initrd.img for
    `packages` (built now when missing) and whether it was built now."""
    mirror = mirror or host_mirror()
    CACHE.mkdir(parents=True, exist_ok=True)
    name = _key(packages)
    done = CACHE / name
    with open(CACHE / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same image
        if (done / "ready").is_file():
            return done, False
        if mirror is None:
            raise GuestError("no bookworm main source in /etc/apt; set HOSTTUNE_NSPAWN_MIRROR")
        for old in CACHE.iterdir():  # one image at a time: each is about 1 GB
            if old.name != ".lock":
                _remove(old)
        _build(packages, mirror, done, timeout)
        return done, True


def _build(packages: Sequence[str], mirror: str, done: Path, timeout: float) -> None:
    work = done.with_name(done.name + ".partial")
    _remove(work)
    root = work / "root"
    work.mkdir(parents=True)
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    log = open(work / "build.log", "w")  # noqa: SIM115 (closed below)
    try:
        def run(*cmd: str, limit: float = 600.0) -> None:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 timeout=limit, check=False)
            if res.returncode != 0:
                log.flush()
                tail = (work / "build.log").read_text(errors="replace")[-3000:]
                raise GuestError(f"{' '.join(cmd)} exited {res.returncode}:\n{tail}")

        run("debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
            SUITE, str(root), mirror, limit=timeout)
        for rel, text in ROOT_FILES.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (root / "usr/local/sbin/hosttune-guest-agent").chmod(0o755)
        # root logs in with no password on the console only (the guest has no network)
        run("chroot", str(root), "passwd", "-d", "root")
        run("chroot", str(root), "systemctl", "enable", "hosttune-guest-agent.service")
        run("chroot", str(root), "systemctl", "mask", *MASKED)
        run("chroot", str(root), "update-initramfs", "-u", "-k", "all")
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        initrds = sorted((root / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise GuestError(f"no kernel or initrd in {root / 'boot'}")
        shutil.copy(kernels[-1], work / "vmlinuz")
        shutil.copy(initrds[-1], work / "initrd.img")
        run("mkfs.ext4", "-q", "-F", "-L", "guestroot", "-d", str(root),
            str(work / "disk.img"), "3G")
        shutil.rmtree(root)
        (work / "ready").write_text("\n".join(packages) + "\n")
    except BaseException:
        log.close()
        raise
    log.close()
    work.rename(done)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


# -- the running guest -------------------------------------------------------


def qemu_args(image: Path, overlay: Path, payload: Path, *,
              accel: str = "tcg") -> list[str]:
    """The QEMU command line of the guest topology.

    Four vCPUs, two per node: with six on this busy two-core host, multi-
    threaded TCG starved them in stop_machine at boot (soft lockups for
    minutes) and single-threaded TCG did not reach userspace in 400 s. KVM
    hangs on this host (../shared/PLATFORM.md), so it is not tried. The
    isolated CPU is on node 0, so node 1 keeps a feeder core and an IRQ core."""
    isol = ",".join(map(str, ISOLATED_CPUS))
    cpus = sum(len(c) for c in NODE_CPUS.values())
    cmdline = (f"root=/dev/vda rw console=ttyS0,115200 isolcpus={isol} quiet loglevel=1 "
               "systemd.show_status=0 panic=-1 mitigations=off tsc=reliable nosoftlockup")
    args = [QEMU, "-machine", "q35", "-accel", accel, "-m", f"{sum(NODE_MEM_MB.values())}M",
            "-smp", f"{cpus},sockets=2,cores={cpus // 2},threads=1",
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
            "-append", cmdline, "-serial", "stdio", "-monitor", "none"]
    for node, cpulist in NODE_CPUS.items():
        args += ["-object", f"memory-backend-ram,id=m{node},size={NODE_MEM_MB[node]}M",
                 "-numa", f"node,nodeid={node},cpus={cpulist[0]}-{cpulist[-1]},memdev=m{node}"]
    args += ["-numa", f"dist,src=0,dst=1,val={DISTANCE}"]
    args += ["-drive", f"file={overlay},format=qcow2,if=none,id=root,cache=unsafe",
             "-device", "virtio-blk-pci,drive=root,bus=pcie.0,serial=guestroot",
             "-drive", f"file={payload},format=raw,if=none,id=payload,readonly=on",
             "-device", "virtio-blk-pci,drive=payload,bus=pcie.0,serial=payload"]
    chassis = 1
    for node, bus_nr in BUS_NR.items():
        args += ["-device", f"pxb-pcie,id=pxb{node},bus_nr={bus_nr},numa_node={node},bus=pcie.0"]
        slot = 0
        switch_made = False
        for dev_id, kind, dev_node, switched in DEVICES:
            if dev_node != node:
                continue
            if switched:
                if not switch_made:
                    args += ["-device", f"pcie-root-port,id=rp{node}sw,bus=pxb{node},"
                             f"chassis={chassis},slot={slot},x-speed=8,x-width=4",
                             "-device", f"x3130-upstream,id=up{node},bus=rp{node}sw"]
                    chassis += 1
                    slot += 1
                    switch_made = True
                port = f"dn{dev_id}"
                args += ["-device", f"xio3130-downstream,id={port},bus=up{node},"
                         f"chassis={chassis},slot=0"]
            else:
                port = f"rp{dev_id}"
                args += ["-device", f"pcie-root-port,id={port},bus=pxb{node},"
                         f"chassis={chassis},slot={slot}"]
                slot += 1
            chassis += 1
            if kind == "nvme":
                drive = overlay.parent / f"{dev_id}.img"
                with open(drive, "wb") as f:
                    f.truncate(64 << 20)
                args += ["-drive", f"file={drive},format=raw,if=none,id=d{dev_id}",
                         "-device", f"nvme,drive=d{dev_id},serial={dev_id},bus={port}"]
            else:
                args += ["-netdev", f"user,id=n{dev_id},restrict=on",
                         "-device", f"virtio-net-pci,netdev=n{dev_id},mac={MACS[dev_id]},"
                         f"bus={port},romfile="]
    return args


SCRATCH_PREFIX = "hosttune-guest-"


def _remove_stale_scratch() -> None:
    """Scratch directories of runs that died without cleaning up (SIGKILL):
    their QEMU died with them (--pdeathsig), their disks are left."""
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        owner = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(path, ignore_errors=True)


class Guest:
    """One booted guest; `run` executes a shell command inside over ttyS0."""

    def __init__(self, image: Path, deb: Path) -> None:
        self.image = image
        self.deb = deb
        _remove_stale_scratch()
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self.boot_id = ""
        self.boot_seconds: list[float] = []
        atexit.register(self.stop)

    def start(self, timeout: float = 600.0) -> None:
        overlay = self.scratch / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        str(self.image / "disk.img"), str(overlay)], check=True, timeout=60)
        payload_dir = self.scratch / "payload"
        payload_dir.mkdir()
        shutil.copy(self.deb, payload_dir / "hosttune.deb")
        payload = self.scratch / "payload.img"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(payload_dir), str(payload), "32M"],
                       check=True, timeout=60, env={"PATH": SYSTEM_PATH})
        args = qemu_args(self.image, overlay, payload)
        (self.scratch / "qemu.cmd").write_text(" ".join(args) + "\n")
        # setpriv --pdeathsig: QEMU gets SIGKILL when the test process dies,
        # however it dies (SIGKILL, a crash), so no guest outlives its run.
        self.proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=self.scratch)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_ready(timeout)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.scratch / "console.log", "ab") as log:
            while True:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                with self._cond:
                    self._buf += chunk
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _wait_for(self, pattern: re.Pattern[bytes], timeout: float) -> tuple[bytes, ...]:
        """The groups of the first match of `pattern` in the console output
        not consumed yet (copied out before the buffer is cut: a match only
        points into it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = pattern.search(self._buf)
                if match:
                    groups = tuple(bytes(g or b"") for g in match.groups())
                    del self._buf[:match.end()]
                    return groups
                if self.proc is None or self.proc.poll() is not None:
                    raise GuestError(f"QEMU exited ({self.proc and self.proc.returncode}): "
                                     f"{self.console_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestError(f"no answer from the guest in {timeout:g} s: "
                                     f"{self.console_tail()}")
                self._cond.wait(min(left, 1.0))

    def wait_ready(self, timeout: float) -> None:
        start = time.monotonic()
        pattern = re.compile(rb"@@READY ([0-9a-f-]+)@@")
        while True:
            (boot_id,) = self._wait_for(pattern, timeout - (time.monotonic() - start))
            if boot_id.decode() != self.boot_id:
                self.boot_id = boot_id.decode()
                break
        self.boot_seconds.append(time.monotonic() - start)

    def console_tail(self, size: int = 3000) -> str:
        try:
            return (self.scratch / "console.log").read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def run(self, cmd: str, *, check: bool = True, timeout: float = 120.0
            ) -> tuple[int, str]:
        """(exit status, stdout+stderr) of `sh -c cmd` in the guest."""
        if self.proc is None or self.proc.stdin is None:
            raise GuestError("the guest is not running")
        req_id = secrets.token_hex(6)
        line = base64.b64encode(json.dumps({"id": req_id, "cmd": cmd,
                                            "timeout": timeout}).encode()) + b"\n"
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        answer = re.compile(rb"@@R " + req_id.encode() + rb" (-?\d+) ([A-Za-z0-9+/=]*)@@")
        status, encoded = self._wait_for(answer, timeout + 30)
        rc = int(status)
        out = base64.b64decode(encoded).decode(errors="replace")
        if check and rc != 0:
            raise GuestError(f"in the guest, {cmd!r} exited {rc}:\n{out[-3000:]}")
        return rc, out

    def reboot(self, timeout: float = 600.0) -> None:
        """`systemctl reboot` inside; returns once the agent of the new boot answers."""
        assert self.proc is not None and self.proc.stdin is not None
        line = base64.b64encode(json.dumps({"id": "reboot", "cmd": "systemctl reboot",
                                            "timeout": 30}).encode()) + b"\n"
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Kill QEMU (the guest's disk is a throwaway overlay) and remove the
        scratch directory; safe to call more than once."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(30)
            for stream in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError, ValueError):
                    if stream is not None:
                        stream.close()
            self.proc = None
        if self._reader is not None:
            self._reader.join(10)
            self._reader = None
        shutil.rmtree(self.scratch, ignore_errors=True)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("build", "boot"):
        print("usage: guest_box.py build|boot DEB", file=sys.stderr)
        return 2
    deb = Path(argv[1])
    start = time.monotonic()
    image, made = cached_image(guest_packages(deb))
    print(f"image {image} ({'built' if made else 'cached'}) in "
          f"{time.monotonic() - start:.1f} s")
    if argv[0] == "boot":
        guest = Guest(image, deb)
        try:
            start = time.monotonic()
            guest.start()
            print(f"booted in {time.monotonic() - start:.1f} s")
            for cmd in argv[2:]:
                rc, out = guest.run(cmd, check=False, timeout=300)
                print(f"$ {cmd}  [rc {rc}]\n{out}")
        finally:
            guest.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
