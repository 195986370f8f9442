"""Per-process evidence and role features on fixture /proc trees built here
(each test says what host it models): processes exiting mid-sample, pid
reuse, other users' unreadable entries, kernel threads."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.proc_evidence import (
    ProcessScanner,
    evidence_row,
    fd_kind,
    parse_net_sockets,
)
from hosttune.agent.sense.telemetry.processes import PF_KTHREAD, parse_stat
from hosttune.models import roles as R

HZ = 100


def stat_line(pid: int, comm: str, *, ppid: int = 1, pgrp: int | None = None,
              utime: int = 0, stime: int = 0, children: int = 0, threads: int = 1,
              start: int = 1000, rss_pages: int = 100, flags: int = 0) -> str:
    pgrp = pid if pgrp is None else pgrp
    # fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt
    # majflt cmajflt utime stime cutime cstime prio nice threads itreal start vsize rss
    rest = [
        "S", ppid, pgrp, pgrp, 0, -1, flags, 0, 0, 0, 0, utime, stime, children, 0, 20, 0,
        threads, 0, start, 1 << 30, rss_pages,
    ] + [0] * 30
    return f"{pid} ({comm}) " + " ".join(str(x) for x in rest) + "\n"


class Tree:
    """A /proc tree under a temporary root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "proc" / "net").mkdir(parents=True)
        self.uptime(100.0)
        (root / "proc" / "stat").write_text("cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 1\ncpu1 1\n")
        (root / "proc" / "net" / "tcp").write_text(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
            "   uid  timeout inode\n"
            "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
            "     0        0 5001 1 0000000000000000 100 0 0 10 0\n"
            "   1: 0100007F:1F90 0100007F:C000 01 00000000:00000000 00:00000000 00000000"
            "     0        0 5002 1 0000000000000000 100 0 0 10 0\n")

    def uptime(self, seconds: float) -> None:
        (self.root / "proc" / "uptime").write_text(f"{seconds} 0\n")

    def proc(self, pid: int, comm: str, *, maps: str = "", cmdline: str | None = None,
             io: dict[str, int] | None = None, fds: dict[str, str] | None = None,
             status: str | None = None, **stat: int) -> Path:
        d = self.root / "proc" / str(pid)
        d.mkdir(exist_ok=True)
        (d / "stat").write_text(stat_line(pid, comm, **stat))
        (d / "cmdline").write_bytes((cmdline if cmdline is not None else comm).encode() + b"\0")
        (d / "maps").write_text(maps)
        (d / "status").write_text(status if status is not None else
                                  f"Name:\t{comm}\nRssAnon:\t  2048 kB\nRssFile:\t  1024 kB\n")
        (d / "smaps_rollup").write_text("AnonHugePages:\t 1024 kB\n")
        if io is not None:
            (d / "io").write_text("".join(f"{k}: {v}\n" for k, v in io.items()))
        fd_dir = d / "fd"
        if fds is not None:
            fd_dir.mkdir(exist_ok=True)
            for fd, target in fds.items():
                link = fd_dir / fd
                if link.is_symlink():
                    link.unlink()
                os.symlink(target, link)
        return d


TORCH_MAPS = ("7f00-7f01 r-xp 0 08:01 12 /usr/lib/python3/site-packages/torch/lib/"
              "libtorch_cpu.so\n7f02-7f03 r-xp 0 08:01 13 /usr/lib/python3/site-packages/"
              "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so\n")
IO = {"rchar": 1000, "wchar": 2000, "syscr": 10, "syscw": 20, "read_bytes": 0,
      "write_bytes": 4096}


def torch_job(root: Path, step: int, *, write_mib: int, to_disk: bool) -> None:
    """A torch job in a fixture tree (pgrp 4242: a trainer and its loader
    worker) that has used `step` seconds of CPU each and written `write_mib`
    MiB per step, to the disk or not (a socket, a pipe). No device file
    among its fds."""
    for pid in (4242, 4243):
        d = root / "proc" / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "stat").write_text(stat_line(pid, "python", pgrp=4242, utime=100 * step,
                                          start=500 + pid, rss_pages=50_000))
        (d / "cmdline").write_bytes(b"python\0train.py\0")
        (d / "maps").write_text(TORCH_MAPS)
        (d / "status").write_text("Name:\tpython\nRssAnon:\t 180000 kB\nRssFile:\t 20000 kB\n")
        written = (step * write_mib) << 20
        (d / "io").write_text(f"rchar: {step << 20}\nwchar: {written}\nsyscr: {step}\n"
                              f"syscw: {write_mib * step}\nread_bytes: 0\n"
                              f"write_bytes: {written if to_disk else 0}\n")

def test_parse_stat_comm_with_spaces_and_parens() -> None:
    st = parse_stat(7, stat_line(7, "a) (b c", utime=250, stime=50, threads=4, pgrp=3))
    assert st is not None
    assert (st.comm, st.utime, st.stime, st.threads, st.pgrp) == ("a) (b c", 250, 50, 4, 3)
    assert parse_stat(7, "7 (x) S 1") is None  # truncated: no exception
    k = parse_stat(2, stat_line(2, "kthreadd", flags=PF_KTHREAD))
    assert k is not None and k.kthread


def test_net_sockets_and_fd_kinds() -> None:
    text = ("sl local rem st\n 0: 0:0 0:0 0A 0:0 0:0 0 0 0 777 1\n"
            " 1: 0:0 0:0 01 0:0 0:0 0 0 0 778 1\n 2: 0:0 0:0 06 0:0 0:0 0 0 0 0 1\n")
    assert parse_net_sockets(text) == {777: "listen", 778: "connected"}
    assert fd_kind("socket:[12]") == "socket"
    assert fd_kind("pipe:[3]") == "pipe"
    assert fd_kind("/dev/nvidia0") == "accel"
    assert fd_kind("/dev/davinci3") == "accel"
    assert fd_kind("/dev/null") == "device"
    assert fd_kind("/data/x.bin") == "regular"
    assert fd_kind("anon_inode:[eventfd]") == "other"


def test_scanner_candidates_kernel_threads_and_unreadable(tmp_path: Path) -> None:
    # models: a torch server (listening and connected sockets), a busy
    # compiler of another user (no io, no fd: EACCES looks like absence), a
    # kernel thread, and an idle shell
    t = Tree(tmp_path)
    t.proc(100, "python", maps=TORCH_MAPS, io=IO, utime=10,
           fds={"0": "/dev/null", "3": "socket:[5001]", "4": "socket:[5002]",
                "5": "/dev/nvidia0", "6": "/data/model.bin", "7": "pipe:[9]"})
    t.proc(200, "cc1", utime=50)
    t.proc(2, "kthreadd", cmdline="", flags=PF_KTHREAD, utime=500)
    t.proc(300, "bash", io=IO)
    sc = ProcessScanner(Host(tmp_path))
    first = {e.stat.pid: e for e in sc.scan()}
    # python: AI by its maps; cc1: first seen, all its CPU counts as recent;
    # the shell has used none
    assert set(first) == {100, 200}
    t.proc(200, "cc1", utime=250)  # busy since the last scan
    t.proc(2, "kthreadd", cmdline="", flags=PF_KTHREAD, utime=900)  # never a candidate
    found = {e.stat.pid: e for e in sc.scan()}
    assert set(found) == {100, 200}
    torch = found[100]
    assert torch.frameworks == ("torch", "numpy")
    assert torch.fds == {"device": 1, "socket": 2, "accel": 1, "regular": 1, "pipe": 1}
    assert (torch.listening, torch.connected) == (1, 1)
    assert torch.rss_anon == 2048 * 1024 and torch.anon_huge == 1024 * 1024
    assert (torch.wchar, torch.syscw, torch.write_bytes) == (2000, 20, 4096)
    cc1 = found[200]
    assert not cc1.readable and cc1.fds == {} and cc1.frameworks == ()
    row = evidence_row(1.0, torch, HZ)
    assert row["frameworks"] == "torch;numpy" and row["fd_accel"] == 1


def test_a_busy_process_born_between_scans_is_examined(tmp_path: Path) -> None:
    # models: a shell script (idle itself) whose short pipeline stage starts
    # after the first scan and burns CPU before the second
    t = Tree(tmp_path)
    t.proc(500, "bash", io=IO)
    for pid in range(600, 610):
        t.proc(pid, "sshd", utime=5)
    sc = ProcessScanner(Host(tmp_path), top_cpu=2)
    sc.scan()
    for pid in range(600, 610):
        t.proc(pid, "sshd", utime=6)  # a tick each: busier than nothing
    t.proc(501, "sort", io=IO, utime=80, pgrp=500, ppid=500, start=2000)
    found = sorted(e.stat.pid for e in sc.scan())
    assert 501 in found and 500 in found  # the whole job, the idle shell included


def test_process_exiting_mid_sample_is_skipped(tmp_path: Path) -> None:
    # models: a torch process whose status vanished between the stat and
    # status reads (it exited mid-scan)
    t = Tree(tmp_path)
    d = t.proc(100, "python", maps=TORCH_MAPS, io=IO)
    (d / "status").unlink()
    assert ProcessScanner(Host(tmp_path)).scan() == []


def test_pid_reuse_is_another_process(tmp_path: Path) -> None:
    # models: pid 100 exits and the pid is reused by a new process that
    # started after the previous scan
    t = Tree(tmp_path)
    t.proc(100, "python", maps=TORCH_MAPS, io=IO, utime=1000, start=500)
    sc = ProcessScanner(Host(tmp_path))
    s1 = scan_of(t, sc, 1.0, 100.0)
    t.proc(100, "python", maps=TORCH_MAPS, io=IO, utime=30, start=10_050)
    s2 = scan_of(t, sc, 2.0, 101.0)
    assert list(s1.procs) == [(100, 500)] and list(s2.procs) == [(100, 10_050)]
    jw = R.job_window([s1, s2], 100)
    assert jw is not None
    # the new process started inside the interval: its 0.3 s count in full;
    # the old one's 10 s are not this interval's
    assert jw.cpu_cores == pytest.approx(0.3)
    # had the new one started before the previous scan, nothing could be counted
    t.proc(100, "python", maps=TORCH_MAPS, io=IO, utime=30, start=9_000)
    s3 = scan_of(t, ProcessScanner(Host(tmp_path)), 2.0, 101.0)
    assert R.job_window([s1, s3], 100) is None


def scan_of(t: Tree, sc: ProcessScanner, at: float, up: float) -> R.Scan:
    t.uptime(up)
    scan = R.Scan(t=at, host_busy=at, host_total=2 * at, ncpu=2, uptime=up)
    for ev in sc.scan():
        scan.procs[ev.key] = evidence_row(at, ev, HZ)
    return scan


def test_job_window_features_and_members_coming_and_going(tmp_path: Path) -> None:
    # models: a training job (pgrp 100) with a loader worker that exits in
    # the middle of the window
    t = Tree(tmp_path)
    sc = ProcessScanner(Host(tmp_path))
    t.proc(100, "python", maps=TORCH_MAPS, io=IO, utime=0, start=500)
    t.proc(101, "python", maps=TORCH_MAPS, io=IO, utime=0, start=600, pgrp=100, ppid=100)
    s1 = scan_of(t, sc, 0.0, 100.0)
    t.proc(100, "python", maps=TORCH_MAPS, io=IO, utime=100, start=500)
    t.proc(101, "python", maps=TORCH_MAPS, io=IO, utime=50, start=600, pgrp=100, ppid=100)
    s2 = scan_of(t, sc, 1.0, 101.0)
    import shutil
    shutil.rmtree(tmp_path / "proc" / "101")
    t.proc(100, "python", maps=TORCH_MAPS, io={**IO, "write_bytes": 4096 + (8 << 20)},
           utime=200, start=500)
    s3 = scan_of(t, sc, 2.0, 102.0)
    jw = R.job_window([s1, s2, s3], 100)
    assert jw is not None
    f = jw.named()
    assert f["cpu_cores"] == pytest.approx((1.0 + 0.5 + 1.0) / 2)
    assert f["spread_cpu_frac"] == pytest.approx(0.5 / 2.5)  # the worker's share
    assert f["fw_torch"] == 1.0 and f["fw_tensorflow"] == 0.0
    assert f["log_write_bps"] == pytest.approx(math.log1p((8 << 20) / 2))
    assert f["write_active_frac"] == 0.5 and f["write_peak_ratio"] == pytest.approx(2.0)
    assert jw.pids == (100,) and jw.active and jw.busy
    assert len(f) == len(R.FEATURES)


def test_storage_bytes_per_cpu_second_and_written_against_read(tmp_path: Path) -> None:
    # models: a pipeline stage reading 6 MiB and writing 2 MiB over 2 s on
    # half a core (pgrp 100), beside a sleeping job that flushes 1 MiB on no
    # measurable CPU (pgrp 300)
    t = Tree(tmp_path)
    sc = ProcessScanner(Host(tmp_path))
    mib = 1 << 20
    scans: list[R.Scan] = []
    for at, n in ((0.0, 0), (1.0, 1), (2.0, 2)):
        t.proc(100, "python", maps=TORCH_MAPS, utime=50 * n, start=500,
               io={**IO, "read_bytes": 3 * mib * n, "write_bytes": mib * n})
        t.proc(300, "python", maps=TORCH_MAPS, utime=0, start=700, pgrp=300,
               io={**IO, "write_bytes": mib * (n // 2)})
        scans.append(scan_of(t, sc, at, 100.0 + at))
    pipe = R.job_window(scans, 100)
    assert pipe is not None
    f = pipe.named()
    assert f["cpu_cores"] == pytest.approx(0.5)
    assert f["log_read_per_cpu"] == pytest.approx(math.log1p(3 * mib / 0.5))
    assert f["log_write_per_cpu"] == pytest.approx(math.log1p(mib / 0.5))
    assert f["log_storage_out_in"] == pytest.approx(math.log((mib + 1.0) / (3 * mib + 1.0)))
    sleeper = R.job_window(scans, 300)
    assert sleeper is not None
    g = sleeper.named()
    # no CPU to divide by: the per-CPU features say "no meaning", not infinity
    assert g["log_read_per_cpu"] == 0.0 and g["log_write_per_cpu"] == 0.0
    assert g["log_storage_out_in"] == pytest.approx(math.log(mib / 2 + 1.0))


def _job(cpu: float, io: float = 0.0, pgrp: int = 1) -> R.JobWindow:
    return R.JobWindow(pgrp=pgrp, leader="x", pids=(pgrp,), features=(0.0,) * len(R.FEATURES),
                       cpu_cores=cpu, io_bps=io, host_cpu_share=math.nan)


def test_compose_busy_non_ai_host_is_never_idle() -> None:
    bg = R.JobRole(_job(1.9), "background", "background", 0.9, ())
    assert R.compose([bg], host_cpu=0.95).label == "background"
    # a busy host whose busy work was never examined still is not idle
    assert R.compose([], host_cpu=0.9).label == "background"
    assert R.compose([], host_cpu=0.02).label == "idle"
    odd = R.JobRole(_job(1.0), "unknown", "training", 0.3, ())
    assert R.compose([odd], host_cpu=0.5).label == "unknown"
    quiet_ai = R.JobRole(_job(0.0), "inference_serving", "inference_serving", 0.9, ())
    assert R.compose([quiet_ai], host_cpu=0.01).label == "idle"
    ai = R.JobRole(_job(0.6, pgrp=2), "training", "training", 0.8, ())
    v = R.compose([bg, ai], host_cpu=1.0)
    assert v.label == "training" and "pgrp 2" in v.reason


def test_partial_scans_read_only_the_chosen_groups(tmp_path: Path) -> None:
    # models: a torch job and 50 idle shells; with full_every 3 the scans
    # between full ones read the torch job's stat alone
    t = Tree(tmp_path)
    t.proc(100, "python", maps=TORCH_MAPS, io=IO, utime=10, fds={"0": "/dev/null"})
    for pid in range(1000, 1050):
        t.proc(pid, "bash")
    sc = ProcessScanner(Host(tmp_path), full_every=3)
    assert [e.stat.pid for e in sc.scan()] == [100]
    t.proc(1001, "bash", utime=500)  # busy now, but only a full scan can see it
    t.proc(100, "python", maps=TORCH_MAPS, io=IO, utime=20, fds={"0": "/dev/null"})
    d = tmp_path / "proc" / "100"
    (d / "smaps_rollup").write_text("AnonHugePages:\t 4096 kB\n")
    os.symlink("socket:[5001]", d / "fd" / "9")
    second = sc.scan()
    assert [(e.stat.pid, e.stat.utime) for e in second] == [(100, 20)]
    # a partial scan reads counters only: huge pages and fds are the full scan's
    assert second[0].anon_huge == 1024 * 1024 and "socket" not in second[0].fds
    assert [e.stat.pid for e in sc.scan()] == [100]
    full = sc.scan()
    assert sorted(e.stat.pid for e in full) == [100, 1001]  # the next full scan
    torch = next(e for e in full if e.stat.pid == 100)
    assert torch.fds["socket"] == 1 and torch.listening == 1
    # smaps_rollup (costly for big processes) only at every 4th full scan
    assert sc.rollup_every == 4 and torch.anon_huge == 1024 * 1024
    for _ in range(3 * 3):
        last = sc.scan()
    assert next(e for e in last if e.stat.pid == 100).anon_huge == 4096 * 1024


def test_roles_render_names_each_active_job_with_its_evidence() -> None:
    from hosttune.agent.service.render.roles import verdict_dict, verdict_lines

    feats = dict.fromkeys(R.FEATURES, 0.0)
    feats["fw_torch"] = 1.0
    job = R.JobWindow(pgrp=4242, leader="python", pids=(4242, 4250),
                      features=tuple(feats.values()), cpu_cores=1.5, io_bps=2 * (1 << 20),
                      host_cpu_share=0.7)
    quiet = R.JobWindow(pgrp=7, leader="sshd", pids=(7,), features=(0.0,) * len(R.FEATURES),
                        cpu_cores=0.0, io_bps=0.0, host_cpu_share=0.0)
    roles = [R.JobRole(job, "training", "training", 0.93, (("fw_torch", 1.0, 0.12),)),
             R.JobRole(quiet, "background", "background", 0.99, ())]
    v = R.compose(roles, host_cpu=0.8)
    d = verdict_dict(v)
    assert d["label"] == "training"
    assert d["roles"][0]["frameworks"] == ["torch"] and d["roles"][0]["pids"] == [4242, 4250]
    text = "\n".join(verdict_lines(v))
    assert "pgrp 4242" in text and "training 0.93" in text and "fw_torch=1" in text
    assert "sshd" not in text and "1 quiet job" in text


# Mapped-file lines as /proc/PID/maps showed them for the recorded programs
# (jaxlib 0.10.2: libjax_common.so and jaxlib/_jax.so, no xla_extension any
# more; tensorflow-cpu 2.21.0: libtensorflow_framework.so.2, libtensorflow_cc.so.2,
# _pywrap_tensorflow_internal.so), and the older jaxlib layout (<= 0.4:
# jaxlib/xla_extension.so) a site may still run.
_SITE = "/srv/venv/lib/python3.11/site-packages"
JAX_MAPS = "".join(
    f"7f{i:02x}00-7f{i:02x}ff r-xp 0 08:01 {40 + i} {_SITE}/{path}\n"
    for i, path in enumerate((
        "jaxlib/libjax_common.so", "jaxlib/_jax.so", "jaxlib/cpu/_lapack.so",
        "jaxlib/mlir/_mlir_libs/_mlir.so",
        "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so")))
OLD_JAX_MAPS = f"7f00-7f01 r-xp 0 08:01 50 {_SITE}/jaxlib/xla_extension.so\n"
TF_MAPS = "".join(
    f"7e{i:02x}00-7e{i:02x}ff r-xp 0 08:01 {60 + i} {_SITE}/{path}\n"
    for i, path in enumerate((
        "tensorflow/libtensorflow_framework.so.2", "tensorflow/libtensorflow_cc.so.2",
        "tensorflow/python/_pywrap_tensorflow_internal.so",
        "tensorflow/lite/python/interpreter_wrapper/"
        "_pywrap_tensorflow_interpreter_wrapper.so")))


def test_jax_and_tensorflow_processes_are_known_by_their_maps(tmp_path: Path) -> None:
    # models: a JAX trainer, an old-jaxlib job, a TensorFlow server (its
    # C++ libraries only, no numpy line) and a plain Python process linked
    # to libc alone; after the first scan none of them uses CPU
    t = Tree(tmp_path)
    t.proc(100, "python3", maps=JAX_MAPS, io=IO, utime=10)
    t.proc(200, "python3", maps=OLD_JAX_MAPS, io=IO, utime=10)
    t.proc(300, "python3", maps=TF_MAPS, io=IO, utime=10)
    t.proc(400, "python3", io=IO, utime=10,
           maps="7f00-7f01 r-xp 0 08:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    sc = ProcessScanner(Host(tmp_path))
    first = {e.stat.pid: e for e in sc.scan()}
    assert first[400].frameworks == ()
    # idle now: the framework processes stay candidates by their maps alone,
    # the plain one drops out
    found = {e.stat.pid: e for e in sc.scan()}
    assert set(found) == {100, 200, 300}
    assert found[100].frameworks == ("jax", "numpy")
    assert found[200].frameworks == ("jax",)
    assert found[300].frameworks == ("tensorflow",)
    assert evidence_row(1.0, found[300], HZ)["frameworks"] == "tensorflow"
