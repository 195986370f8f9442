"""Text and JSON of the per-process roles behind a host verdict
(`hosttune classify`, `status`, `recommend`). The text is made from the
JSON form, so a verdict that came over the daemon's socket reads the same."""

from __future__ import annotations

from typing import Any

from hosttune.models.roles import HostVerdict, JobRole, JobWindow


def accel_dict(j: JobWindow) -> dict[str, Any] | None:
    """A job's accelerator use: listed by a vendor backend (with the
    devices, memory and busy share it reported), or only device files open;
    None when neither."""
    fds = j.named().get("fd_accel", 0.0)
    if not j.accel_listed and not fds:
        return None
    return {"listed": j.accel_listed, "devices": list(j.accel_devices),
            "memory_bytes": round(j.accel_mem_bytes) if j.accel_listed else None,
            "util": None if j.accel_util is None else round(j.accel_util, 3),
            "fd_accel": round(fds, 2)}


def role_dict(r: JobRole) -> dict[str, Any]:
    j = r.job
    return {
        "pgrp": j.pgrp, "leader": j.leader, "pids": list(j.pids), "role": r.role,
        "best": r.best, "confidence": round(r.confidence, 3), "active": j.active,
        "cpu_cores": round(j.cpu_cores, 3), "io_bytes_per_s": round(j.io_bps),
        "frameworks": [n[3:] for n, v in j.named().items() if n.startswith("fw_") and v],
        "evidence": [{"feature": f, "value": round(v, 4), "push": round(p, 4)}
                     for f, v, p in r.evidence],
        "accelerator": accel_dict(j),
    }


def verdict_dict(v: HostVerdict, *, active_only: bool = False,
                 accel_problem: str | None = None) -> dict[str, Any]:
    """`active_only`: the jobs at work, and how many quiet ones were examined
    (the daemon's status: a host has dozens of quiet jobs). `accel_problem`:
    why the accelerator process listing is missing or incomplete."""
    roles = [r for r in v.roles if r.job.active or not active_only]
    return {"label": v.label, "confidence": round(v.confidence, 3), "reason": v.reason,
            "roles": [role_dict(r) for r in roles],
            "quiet_jobs": sum(1 for r in v.roles if not r.job.active),
            "accel_problem": accel_problem}


def accel_line(a: dict[str, Any]) -> str:
    if not a.get("listed"):
        return f"accelerator: {a.get('fd_accel', 0):.3g} device file(s) open, not listed " \
               "by a vendor backend"
    devs = ",".join(str(d) for d in a.get("devices", [])) or "?"
    mem = a.get("memory_bytes")
    parts = [f"accelerator: listed on accel {devs}"]
    parts.append(f"{mem / (1 << 30):.2f} GiB" if mem else "memory not reported")
    util = a.get("util")
    parts.append(f"{util:.0%} busy" if util is not None else "busy share not reported")
    return ", ".join(parts)


def verdict_lines(v: HostVerdict | dict[str, Any], limit: int = 8) -> list[str]:
    d = verdict_dict(v) if isinstance(v, HostVerdict) else v
    lines = [f"from its processes: {d['label']} (confidence {d['confidence']:.2f}): "
             f"{d['reason']}"]
    for r in [r for r in d.get("roles", []) if r.get("active")][:limit]:
        fw = f" [{', '.join(r['frameworks'])}]" if r.get("frameworks") else ""
        guess = f" (best guess {r['best']})" if r["role"] != r["best"] else ""
        lines.append(f"  pgrp {r['pgrp']:<7} {str(r['leader'])[:16]:16} x{len(r['pids']):<3} "
                     f"{r['role']}{guess} {r['confidence']:.2f}  {r['cpu_cores']:.2f} cores, "
                     f"{r['io_bytes_per_s'] / (1 << 20):.1f} MiB/s{fw}")
        if r.get("evidence"):
            lines.append("      evidence: " + ", ".join(
                f"{e['feature']}={e['value']:.3g} (+{e['push']:.3f})" for e in r["evidence"]))
        if r.get("accelerator"):
            lines.append("      " + accel_line(r["accelerator"]))
    quiet = d.get("quiet_jobs", 0)
    if quiet:
        lines.append(f"  ({quiet} quiet job(s) examined, not shown)")
    if d.get("accel_problem"):
        lines.append(f"  accelerator processes not fully listed: {d['accel_problem']}")
    return lines
