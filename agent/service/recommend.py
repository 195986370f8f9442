"""One `hosttune recommend`: decide the workload class (the shipped
classifier, or what the admin says), observe the host, consult the outcomes
measured here, and produce the recommendations, the plan and its rendering.
Kept out of the CLI module so the daemon can serve the same answer, on the
samples it already holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense.errors import ConfigError, HosttuneError, PermissionRefused
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.paths import Paths
from hosttune.agent.service.client import DaemonClient, DaemonError, DaemonUnavailable
from hosttune.agent.service.outcome_store import OutcomeStore, host_facts
from hosttune.agent.service.recording import live_window
from hosttune.agent.service.snapshot import Telemetry, host_state, sample_window
from hosttune.models.outcomes import OutcomeError
from hosttune.models.recommender import Recommendations, recommend, to_plan
from hosttune.models.rules import load_priors

# Whether a change reaches a job that is already running (tuners.knobs.REACH).
REACH_TEXT = {"running": "reaches running jobs", "new": "new allocations/sockets only",
              "next job": "the next job only", "reboot": "after a reboot"}


@dataclass
class RecommendReport:
    workload: str
    how_classified: str
    recommendations: Recommendations
    plan_yaml: str
    notes: list[str] = field(default_factory=list)
    # the per-process roles behind the class (render.roles.verdict_dict), when known
    roles: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self.recommendations.to_dict()
        data["classified"] = self.how_classified
        data["roles"] = self.roles
        data["notes"] = self.notes + data["notes"]
        data["plan"] = self.plan_yaml
        return data

    def render(self, *, explain: bool) -> list[str]:
        recs = self.recommendations
        lines = [f"workload: {self.workload} ({self.how_classified})"]
        if self.roles is not None:
            from hosttune.agent.service.render.roles import verdict_lines

            lines += ["  " + line for line in verdict_lines(self.roles)]
        if not recs.changes:
            lines.append("no changes recommended")
        else:
            lines.append(f"{len(recs.changes)} change(s):")
        for rec in recs.changes:
            before = rec.before if rec.before is not None else "?"
            lines.append(f"  {rec.knob}: {before} -> {rec.after}  ({REACH_TEXT[rec.reaches]})")
            lines.append(f"      why: {rec.reason}")
            if explain:
                lines.append(f"      evidence: {'; '.join(rec.evidence)}")
                lines.append(f"      expected: {rec.effect}")
                lines.append(f"      source: {rec.source}")
        if recs.advice:
            lines.append("advice (not changed by hosttune):")
        for rec in recs.advice:
            before = rec.before if rec.before is not None else "?"
            lines.append(f"  {rec.knob}: {before} -> {rec.after}  [{rec.why_advice}]")
            lines.append(f"      why: {rec.reason}")
            if explain:
                lines.append(f"      source: {rec.source}")
        if recs.actions:
            lines.append(f"{len(recs.actions)} action(s) on running processes "
                         "(auto mode does them; `hosttune collapse` by hand):")
        for action in recs.actions:
            lines.append(f"  {action.action} pid {action.pid} ({action.comm}): "
                         f"{REACH_TEXT[action.reaches]}")
            lines.append(f"      why: {action.reason}")
            if explain:
                lines.append(f"      evidence: {'; '.join(action.evidence)}")
                lines.append(f"      expected: {action.effect}")
                lines.append(f"      source: {action.source}")
        for note in self.notes + recs.notes:
            lines.append(f"note: {note}")
        return lines


def daemon_workload() -> tuple[str | None, str]:
    """The class a running hosttuned believes in: it has watched the host for
    several windows with hysteresis, which a few seconds here cannot match.
    None (and why, or "" when no daemon answers) when it has no settled class."""
    label, how, _ = _daemon_answer()
    return label, how


def _daemon_answer() -> tuple[str | None, str, dict[str, Any] | None]:
    """daemon_workload, and the roles of the daemon's last window (JSON)."""
    try:
        status = DaemonClient(timeout=2.0).request("status")
    except (DaemonUnavailable, DaemonError, PermissionRefused):
        return None, "", None
    workload = status.get("workload") if isinstance(status, dict) else None
    if not isinstance(workload, dict):
        return None, "", None
    roles = status.get("roles")
    verdict = roles.get("verdict") if isinstance(roles, dict) else None
    verdict = verdict if isinstance(verdict, dict) else None
    label = workload.get("label")
    if not isinstance(label, str) or label == "unknown":
        return None, "hosttuned has not settled on a workload class yet", verdict
    confidence = workload.get("confidence")
    conf = f", confidence {confidence:.2f}" if isinstance(confidence, (int, float)) else ""
    since = workload.get("since")
    held = ""
    if isinstance(since, (int, float)) and since > 0:
        held = f", held since {time.strftime('%H:%M:%S', time.localtime(since))}"
    return label, f"classified by hosttuned over its windows{conf}{held}", verdict


def classify(host: Host, window: float) -> tuple[str | None, str]:
    """The running daemon's settled class, else the answer on a window of
    live telemetry, or None and why there is none (see classify_with_roles)."""
    label, how, _ = classify_with_roles(host, window)
    return label, how


def classify_with_roles(host: Host, window: float
                        ) -> tuple[str | None, str, dict[str, Any] | None]:
    """The running daemon's settled class, else the class composed from the
    roles of the processes (scanned with every sample of a window of live
    telemetry), else the shipped host-aggregate classifier's answer on that
    window; None and why when there is none. The third item is the roles
    behind the answer (render.roles.verdict_dict), when known."""
    if not host.is_live:
        return None, "a captured host tree has no live telemetry to classify", None
    label, how, daemon_roles = _daemon_answer()
    if label is not None:
        return label, how, daemon_roles
    # numpy (60 ms, 17 MB) comes with these: the daemon, which always passes
    # its workload, never classifies here.
    from hosttune.agent.service.live_roles import RoleWatch
    from hosttune.agent.service.render.roles import verdict_dict
    from hosttune.models import classifier, features, recognise

    # the vendor backends' process listings: device use shown as evidence
    watch = RoleWatch(host, accelerators=True)
    try:
        model = classifier.load()
        # one sample a second, and the classifier needs MIN_ROWS of them; the
        # processes are scanned with every sample
        seconds = max(window, float(features.MIN_ROWS) + 1.0)
        watch.scan()
        columns, matrix = live_window(seconds, 1.0, progress=lambda _t: watch.scan())
        pred = recognise.classify_rows(model, columns, matrix)
    except HosttuneError as exc:
        return None, f"the workload model could not classify: {exc}", None
    finally:
        watch.close()
    aggregate = f"host aggregates: {pred.label} {pred.confidence:.2f}"
    verdict = watch.verdict()
    if verdict is not None:
        roles = verdict_dict(verdict, active_only=True, accel_problem=watch.accel_problem)
        if verdict.label == "unknown":
            return None, (f"the role model is unsure: {verdict.reason} ({aggregate})"), roles
        return verdict.label, (f"classified from its processes' roles, confidence "
                               f"{verdict.confidence:.2f}: {verdict.reason} ({aggregate})"), roles
    label = str(pred.label)
    why_not = f"; no per-process roles: {watch.problem}" if watch.problem else ""
    if label == str(classifier.UNKNOWN):
        return None, (f"the workload model is unsure (best guess {pred.best} at "
                      f"{pred.confidence:.2f}, below its threshold){why_not}"), None
    return label, (f"classified by the shipped model, confidence {pred.confidence:.2f}"
                   f"{why_not}"), None


def run_recommend(host: Host, *, workload: str | None, window: float = 1.0,
                  state_dir: str | None = None,
                  telemetry: Telemetry | str | None = None,
                  collapse_refused: str | None = None) -> RecommendReport:
    """`telemetry`: what the caller already sampled (the daemon's latest
    sample and rates; text: why it has none); None samples a `window`-second
    window here. `collapse_refused`: why per-process huge pages were refused at
    run time (the daemon's pass met a seccomp filter), so the plan falls back."""
    priors = load_priors()
    notes: list[str] = []
    roles = None
    if workload is not None:
        if workload not in priors.classes:
            raise ConfigError(f"unknown workload class {workload!r} "
                              f"(one of {', '.join(priors.classes)})", key="--workload")
        how = "given with --workload"
    else:
        label, how, roles = classify_with_roles(host, window)
        if label is None:
            notes.append(f"{how}: using the 'unknown' priors; give --workload CLASS "
                         "for class-specific advice")
            how = "not classified"
            label = "unknown"
        elif label not in priors.classes:
            notes.append(f"the workload model's class {label!r} is not one of hosttune's "
                         f"workload classes ({', '.join(priors.classes)}): using the "
                         "'unknown' priors")
            label = "unknown"
        workload = label
    if telemetry is None:
        telemetry = sample_window(host, window)
    state = host_state(host, workload=workload, telemetry=telemetry)
    if collapse_refused:
        # the kernel has MADV_COLLAPSE, but a pass was refused at run time
        # (a seccomp filter, missing capabilities): plan as without it
        state.collapse = collapse_refused
    learned = None
    store_dir = state_dir if state_dir is not None else str(Paths.from_env().state_dir)
    try:
        store = OutcomeStore(f"{store_dir}/outcomes.db")
        if store.path.exists():
            learned = store.learned(workload, host_facts(host))
    except OutcomeError as exc:
        notes.append(f"measured outcomes not used: {exc}")
    recs = recommend(state, priors=priors, learned=learned)
    plan = to_plan(recs)
    return RecommendReport(workload=workload, how_classified=how, recommendations=recs,
                           plan_yaml=plan.to_yaml(), notes=notes, roles=roles)
