"""Knob commands: `apply PLAN.yaml`, `set KNOB VALUE`, `rollback`, `history`,
`show KNOB...`, and `collapse` (per-process huge pages, an action journalled
like a change). When hosttuned runs, `apply`, `set` and `rollback` are handed
to it over the control socket, so the daemon stays the one writer of its
journal and knows what changed under it; otherwise they act on the host
directly, and the journal's lock keeps them from interleaving with another
hosttune. Dry runs print each knob's old -> new value and change nothing;
anything that writes needs root and is refused, before anything is touched,
for anyone else.

The act layer (tuners: transaction, journal, allowlist; 70 ms) and the
client are imported inside the commands: `hosttune --help` imports this
module too."""

from __future__ import annotations

import fnmatch
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from hosttune.agent.sense.errors import HosttuneError, PermissionRefused
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service.commands.options import (
    DRY_RUN_OPTION,
    JSON_OPTION,
    ROOT_OPTION,
    add_command,
    emit_json,
    fail,
    host_root,
)

if TYPE_CHECKING:
    from hosttune.tuners.journal import Journal
    from hosttune.tuners.knobs import Plan
    from hosttune.tuners.transaction import TxnResult

_PLAN_FILE = typer.Argument(..., help="Plan file: changes of knob, value, reason.")
_KNOB = typer.Argument(..., help="family:key, e.g. sysctl:vm.swappiness, thp:enabled.")
_VALUE = typer.Argument(..., help="The new value.")
_REASON = typer.Option("set by hand", "--reason", help="Why (kept in the history).")
_TXN = typer.Argument(None, help="Transaction id to go back to (its state after it), "
                                 "or before:ID.")
_BASELINE = typer.Option(False, "--baseline",
                         help="Back to the host as it was before hosttune's first change.")
_LIMIT = typer.Option(50, "--limit", min=1, help="Newest transactions to show.")
_KNOBS = typer.Argument(..., help="Knobs to show (family:key).")
_FORCE = typer.Option(False, "--force",
                      help="Also change knobs the administrator owns or changed by hand.")
_WAIT = typer.Option(30.0, "--wait", min=0.0,
                     help="Seconds to wait for another hosttune process to finish.")
_PIDS = typer.Option([], "--pid", help="A process to collapse (repeat for several); "
                                       "default: the ones hosttune would choose.")


def register(app: typer.Typer) -> None:
    add_command(app, "apply", apply_command)
    add_command(app, "set", set_command)
    add_command(app, "rollback", rollback_command)
    add_command(app, "history", history_command)
    add_command(app, "show", show_command)
    add_command(app, "collapse", collapse_command)


def _require_root() -> None:
    """Refused before the journal, the config or the host is touched, whatever
    the --root (a host tree in a test is still a host)."""
    if os.geteuid() != 0:
        raise PermissionRefused(f"only root changes the host (this is uid {os.geteuid()}); "
                                "--dry-run shows what would change")


def _journal(*, must_exist: bool = False) -> Journal | None:
    # the act layer: not at --help (see the module docstring)
    from hosttune.tuners.journal import Journal

    path = Paths.from_env().journal
    if must_exist and not path.exists():
        return None
    return Journal(path)


def _admin_overrides() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The effective allowlist and the knobs the config says the admin owns."""
    # the act layer: not at --help (see the module docstring)
    from hosttune.agent.service.config import load
    from hosttune.tuners.allowlist import DEFAULT_ALLOWLIST

    path = Paths.from_env().config
    config = load(path)
    owned = {knob: f"overrides in {path}" for knob in config.overrides}
    return config.effective_allowlist(DEFAULT_ALLOWLIST), owned


def _print_result(result: TxnResult, json_out: bool) -> None:
    if json_out:
        emit_json(result.to_dict())
    else:
        typer.echo(result.message)
        for step in result.steps:
            line = f"  {step.line()}"
            if step.reason and step.source != "rollback":
                line += f"  ({step.reason})"
            typer.echo(line)
            for advice in step.advice:
                typer.echo(f"    note: {advice}")
    if not result.ok:
        raise typer.Exit(1)


def _recover_first(host: Host, journal: Journal, json_out: bool, wait: float) -> None:
    # the act layer: not at --help (see the module docstring)
    from hosttune.tuners.transaction import recover

    for result in recover(host, journal, lock_timeout=wait):
        if not json_out:
            typer.echo(f"hosttune: {result.message}", err=True)


def _via_daemon(op: str, args: dict[str, Any], root: Path, wait: float) -> TxnResult | None:
    """The daemon's answer when one runs for this host, else None (work directly)."""
    # the act layer: not at --help (see the module docstring)
    from hosttune.agent.service.client import DaemonClient, DaemonError, DaemonUnavailable
    from hosttune.tuners.transaction import StepOutcome, TxnResult

    try:
        data = DaemonClient(timeout=wait + 120.0).request(op, root=str(root), **args)
    except DaemonUnavailable:
        return None
    except DaemonError as exc:
        if exc.code != "other_root":
            raise
        return None  # the daemon runs for another tree than the one asked for
    return TxnResult(ok=bool(data["ok"]), txn_id=data.get("txn"), kind=str(data.get("kind", op)),
                     steps=[StepOutcome(**step) for step in data.get("changes", [])],
                     dry_run=bool(data.get("dry_run")), failed_step=data.get("failed_step"),
                     error=data.get("error"), message=str(data.get("message", "")))


def _run_plan(plan: Plan, root: Path, *, dry_run: bool, force: bool, wait: float,
              json_out: bool) -> None:
    # the act layer: not at --help (see the module docstring)
    from hosttune.tuners.transaction import apply_plan

    host = Host(root)
    if not dry_run:
        _require_root()
        done = _via_daemon("apply", {"plan": plan.to_yaml(), "force": force,
                                     "reason": "hosttune CLI via hosttuned"}, root, wait)
        if done is not None:
            _print_result(done, json_out)
            return
    allowlist, owned = _admin_overrides()
    journal = _journal(must_exist=dry_run)
    if journal is None:  # a dry run on a host hosttune never touched
        # the act layer: not at --help (see the module docstring)
        from hosttune.tuners.journal import Journal

        with tempfile.TemporaryDirectory() as tmp, Journal(Path(tmp) / "j.db") as scratch:
            result = apply_plan(host, plan, scratch, dry_run=True, force=force,
                                allowlist=allowlist, admin_owned=owned)
        _print_result(result, json_out)
        return
    with journal:
        if not dry_run:
            _recover_first(host, journal, json_out, wait)
        result = apply_plan(host, plan, journal, dry_run=dry_run, force=force,
                            allowlist=allowlist, admin_owned=owned, lock_timeout=wait,
                            reason="hosttune CLI")
    _print_result(result, json_out)


def apply_command(  # noqa: PLR0917 (typer maps parameters to options)
    plan_file: Path = _PLAN_FILE,
    dry_run: bool = DRY_RUN_OPTION,
    force: bool = _FORCE,
    wait: float = _WAIT,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Apply a plan file all or nothing: if any step fails, every knob already
    changed is restored in reverse order.

    The plan is YAML text (as `hosttune recommend --output` writes it); a file
    that is not, unreadable or not UTF-8 say, is refused naming the file."""
    # the act layer: not at --help (see the module docstring)
    from hosttune.agent.service.config import read_text
    from hosttune.tuners.knobs import Plan

    host = host_root(root)
    try:
        plan = Plan.from_yaml(read_text(plan_file), str(plan_file))
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    _run_plan(plan, host, dry_run=dry_run, force=force, wait=wait, json_out=json_out)


def set_command(  # noqa: PLR0917 (typer maps parameters to options)
    knob: str = _KNOB,
    value: str = _VALUE,
    reason: str = _REASON,
    dry_run: bool = DRY_RUN_OPTION,
    force: bool = _FORCE,
    wait: float = _WAIT,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Set one knob (a one-change transaction)."""
    # the act layer: not at --help (see the module docstring)
    from hosttune.tuners.knobs import Change, Plan

    plan = Plan([Change(knob, value, reason=reason, source="admin")])
    _run_plan(plan, host_root(root), dry_run=dry_run, force=force, wait=wait, json_out=json_out)


def rollback_command(  # noqa: PLR0917 (typer maps parameters to options)
    txn: str | None = _TXN,
    baseline: bool = _BASELINE,
    dry_run: bool = DRY_RUN_OPTION,
    force: bool = _FORCE,
    wait: float = _WAIT,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Undo hosttune's changes after a transaction, or all of them (--baseline)."""
    # the act layer: not at --help (see the module docstring)
    from hosttune.tuners.transaction import rollback

    if (txn is None) == (not baseline):
        raise fail("give a transaction id or --baseline")
    root = host_root(root)
    host = Host(root)
    if not dry_run:
        _require_root()
        target = "baseline" if baseline else str(txn)
        done = _via_daemon("rollback", {"to": target, "force": force}, root, wait)
        if done is not None:
            _print_result(done, json_out)
            return
    journal = _journal(must_exist=True)
    if journal is None:
        raise fail("hosttune has not changed anything on this host (no journal yet)")
    with journal:
        if not dry_run:
            _recover_first(host, journal, json_out, wait)
        result = rollback(host, journal, txn, baseline=baseline, force=force, dry_run=dry_run,
                          lock_timeout=wait)
    _print_result(result, json_out)


def history_command(
    limit: int = _LIMIT,
    json_out: bool = JSON_OPTION,
) -> None:
    """Every transaction: when, who (uid), what changed and why, and how it ended."""
    # the act layer: not at --help (see the module docstring)
    from hosttune.agent.service.client import DaemonClient, DaemonUnavailable
    from hosttune.tuners.transaction import history

    # The daemon serves the journal to members of the hosttune group too, who
    # cannot open its database themselves; without a daemon, read it directly.
    records: list[dict[str, Any]] | None = None
    try:
        reply = DaemonClient(timeout=30.0).request("history", limit=limit)
        if "transactions_error" not in reply:
            records = list(reply["transactions"])
    except DaemonUnavailable:
        pass
    if records is None:
        records = []
        journal = _journal(must_exist=True)
        if journal is not None:
            with journal:
                records = [r.to_dict() for r in history(journal)[-limit:]]
    if json_out:
        emit_json(records)
        return
    if not records:
        typer.echo("no transactions yet")
        return
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started"]))
        what = record["kind"] + (f" to {record['target']}" if record["target"] else "")
        head = f"{record['txn']:>4}  {when}  uid {record['uid']}  {what}: {record['state']}"
        if record["workload"]:
            head += f"  [workload {record['workload']}]"
        typer.echo(head)
        if record["error"]:
            typer.echo(f"      {record['error']}")
        if record["kind"] == "collapse":
            # an action, not a knob: what it did, per process
            if record.get("reason"):
                typer.echo(f"      {record['reason']}")
            for step in record["changes"]:
                error = f": {step['error']}" if step.get("error") else ""
                typer.echo(f"      {step['knob']}: {step['after']} [{step['state']}]{error}")
            continue
        for step in record["changes"]:
            reason = f"  ({step['reason']})" if step["reason"] else ""
            typer.echo(f"      {step['knob']}: {step['before']} -> {step['after']} "
                       f"[{step['state']}]{reason}")


def show_command(
    knobs: list[str] = _KNOBS,
    root: Path | None = ROOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Show knobs: each one's value, who owns it and hosttune's last change to it.

    The owner is hosttune, the admin's file:line, the kernel command line, a
    peer daemon, or the default."""
    # the act layer: not at --help (see the module docstring)
    from hosttune.agent.sense.ownership import owner_of
    from hosttune.tuners.owners import owners
    from hosttune.tuners.registry import bind_tuners, tuner_and_key

    host = Host(host_root(root))
    tuners = bind_tuners(host)
    owned = owners(host)
    _, config_owned = _admin_overrides()
    journal = _journal(must_exist=True)
    rows: list[dict[str, Any]] = []
    try:
        for knob in knobs:
            row: dict[str, Any] = {"knob": knob, "value": None, "owner": "default",
                                   "last_change": None}
            rows.append(row)
            try:
                tuner, key = tuner_and_key(tuners, knob)
                if not tuner.available(key):
                    row["error"] = "unavailable on this host"
                    continue
                row["value"] = tuner.read(key)
            except HosttuneError as exc:
                row["error"] = str(exc)
                continue
            owner = owner_of(knob, owned)
            ours = journal.hosttune_value(knob) if journal is not None else None
            last = journal.last_change(knob) if journal is not None else None
            if owner is not None:
                row["owner"] = f"{'peer' if owner.kind == 'peer' else 'admin'}: {owner}"
            elif _config_owner(knob, config_owned):
                row["owner"] = f"admin: {_config_owner(knob, config_owned)}"
            elif ours is not None and last is not None:
                row["owner"] = ("hosttune" if tuner.equal(row["value"], ours) else
                                f"changed by someone else (hosttune set {ours!r})")
            if last is not None:
                row["last_change"] = {"txn": last.txn, "before": last.before,
                                      "after": last.after, "reason": last.reason,
                                      "source": last.source, "when": last.updated}
    finally:
        if journal is not None:
            journal.close()
    if json_out:
        emit_json(rows)
        return
    for row in rows:
        if "error" in row:
            typer.echo(f"{row['knob']}: {row['error']}")
            continue
        typer.echo(f"{row['knob']} = {row['value']}")
        typer.echo(f"    owner: {row['owner']}")
        last = row["last_change"]
        if last:
            typer.echo(f"    last change: transaction {last['txn']}: {last['before']} -> "
                       f"{last['after']} ({last['reason'] or last['source']})")
    if any("error" in row for row in rows):
        raise typer.Exit(1)


def _config_owner(knob: str, config_owned: dict[str, str]) -> str | None:
    for pattern, where in config_owned.items():
        if fnmatch.fnmatchcase(knob, pattern):
            return where
    return None


def collapse_command(
    pids: list[int] = _PIDS,
    dry_run: bool = DRY_RUN_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Collapse the memory of running AI processes into huge pages now, for those processes only.

    A THP mode change serves only memory allocated after it; this reaches
    what a running job already holds (MADV_COLLAPSE through a pidfd, Linux
    6.1, whatever the global THP mode). Without --pid, the processes
    hosttune would choose: AI processes holding 256 MiB or more of anonymous
    memory with almost none of it in huge pages (PyTorch's CPU allocator),
    never numpy-style madvisers or checkpoint writers (write rates are
    measured over 2 s first). One bounded pass within the config's
    collapse.* bounds, journalled: `hosttune history` shows it. Needs root."""
    # the act layer and the process scan: not at --help (see the module docstring)
    from hosttune.agent.sense import procmem
    from hosttune.agent.sense.telemetry.processes import find_ai_processes
    from hosttune.agent.service.collapse import CollapseRunner, limits_of
    from hosttune.agent.service.config import load
    from hosttune.tuners import procthp
    from hosttune.tuners.transaction import require_root

    host = Host()
    paths = Paths.from_env()
    try:
        if not dry_run:
            require_root(host)
        settings = load(paths.config).collapse
        runner = CollapseRunner(host, settings)
        if runner.unsupported:
            fail(f"per-process huge pages are not available here: {runner.unsupported}")
        if pids:
            targets = []
            for pid in pids:
                start = procmem.start_time(host, pid)
                if start is None:
                    fail(f"no process {pid}")
                targets.append(procthp.CollapseTarget(pid, str(start), reason="by hand"))
            skipped: list[tuple[int, str, str]] = []
        else:
            found = find_ai_processes(host)
            runner.choose(found, "unknown")  # the first look: write counters
            time.sleep(2.0)
            targets, decision = runner.choose(found, "unknown")
            skipped = decision.skipped
        if dry_run or not targets:
            data = {"targets": [t.__dict__ for t in targets],
                    "skipped": [{"pid": p, "comm": c, "why": w} for p, c, w in skipped]}
            if json_out:
                emit_json(data)
                return
            typer.echo(("would collapse: " if targets else "nothing to collapse")
                       + ", ".join(f"pid {t.pid} ({t.comm or 'by hand'})" for t in targets))
            for pid, comm, why in skipped:
                typer.echo(f"  left alone: {comm} (pid {pid}): {why}")
            return
        journal = _journal()
        assert journal is not None
        with journal:
            report = procthp.collapse_pass(host, journal, targets, limits_of(settings),
                                           runner.progress, reason="collapse by hand")
    except HosttuneError as exc:
        fail(str(exc))
    if json_out:
        emit_json(report.to_dict())
        return
    if report.unsupported:
        fail(f"per-process huge pages refused: {report.unsupported}")
    typer.echo(f"transaction {report.txn}: {round(report.collapsed_mib)} MiB collapsed")
    for result in report.results:
        typer.echo(f"  pid {result.pid} ({result.comm}) {result.status}: {result.summary()}"
                   + (f" ({result.message})" if result.message else ""))
