"""numa: placement of one process (all its threads) and of its memory.

Key: `pid:4242`. Value syntax (fields separated by spaces):

- `node=N` (or a bare `N`): run on the CPUs of NUMA node N and move the
  process's memory to node N. Normalised to `cpus=<node N's CPUs> mems=N`,
  less the node's isolated CPUs (below): on a real two-socket kernel with
  isolcpus= inside a node, `node=N` taking the whole node would always be
  refused.
- `cpus=LIST`: pin every thread to the CPU list (`0-3,8`); memory untouched.
- `cpus=LIST mems=LIST`: pin, and move memory to the listed nodes.

`read` reports `cpus=<the process's affinity> mems=<nodes holding its
anonymous pages>` (from /proc/PID/status and /proc/PID/numa_maps); `mems=` is
left out when the process has no anonymous pages or the kernel has no NUMA.
Memory is moved with migrate_pages(2), which moves the pages the process
alone maps; shared pages (libraries, page cache) stay where they are, which
is why the anonymous pages are what `read` reports and `verify` checks.
Rolling back re-pins the threads and moves the memory back to the nodes it
was on (not page-for-page to the same node when it was spread over several).

A process is never moved onto CPUs the admin isolated (isolcpus=,
nohz_full=, ..., a running tuned's isolated_cores:
sense.ownership.cpu_reservations) unless it already runs there: `conflict`
names the parameter and the transaction refuses the change. A running numad
owns the placement of every process.

A pid can be reused: `identity` (the process start time) lets the
transaction refuse to roll back a different process that got the same pid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from hosttune.agent.sense import knobfiles, procmem
from hosttune.agent.sense.cpulist import format_cpulist, parse_cpulist
from hosttune.agent.sense.errors import HostReadError, KnobError, ParseError
from hosttune.agent.sense.ownership import Owner, cpu_reservations
from hosttune.agent.sense.peers import PeerReport
from hosttune.agent.sense.topology import memory_nodes, node_cpus, online_cpus
from hosttune.tuners.base import Tuner

_NODE_TOKEN = re.compile(r"^N(\d+)=(\d+)$")
# The share of a process's anonymous pages that makes a node one it lives on.
MIN_NODE_SHARE = 0.05


@dataclass(frozen=True)
class Placement:
    cpus: tuple[int, ...]
    mems: tuple[int, ...] | None = None

    def __str__(self) -> str:
        text = f"cpus={format_cpulist(self.cpus)}"
        if self.mems:
            text += f" mems={format_cpulist(self.mems)}"
        return text


class NumaTuner(Tuner):
    family = "numa"
    # any placement the validator accepts
    allowlist: ClassVar[Mapping[str, Mapping[str, Any]]] = {"numa:pid:*": {}}

    @staticmethod
    def pid_of(key: str) -> int:
        if not key.startswith("pid:") or not key[4:].isdigit() or int(key[4:]) <= 0:
            raise KnobError(f"numa:{key}", "numa keys are pid:PID (numa:pid:4242)")
        return int(key[4:])

    def available(self, key: str) -> bool:
        try:
            pid = self.pid_of(key)
        except KnobError:
            return False
        return self.host.exists(knobfiles.process(pid, "status"))

    def identity(self, key: str) -> str:
        """The process start time (field 22 of /proc/PID/stat): a pid and its
        start time name one process for the life of the boot."""
        return procmem.start_time(self.host, self.pid_of(key)) or ""

    def node_cpus(self, node: int) -> tuple[int, ...]:
        cpus = node_cpus(self.host, node)
        if cpus is None:
            raise KnobError(f"numa:node{node}", f"this host has no NUMA node {node}")
        return cpus

    def housekeeping_cpus(self, node: int) -> tuple[int, ...]:
        """The node's CPUs less those the admin isolated; refused when that
        leaves none."""
        cpus = self.node_cpus(node)
        isolation = cpu_reservations(self.host)
        usable = tuple(c for c in cpus if c not in isolation.cpus)
        if not usable:
            raise KnobError(f"numa:node{node}", f"every CPU of node {node} is isolated: "
                                                f"{isolation.explain(cpus)}")
        return usable

    # -- values ---------------------------------------------------------------

    def parse(self, key: str, value: str) -> Placement:
        knob = f"numa:{key}"
        fields = value.split()
        if len(fields) == 1 and fields[0].isdigit():
            fields = [f"node={fields[0]}"]
        parts: dict[str, str] = {}
        for field in fields:
            name, sep, text = field.partition("=")
            if not sep or name not in ("node", "cpus", "mems") or name in parts:
                raise KnobError(knob, f"bad placement {value!r} (node=N, cpus=LIST [mems=LIST])")
            parts[name] = text
        try:
            if "node" in parts:
                if set(parts) != {"node"} or not parts["node"].isdigit():
                    raise KnobError(knob, "node=N stands alone (it sets both CPUs and memory)")
                node = int(parts["node"])
                return Placement(self.housekeeping_cpus(node), (node,))
            if "cpus" not in parts:
                raise KnobError(knob, f"bad placement {value!r}: cpus=LIST is required")
            cpus = parse_cpulist(parts["cpus"], source=knob)
            mems = parse_cpulist(parts["mems"], source=knob) if "mems" in parts else None
        except ParseError as exc:
            raise KnobError(knob, exc.message) from None
        return Placement(cpus, mems or None)

    def read_placement(self, key: str) -> Placement:
        pid = self.pid_of(key)
        path = knobfiles.process(pid, "status")
        status = self.host.read_optional(path)
        if status is None:
            raise KnobError(f"numa:{key}", f"no process {pid}")
        cpus: tuple[int, ...] = ()
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus = parse_cpulist(line.split(":", 1)[1], source=path)
        return Placement(cpus, self.anon_nodes(pid) or None)

    def anon_nodes(self, pid: int) -> tuple[int, ...]:
        """The nodes holding the process's anonymous pages, from numa_maps:
        each node with at least MIN_NODE_SHARE of them. A few pages faulted
        elsewhere (seen on the two-node guest: a process started with
        --localalloc on node 0 had a handful on node 1) must not make it
        "spread over 0-1": rolling back to that would move nothing, and its
        memory would stay where hosttune had put it."""
        text = self.host.read_optional(knobfiles.process(pid, "numa_maps"))
        if text is None:
            return ()
        pages: dict[int, int] = {}
        for line in text.splitlines():
            tokens = line.split()
            if not any(t.startswith("anon=") for t in tokens):
                continue
            for token in tokens:
                match = _NODE_TOKEN.match(token)
                if match and int(match.group(2)) > 0:
                    node = int(match.group(1))
                    pages[node] = pages.get(node, 0) + int(match.group(2))
        total = sum(pages.values())
        return tuple(sorted(n for n, count in pages.items() if count >= MIN_NODE_SHARE * total))

    def thread_cpus(self, pid: int) -> dict[int, tuple[int, ...]]:
        """Each thread's affinity, from /proc/PID/task/TID/status."""
        result: dict[int, tuple[int, ...]] = {}
        for tid in self.host.listdir_optional(knobfiles.process_tasks(pid)):
            status = self.host.read_optional(knobfiles.thread(pid, tid, "status"))
            for line in (status or "").splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    result[int(tid)] = parse_cpulist(line.split(":", 1)[1])
        return result

    # -- the protocol -----------------------------------------------------------

    def read(self, key: str) -> str:
        return str(self.read_placement(key))

    def validate(self, key: str, value: str) -> str:
        knob = f"numa:{key}"
        self.read_placement(key)
        placement = self.parse(key, value)
        if not placement.cpus:
            raise KnobError(knob, "a process needs at least one CPU")
        online = online_cpus(self.host)
        if online and not set(placement.cpus) <= set(online):
            bad = format_cpulist(sorted(set(placement.cpus) - set(online)))
            raise KnobError(knob, f"CPU(s) {bad} are not online (online: {format_cpulist(online)})")
        if placement.mems:
            nodes = memory_nodes(self.host)
            bad_nodes = sorted(set(placement.mems) - set(nodes))
            if bad_nodes:
                raise KnobError(knob, f"node(s) {format_cpulist(bad_nodes)} have no memory "
                                      f"(nodes with memory: {format_cpulist(nodes)})")
        return str(placement)

    def apply(self, key: str, value: str) -> None:
        knob = f"numa:{key}"
        pid = self.pid_of(key)
        placement = self.parse(key, value)
        try:
            self.host.set_affinity(pid, placement.cpus)
            if placement.mems:
                others = set(memory_nodes(self.host)) - set(placement.mems)
                if others:
                    left = self.host.migrate_pages(pid, sorted(others), placement.mems)
                    if left:
                        raise KnobError(knob, f"{left} pages of process {pid} could not be moved "
                                              f"to node(s) {format_cpulist(placement.mems)}")
        except HostReadError as exc:
            raise KnobError(knob, str(exc)) from exc

    def verify(self, key: str, value: str) -> bool:
        wanted = self.parse(key, value)
        pid = self.pid_of(key)
        threads = self.thread_cpus(pid)
        if not threads or any(set(c) != set(wanted.cpus) for c in threads.values()):
            return False
        if wanted.mems:
            return set(self.anon_nodes(pid)) <= set(wanted.mems)
        return True

    def equal(self, a: str, b: str) -> bool:
        """Same CPUs; memory on the same nodes where both say (one side's nodes
        within the other's: a process need not have pages on every node asked)."""
        try:
            pa, pb = self.parse("pid:1", a), self.parse("pid:1", b)
        except KnobError:
            return a.split() == b.split()
        if set(pa.cpus) != set(pb.cpus):
            return False
        if pa.mems and pb.mems:
            ma, mb = set(pa.mems), set(pb.mems)
            return ma <= mb or mb <= ma
        return True

    def conflict(self, key: str, value: str, before: str) -> str | None:
        """Why `value` may not be set: it moves the process onto CPUs the
        admin isolated that it does not run on now."""
        try:
            wanted = self.parse(key, value)
            now = set(self.parse(key, before).cpus) if before else set()
        except KnobError:
            return None
        online = set(online_cpus(self.host))
        if online and now >= online:
            now = set()  # allowed everywhere is not placed anywhere
        isolation = cpu_reservations(self.host)
        intruding = sorted((set(wanted.cpus) & isolation.cpus) - now)
        if not intruding:
            return None
        return (f"process {self.pid_of(key)} would move onto isolated CPUs: "
                f"{isolation.explain(intruding)}; hosttune does not place work there")

    @classmethod
    def owned_by_daemons(cls, report: PeerReport) -> dict[str, Owner]:
        if not report.numad:
            return {}
        pids = ", ".join(map(str, report.numad))
        return {"numa:*": Owner("peer", f"numad (pid {pids}) places processes on NUMA nodes")}
