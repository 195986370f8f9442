"""CPUs set apart at boot (isolcpus=, nohz_full=, rcu_nocbs=, irqaffinity=):
parsing, the kernel's own view, and the tuners and transactions that keep
interrupts and placed processes off them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hosttune.agent.sense.bootparams import split_params
from hosttune.agent.sense.cpulist import parse_kernel_cpulist
from hosttune.agent.sense.errors import ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.isolation import cpu_isolation, explain_reserved
from hosttune.agent.sense.ownership import owner_of
from hosttune.tuners.irq import IrqTuner
from hosttune.tuners.journal import Journal
from hosttune.tuners.knobs import Change, Plan
from hosttune.tuners.numa import NumaTuner
from hosttune.tuners.owners import owners
from hosttune.tuners.transaction import apply_plan, rollback


def put(root: Path, path: str, text: str) -> None:
    file = root / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)


def host_with(root: Path, cmdline: str, *, cpus: str = "0-15", **sysfs: str) -> Host:
    put(root, "/proc/cmdline", f"BOOT_IMAGE=/vmlinuz ro {cmdline} -- isolcpus=1\n")
    put(root, "/sys/devices/system/cpu/online", f"{cpus}\n")
    put(root, "/sys/devices/system/cpu/possible", f"{cpus}\n")
    for name, text in sysfs.items():
        put(root, f"/sys/devices/system/cpu/{name}", text)
    return Host(root)


def test_kernel_cpulist_forms() -> None:
    assert parse_kernel_cpulist("1,2,10-12", last_cpu=15) == (1, 2, 10, 11, 12)
    assert parse_kernel_cpulist("8-N", last_cpu=11) == (8, 9, 10, 11)
    assert parse_kernel_cpulist("ALL", last_cpu=3) == (0, 1, 2, 3)
    # from each group of 4, the first 2 (kernel-parameters.rst, "cpu lists")
    assert parse_kernel_cpulist("0-15:2/4", last_cpu=15) == (0, 1, 4, 5, 8, 9, 12, 13)
    for bad in ("3-1", "x", "0-7:3/2", "0-7:1/0", "5:1/2"):
        with pytest.raises(ParseError):
            parse_kernel_cpulist(bad, last_cpu=15)
    with pytest.raises(ParseError, match="bad CPU list"):
        parse_kernel_cpulist("1-N", last_cpu=None)


def test_params_split_like_the_kernel() -> None:
    assert split_params('ro  a="x y" isolcpus=8-15 -- isolcpus=1') == [
        "ro", "a=x y", "isolcpus=8-15"]


@pytest.mark.parametrize(("cmdline", "cpus", "param"), [
    ("isolcpus=8-15", "8-15", "isolcpus=8-15"),
    ("isolcpus=domain,8-15", "8-15", "isolcpus=domain,8-15"),
    ("isolcpus=managed_irq,8-15", "8-15", "isolcpus=managed_irq,8-15"),
    ("isolcpus=nohz,domain,managed_irq,8-N", "8-15", "isolcpus=nohz,domain,managed_irq,8-N"),
    ("nohz_full=4-7,12", "4-7,12", "nohz_full=4-7,12"),
    ("rcu_nocbs=2-3", "2-3", "rcu_nocbs=2-3"),
    ('isolcpus="managed_irq,0-15:1/4"', "0,4,8,12", "isolcpus=managed_irq,0-15:1/4"),
])
def test_each_parameter_reserves_its_cpus(tmp_path: Path, cmdline: str, cpus: str,
                                          param: str) -> None:
    iso = cpu_isolation(host_with(tmp_path, cmdline))
    (res,) = iso.reserved
    assert res.param == param and res.kind == "cmdline"
    assert iso.cpus == frozenset(parse_kernel_cpulist(cpus, last_cpu=15))
    assert iso.explain().endswith(f"isolated by {param} on the kernel command line")
    assert not iso.notes


def test_explain_names_the_parameter_of_each_cpu(tmp_path: Path) -> None:
    iso = cpu_isolation(host_with(tmp_path, "isolcpus=managed_irq,8-15 nohz_full=14-15,6"))
    assert iso.explain([8, 9, 10, 11, 12, 13, 14, 15, 2]) == (
        "CPUs 8-15 are isolated by isolcpus=managed_irq,8-15 on the kernel command line")
    assert iso.explain([9, 6]) == (
        "CPU 6 is isolated by nohz_full=14-15,6 on the kernel command line; "
        "CPU 9 is isolated by isolcpus=managed_irq,8-15 on the kernel command line")
    assert iso.explain([0, 1]) == ""
    assert explain_reserved(iso.by_cpu(), [6]) == iso.explain([6])


def test_ignored_parameters_are_notes(tmp_path: Path) -> None:
    iso = cpu_isolation(host_with(
        tmp_path, "isolcpus=bogus,8-15 nohz_full=9-x rcu_nocbs=all irqaffinity=0-1"))
    assert iso.cpus == frozenset()
    text = " | ".join(iso.notes)
    assert "isolcpus=bogus,8-15" in text and "unknown flag" in text
    assert "nohz_full=9-x" in text and "ignores it" in text
    assert "rcu_nocbs=all" in text and "every CPU" in text
    assert iso.irq_default is not None and iso.irq_default.cpus == (0, 1)


def test_the_kernel_view_wins(tmp_path: Path) -> None:
    # The kernel kept CPU 8 as housekeeping and lists 9-15; nohz_full reads
    # "(null)" when it is off: the command line's nohz_full= did not take.
    host = host_with(tmp_path, "isolcpus=8-15 nohz_full=4-5 isolcpus=managed_irq,2",
                     isolated="9-15\n", nohz_full="(null)\n")
    iso = cpu_isolation(host)
    assert iso.cpus == frozenset({2, *range(9, 16)})
    assert iso.explain([9]).endswith("by isolcpus=8-15 on the kernel command line")
    assert any("CPU 8 that the kernel does not list in /sys/devices/system/cpu/isolated"
               in n for n in iso.notes)
    assert any("nohz_full=4-5" in n for n in iso.notes)
    # CPUs only the kernel lists (a cpuset partition, say) are named after its file
    put(tmp_path, "/sys/devices/system/cpu/isolated", "9-15,20\n")
    assert "according to the kernel (/sys/devices/system/cpu/isolated)" in (
        cpu_isolation(host).explain([20]))


def test_no_command_line_no_isolation(tmp_path: Path) -> None:
    iso = cpu_isolation(Host(tmp_path))
    assert iso.cpus == frozenset() and iso.irq_default is None and not iso.notes


def irq_host(root: Path, cmdline: str) -> Host:
    host = host_with(root, cmdline)
    put(root, "/proc/irq/41/smp_affinity_list", "0-15\n")
    put(root, "/proc/irq/42/smp_affinity_list", "4-5\n")
    return host


def test_irq_tuner_names_isolated_cpus(tmp_path: Path) -> None:
    tuner = IrqTuner(irq_host(tmp_path, "isolcpus=managed_irq,8-15"))
    assert tuner.conflict("41", "0-7", "0-15") is None
    assert tuner.conflict("41", "0-15", "0-15") is None  # left where it is
    why = tuner.conflict("42", "6-9", "4-5")
    assert why is not None and "IRQ 42" in why
    assert "CPUs 8-9 are isolated by isolcpus=managed_irq,8-15 on the kernel command line" in why


def test_transaction_keeps_irqs_off_isolated_cpus(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = irq_host(root, "isolcpus=managed_irq,8-15")
    with Journal(tmp_path / "j.db") as journal:
        for source in ("expert", "model", "optimizer", "admin"):
            plan = Plan([Change("irq:42", "6-9", source=source)])
            result = apply_plan(host, plan, journal, uid=0)
            assert not result.ok and "isolcpus=managed_irq,8-15" in result.message
            # --force is an admin's explicit approval; the rules never get it
            forced = apply_plan(host, plan, journal, uid=0, force=True)
            assert forced.ok is (source == "admin"), forced.message
            if forced.ok:
                # undoing a change is never refused: rollback puts 4-5 back
                assert rollback(host, journal, baseline=True).ok
        assert (root / "proc/irq/42/smp_affinity_list").read_text().strip() == "4-5"
        ok = apply_plan(host, Plan([Change("irq:42", "2-3", source="expert")]), journal, uid=0)
        assert ok.ok, ok.message


def test_irqaffinity_makes_irq_affinity_the_admins(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = irq_host(root, "irqaffinity=0-3")
    assert str(owner_of("irq:41", owners(host))) == "kernel command line (irqaffinity=0-3)"
    with Journal(tmp_path / "j.db") as journal:
        plan = Plan([Change("irq:42", "2-3", source="expert")])
        refused = apply_plan(host, plan, journal, uid=0)
        assert not refused.ok
        assert "owned by the administrator: set in kernel command line (irqaffinity=0-3)" in (
            refused.message)
        assert apply_plan(host, plan, journal, uid=0, force=True).ok


def numa_host(root: Path, cmdline: str, affinity: str) -> Host:
    host = host_with(root, cmdline, cpus="0-15")
    put(root, "/sys/devices/system/node/node0/cpulist", "0-15\n")
    put(root, "/proc/77/status", f"Name:\tpython\nCpus_allowed_list:\t{affinity}\n")
    return host


def test_numa_tuner_moves_no_process_onto_isolated_cpus(tmp_path: Path) -> None:
    tuner = NumaTuner(numa_host(tmp_path, "nohz_full=12-15", "0-15"))
    assert tuner.conflict("pid:77", "cpus=0-11", "cpus=0-15") is None
    # allowed everywhere is not "already running there"
    why = tuner.conflict("pid:77", "cpus=8-13", "cpus=0-15")
    assert why is not None and "process 77" in why
    assert "CPUs 12-13 are isolated by nohz_full=12-15 on the kernel command line" in why
    # a process the admin pinned to 12-15 may keep them
    assert tuner.conflict("pid:77", "cpus=12-15", "cpus=12-15") is None
    assert tuner.conflict("pid:77", "cpus=10-15", "cpus=12-15") is None
    assert tuner.conflict("pid:77", "cpus=10-15", "cpus=10-11") is not None
