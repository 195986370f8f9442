"""Text and JSON of the per-process roles behind a host verdict
(`hosttune classify`, `status`, `recommend`)."""

from __future__ import annotations

from typing import Any

from hosttune.models.roles import HostVerdict, JobRole

# features worth showing beside a role, in this order, when the model cites them
_SHOWN = {"cpu_cores": "{:.2f} cores", "log_write_bps": "log write B/s {:.1f}",
          "listening": "{:.0f} listening"}


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


def verdict_dict(v: HostVerdict) -> dict[str, Any]:
    return {"label": v.label, "confidence": round(v.confidence, 3), "reason": v.reason,
            "roles": [role_dict(r) for r in v.roles]}


def verdict_lines(v: HostVerdict, limit: int = 8) -> list[str]:
    lines = [f"from its processes: {v.label} (confidence {v.confidence:.2f}): {v.reason}"]
    shown = [r for r in v.roles if r.job.active][:limit]
    for r in shown:
        d = role_dict(r)
        fw = f" [{', '.join(d['frameworks'])}]" if d["frameworks"] else ""
        guess = f" (best guess {r.best})" if r.role != r.best else ""
        lines.append(f"  pgrp {r.job.pgrp:<7} {r.job.leader[:16]:16} x{len(r.job.pids):<3} "
                     f"{r.role}{guess} {r.confidence:.2f}  {r.job.cpu_cores:.2f} cores, "
                     f"{r.job.io_bps / (1 << 20):.1f} MiB/s{fw}")
        if r.evidence:
            lines.append("      evidence: " + ", ".join(
                f"{f}={val:.3g} (+{p:.3f})" for f, val, p in r.evidence))
    quiet = len([r for r in v.roles if not r.job.active])
    if quiet:
        lines.append(f"  ({quiet} quiet job(s) examined, not shown)")
    return lines
