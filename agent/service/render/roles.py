"""Text and JSON of the per-process roles behind a host verdict
(`hosttune classify`, `status`, `recommend`). The text is made from the
JSON form, so a verdict that came over the daemon's socket reads the same."""

from __future__ import annotations

from typing import Any

from hosttune.models.roles import HostVerdict, JobRole


def role_dict(r: JobRole) -> dict[str, Any]:
    j = r.job
    return {
        "pgrp": j.pgrp, "leader": j.leader, "pids": list(j.pids), "role": r.role,
        "best": r.best, "confidence": round(r.confidence, 3), "active": j.active,
        "cpu_cores": round(j.cpu_cores, 3), "io_bytes_per_s": round(j.io_bps),
        "frameworks": [n[3:] for n, v in j.named().items() if n.startswith("fw_") and v],
        "evidence": [{"feature": f, "value": round(v, 4), "push": round(p, 4)}
                     for f, v, p in r.evidence],
    }


def verdict_dict(v: HostVerdict, *, active_only: bool = False) -> dict[str, Any]:
    """`active_only`: the jobs at work, and how many quiet ones were examined
    (the daemon's status: a host has dozens of quiet jobs)."""
    roles = [r for r in v.roles if r.job.active or not active_only]
    return {"label": v.label, "confidence": round(v.confidence, 3), "reason": v.reason,
            "roles": [role_dict(r) for r in roles],
            "quiet_jobs": sum(1 for r in v.roles if not r.job.active)}


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
    quiet = d.get("quiet_jobs", 0)
    if quiet:
        lines.append(f"  ({quiet} quiet job(s) examined, not shown)")
    return lines
