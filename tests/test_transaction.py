"""Transactions on fixture trees: journal first, verify, restore on failure,
recovery after SIGKILL, rollback, ownership, lock, broken journals."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hosttune.agent.sense.errors import HostWriteError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.ownership import Owner, owner_of
from hosttune.tuners.journal import Journal, JournalError, LockTimeout
from hosttune.tuners.knobs import Change, Plan
from hosttune.tuners.owners import owners
from hosttune.tuners.transaction import apply_plan, history, recover, rollback

KNOBS = {"vm/swappiness": "60", "vm/dirty_ratio": "20", "vm/dirty_background_ratio": "10",
         "kernel/numa_balancing": "0"}


def make_host(root: Path) -> Host:
    for name, value in KNOBS.items():
        path = root / "proc/sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    thp = root / "sys/kernel/mm/transparent_hugepage/enabled"
    thp.parent.mkdir(parents=True)
    thp.write_text("always [madvise] never\n")
    (root / "proc/meminfo").write_text("MemTotal:       24000000 kB\n")
    return Host(root)


def sysctl(root: Path, name: str) -> str:
    return (root / "proc/sys" / name).read_text().strip()


def plan(*pairs: tuple[str, str], source: str = "admin") -> Plan:
    return Plan([Change(k, v, reason="test", source=source) for k, v in pairs], workload="test")


def test_apply_verify_and_rollback(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host")
    root = tmp_path / "host"
    with Journal(tmp_path / "j.db") as journal:
        result = apply_plan(host, plan(("sysctl:vm.swappiness", "10"),
                                       ("sysctl:vm.dirty_ratio", "30")), journal, uid=0)
        assert result.ok and result.txn_id == 1, result.message
        assert [s.status for s in result.steps] == ["applied", "applied"]
        assert (sysctl(root, "vm/swappiness"), sysctl(root, "vm/dirty_ratio")) == ("10", "30")
        second = apply_plan(host, plan(("sysctl:vm.swappiness", "5")), journal)
        assert second.ok and second.txn_id == 2
        assert journal.baseline() == {"sysctl:vm.swappiness": "60", "sysctl:vm.dirty_ratio": "20"}
        # Back to how transaction 1 left the host.
        back = rollback(host, journal, 1)
        assert back.ok, back.message
        assert sysctl(root, "vm/swappiness") == "10" and sysctl(root, "vm/dirty_ratio") == "30"
        dry = rollback(host, journal, baseline=True, dry_run=True)
        assert {(s.knob, s.before, s.after, s.status) for s in dry.steps} == {
            ("sysctl:vm.swappiness", "10", "60", "would change"),
            ("sysctl:vm.dirty_ratio", "30", "20", "would change")}
        assert sysctl(root, "vm/swappiness") == "10"
        base = rollback(host, journal, "baseline")
        assert base.ok and sysctl(root, "vm/swappiness") == "60"
        assert sysctl(root, "vm/dirty_ratio") == "20"
        kinds = [(t.id, t.kind, t.state) for t in history(journal)]
        assert kinds == [(1, "apply", "committed"), (2, "apply", "committed"),
                         (3, "rollback", "committed"), (4, "rollback", "committed")]
        assert history(journal)[0].steps[0].reason == "test"
        # "before:2" undoes 2 and what followed: as transaction 1 left it.
        assert rollback(host, journal, "before:2").ok
        assert sysctl(root, "vm/swappiness") == "10"


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host")
    with Journal(tmp_path / "j.db") as journal:
        result = apply_plan(host, plan(("sysctl:vm.swappiness", "10"), ("thp:enabled", "madvise")),
                            journal, dry_run=True)
        assert result.ok and result.dry_run and result.txn_id is None
        assert [(s.before, s.after, s.status) for s in result.steps] == [
            ("60", "10", "would change"), ("madvise", "madvise", "unchanged")]
        assert history(journal) == []
    assert sysctl(tmp_path / "host", "vm/swappiness") == "60"


def test_refused_write_mid_plan_restores_what_came_before(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    # The third knob is read-only (as the kernel's read-only sysctls are).
    (root / "proc/sys/kernel/numa_balancing").chmod(0o444)
    if os.access(root / "proc/sys/kernel/numa_balancing", os.W_OK) and os.geteuid() == 0:
        # root ignores file modes: make the write fail the way EACCES does instead.
        class ReadOnly(Host):
            def write_text(self, path: str, value: str) -> None:
                if path.endswith("numa_balancing"):
                    raise HostWriteError(path, "kernel refused write: Permission denied",
                                         errno=13)
                super().write_text(path, value)
        host = ReadOnly(root)
    with Journal(tmp_path / "j.db") as journal:
        result = apply_plan(host, plan(("sysctl:vm.swappiness", "10"),
                                       ("sysctl:vm.dirty_ratio", "30"),
                                       ("sysctl:kernel.numa_balancing", "1"),
                                       ("sysctl:vm.dirty_background_ratio", "5")), journal)
        assert not result.ok and result.failed_step == 3
        assert "Permission denied" in (result.error or "")
        assert [s.status for s in result.steps] == ["restored", "restored", "restored",
                                                    "not reached"]
        assert "every knob touched was restored" in result.message
        assert history(journal)[0].state == "rolled_back"
    assert [sysctl(root, k) for k in KNOBS] == list(KNOBS.values())


def test_read_back_mismatch_is_a_failure(tmp_path: Path) -> None:
    root = tmp_path / "host"

    class Clamping(Host):
        # Like a kernel that clamps a value instead of refusing it.
        def write_text(self, path: str, value: str) -> None:
            super().write_text(path, "25" if value == "30" else value)

    host = Clamping(root)
    make_host(root)
    with Journal(tmp_path / "j.db") as journal:
        result = apply_plan(host, plan(("sysctl:vm.swappiness", "10"),
                                       ("sysctl:vm.dirty_ratio", "30")), journal)
    assert not result.ok and "read back '25' after writing '30'" in (result.error or "")
    assert sysctl(root, "vm/swappiness") == "60" and sysctl(root, "vm/dirty_ratio") == "20"


def test_validation_refuses_the_whole_plan(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    with Journal(tmp_path / "j.db") as journal:
        result = apply_plan(host, plan(("sysctl:vm.swappiness", "10"),
                                       ("sysctl:vm.nope", "1")), journal)
        assert not result.ok and "sysctl:vm.nope" in result.message
        assert "nothing changed" in result.message
        assert history(journal)[0].state == "refused"
        # The allowlist binds expert rules, models and the optimizer, not the admin.
        auto = apply_plan(host, plan(("sysctl:vm.swappiness", "150"), source="model"), journal)
        assert not auto.ok and "above the allowed maximum 100" in auto.message
        skipped = apply_plan(host, plan(("sysctl:vm.swappiness", "150"),
                                        ("sysctl:vm.dirty_ratio", "30"), source="expert"),
                             journal, skip_refused=True)
        assert skipped.ok and [s.status for s in skipped.steps] == ["refused", "applied"]
    assert sysctl(root, "vm/swappiness") == "60"


def test_admin_owned_and_changed_by_someone_else(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    conf = root / "etc/sysctl.d/90-site.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# site\nvm.swappiness = 30\n")
    with Journal(tmp_path / "j.db") as journal:
        result = apply_plan(host, plan(("sysctl:vm.swappiness", "10")), journal)
        assert not result.ok
        assert "owned by the administrator: set in /etc/sysctl.d/90-site.conf:2" in result.message
        assert apply_plan(host, plan(("sysctl:vm.swappiness", "10")), journal, force=True).ok
        assert apply_plan(host, plan(("sysctl:vm.dirty_ratio", "30")), journal).ok
        (root / "proc/sys/vm/dirty_ratio").write_text("40\n")  # the admin, by hand
        again = apply_plan(host, plan(("sysctl:vm.dirty_ratio", "35")), journal)
        assert not again.ok and "changed by someone else" in again.message
        back = rollback(host, journal, baseline=True)
        left = {s.knob: s.status for s in back.steps}
        assert left == {"sysctl:vm.dirty_ratio": "left", "sysctl:vm.swappiness": "applied"}
        assert sysctl(root, "vm/dirty_ratio") == "40" and sysctl(root, "vm/swappiness") == "60"
        assert rollback(host, journal, baseline=True, force=True).ok
        assert sysctl(root, "vm/dirty_ratio") == "20"


def test_ownership_order(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    for path, text in {
        "usr/lib/sysctl.d/50-default.conf": ("vm.swappiness = 1\n"
                                             "net/ipv4/conf/eth0.10/rp_filter=1\n"),
        "etc/sysctl.d/50-default.conf": "; shadows the /usr/lib file of the same name\n",
        "run/sysctl.d/60-x.conf": "-vm.dirty_ratio = 5\nnet.ipv4.conf.*.rp_filter = 2\n",
        "usr/lib/sysctl.d/70-late.conf": "vm.dirty_ratio = 6\n",
        "etc/sysctl.conf": "kernel.numa_balancing=0\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    (root / "etc/sysctl.d/99-sysctl.conf").symlink_to("../sysctl.conf")
    (root / "proc/cmdline").write_text("ro hugepagesz=1G hugepages=4 hugepages=64 "
                                       "transparent_hugepage=never -- hugepages=9\n")
    owned = owners(host)
    assert owner_of("sysctl:vm.swappiness", owned) is None  # shadowed by an empty /etc file
    assert str(owner_of("sysctl:vm.dirty_ratio", owned)) == (
        "/usr/lib/sysctl.d/70-late.conf:1 (vm.dirty_ratio = 6)")
    assert where("sysctl:net.ipv4.conf.eth0/10.rp_filter", owned) == (
        "/run/sysctl.d/60-x.conf:2")
    assert where("sysctl:kernel.numa_balancing", owned) == "/etc/sysctl.d/99-sysctl.conf:1"
    assert str(owner_of("hugepages:1048576kB", owned)) == "kernel command line (hugepages=4)"
    assert where("hugepages:node1:2048kB", owned) == "hugepages=64"
    assert where("thp:enabled", owned) == "transparent_hugepage=never"
    assert owner_of("thp:defrag", owned) is None


def where(knob: str, owned: dict[str, Owner]) -> str | None:
    owner = owner_of(knob, owned)
    return None if owner is None else owner.where


def _child(tmp_path: Path, kill_at: str, seq: int) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        import os, signal
        from hosttune.agent.sense.host import Host
        from hosttune.tuners.knobs import Change, Plan
        from hosttune.tuners.journal import Journal
        from hosttune.tuners.transaction import apply_plan

        def hook(step, seq, change):
            if step == {kill_at!r} and seq == {seq}:
                os.kill(os.getpid(), signal.SIGKILL)

        plan = Plan([Change("sysctl:vm.swappiness", "10"), Change("sysctl:vm.dirty_ratio", "30"),
                     Change("sysctl:vm.dirty_background_ratio", "5")])
        apply_plan(Host({str(tmp_path / 'host')!r}), plan, Journal({str(tmp_path / 'j.db')!r}),
                   hook=hook)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("kill_at", "seq", "written"), [
    ("journalled", 2, {"vm/swappiness": "10", "vm/dirty_ratio": "20"}),  # before the 2nd write
    ("written", 2, {"vm/swappiness": "10", "vm/dirty_ratio": "30"}),  # after it, unverified
    ("verified", 3, {"vm/swappiness": "10", "vm/dirty_background_ratio": "5"}),
])
def test_sigkill_then_recover_restores_the_baseline(tmp_path: Path, kill_at: str, seq: int,
                                                   written: dict[str, str]) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    proc = _child(tmp_path, kill_at, seq)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    for name, value in written.items():
        assert sysctl(root, name) == value
    with Journal(tmp_path / "j.db") as journal:
        assert [t.state for t in journal.transactions()] == ["open"]
        results = recover(host, journal)
        assert len(results) == 1 and results[0].ok, results[0].message
        assert "left unfinished by pid" in results[0].message
        assert [t.state for t in journal.transactions()] == ["recovered"]
        assert recover(host, journal) == []
    assert [sysctl(root, k) for k in KNOBS] == list(KNOBS.values())


def test_recover_leaves_a_knob_someone_else_changed(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    assert _child(tmp_path, "verified", 2).returncode == -signal.SIGKILL
    (root / "proc/sys/vm/dirty_ratio").write_text("45\n")
    with Journal(tmp_path / "j.db") as journal:
        (result,) = recover(host, journal)
    statuses = {s.knob: s.status for s in result.steps}
    assert statuses == {"sysctl:vm.dirty_ratio": "left", "sysctl:vm.swappiness": "restored"}
    assert sysctl(root, "vm/dirty_ratio") == "45" and sysctl(root, "vm/swappiness") == "60"


def test_apply_recovers_first(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    assert _child(tmp_path, "written", 1).returncode == -signal.SIGKILL
    with Journal(tmp_path / "j.db") as journal:
        assert apply_plan(host, plan(("sysctl:vm.dirty_ratio", "25")), journal).ok
        assert [t.state for t in journal.transactions()] == ["recovered", "committed"]
    assert sysctl(root, "vm/swappiness") == "60" and sysctl(root, "vm/dirty_ratio") == "25"


def test_corrupt_journal_refuses(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    bad = tmp_path / "j.db"
    bad.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    with pytest.raises(JournalError, match=r"journal .*j\.db: corrupt or not a hosttune journal"):
        Journal(bad)
    # Damage a real journal's pages after it has history.
    good = tmp_path / "k.db"
    with Journal(good) as journal:
        assert apply_plan(host, plan(("sysctl:vm.swappiness", "10")), journal).ok
        journal.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(good.read_bytes())
    data[4096:8192] = b"\xff" * 4096
    good.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="nothing was changed"), Journal(good) as journal:
        apply_plan(host, plan(("sysctl:vm.swappiness", "20")), journal)
    assert sysctl(root, "vm/swappiness") == "10"


def test_newer_schema_refused(tmp_path: Path) -> None:
    Journal(tmp_path / "j.db").close()
    db = sqlite3.connect(tmp_path / "j.db")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="newer hosttune"):
        Journal(tmp_path / "j.db")


@pytest.mark.kernel
def test_journal_disk_full_refuses(tmp_path: Path) -> None:
    """A tiny tmpfs in a private mount namespace holds the journal; once it is
    full, apply refuses and changes nothing."""
    root = tmp_path / "host"
    make_host(root)
    mnt = tmp_path / "small"
    mnt.mkdir()
    code = textwrap.dedent(f"""
        import os, sys
        from hosttune.agent.sense.host import Host
        from hosttune.tuners.knobs import Change, Plan
        from hosttune.tuners.journal import Journal, JournalError
        from hosttune.tuners.transaction import apply_plan
        j = Journal({str(mnt / 'journal.db')!r})
        fd = os.open({str(mnt / 'filler')!r}, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
        try:
            apply_plan(Host({str(root)!r}), Plan([Change("sysctl:vm.swappiness", "10")]), j)
        except JournalError as exc:
            print("REFUSED", exc); sys.exit(0)
        sys.exit("applied on a full disk")
    """)
    (tmp_path / "child.py").write_text(code)
    script = (f"mount -t tmpfs -o size=256k tmpfs {mnt} && "
              f"{sys.executable} {tmp_path / 'child.py'}")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"REFUSED journal {mnt}/journal.db: cannot write" in proc.stdout
    assert "disk is full" in proc.stdout
    assert sysctl(root, "vm/swappiness") == "60"


def test_two_processes_never_interleave(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = make_host(root)
    ready, release = tmp_path / "ready", tmp_path / "release"
    code = textwrap.dedent(f"""
        import os, pathlib, time
        from hosttune.agent.sense.host import Host
        from hosttune.tuners.knobs import Change, Plan
        from hosttune.tuners.journal import Journal
        from hosttune.tuners.transaction import apply_plan

        def hold(step, seq, change):
            # Stop inside the transaction, its first knob written, the lock held.
            if step == "verified" and seq == 1:
                pathlib.Path({str(ready)!r}).write_text(str(os.getpid()))
                deadline = time.monotonic() + 30
                while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
                    time.sleep(0.02)

        plan = Plan([Change("sysctl:vm.swappiness", "10"), Change("sysctl:vm.dirty_ratio", "30")])
        result = apply_plan(Host({str(root)!r}), plan, Journal({str(tmp_path / 'j.db')!r}),
                            hook=hold)
        assert result.ok, result.message
    """)
    first = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        with Journal(tmp_path / "j.db") as journal:
            start = time.monotonic()
            with pytest.raises(LockTimeout,
                               match=rf"another hosttune process \(pid {first.pid}\) is changing"):
                apply_plan(host, plan(("sysctl:vm.swappiness", "20")), journal, lock_timeout=0.3)
            assert time.monotonic() - start >= 0.3
            # The half-done transaction of the live process was not "recovered".
            assert [t.state for t in journal.transactions()] == ["open"]
            assert sysctl(root, "vm/swappiness") == "10"
            release.touch()
            result = apply_plan(host, plan(("sysctl:vm.swappiness", "20")), journal,
                                lock_timeout=30)
            assert first.wait(30) == 0
            assert result.ok, result.message
            txns = journal.transactions()
            assert [(t.id, t.state, [s.knob for s in t.steps]) for t in txns] == [
                (1, "committed", ["sysctl:vm.swappiness", "sysctl:vm.dirty_ratio"]),
                (2, "committed", ["sysctl:vm.swappiness"])]
            # The second began only after the first had finished.
            assert txns[1].started >= (txns[0].finished or 0)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert sysctl(root, "vm/swappiness") == "20" and sysctl(root, "vm/dirty_ratio") == "30"


def test_hugepage_shortfall_is_a_failed_step(tmp_path: Path) -> None:
    root = tmp_path / "host"
    make_host(root)
    pool = root / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    pool.parent.mkdir(parents=True)
    pool.write_text("0\n")

    class Fragmented(Host):
        def write_text(self, path: str, value: str) -> None:
            if path.endswith("nr_hugepages"):
                value = str(min(int(value), 3))
            super().write_text(path, value)

    with Journal(tmp_path / "j.db") as journal:
        result = apply_plan(Fragmented(root), plan(("sysctl:vm.swappiness", "10"),
                                                   ("hugepages:2048kB", "8")), journal)
    assert not result.ok and result.failed_step == 2
    assert "asked for 8 pages, the kernel gave 3" in (result.error or "")
    assert pool.read_text().strip() == "0" and sysctl(root, "vm/swappiness") == "60"
