"""The daemon loop in auto mode, in-process, over a fixture host tree whose
counters a "world" thread advances in real time: the real telemetry Sampler
reads it, a small rule classifier (busy CPUs = training) and a one-rule
recommender decide, and knob writes go through Host into the tree with the
old values kept for rollback.

Checks: the workload switch is taken within `hysteresis` windows; auto mode
applies the allowlisted change; when stall time (PSI) rises after it, the
change is reverted, the knob restored, the revert remembered (not re-applied)
and recorded in the store; a plain idle host never gets a change; SIGHUP-style
reload keeps the old config on error."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.agent.sense.sample import AIProcess, Sample
from hosttune.agent.sense.telemetry.sampler import Sampler, rates
from hosttune.agent.service import config as cfg
from hosttune.agent.service.daemon.host_access import Proposal, TxnOutcome
from hosttune.agent.service.daemon.loop import Daemon
from hosttune.agent.service.log import Log
from hosttune.agent.service.notify import Notifier
from hosttune.agent.service.store import Store
from hosttune.agent.service.tracker import Verdict
from hosttune.models.collapse import NewMemory
from hosttune.tuners.knobs import Change, Plan

FIXTURE = Path(__file__).parent / "fixtures" / "telemetry" / "vm-2cpu"
KNOB_PATH = "/proc/sys/vm/swappiness"


class World:
    """Advances /proc/stat and /proc/pressure/* of a fixture tree in real time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.busy = 0.1  # fraction of CPU time busy
        self.stall = 0.0  # fraction of each second some task stalls (PSI some)
        self.user = 0.0
        self.idle = 0.0
        self.stall_us = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._write()
        self._thread.start()

    def _write_in_place(self, rel: str, text: str) -> None:
        # In place, not by rename: the sampler keeps these files open.
        with open(self.root / rel, "r+") as fh:
            fh.seek(0)
            fh.write(text)
            fh.truncate()

    def _write(self) -> None:
        u, i = int(self.user), int(self.idle)
        half_u, half_i = u // 2, i // 2
        stat = (f"cpu  {u} 0 0 {i} 0 0 0 0 0 0\n"
                f"cpu0 {half_u} 0 0 {half_i} 0 0 0 0 0 0\n"
                f"cpu1 {u - half_u} 0 0 {i - half_i} 0 0 0 0 0 0\n"
                "ctxt 1000\nbtime 1700000000\nprocesses 100\nprocs_running 1\n"
                "procs_blocked 0\n")
        self._write_in_place("proc/stat", stat)
        total = int(self.stall_us)
        for res in ("cpu", "memory", "io"):
            self._write_in_place(
                f"proc/pressure/{res}",
                f"some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\n"
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.01):
            now = time.monotonic()
            dt, last = now - last, now
            ticks = 200 * dt  # 2 CPUs at USER_HZ 100
            self.user += ticks * self.busy
            self.idle += ticks * (1 - self.busy)
            self.stall_us += 1e6 * dt * self.stall
            self._write()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class FixtureEngine:
    """Real sampling of the fixture tree; a rule classifier; knob writes
    through Host with the old values journalled in memory."""

    root: Path
    notes: list[str] = field(default_factory=list)
    journal: list[tuple[str, str, str]] = field(default_factory=list)  # txn, knob, old
    txns: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    written: dict[str, str] = field(default_factory=dict)  # knob -> what we last wrote

    def __post_init__(self) -> None:
        self.host = Host(self.root)
        self.sampler = Sampler(self.host, process_every=0)

    def prepare(self) -> dict[str, Any]:
        return {"model": {"source": "rule: cpu.util > 0.5 is training"}}

    fail_next: int = 0

    def sample(self) -> Sample:
        if self.fail_next:
            self.fail_next -= 1
            raise ValueError("a collector's bug")
        return self.sampler.sample()

    def rates(self, prev: Sample, cur: Sample) -> dict[str, float]:
        return rates(prev, cur)

    def classify(self, window: Sequence[Sample],
                 rows: Sequence[Mapping[str, float]]) -> Verdict:
        assert len(rows) == len(window) - 1
        utils = [r["cpu.util"] for r in rows if "cpu.util" in r]
        if not utils:
            return Verdict("unknown", 0.0, reason="no cpu.util")
        util = sum(utils) / len(utils)
        return Verdict("training" if util > 0.5 else "idle", 0.9, (("cpu.util", util),))

    slow_unknown: float = 0.0  # seconds the generic ("unknown") plan takes

    def recommend(self, workload: str, latest: Sample | None,
                  rates: Mapping[str, float]) -> Proposal | None:
        assert latest is not None and rates  # the loop's own samples, not a new sampler
        if workload == "unknown":
            time.sleep(self.slow_unknown)
        if workload != "training":
            return None
        plan = Plan([Change("sysctl:vm.swappiness", "10", before="60",
                            reason="keep the dataset cached", source="expert",
                            evidence={"rule": "swappiness"})],
                    workload=workload)
        return Proposal(workload=workload, plan=plan, report={"rules": ["swappiness"]})

    def allowlist_defaults(self) -> Mapping[str, Mapping[str, Any] | None]:
        return {"sysctl:vm.swappiness": {"min": 0, "max": 100}}

    def preflight(self, plan: Any, allowlist: Mapping[str, Mapping[str, Any]],
                  admin_owned: Mapping[str, str]) -> Any:
        keep = []
        for c in plan.changes:
            bound = allowlist.get(c.knob)
            if bound is None:
                continue
            if not bound.get("min", 0) <= int(c.after) <= bound.get("max", 1 << 62):
                continue
            keep.append(c)
        return Plan(keep, plan.workload)

    def apply(self, plan: Any, reason: str, *, uid: int | None = None,
              allowlist: Mapping[str, Mapping[str, Any]] | None = None,
              admin_owned: Mapping[str, str] | None = None,
              force: bool = False) -> TxnOutcome:
        txn = str(next(self.txns))
        for c in plan.changes:
            self.journal.append((txn, c.knob, self.host.read_str(KNOB_PATH)))
            self.host.write_text(KNOB_PATH, c.after)
            self.written[c.knob] = c.after
        return TxnOutcome(True, txn, f"applied {len(plan.changes)}")

    def rollback(self, target: str, *, force: bool = False, uid: int | None = None
                 ) -> TxnOutcome:
        first = target.removeprefix("before:")
        undo = [e for e in self.journal if int(e[0]) >= int(first)]
        for _txn, knob, old in reversed(undo):
            self.host.write_text(KNOB_PATH, old)
            self.written[knob] = old
        self.journal = [e for e in self.journal if e not in undo]
        return TxnOutcome(True, None, f"restored {len(undo)}")

    def recover(self) -> list[str]:
        return []

    def collapse(self, processes: Any, workload: str, settings: Any, reason: str
                 ) -> dict[str, Any] | None:
        return None  # the fixture world runs no process to collapse

    def collapse_status(self) -> dict[str, Any] | None:
        return None

    def new_memory(self) -> NewMemory | None:
        return None

    def roles(self) -> dict[str, Any] | None:
        return None  # a rule classifier: no per-process roles

    def job_signals(self, pids: Any) -> dict[int, dict[str, Any]]:
        return {}

    def history(self, limit: int) -> list[dict[str, Any]]:
        return [{"txn": t, "knob": k, "old": o} for t, k, o in self.journal[-limit:]]

    def drift(self) -> list[str]:
        now = self.host.read_str(KNOB_PATH)
        return [knob for knob, value in self.written.items() if value != now]

    def close(self) -> None:
        self.sampler.close()


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, World]]:
    root = tmp_path / "host"
    shutil.copytree(FIXTURE, root)
    (root / "proc/sys/vm").mkdir(parents=True)
    (root / "proc/sys/vm/swappiness").write_text("60\n")
    world = World(root)
    yield root, world
    world.stop()


def _start(tmp_path: Path, root: Path, config: cfg.Config) -> tuple[Daemon, threading.Thread]:
    paths = Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                  config=tmp_path / "hosttune.yaml")
    daemon = Daemon(paths, config, FixtureEngine(root), Log("debug", use_journal=False),
                    Notifier(env={}))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return daemon, thread


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


AUTO = cfg.parse("mode: auto\ninterval: 0.1\nwindow: 3\nhysteresis: 2\n"
                 "auto: {watch_windows: 2, cooldown_windows: 0, regression: 0.05}\n"
                 "socket: {group: root}\n")


def test_auto_applies_then_reverts_a_change_that_hurt(tmp_path: Path,
                                                      tree: tuple[Path, World]) -> None:
    root, world = tree
    daemon, thread = _start(tmp_path, root, AUTO)
    try:
        _wait(lambda: daemon.tracker.stable == "idle", 10, "idle")
        assert not daemon.policy.applied  # nothing to do for an idle host
        world.busy = 0.9
        switched_at = daemon.window.windows
        _wait(lambda: daemon.tracker.stable == "training", 10, "training")
        # Taken within hysteresis windows (plus the window already under way).
        assert daemon.window.windows - switched_at <= AUTO.hysteresis + 1
        _wait(lambda: daemon.policy.applied, 10, "auto apply")
        assert (root / "proc/sys/vm/swappiness").read_text() == "10"
        assert daemon.policy.applied[0]["changes"][0]["knob"] == "sysctl:vm.swappiness"
        world.stall = 0.5  # the change hurts: half of every second stalled
        _wait(lambda: daemon.policy.reverts, 10, "revert")
        assert (root / "proc/sys/vm/swappiness").read_text().strip() == "60"
        why = daemon.policy.reverts[0]["why"]
        assert "stall time" in why
        assert ("training", "sysctl:vm.swappiness", "10") in daemon.policy.avoid
        # Remembered: later windows of the same workload do not re-apply it.
        windows = daemon.window.windows
        daemon.policy.start_recommendation("training")
        _wait(lambda: daemon.window.windows >= windows + 4, 10, "more windows")
        assert len(daemon.policy.applied) == 1
        status = daemon.requests.status()
        assert status["mode"] == "auto" and len(status["reverts"]) == 1
    finally:
        daemon.request_stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    # The store recorded the revert, and a new daemon remembers it.
    from hosttune.agent.service.store import Store

    store = Store(tmp_path / "state" / "store.db")
    kinds = [e.kind for e in store.events(limit=100)]
    assert "apply" in kinds and "revert" in kinds and kinds[-1] == "stop"
    store.close()
    daemon2, thread2 = _start(tmp_path, root, AUTO)
    try:
        _wait(lambda: daemon2.window.sample_count > 0, 5, "start")
        assert ("training", "sysctl:vm.swappiness", "10") in daemon2.policy.avoid
    finally:
        daemon2.request_stop()
        thread2.join(timeout=10)


def test_a_harmless_change_is_kept(tmp_path: Path, tree: tuple[Path, World]) -> None:
    root, world = tree
    world.busy = 0.9
    daemon, thread = _start(tmp_path, root, AUTO)
    try:
        _wait(lambda: daemon.policy.applied, 10, "auto apply")
        applied_windows = daemon.window.windows
        _wait(lambda: daemon.window.windows >= applied_windows + AUTO.auto.watch_windows + 2, 10,
              "watch windows")
        assert not daemon.policy.reverts and daemon.policy.watch is None
        assert (root / "proc/sys/vm/swappiness").read_text() == "10"
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


def test_a_time_bounded_change_is_put_back(tmp_path: Path, tree: tuple[Path, World],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The khugepaged catch-up (where MADV_COLLAPSE is missing) is bounded in
    # time: here its bound is a second, on the fixture's one knob.
    from hosttune.agent.service.daemon import policy

    # (the fixture's plan carries the rule id "swappiness")
    monkeypatch.setattr(policy, "TEMPORARY_RULES", {"swappiness": 1.0})
    root, world = tree
    world.busy = 0.9
    daemon, thread = _start(tmp_path, root, AUTO)
    try:
        _wait(lambda: daemon.policy.applied, 10, "auto apply")
        _wait(lambda: (root / "proc/sys/vm/swappiness").read_text().strip() == "60", 10,
              "the bounded change put back")
        assert not daemon.policy.temporary
        assert daemon.services.store.events(kind="temporary-ended")
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


def test_auto_mode_leaves_a_knob_a_batch_job_holds(tmp_path: Path,
                                                   tree: tuple[Path, World]) -> None:
    # `hosttune job start` (the Slurm prolog) holds vm.swappiness for its job:
    # the daemon's plan must not fight it.
    from hosttune.agent.service import jobs

    (tmp_path / "state").mkdir()
    with jobs.JobBook(tmp_path / "state") as book_file:
        book = book_file.read()
        book.held["sysctl:vm.swappiness"] = "30"
        book_file.write(book)
    root, world = tree
    world.busy = 0.9
    daemon, thread = _start(tmp_path, root, AUTO)
    try:
        _wait(lambda: daemon.policy.recommendation is not None, 10, "a plan")
        time.sleep(1.0)  # windows in which auto mode could have applied it
        assert daemon.policy.applied == []
        assert (root / "proc/sys/vm/swappiness").read_text().strip() == "60"
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


def test_recommend_mode_never_writes(tmp_path: Path, tree: tuple[Path, World]) -> None:
    root, world = tree
    world.busy = 0.9
    config = cfg.with_mode(AUTO, "recommend")
    daemon, thread = _start(tmp_path, root, config)
    try:
        _wait(lambda: daemon.policy.recommendation is not None, 10, "recommendation")
        rec = daemon.requests.status()["recommendation"]
        assert rec["workload"] == "training"
        assert rec["plan"]["changes"][0]["value"] == "10"
        time.sleep(0.5)
        assert not daemon.policy.applied
        assert (root / "proc/sys/vm/swappiness").read_text() == "60\n"
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


def test_revert_on_stop(tmp_path: Path, tree: tuple[Path, World]) -> None:
    root, world = tree
    world.busy = 0.9
    config = cfg.parse("mode: auto\ninterval: 0.1\nwindow: 3\nrevert_on_stop: true\n"
                       "auto: {cooldown_windows: 0}\nsocket: {group: root}\n")
    daemon, thread = _start(tmp_path, root, config)
    try:
        _wait(lambda: daemon.policy.applied, 10, "auto apply")
        assert (root / "proc/sys/vm/swappiness").read_text() == "10"
    finally:
        daemon.request_stop()
        thread.join(timeout=10)
    assert (root / "proc/sys/vm/swappiness").read_text().strip() == "60"


def test_reload_keeps_old_config_on_error(tmp_path: Path, tree: tuple[Path, World]) -> None:
    root, _world = tree
    daemon, thread = _start(tmp_path, root, AUTO)
    try:
        _wait(lambda: daemon.window.sample_count > 2, 5, "samples")
        daemon.services.paths.config.write_text("mode: observe\nwindow: many\n")
        daemon.request_reload()
        _wait(lambda: daemon.services.store.events(kind="reload-failed"), 5, "reload failure")
        assert daemon.services.config is AUTO
        daemon.services.paths.config.write_text("mode: observe\ninterval: 0.2\n")
        daemon.request_reload()
        _wait(lambda: daemon.services.config.mode == "observe", 5, "reload")
        assert daemon.services.config.interval == 0.2
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


def _scrape(url: str) -> dict[str, float]:
    """`name{labels}` -> value of every sample line; checks every family has
    its HELP and TYPE and every value is a number."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    typed: set[str] = set()
    helped: set[str] = set()
    out: dict[str, float] = {}
    for ln in text.splitlines():
        if ln.startswith("# TYPE "):
            typed.add(ln.split()[2])
        elif ln.startswith("# HELP "):
            helped.add(ln.split()[2])
        else:
            key, value = ln.rsplit(" ", 1)
            name = key.split("{", 1)[0]
            family = next((f for f in typed if name == f or name.startswith(f + "_")), None)
            assert family is not None and family in helped, f"untyped: {ln}"
            out[key] = float(value)
    return out


def test_metrics_endpoint(tmp_path: Path, tree: tuple[Path, World]) -> None:
    import socket
    import urllib.error
    import urllib.request

    root, world = tree
    world.busy = 0.9
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = cfg.parse(
        "mode: auto\ninterval: 0.1\nwindow: 3\nsocket: {group: root}\n"
        "auto: {watch_windows: 2, cooldown_windows: 0, regression: 0.05}\n"
        f"metrics: {{enabled: true, port: {port}}}\n")
    daemon, thread = _start(tmp_path, root, config)
    try:
        _wait(lambda: daemon.policy.applied, 10, "auto apply")
        url = f"http://127.0.0.1:{port}/metrics"
        m = _scrape(url)
        assert m['hosttune_workload_info{class="training"}'] == 1
        assert m['hosttune_workload_class{class="training"}'] == 1
        assert m['hosttune_workload_class{class="idle"}'] == 0
        assert m['hosttune_mode{mode="auto"}'] == 1 and m['hosttune_mode{mode="observe"}'] == 0
        assert m["hosttune_workload_confidence"] == 0.9
        assert m['hosttune_applies_total{result="applied"}'] == 1
        assert m['hosttune_applies_total{result="refused"}'] == 0
        assert m['hosttune_reverts_total{by="auto"}'] == 0
        assert m["hosttune_recommended_changes"] == 1
        assert m["hosttune_drifted_knobs"] == 0
        # Host counters are node_exporter's: none of the old telemetry dump.
        assert not [k for k in m if k.startswith("hosttune_telemetry")]
        assert len(m) < 80
        # The histogram: cumulative buckets, +Inf equal to the count, one
        # observation per sample taken before the scrape.
        buckets = [v for k, v in m.items()
                   if k.startswith("hosttune_sample_lateness_seconds_bucket")]
        assert buckets == sorted(buckets) and len(buckets) == 12
        count = m["hosttune_sample_lateness_seconds_count"]
        assert buckets[-1] == count and 3 <= count <= m["hosttune_samples_total"] + 1
        assert m["process_resident_memory_bytes"] > 1 << 20
        assert m["process_cpu_seconds_total"] > 0
        assert abs(m["process_start_time_seconds"] - time.time()) < 60
        # Someone else changes the knob hosttune set: drift, reported.
        (root / "proc/sys/vm/swappiness").write_text("30\n")
        assert _scrape(url)["hosttune_drifted_knobs"] == 1
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert info.value.code == 404
        # A client that connects and says nothing is dropped; the next is served.
        with socket.create_connection(("127.0.0.1", port)) as idle:
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
            idle.settimeout(5)
            assert idle.recv(100) == b""  # closed by the server's timeout
    finally:
        daemon.request_stop()
        thread.join(timeout=10)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_failing_tick_is_survived(tmp_path: Path, tree: tuple[Path, World]) -> None:
    root, _world = tree
    daemon, thread = _start(tmp_path, root, AUTO)
    try:
        _wait(lambda: daemon.window.sample_count > 2, 5, "samples")
        engine = daemon.services.access
        assert isinstance(engine, FixtureEngine)
        count = daemon.window.sample_count
        engine.fail_next = 3
        _wait(lambda: daemon.window.sample_count > count + 3, 5, "sampling to go on")
        assert daemon.window.sample_errors == 3 and thread.is_alive()
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


def test_objective_command_judges_the_change(tmp_path: Path, tree: tuple[Path, World]) -> None:
    root, world = tree
    world.busy = 0.9
    score = tmp_path / "throughput.txt"
    score.write_text("samples/s: 100\n")
    config = cfg.parse(
        "mode: auto\ninterval: 0.1\nwindow: 3\nsocket: {group: root}\n"
        "auto: {watch_windows: 1, cooldown_windows: 0, regression: 0.05}\n"
        f"objective: {{command: 'cat {score}', higher_is_better: true, timeout: 10}}\n")
    daemon, thread = _start(tmp_path, root, config)
    try:
        _wait(lambda: daemon.policy.applied, 10, "auto apply")
        score.write_text("samples/s: 50\n")  # the benchmark got slower after the change
        _wait(lambda: daemon.policy.reverts, 10, "revert")
        assert daemon.policy.reverts[0]["why"] == "objective command went from 100 to 50"
        assert (root / "proc/sys/vm/swappiness").read_text().strip() == "60"
    finally:
        daemon.request_stop()
        thread.join(timeout=10)
    # what the watch measured is where `hosttune recommend` learns from
    from hosttune.agent.service.outcome_store import OutcomeStore

    outcomes = OutcomeStore(tmp_path / "state" / "outcomes.db").outcomes("training")
    assert [(o.source, o.knobs, round(o.effect, 3)) for o in outcomes] == [
        ("plan", {"sysctl:vm.swappiness": "60"}, 1.0),
        ("plan", {"sysctl:vm.swappiness": "10"}, 0.5)]


def test_a_class_believed_while_a_plan_is_computed_gets_its_own(
        tmp_path: Path, tree: tuple[Path, World]) -> None:
    root, world = tree
    world.busy = 0.9
    paths = Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                  config=tmp_path / "hosttune.yaml")
    engine = FixtureEngine(root)
    engine.slow_unknown = 1.5  # still computing when "training" is believed (~0.6 s)
    daemon = Daemon(paths, AUTO, engine, Log("debug", use_journal=False), Notifier(env={}))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: daemon.tracker.stable == "training", 10, "training")
        # Well before the periodic refresh (20 windows, 6 s here) would catch it.
        _wait(lambda: daemon.policy.applied, 4, "the training plan applied")
        assert daemon.policy.recommendation is not None
        assert daemon.policy.recommendation.workload == "training"
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


def test_recommend_takes_the_class_hosttuned_settled_on(
        tmp_path: Path, tree: tuple[Path, World], monkeypatch: pytest.MonkeyPatch) -> None:
    from hosttune.agent.service.recommend import classify, daemon_workload

    root, world = tree
    monkeypatch.setenv("HOSTTUNE_RUN_DIR", str(tmp_path / "run"))
    assert daemon_workload() == (None, "")  # no daemon: recommend classifies by itself
    world.busy = 0.9
    daemon, thread = _start(tmp_path, root, cfg.with_mode(AUTO, "observe"))
    try:
        _wait(lambda: daemon.tracker.stable == "training", 10, "a settled class")
        label, how = classify(Host(), 1.0)
        assert label == "training"
        assert "classified by hosttuned" in how and "confidence" in how
        # a captured tree is never classified from the live daemon
        assert classify(Host(root), 1.0)[0] is None
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


class AllocatingJobEngine(FixtureEngine):
    """The fixture world with a collapsed job that keeps allocating: the
    runner's advice is THP `always` (models.collapse.new_memory_thp)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.preflights: list[list[str]] = []

    def new_memory(self) -> NewMemory | None:
        change = Change("thp:enabled", "always", before="madvise", source="expert",
                        reason="pid 4242 still takes 16,000 minor faults/s",
                        evidence={"rule": "thp-for-allocating-job"})
        return NewMemory(pids=[(4242, "77")], live=[(4242, "77")], change=change)

    def preflight(self, plan: Any, allowlist: Mapping[str, Mapping[str, Any]],
                  admin_owned: Mapping[str, str]) -> Any:
        self.preflights.append([c.knob for c in plan.changes])
        return super().preflight(plan, allowlist, admin_owned)


@pytest.mark.parametrize("removed", [True, False])
def test_thp_for_a_job_is_not_tried_where_the_knob_is_not_auto_modes(
        tmp_path: Path, tree: tuple[Path, World], removed: bool) -> None:
    """Where the config removes thp:enabled from the allowlist, auto mode
    knows without the dry run (which loads every knob family); where the
    allowlist lacks it, one dry run says so and it is not asked again. In
    neither case is anything applied."""
    root, _world = tree
    text = "mode: auto\ninterval: 0.1\nwindow: 3\nsocket: {group: root}\n"
    config = cfg.parse(text + ('allowlist: {"thp:enabled": false}\n' if removed else ""))
    paths = Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                  config=tmp_path / "hosttune.yaml")
    engine = AllocatingJobEngine(root)
    daemon = Daemon(paths, config, engine, Log("debug", use_journal=False), Notifier(env={}))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: daemon.window.windows >= 4, 10, "four windows")
        thp = [knobs for knobs in engine.preflights if "thp:enabled" in knobs]
        # avoided per class: one dry run for each class the host was in
        classes = {w for w, knob, _v in daemon.policy.avoid if knob == "thp:enabled"}
        assert classes
        assert len(thp) == (0 if removed else len(classes))
        assert not daemon.policy.applied and daemon.policy.for_job is None
        assert "thp:enabled" not in engine.written
    finally:
        daemon.request_stop()
        thread.join(timeout=10)


class CheckpointingJobEngine(AllocatingJobEngine):
    """The allocating job and, now and then, a checkpoint writer beside it:
    the runner's advice is THP `always`, or withheld while the writer
    writes. thp:enabled passes the dry run here."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writing = False

    def new_memory(self) -> NewMemory | None:
        advice = super().new_memory()
        if advice is not None and self.writing:
            advice.change = None
            advice.blocked = "pid 4300 writes 900 MiB/s (a checkpoint)"
        return advice

    def collapse_status(self) -> dict[str, Any] | None:
        advice = self.new_memory()
        assert advice is not None
        # the runner's status as CollapseRunner.status gives its advice
        return {"passes": 1, "new_memory": advice.to_dict()}

    def preflight(self, plan: Any, allowlist: Mapping[str, Mapping[str, Any]],
                  admin_owned: Mapping[str, str]) -> Any:
        return Plan([c for c in plan.changes if c.knob == "thp:enabled"], plan.workload)


def test_thp_for_a_job_waits_for_a_quiet_minute_after_a_checkpoint_writer(
        tmp_path: Path, tree: tuple[Path, World]) -> None:
    """A checkpoint written in bursts must not flip the knob at every pause:
    after a writer put THP back, `always` returns only once no writer has
    been seen for WRITER_QUIET_S, and `status` says why it waits."""
    from hosttune.agent.service.render.status import collapse_lines

    root, _world = tree
    paths = Paths(state_dir=tmp_path / "state", run_dir=tmp_path / "run",
                  config=tmp_path / "hosttune.yaml")
    engine = CheckpointingJobEngine(root)
    daemon = Daemon(paths, AUTO, engine, Log("debug", use_journal=False), Notifier(env={}))
    paths.state_dir.mkdir(parents=True)
    # the loop's own start opens the store; this test drives the policy's ticks
    daemon.services.opened = Store(paths.store)
    try:
        policy = daemon.policy
        clock = [1000.0]
        policy.clock = lambda: clock[0]
        daemon.window.last_sample = Sample(clock[0], 0.0, processes=[AIProcess(
            pid=4242, comm="python3", cmdline="torchrun", reasons=("cmdline:torchrun",),
            start_time="77")])

        def applied() -> list[str]:
            return [c["value"] for a in policy.applied for c in a.get("changes", [])]

        def thp() -> tuple[bool, str]:  # (held for the job, the knob's value)
            return policy.for_job is not None, engine.written["thp:enabled"]

        policy.on_tick("training")
        assert thp() == (True, "always")
        policy.watch = None  # (its watch is another test's subject)
        engine.writing = True  # a checkpoint starts: THP goes back at once
        clock[0] += 5
        policy.on_tick("training")
        assert thp() == (False, "madvise")
        engine.writing = False  # a pause between shards
        for _ in range(11):  # 55 s: not yet
            clock[0] += 5
            policy.on_tick("training")
            assert thp() == (False, "madvise")
        text = "\n".join(collapse_lines(daemon.requests.status()["collapse"]))
        assert "withheld: a checkpoint writer stopped; 5 s more of quiet first" in text, text
        clock[0] += 6  # a quiet minute: back
        policy.on_tick("training")
        assert thp() == (True, "always")
        assert applied().count("always") == 2
    finally:
        daemon.services.store.close()
