"""The text view of `hosttune status`: the daemon's own report when it runs,
else what can be known without it."""

from __future__ import annotations

import time
from typing import Any


def _ago(wall: float | None) -> str:
    if wall is None:
        return "never"
    secs = max(0.0, time.time() - wall)
    if secs < 120:
        return f"{secs:.0f} s ago"
    if secs < 7200:
        return f"{secs / 60:.0f} min ago"
    return f"{secs / 3600:.1f} h ago"


def _duration(secs: float) -> str:
    secs = int(secs)
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def status_lines(status: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if not status.get("running", True):
        lines.append(f"hosttuned: not running (no daemon on {status['socket']})")
        if status.get("config_error"):
            lines.append(f"config: error: {status['config_error']}")
        else:
            lines.append(f"mode: {status['mode']} (configured, {status['config']})")
        last = status.get("last_workload")
        if last:
            lines.append(f"last workload recorded: {last['stable'] or 'unknown'} "
                         f"({_ago(last['wall'])})")
        sample = status.get("sample")
        if sample:
            lines.append("host now: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sample.items()))
        for event in status.get("recent_events", []):
            lines.append(f"  {_ago(event['wall'])}: {event['kind']}: {event['message']}")
        if status.get("geometry_warning"):
            lines.append(f"note: {status['geometry_warning']}")
        return lines
    wl = status["workload"]
    lines.append(f"hosttuned: running (pid {status['pid']}, up "
                 f"{_duration(status['uptime_s'])}, version {status['version']})")
    lines.append(f"mode: {status['mode']} ({status['config']})")
    conf = f", confidence {wl['confidence']:.2f}" if wl["label"] != "unknown" else ""
    since = f", since {_ago(wl['since'])}" if wl.get("since") else ""
    lines.append(f"workload: {wl['label']}{conf}{since}")
    last_window = wl.get("last_window")
    if last_window and last_window.get("reason"):
        lines.append(f"  last window: {last_window['label']} ({last_window['reason']})")
    lines.extend(roles_lines(status.get("roles")))
    sample = status.get("last_sample")
    sampling = status["sampling"]
    if sample:
        lines.append(f"last sample: {_ago(sample['wall'])}; {sampling['samples']} samples "
                     f"every {sampling['interval_s']:g} s, max lateness "
                     f"{sampling['max_lateness_s'] * 1000:.0f} ms")
        if sample["metrics"]:
            lines.append("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in sample["metrics"].items()))
        for name, err in sample.get("errors", {}).items():
            lines.append(f"  collector {name}: {err}")
    else:
        lines.append("last sample: none yet")
    rec = status.get("recommendation")
    if rec is None:
        lines.append("recommendation: none" + (" (observe mode)" if status["mode"] == "observe"
                                               else " yet"))
    elif "error" in rec:
        lines.append(f"recommendation: unavailable: {rec['error']}")
    else:
        changes = (rec.get("plan") or {}).get("changes", [])
        lines.append(f"recommendation for {rec['workload']}: "
                     + (f"{len(changes)} change(s)" if changes else "no changes"))
        for change in changes:
            before = change.get("before", "?")
            lines.append(f"  {change['knob']}: {before} -> {change['value']}")
    applied = status.get("applied", [])
    lines.append(f"applied: {len(applied)}")
    for item in applied[-5:]:
        knobs = ", ".join(f"{c['knob']}={c['value']}" for c in item.get("changes", []))
        lines.append(f"  {_ago(item['wall'])} txn {item.get('txn')}: {knobs} ({item['by']})")
    reverts = status.get("reverts", [])
    lines.append(f"reverted: {len(reverts)}")
    for item in reverts[-5:]:
        lines.append(f"  {_ago(item['wall'])} txn {item.get('txn')}: {item['why']}")
    lines.extend(collapse_lines(status.get("collapse")))
    if status.get("auto_blocked") and status["mode"] == "auto":
        lines.append(f"auto mode cannot act: {status['auto_blocked']}")
    for note in status.get("notes", []):
        lines.append(f"note: {note}")
    return lines


def collapse_lines(collapse: dict[str, Any] | None) -> list[str]:
    """Per-process huge pages: what auto mode collapsed, per process."""
    if not collapse or not collapse.get("enabled"):
        return []
    runner = collapse.get("runner") or {}
    if runner.get("unsupported"):
        return [f"per-process huge pages: unavailable: {runner['unsupported']}"]
    lines = [f"per-process huge pages: {runner.get('passes', 0)} pass(es), "
             f"{runner.get('collapsed_mib', 0)} MiB collapsed, "
             f"{runner.get('cpu_seconds', 0):.2f} CPU-s"]
    for item in collapse.get("recent", [])[-3:]:
        for result in item.get("results", []):
            lines.append(f"  {_ago(item['wall'])} txn {item.get('txn')}: {result['comm']} "
                         f"(pid {result['pid']}) {result['status']}: {result['summary']}")
    for skip in runner.get("skipped", [])[:5]:
        lines.append(f"  left alone: {skip['comm']} (pid {skip['pid']}): {skip['why']}")
    if collapse.get("measuring"):
        lines.append(f"  measuring its effect: {collapse['measuring']['windows_left']} "
                     "window(s) left")
    held = collapse.get("for_job")
    if held:
        pids = ", ".join(str(p) for p in held.get("pids", []))
        lines.append(f"  THP always for the new memory of pid {pids} (txn {held.get('txn')}); "
                     f"back to {', '.join(f'{k}={v}' for k, v in held['knobs'].items())} "
                     "when it ends")
    new_memory = runner.get("new_memory") or {}
    if new_memory.get("blocked") and new_memory.get("pids"):
        lines.append(f"  THP always for a job's new memory withheld: {new_memory['blocked']}")
    elif new_memory.get("change") and collapse.get("writer_quiet_s"):
        lines.append("  THP always for a job's new memory withheld: a checkpoint writer "
                     f"stopped; {collapse['writer_quiet_s']:.0f} s more of quiet first")
    return lines


def roles_lines(roles: dict[str, Any] | None) -> list[str]:
    """The jobs at work in the last window, each with its role and evidence."""
    if roles is None:
        return []
    if roles.get("verdict") is None:
        why = roles.get("problem") or "no window judged yet"
        return [f"  per-process roles: none ({why})"]
    # render.roles: rich-free and small; status stays quick to start
    from hosttune.agent.service.render.roles import verdict_lines

    return ["  " + line for line in verdict_lines(roles["verdict"])]
