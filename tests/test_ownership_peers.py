"""Who owns a knob: sysctl.d exclusion lines, and the peer daemons tuned,
irqbalance and numad, on fixture trees."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.isolation import cpu_isolation
from hosttune.agent.sense.ownership import Owner, cpu_reservations, owner_of
from hosttune.agent.sense.peers import banned_irqs
from hosttune.tuners.irq import IrqTuner
from hosttune.tuners.owners import owners, owners_report, peer_owners

TUNED_PEER = Path(__file__).parent / "fixtures" / "hosts" / "tuned-peer"


def put(root: Path, path: str, text: str) -> None:
    file = root / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)


def where(knob: str, owned: dict[str, Owner]) -> str | None:
    owner = owner_of(knob, owned)
    return None if owner is None else owner.where


# -- sysctl.d exclusions (sysctl.d(5): "-key" with no "=") ---------------------------


def test_glob_then_exclusion(tmp_path: Path) -> None:
    put(tmp_path, "/usr/lib/sysctl.d/50-default.conf", "net.ipv4.conf.*.rp_filter = 2\n")
    put(tmp_path, "/etc/sysctl.d/60-site.conf", "# eth0 keeps its own\n"
                                                "-net.ipv4.conf.eth0.rp_filter\n")
    owned = owners(Host(tmp_path))
    assert owner_of("sysctl:net.ipv4.conf.eth0.rp_filter", owned) is None
    assert where("sysctl:net.ipv4.conf.eth1.rp_filter", owned) == (
        "/usr/lib/sysctl.d/50-default.conf:1")


def test_exclusion_before_the_glob_still_excludes(tmp_path: Path) -> None:
    # systemd-sysctl never lets a glob set a key that has a line of its own
    put(tmp_path, "/etc/sysctl.d/10-keep.conf", "-net.ipv4.conf.eth0.rp_filter\n")
    put(tmp_path, "/etc/sysctl.d/90-all.conf", "net.ipv4.conf.*.rp_filter = 1\n")
    owned = owners(Host(tmp_path))
    assert owner_of("sysctl:net.ipv4.conf.eth0.rp_filter", owned) is None
    assert where("sysctl:net.ipv4.conf.lo.rp_filter", owned) == "/etc/sysctl.d/90-all.conf:1"


def test_exclusion_then_a_later_explicit_setting(tmp_path: Path) -> None:
    put(tmp_path, "/etc/sysctl.d/50-a.conf", "net.ipv4.conf.*.rp_filter = 2\n"
                                             "-net.ipv4.conf.eth0.rp_filter\n")
    put(tmp_path, "/etc/sysctl.d/70-b.conf", "net.ipv4.conf.eth0.rp_filter = 0\n")
    owned = owners(Host(tmp_path))
    assert str(owner_of("sysctl:net.ipv4.conf.eth0.rp_filter", owned)) == (
        "/etc/sysctl.d/70-b.conf:1 (net.ipv4.conf.eth0.rp_filter = 0)")


def test_explicit_setting_then_a_later_exclusion_sets_nothing(tmp_path: Path) -> None:
    put(tmp_path, "/etc/sysctl.d/50-a.conf", "vm.swappiness = 10\n")
    put(tmp_path, "/etc/sysctl.d/70-b.conf", "-vm.swappiness\n-vm.dirty_ratio = 5\n")
    owned = owners(Host(tmp_path))
    assert owner_of("sysctl:vm.swappiness", owned) is None
    # '-' before an assignment only silences errors: it still sets the key
    assert where("sysctl:vm.dirty_ratio", owned) == "/etc/sysctl.d/70-b.conf:2"


def test_explicit_key_beats_a_later_glob(tmp_path: Path) -> None:
    put(tmp_path, "/etc/sysctl.d/50-a.conf", "net.ipv4.conf.eth0.rp_filter = 0\n")
    put(tmp_path, "/etc/sysctl.d/70-b.conf", "net.ipv4.conf.*.rp_filter = 1\n")
    owned = owners(Host(tmp_path))
    assert where("sysctl:net.ipv4.conf.eth0.rp_filter", owned) == "/etc/sysctl.d/50-a.conf:1"
    assert where("sysctl:net.ipv4.conf.eth1.rp_filter", owned) == "/etc/sysctl.d/70-b.conf:1"


def test_masked_file_exclusion_does_not_count(tmp_path: Path) -> None:
    put(tmp_path, "/usr/lib/sysctl.d/50-default.conf", "net.ipv4.conf.*.rp_filter = 2\n")
    put(tmp_path, "/usr/lib/sysctl.d/60-except.conf", "-net.ipv4.conf.eth0.rp_filter\n")
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / "etc/sysctl.d/60-except.conf").symlink_to("/dev/null")
    owned = owners(Host(tmp_path))
    assert where("sysctl:net.ipv4.conf.eth0.rp_filter", owned) == (
        "/usr/lib/sysctl.d/50-default.conf:1")
    # masking the glob's file instead leaves the exclusion with nothing to exclude
    (tmp_path / "etc/sysctl.d/60-except.conf").unlink()
    (tmp_path / "etc/sysctl.d/50-default.conf").symlink_to("/dev/null")
    assert owner_of("sysctl:net.ipv4.conf.eth1.rp_filter", owners(Host(tmp_path))) is None


def test_exclusion_with_slashes(tmp_path: Path) -> None:
    put(tmp_path, "/etc/sysctl.d/50-a.conf", "net/ipv4/conf/*/rp_filter = 2\n"
                                             "- net/ipv4/conf/eth0.10/rp_filter\n")
    owned = owners(Host(tmp_path))
    assert owner_of("sysctl:net.ipv4.conf.eth0/10.rp_filter", owned) is None
    assert owner_of("sysctl:net.ipv4.conf.eth1.rp_filter", owned) is not None


# -- tuned -------------------------------------------------------------------------------


def test_tuned_profile_and_its_include_own_their_knobs() -> None:
    owned, notes = owners_report(Host(TUNED_PEER))
    swappiness = owner_of("sysctl:vm.swappiness", owned)
    assert swappiness is not None and swappiness.kind == "peer"
    assert str(swappiness) == (
        "tuned profile ai-training (through throughput-performance) sets vm.swappiness=10 "
        "(/usr/lib/tuned/throughput-performance/tuned.conf:42)")
    assert swappiness.why().startswith("owned by a peer tuning daemon: tuned profile")
    # the site profile's own [sysctl] overrides the included one
    assert str(owner_of("sysctl:vm.dirty_ratio", owned)) == (
        "tuned profile ai-training sets vm.dirty_ratio=30 (/etc/tuned/ai-training/tuned.conf:7)")
    assert "transparent_hugepages=always" in str(owner_of("thp:enabled", owned))
    assert "readahead=>4096" in str(owner_of("block:sda:read_ahead_kb", owned))
    assert "governor=performance" in str(owner_of("cpu:governor", owned))
    assert owner_of("sysctl:vm.dirty_background_ratio", owned) is not None
    # [sysctl.thunderx] applies only on aarch64 ThunderX (uname_regex, cpuinfo_regex)
    assert owner_of("sysctl:kernel.numa_balancing", owned) is None
    assert owner_of("thp:defrag", owned) is None
    assert notes == []


def tuned_tree(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    shutil.copytree(TUNED_PEER, root, symlinks=True)
    return root


def test_tuned_not_running_owns_nothing(tmp_path: Path) -> None:
    root = tuned_tree(tmp_path)
    shutil.rmtree(root / "proc/4100")
    owned, notes = owners_report(Host(root))
    assert owner_of("sysctl:vm.swappiness", owned) is None
    assert any("ai-training is selected" in n and "not running" in n for n in notes)


@pytest.mark.parametrize(("path", "text", "said"), [
    ("/usr/lib/tuned/throughput-performance/tuned.conf", "[sysctl]\nvm.swappiness=10\n[sysctl",
     "is malformed"),
    ("/usr/lib/tuned/throughput-performance/tuned.conf", "vm.swappiness=10\n", "is malformed"),
    ("/etc/tuned/ai-training/tuned.conf", "[main]\ninclude=no-such-profile\n",
     "no-such-profile not found"),
    ("/etc/tuned/active_profile", "../../etc\n", "not one tuned accepts"),
])
def test_broken_tuned_files_own_nothing_and_say_why(tmp_path: Path, path: str, text: str,
                                                    said: str) -> None:
    root = tuned_tree(tmp_path)
    put(root, path, text)
    owned, notes = owners_report(Host(root))
    assert not any(o.kind == "peer" and "tuned" in str(o) for o in owned.values())
    assert any(said in n for n in notes), notes


def test_tuned_profile_that_is_not_utf8(tmp_path: Path) -> None:
    root = tuned_tree(tmp_path)
    (root / "etc/tuned/ai-training/tuned.conf").write_bytes(b"[sysctl]\nvm.swappiness=\xff\n")
    owned, notes = owners_report(Host(root))
    assert owner_of("sysctl:vm.swappiness", owned) is None
    assert any("not UTF-8" in n for n in notes)


def test_tuned_replace_type_enabled_and_devices(tmp_path: Path) -> None:
    root = tuned_tree(tmp_path)
    put(root, "/etc/tuned/ai-training/tuned.conf",
        "[main]\ninclude=throughput-performance\n"
        "[sysctl]\nreplace=1\nvm.dirty_ratio = 30\n"   # drops the included [sysctl]
        "[cpu]\nenabled=false\n"
        "[disk]\ndevices=nvme*,!sda\n"
        "[my_thp]\ntype=sysfs\n/sys/kernel/mm/transparent_hugepage/defrag=never\n"
        "[vm]\ndirty_background_bytes=100000000\n")
    owned, notes = owners_report(Host(root))
    assert owner_of("sysctl:vm.swappiness", owned) is None
    assert owner_of("sysctl:vm.dirty_ratio", owned) is not None
    assert owner_of("cpu:governor", owned) is None
    assert owner_of("block:nvme0n1:read_ahead_kb", owned) is not None
    assert owner_of("block:sda:read_ahead_kb", owned) is None
    assert "defrag=never" in str(owner_of("thp:defrag", owned))
    assert owner_of("sysctl:vm.dirty_background_bytes", owned) is not None
    assert notes == []


def test_tuned_units_for_aarch64_apply_there(tmp_path: Path) -> None:
    root = tuned_tree(tmp_path)
    put(root, "/proc/sys/kernel/arch", "aarch64\n")
    put(root, "/proc/cpuinfo", "processor\t: 0\nCPU part\t: 0x0af\n")
    owned, _ = owners_report(Host(root))
    assert "kernel.numa_balancing=0" in str(owner_of("sysctl:kernel.numa_balancing", owned))
    # a unit whose condition cannot be decided is not counted, with a note
    (root / "proc/cpuinfo").unlink()
    owned, notes = owners_report(Host(root))
    assert owner_of("sysctl:kernel.numa_balancing", owned) is None
    assert any("[sysctl.thunderx]" in n and "cannot be decided" in n for n in notes)


def test_sysctl_files_win_over_tuned_unless_it_stops_reapplying(tmp_path: Path) -> None:
    root = tuned_tree(tmp_path)
    put(root, "/etc/sysctl.d/90-site.conf", "vm.swappiness = 20\n-vm.dirty_ratio\n")
    owned = owners(Host(root))
    assert where("sysctl:vm.swappiness", owned) == "/etc/sysctl.d/90-site.conf:1"
    # a sysctl.d exclusion does not take a key away from tuned
    assert "tuned profile ai-training" in str(owner_of("sysctl:vm.dirty_ratio", owned))
    put(root, "/etc/tuned/tuned-main.conf", "reapply_sysctl = 0\n")
    owned = owners(Host(root))
    assert "tuned profile" in str(owner_of("sysctl:vm.swappiness", owned))


# -- irqbalance and numad ----------------------------------------------------------------


def test_irqbalance_owns_irqs_but_the_banned_ones() -> None:
    owned = owners(Host(TUNED_PEER))
    owner = owner_of("irq:40", owned)
    assert owner is not None and str(owner) == "irqbalance (pid 812) balances IRQ affinity"
    assert owner_of("irq:41", owned) is None  # --banirq=41 on its command line
    assert owner_of("irq:42", owned) is None  # --banirq 42 in IRQBALANCE_ARGS


def test_irqbalance_with_banned_cpus_shares_irqs(tmp_path: Path) -> None:
    root = tuned_tree(tmp_path)
    put(root, "/etc/default/irqbalance", 'IRQBALANCE_BANNED_CPULIST="2-3"\n')
    report = peer_owners(Host(root))
    assert not any(k.startswith("irq:") for k in report.owned)
    assert any("banned CPUs 2-3" in n for n in report.notes)
    put(root, "/etc/default/irqbalance", "IRQBALANCE_BANNED_CPUS=0000000c\n")
    assert not any(k.startswith("irq:") for k in peer_owners(Host(root)).owned)
    put(root, "/etc/default/irqbalance", "IRQBALANCE_BANNED_CPULIST=2-x\n")
    report = peer_owners(Host(root))
    assert "irq:[0-9]*" in report.owned and any("2-x" in n for n in report.notes)


def test_irqaffinity_still_owns_an_irq_irqbalance_was_told_to_leave() -> None:
    root = TUNED_PEER
    owned = owners(Host(root))
    owned["irq:*"] = Owner("cmdline", "irqaffinity=0-1")
    assert str(owner_of("irq:41", owned)) == "kernel command line (irqaffinity=0-1)"


def test_banirq_forms() -> None:
    assert banned_irqs(("--foreground", "--banirq=7", "--banirq", "8", "-i9", "-i", "10",
                        "--banirq", "x")) == [7, 8, 9, 10]


def test_numad_owns_process_placement(tmp_path: Path) -> None:
    put(tmp_path, "/proc/300/comm", "numad\n")
    put(tmp_path, "/proc/301/comm", "bash\n")
    owned = owners(Host(tmp_path))
    assert str(owner_of("numa:pid:4242", owned)) == "numad (pid 300) places processes on NUMA nodes"
    assert owner_of("irq:40", owned) is None


def test_nothing_running_nothing_owned(tmp_path: Path) -> None:
    owned, notes = owners_report(Host(tmp_path))
    assert owned == {} and notes == []


# -- odd files never raise -----------------------------------------------------------------

_ODD = st.text(alphabet=st.sampled_from(list("[]=#;-_,. \n\t$}{!^:/0123456789Nal\"'x")),
               max_size=80)


@settings(max_examples=60, deadline=None)
@given(profile=_ODD, active=_ODD, cmdline=_ODD, irqbalance=_ODD, sysctl=_ODD)
def test_odd_files_give_notes_not_tracebacks(profile: str, active: str, cmdline: str,
                                             irqbalance: str, sysctl: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(TUNED_PEER, root / "h", symlinks=True)
        root = root / "h"
        put(root, "/etc/tuned/ai-training/tuned.conf", profile)
        put(root, "/etc/tuned/active_profile", active or "ai-training")
        put(root, "/proc/cmdline", cmdline)
        put(root, "/etc/default/irqbalance", irqbalance)
        put(root, "/etc/sysctl.d/50-odd.conf", sysctl)
        put(root, "/sys/devices/system/cpu/isolated", cmdline[:12])
        host = Host(root)
        owned, notes = owners_report(host)
        assert all(isinstance(n, str) for n in notes)
        for knob in ("sysctl:vm.swappiness", "irq:41", "numa:pid:1", "thp:enabled"):
            owner_of(knob, owned)
        cpu_reservations(host)
        iso = cpu_isolation(host)
        # every reserved CPU is explained by the parameter or file that reserved it
        assert set(iso.by_cpu()) == set(iso.cpus)
        assert bool(iso.explain()) == bool(iso.cpus)


def test_tuned_isolated_cores_set_cpus_apart(tmp_path: Path) -> None:
    # cpu-partitioning's way: [variables] include= a NAME=VALUE file, then
    # [scheduler] isolated_cores=${isolated_cores}
    root = tuned_tree(tmp_path)
    put(root, "/etc/tuned/active_profile", "cpu-partitioning\n")
    put(root, "/usr/lib/tuned/cpu-partitioning/tuned.conf",
        "[main]\ninclude=throughput-performance\n"
        "[variables]\ninclude=/etc/tuned/cpu-partitioning-variables.conf\n"
        "isolated_cores = ${isolated_cores}\n"
        "isolated_cores_assert_check = \\\\${isolated_cores}\n"
        "[scheduler]\nisolated_cores=${isolated_cores}\n")
    put(root, "/etc/tuned/cpu-partitioning-variables.conf",
        "# Examples:\n# isolated_cores=2,4-7\nisolated_cores=1-3,^2\n")
    iso = cpu_reservations(Host(root))
    assert iso.cpus == frozenset({1, 3})
    assert iso.explain([1]) == (
        "CPU 1 is isolated by tuned profile cpu-partitioning (isolated_cores=1-3,^2, "
        "/usr/lib/tuned/cpu-partitioning/tuned.conf:8)")
    tuner = IrqTuner(Host(root))
    put(root, "/proc/irq/40/smp_affinity_list", "0-3\n")
    assert "tuned profile cpu-partitioning" in (tuner.conflict("40", "0-1", "0-3") or "")
    # tuned not running: its scheduler plugin keeps nothing apart
    shutil.rmtree(root / "proc/4100")
    assert cpu_reservations(Host(root)).cpus == frozenset()


def test_tuned_isolated_cores_it_cannot_read_is_a_note(tmp_path: Path) -> None:
    root = tuned_tree(tmp_path)
    put(root, "/etc/tuned/ai-training/tuned.conf",
        "[variables]\ninclude=missing-variables.conf\n[scheduler]\nisolated_cores=${isolated_cores}\n")
    iso = cpu_reservations(Host(root))
    assert iso.cpus == frozenset()
    assert any("isolated_cores='${isolated_cores}'" in n for n in iso.notes), iso.notes
    _, notes = owners_report(Host(root))
    assert any("/etc/tuned/ai-training/missing-variables.conf" in n for n in notes)
