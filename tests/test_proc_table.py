"""The pass over /proc that the daemon's sampler and role scanner share
(ProcTable): the same answers as reading every file each time, for fewer
reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.proc_evidence import ProcessScanner
from hosttune.agent.sense.telemetry.processes import PF_KTHREAD, ProcTable, find_ai_processes
from tests.test_proc_evidence import TORCH_MAPS, Tree, stat_line

FIXTURES = Path(__file__).parent / "fixtures"
TREES = [FIXTURES / "telemetry" / "two-node",
         *sorted(p for p in (FIXTURES / "hosts").iterdir() if (p / "proc").is_dir())]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("tree", TREES, ids=lambda p: p.name)
def test_finder_with_a_table_equals_the_plain_finder(tree: Path) -> None:
    host = Host(tree)
    plain = find_ai_processes(host)
    table = ProcTable(host)
    assert find_ai_processes(host, table=table) == plain
    # a second pass, served from the maps cache, still the same
    assert find_ai_processes(host, table=table) == plain


def test_maps_is_read_again_only_when_the_process_changed(tmp_path: Path) -> None:
    # models: a torch process, a shell, and a python process that imports
    # torch late (its maps and its virtual size change)
    t = Tree(tmp_path)
    t.proc(100, "python", maps=TORCH_MAPS, cmdline="python")
    t.proc(200, "bash")
    t.proc(300, "python", maps="7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n")
    host = Host(tmp_path)
    clock = Clock()
    table = ProcTable(host, clock=clock)
    assert [p.pid for p in find_ai_processes(host, table=table)] == [100]
    assert table.maps_reads == 3
    clock.now += 5
    assert [p.pid for p in find_ai_processes(host, table=table)] == [100]
    assert table.maps_reads == 3  # nothing changed: no maps read
    # the late import: new mappings, a larger virtual size
    (tmp_path / "proc" / "300" / "maps").write_text(TORCH_MAPS)
    (tmp_path / "proc" / "300" / "stat").write_text(
        stat_line(300, "python").replace(f" {1 << 30} ", f" {2 << 30} "))
    clock.now += 5
    assert [p.pid for p in find_ai_processes(host, table=table)] == [100, 300]
    assert table.maps_reads == 4
    # pid 200 exits and its pid is reused by a torch process: another identity
    shutil.rmtree(tmp_path / "proc" / "200")
    t.proc(200, "python", maps=TORCH_MAPS, start=9000)
    clock.now += 5
    assert [p.pid for p in find_ai_processes(host, table=table)] == [100, 200, 300]
    assert table.maps_reads == 5
    assert find_ai_processes(host) == find_ai_processes(host, table=table)


def test_sampler_and_scanner_share_one_pass_per_sample(tmp_path: Path) -> None:
    # models: the daemon's sample where both the sampler's AI-process scan
    # and the role scanner's full scan run, then 5 s later a partial scan
    t = Tree(tmp_path)
    t.proc(100, "python", maps=TORCH_MAPS, io={"rchar": 1}, utime=10)
    for pid in range(1000, 1020):
        t.proc(pid, "bash")
    host = Host(tmp_path)
    clock = Clock()
    table = ProcTable(host, clock=clock)
    sc = ProcessScanner(host, full_every=5, table=table)
    found = find_ai_processes(host, table=table)
    evidence = sc.scan()
    assert table.passes == 1  # one listing and one stat read per pid for both
    assert table.maps_reads == 21  # each process's maps once, for both
    assert [p.pid for p in found] == [e.stat.pid for e in evidence] == [100]
    alone = ProcessScanner(host).scan()
    assert [(e.key, e.frameworks, e.rss_anon, e.anon_huge) for e in alone] == \
        [(e.key, e.frameworks, e.rss_anon, e.anon_huge) for e in evidence]
    clock.now += 5
    t.proc(100, "python", maps=TORCH_MAPS, io={"rchar": 1}, utime=60)
    partial = sc.scan()  # nobody took a pass this sample: the scanner's partial scan
    assert table.passes == 1 and [e.stat.utime for e in partial] == [60]
    # a reader never gets its own pass again, even within the same second
    clock.now += 0.1
    sc2 = ProcessScanner(host, table=table)
    sc2.scan()
    sc2.scan()
    assert table.passes == 3


def test_a_partial_scan_sees_a_new_member_of_a_chosen_job(tmp_path: Path) -> None:
    # models: a torch trainer that starts a loader worker between two full
    # scans, and an unrelated shell started at the same time
    t = Tree(tmp_path)
    t.proc(100, "python", maps=TORCH_MAPS, io={"rchar": 1}, utime=10)
    host = Host(tmp_path)
    clock = Clock()
    table = ProcTable(host, clock=clock)
    sc = ProcessScanner(host, full_every=5, table=table)
    assert [e.stat.pid for e in sc.scan()] == [100]
    t.proc(101, "python", maps=TORCH_MAPS, io={"rchar": 1}, utime=50, pgrp=100, ppid=100,
           start=2000)
    t.proc(300, "bash", utime=90, start=2000)
    t.proc(400, "kworker/0:2", cmdline="", flags=PF_KTHREAD, start=2000)
    clock.now += 5
    seen = sc.scan()  # partial: no pass over every pid
    assert table.passes == 1
    assert sorted(e.stat.pid for e in seen) == [100, 101]
    clock.now += 5
    assert sorted(e.stat.pid for e in sc.scan()) == [100, 101]
    # each new pid's stat read once, a kernel thread's too (-1: no job)
    assert sc._born == {101: 100, 300: 300, 400: -1}
