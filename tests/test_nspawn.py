"""The packaged daemon under a real systemd.

A Debian 12 root (debootstrap, cached; see nspawn_box) is booted with
systemd-nspawn; the .deb is installed inside with dpkg, so its maintainer
scripts run against a live systemd as PID 1. The tests then check, through
systemd and the journal: Type=notify readiness, the watchdog (kept alive
over several periods, and a hung daemon really killed and restarted),
`hosttune status` over the control socket, reload (SIGHUP) with a good and a
malformed configuration, a clean stop, the sysusers group and tmpfiles
directories, the unit's sandbox as the daemon sees it, refused kernel writes
(/proc/sys is read-only in the container) reported clearly with the host
untouched, and a purge that leaves nothing behind.

The tests run in order on one container (module fixture); each one puts the
daemon back as it found it. The container is always torn down, also when a
test fails, and its cgroups removed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nspawn_box import MACHINE_PREFIX, Container, cached_root, host_mirror, root_packages

pytestmark = [pytest.mark.packaging, pytest.mark.nspawn]

UNIT = "hosttuned"
CONFIG = "/etc/hosttune/hosttune.yaml"
DROPIN_DIR = f"/run/systemd/system/{UNIT}.service.d"
# The unit's own period is 30 s; a drop-in shortens it so that several
# periods fit in a few seconds (the daemon reads WATCHDOG_USEC).
TEST_WATCHDOG_S = 3
# Paths outside the package that dpkg, apt, the journal and the boot itself
# change: a purge may leave these.
CHURN = ("/var/lib/dpkg/", "/var/log/", "/var/cache/debconf/", "/var/cache/ldconfig/",
         "/var/lib/apt/", "/var/cache/apt/", "/var/lib/systemd/", "/etc/ld.so.cache")


@dataclass
class Box:
    c: Container
    deb: Path
    baseline: set[str]
    original_config: str
    install_output: str
    timings: dict[str, float] = field(default_factory=dict)


def _file_list(c: Container) -> set[str]:
    # The root filesystem only: /proc, /sys, /dev, /run and /tmp are other mounts.
    out = c.run("find / -xdev -path /opt/hosttune.deb -prune -o -print", timeout=120).stdout
    return set(out.split("\n")) - {""}


@pytest.fixture(scope="module")
def box(built_deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    if os.geteuid() != 0:
        pytest.skip("booting a container needs root (CI runs as root)")
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter")
               if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        pytest.skip(f"not installed: {missing} (scripts/setup test installs systemd-container "
                    "and debootstrap)")
    mirror = host_mirror()
    if mirror is None:
        pytest.fail("no apt source for bookworm main in /etc/apt: set HOSTTUNE_NSPAWN_MIRROR "
                    "to a Debian mirror")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with cached_root(root_packages(built_deb), mirror) as (root, made):
        timings["debootstrap (cold)" if made else "root from cache"] = time.monotonic() - t0
        c = Container(root, tmp_path_factory.mktemp("nspawn"),
                      name=f"{MACHINE_PREFIX}{os.getpid()}",
                      bind_ro=[(built_deb, "/opt/hosttune.deb")])
        problems = yield from _booted(c, built_deb, timings)
    assert not problems, problems


def _booted(c: Container, deb: Path, timings: dict[str, float]
            ) -> Generator[Box, None, list[str]]:
    """Boot, install, yield; always power off and clean up. Returns the
    problems the cleanup found (a generator's return value)."""
    problems: list[str] = []
    try:
        t0 = time.monotonic()
        state = c.start()
        timings["boot"] = time.monotonic() - t0
        if state != "running":
            failed = c.run("systemctl --failed --no-legend", check=False).stdout
            print(f"container booted {state}; failed units:\n{failed}")
        # PID 1 logs every sd_notify message it gets at debug level.
        c.run("systemd-analyze log-level debug")
        # users for the socket's permissions, made before the baseline
        c.run("useradd --no-create-home alice && useradd --no-create-home bob")
        baseline = _file_list(c)
        t0 = time.monotonic()
        install = c.run("dpkg -i /opt/hosttune.deb 2>&1", timeout=180)
        print(f"\n{install.stdout}")
        timings["dpkg -i (postinst starts the daemon)"] = time.monotonic() - t0
        original = c.run(f"cat {CONFIG}").stdout
        yield Box(c, deb, baseline, original, install.stdout, timings)
    finally:
        t0 = time.monotonic()
        problems = c.stop()
        timings["poweroff and cleanup"] = time.monotonic() - t0
        print("\nnspawn timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return problems


# -- helpers -------------------------------------------------------------------


def _show(c: Container, *props: str) -> dict[str, str]:
    out = c.run(f"systemctl show {UNIT} " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _cursor(c: Container) -> str:
    out = c.run("journalctl -n1 -o json --no-pager").stdout
    return str(json.loads(out.splitlines()[-1])["__CURSOR"])


def _entries(c: Container, after: str) -> list[dict[str, str]]:
    """Journal entries after `after`, filtered by the caller: journalctl 252
    with both a match (-u, -t) and --after-cursor showed entries from before
    the cursor when the cursor's own entry did not match."""
    out = c.run("journalctl --no-pager -o json --output-fields=MESSAGE,UNIT,_SYSTEMD_UNIT,"
                f"SYSLOG_IDENTIFIER,PRIORITY --after-cursor={shlex.quote(after)}").stdout
    entries = []
    for line in out.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        entry["MESSAGE"] = message if isinstance(message, str) else repr(message)
        entries.append(entry)
    return entries


def _journal(c: Container, after: str) -> str:
    """The unit's messages (the daemon's, and PID 1's about it) after `after`."""
    return "\n".join(e["MESSAGE"] for e in _entries(c, after)
                     if f"{UNIT}.service" in (e.get("UNIT"), e.get("_SYSTEMD_UNIT")))


def _daemon_warnings(c: Container, after: str) -> list[str]:
    return [e["MESSAGE"] for e in _entries(c, after)
            if e.get("SYSLOG_IDENTIFIER") == "hosttuned" and int(e.get("PRIORITY", "6")) <= 4]


def _wait_journal(c: Container, after: str, pattern: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = _journal(c, after)
        if re.search(pattern, text, re.M):
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"no {pattern!r} in the journal within {timeout:g} s:\n{text[-4000:]}")
        time.sleep(0.3)


def _wait_active(c: Container, timeout: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        props = _show(c, "ActiveState", "SubState", "MainPID", "NRestarts")
        if props["ActiveState"] == "active" and props["MainPID"] != "0":
            return props
        if time.monotonic() > deadline:
            pytest.fail(f"{UNIT} not active after {timeout:g} s: {props}\n"
                        + c.run(f"journalctl --no-pager -o cat -u {UNIT} -n 40").stdout)
        time.sleep(0.2)


def _status_json(c: Container) -> dict[str, object]:
    res = c.run("hosttune status --json")
    data = json.loads(res.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def running(box: Box) -> Iterator[Box]:
    """The daemon running as packaged: shipped config, no drop-ins; the same
    again after the test, whatever it did."""
    _back_to_packaged(box)
    yield box
    _back_to_packaged(box)


def _back_to_packaged(box: Box) -> None:
    c = box.c
    current = c.run(f"cat {CONFIG}", check=False).stdout
    dropins = c.run(f"ls {DROPIN_DIR} 2>/dev/null", check=False).stdout.strip()
    if current != box.original_config:
        c.write(CONFIG, box.original_config)
    if dropins:
        c.run(f"rm -rf {DROPIN_DIR} && systemctl daemon-reload")
    state = c.run(f"systemctl is-active {UNIT}", check=False).stdout.strip()
    if state != "active" or dropins or current != box.original_config:
        c.run(f"systemctl reset-failed {UNIT}; systemctl restart {UNIT}", timeout=90)
    _wait_active(c)


# -- the tests -------------------------------------------------------------------


def test_install_starts_the_daemon_ready(box: Box) -> None:
    c = box.c
    props = _show(c, "Type", "ActiveState", "SubState", "MainPID", "StatusText",
                  "UnitFileState", "NRestarts", "WatchdogUSec", "NotifyAccess")
    assert props["Type"] == "notify"
    assert props["NotifyAccess"] == "main"
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert props["UnitFileState"] == "enabled"
    assert props["NRestarts"] == "0"
    assert props["WatchdogUSec"] == "30s"
    # STATUS= from the daemon's own sd_notify
    assert re.match(r"observe: workload \S+, 0 applied, 0 reverted", props["StatusText"]), props
    log = c.run(f"journalctl --no-pager -o cat -u {UNIT}").stdout
    pid = props["MainPID"]
    assert re.search(rf"Got notification message from PID {pid} \(READY=1, STATUS=observe",
                     log), log[-4000:]
    assert "hosttuned started in observe mode" in log
    assert "Started hosttuned.service" in log or "Started hosttune host tuning" in log, log
    # nothing went wrong on the way (a traceback, a refused syscall, a warning of ours)
    assert "Traceback" not in log
    ours = c.run("journalctl --no-pager -o cat -t hosttuned -p warning").stdout
    assert ours.strip() == "", ours


def test_group_and_directories(running: Box) -> None:
    c = running.c
    group = c.run("getent group hosttune").stdout.strip().split(":")
    assert group[0] == "hosttune" and int(group[2]) < 1000, group  # a system group
    assert c.run("getent passwd hosttune", check=False).returncode == 2  # no user: a group
    stat = "stat -c '%n %a %U %G %F'"
    out = c.run(f"{stat} /run/hosttune /var/lib/hosttune /etc/hosttune {CONFIG} "
                "/run/hosttune/hosttune.sock").stdout.splitlines()
    assert out == [
        "/run/hosttune 750 root hosttune directory",
        "/var/lib/hosttune 750 root hosttune directory",
        "/etc/hosttune 755 root root directory",
        f"{CONFIG} 644 root root regular file",
        "/run/hosttune/hosttune.sock 660 root hosttune socket",
    ]
    # what the daemon wrote: UMask=0027, Group=hosttune
    for line in c.run(f"find /var/lib/hosttune -mindepth 1 -exec {stat} {{}} +"
                      ).stdout.splitlines():
        _name, mode, user, group_ = line.split()[:4]
        assert int(mode, 8) & 0o007 == 0, line  # nothing for others
        assert (user, group_) == ("root", "hosttune"), line
    # tmpfiles again (as at every boot) changes nothing
    c.run("systemd-tmpfiles --create /usr/lib/tmpfiles.d/hosttune.conf")
    assert c.run(f"{stat} /run/hosttune /var/lib/hosttune").stdout.splitlines() == out[:2]
    # the group is what lets a user read status; others are refused
    c.run("usermod --append --groups hosttune alice")
    member = json.loads(c.run("runuser -u alice -- hosttune status --json").stdout)
    assert member["running"] is True
    stranger = c.run("runuser -u bob -- hosttune status", check=False)
    assert stranger.returncode == 1
    assert "only root and members of the hosttune group" in stranger.stderr + stranger.stdout
    assert "Traceback" not in stranger.stderr


def test_status_over_the_socket(running: Box) -> None:
    c = running.c
    pid = _show(c, "MainPID")["MainPID"]
    text = c.run("hosttune status").stdout
    assert text.startswith(f"hosttuned: running (pid {pid},"), text
    assert "mode: observe (/etc/hosttune/hosttune.yaml)" in text
    data = _status_json(c)
    assert data["running"] is True
    assert str(data["pid"]) == pid
    assert data["mode"] == "observe"
    assert data["config"] == CONFIG
    sampling = data["sampling"]
    assert isinstance(sampling, dict) and sampling["samples"] >= 1


def test_watchdog_keeps_it_alive_and_kills_a_hung_daemon(running: Box) -> None:
    c = running.c
    c.run(f"mkdir -p {DROPIN_DIR} && printf '[Service]\\nWatchdogSec={TEST_WATCHDOG_S}\\n"
          f"RestartSec=1\\nLimitCORE=0\\n' > {DROPIN_DIR}/50-test-watchdog.conf && "
          f"systemctl daemon-reload && systemctl restart {UNIT}", timeout=60)
    props = _wait_active(c)
    assert _show(c, "WatchdogUSec")["WatchdogUSec"] == f"{TEST_WATCHDOG_S}s"
    pid, restarts = props["MainPID"], props["NRestarts"]
    cur = _cursor(c)
    time.sleep(3.5 * TEST_WATCHDOG_S)
    after = _show(c, "ActiveState", "MainPID", "NRestarts")
    assert after == {"ActiveState": "active", "MainPID": pid, "NRestarts": restarts}
    pings = re.findall(rf"Got notification message from PID {pid} \(WATCHDOG=1\)",
                       _journal(c, cur))
    # pings every half period: about 7 in 3.5 periods
    assert len(pings) >= 5, len(pings)
    # The check above is only worth something if a silent daemon is noticed.
    cur = _cursor(c)
    c.run(f"kill -STOP {pid}")
    log = _wait_journal(c, cur, r"Watchdog timeout", timeout=3 * TEST_WATCHDOG_S)
    props = _wait_active(c)
    assert props["MainPID"] != pid
    assert int(props["NRestarts"]) == int(restarts) + 1
    log = _journal(c, cur)
    assert re.search(rf"Killing process {pid} \(hosttuned\) with signal SIGABRT", log), log


def test_reload_takes_a_good_file_and_refuses_a_bad_one(running: Box) -> None:
    c = running.c
    pid = _show(c, "MainPID")["MainPID"]
    cur = _cursor(c)
    c.write(CONFIG, "mode: recommend\ninterval: 2\n")
    c.run(f"systemctl reload {UNIT}")
    _wait_journal(c, cur, r"configuration reloaded: recommend mode, interval 2 s")
    data = _status_json(c)
    assert data["mode"] == "recommend" and str(data["pid"]) == pid
    # a malformed file: reload fails, says why, and the daemon keeps the old one
    cur = _cursor(c)
    c.write(CONFIG, "mode: observe\ninterval: fast\n")
    res = c.run(f"systemctl reload {UNIT}", check=False)
    assert res.returncode != 0, res
    log = _journal(c, cur)
    assert "line 2: interval: expected a number" in log, log
    # a SIGHUP that bypasses the check reaches the daemon, which refuses the file itself
    cur = _cursor(c)
    c.run(f"systemctl kill --signal=HUP --kill-who=main {UNIT}")
    _wait_journal(c, cur, r"configuration not reloaded, keeping the old one: .*line 2: "
                          r"interval: expected a number")
    props = _show(c, "ActiveState", "MainPID")
    assert props == {"ActiveState": "active", "MainPID": pid}
    data = _status_json(c)
    assert data["mode"] == "recommend"
    sampling = data["sampling"]
    assert isinstance(sampling, dict) and sampling["interval_s"] == 2
    # and a start with it fails before READY, with the same message, and is
    # not restarted in a loop (exit status 78, RestartPreventExitStatus)
    cur = _cursor(c)
    res = c.run(f"systemctl restart {UNIT}", check=False, timeout=60)
    assert res.returncode != 0
    # "failed", not "activating" (auto-restart, waiting RestartSec to try again)
    props = _show(c, "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78"
                     }, props
    log = _journal(c, cur)
    assert f"hosttuned: {CONFIG}: line 2: interval: expected a number" in log, log


def test_shipped_model_classifies_and_recommends_on_debian_libraries(running: Box) -> None:
    """The packaged code on Debian 12's numpy, yaml, psutil, typer: the model
    loads, a window is classified and a plan is made, with no error logged."""
    c = running.c
    cur = _cursor(c)
    # the model's validated geometry (1 s rows, 10 s windows), one window to believe
    c.write(CONFIG, "mode: recommend\ninterval: 1\nwindow: 10\nhysteresis: 1\n")
    c.run(f"systemctl restart {UNIT}", timeout=60)
    deadline = time.monotonic() + 40
    while True:
        data = _status_json(c)
        workload, rec = data["workload"], data["recommendation"]
        assert isinstance(workload, dict)
        window = workload["last_window"]
        if window and rec is not None:
            break
        assert time.monotonic() < deadline, data
        time.sleep(1)
    engine = data["engine"]
    assert isinstance(engine, dict) and isinstance(rec, dict)
    model = engine["model"]
    assert model["source"].startswith("/usr/lib/python3/dist-packages/hosttune/models/")
    assert window["label"] in model["classes"] and window["confidence"] > 0, window
    assert "error" not in rec, rec
    assert data["notes"] == [], data["notes"]  # inside the model's validated geometry
    assert _daemon_warnings(c, cur) == []


def test_stop_is_clean(running: Box) -> None:
    c = running.c
    pid = _show(c, "MainPID")["MainPID"]
    cur = _cursor(c)
    t0 = time.monotonic()
    c.run(f"systemctl stop {UNIT}")
    took = time.monotonic() - t0
    running.timings["systemctl stop"] = took
    props = _show(c, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    # ExecMainCode 1 is CLD_EXITED: it exited by itself, with status 0
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1",
                     "ExecMainStatus": "0"}, props
    log = _journal(c, cur)
    assert re.search(rf"Got notification message from PID {pid} \(STOPPING=1", log), log
    assert "SIGKILL" not in log and "timed out" not in log.lower(), log
    assert took < 10, took
    assert c.run("test -e /run/hosttune/hosttune.sock", check=False).returncode != 0
    res = c.run("hosttune status")
    assert res.stdout.startswith("hosttuned: not running"), res.stdout


def test_sandbox_as_the_daemon_sees_it(running: Box) -> None:
    c = running.c
    pid = _show(c, "MainPID")["MainPID"]
    status = c.run(f"cat /proc/{pid}/status").stdout
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    # CAP_DAC_READ_SEARCH 2, CAP_SYS_PTRACE 19, CAP_SYS_ADMIN 21, CAP_SYS_NICE 23
    want = (1 << 2) | (1 << 19) | (1 << 21) | (1 << 23)
    assert int(fields["CapBnd"], 16) == want, fields["CapBnd"]
    assert int(fields["CapEff"], 16) & ~want == 0
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"  # a filter is loaded

    def touch(path: str) -> str:
        res = c.run(f"nsenter --target={pid} --mount sh -c "
                    f"{shlex.quote(f'touch {path} && rm {path}')} 2>&1", check=False)
        return "ok" if res.returncode == 0 else res.stdout.strip()

    # ProtectSystem=strict: the OS, /etc (its config included) and /run are read-only
    for path in ("/usr/lib/probe", "/etc/probe", f"{CONFIG}.probe", "/var/lib/probe",
                 "/run/probe", "/var/cache/probe", "/opt/probe"):
        assert "Read-only file system" in touch(path), path
    # ProtectHome=yes
    assert touch("/root/probe") != "ok"
    # its own state and runtime directories are writable
    assert touch("/var/lib/hosttune/probe") == "ok"
    assert touch("/run/hosttune/probe") == "ok"
    # PrivateTmp=yes: its /tmp is not the system's
    c.run(f"nsenter --target={pid} --mount touch /tmp/hosttune-probe")
    assert c.run("test -e /tmp/hosttune-probe", check=False).returncode != 0
    c.run(f"nsenter --target={pid} --mount rm /tmp/hosttune-probe")


HOLDER = """
import mmap, sys, time
size = int(sys.argv[1]) << 20
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, size, 4096):
    m[i] = 1
open("/run/holder.ready", "w").close()
time.sleep(600)
"""


def test_per_process_huge_pages_within_the_units_sandbox(running: Box) -> None:
    """The packaged daemon in auto mode collapses a running process's memory
    (pidfd_open + process_madvise) with only the unit's capabilities and
    under its seccomp filter. The container's /proc/sys is read-only, so no
    knob can change; the collapse acts on the container's own process."""
    c = running.c
    c.write("/tmp/holder.py", HOLDER)
    # "torchrun" among its arguments: the sampler counts it as AI work
    c.run("rm -f /run/holder.ready; systemd-run --unit=hosttune-holder "
          "python3 /tmp/holder.py 512 torchrun")
    try:
        deadline = time.monotonic() + 30
        while c.run("test -e /run/holder.ready", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.5)
        pid = _show_unit(c, "hosttune-holder", "MainPID")
        c.write(CONFIG, "mode: auto\ninterval: 1\nwindow: 3\n")
        c.run(f"systemctl restart {UNIT}", timeout=60)
        deadline = time.monotonic() + 90
        while True:
            rollup = c.run(f"cat /proc/{pid}/smaps_rollup").stdout
            sizes = dict(re.findall(r"^(Anonymous|AnonHugePages):\s+(\d+) kB", rollup, re.M))
            if int(sizes["AnonHugePages"]) >= 0.9 * 512 * 1024:
                break
            assert time.monotonic() < deadline, (sizes, _status_json(c).get("collapse"))
            time.sleep(1)
        history = json.loads(c.run("hosttune history --json").stdout)
        passes = [t for t in history if t["kind"] == "collapse"]
        assert passes and all(t["state"] == "committed" for t in passes), history
        assert any(s["knob"] == f"procthp:pid:{pid}" and s["state"] == "collapsed"
                   for t in passes for s in t["changes"]), passes
    finally:
        c.run("systemctl stop hosttune-holder", check=False)


def _show_unit(c: Container, unit: str, prop: str) -> str:
    out = c.run(f"systemctl show {unit} -p {prop}").stdout
    return str(out.strip().split("=", 1)[1])


def test_refused_kernel_writes_are_reported_and_the_host_untouched(
        running: Box, kernel_lock: None) -> None:
    c = running.c
    knob_path = Path("/proc/sys/vm/swappiness")
    before = knob_path.read_text().strip()
    target = "61" if before != "61" else "59"
    pid = _show(c, "MainPID")["MainPID"]
    plan = f"changes:\n  - knob: sysctl:vm.swappiness\n    value: {target}\n    reason: test\n"
    c.write("/tmp/plan.yaml", plan)
    try:
        set_res = c.run(f"hosttune set sysctl:vm.swappiness {target}", check=False)
        apply_res = c.run("hosttune apply /tmp/plan.yaml", check=False)
    finally:
        after = knob_path.read_text().strip()
        if after != before:  # put the host back before failing
            knob_path.write_text(before)
    assert after == before, f"the container changed the host's vm.swappiness to {after}"
    for res in (set_res, apply_res):
        text = res.stdout + res.stderr
        assert res.returncode == 1, text
        assert "Traceback" not in text
        assert "sysctl:vm.swappiness" in text and "/proc/sys/vm/swappiness" in text, text
        assert "Read-only file system" in text, text
    # the daemon did it (the transaction is its), and it is still up
    props = _show(c, "ActiveState", "MainPID", "NRestarts")
    assert props["ActiveState"] == "active" and props["MainPID"] == pid
    history = json.loads(c.run("hosttune history --json").stdout)
    assert history and all(r["state"] != "applied" for r in history), history


def test_purge_leaves_nothing(box: Box) -> None:
    c = box.c
    _back_to_packaged(box)  # purge a running, enabled daemon, as on a real host
    res = c.run("apt-get purge -y hosttune 2>&1", timeout=180)
    print(f"\n{res.stdout}")
    assert "rollback failed" not in res.stdout, res.stdout
    assert c.run("dpkg-query -W hosttune", check=False).returncode != 0
    props = _show(c, "LoadState", "ActiveState")
    assert props == {"LoadState": "not-found", "ActiveState": "inactive"}, props
    assert c.run("getent group hosttune", check=False).returncode == 2
    for path in ("/etc/hosttune", "/var/lib/hosttune", "/run/hosttune",
                 "/etc/systemd/system/multi-user.target.wants/hosttuned.service",
                 "/usr/lib/python3/dist-packages/hosttune", "/usr/bin/hosttune"):
        assert c.run(f"test -e {path} || test -L {path}", check=False).returncode != 0, path
    left = sorted(p for p in _file_list(c) - box.baseline if not p.startswith(CHURN))
    assert not left, left
