"""Workload class + topology + current values + telemetry -> recommendations.

Starts from the expert priors (priors.yaml), adds topology-aware placement,
and lets what was measured on this host (models.outcomes) override the
priors for a class once there is enough evidence. Knobs the admin or a peer
daemon (tuned, irqbalance, numad) owns come out as advice, never as changes;
CPUs isolated at boot get neither interrupts nor placed processes, and the
reasons say which parameter isolated them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense.isolation import explain_reserved
from hosttune.models.collapse import ProcessAction, choose_collapse
from hosttune.models.outcomes import LearnedModel
from hosttune.models.placement import NodePlan, describe_cpus, plan_placement
from hosttune.models.rules import Priors, evaluate, load_priors
from hosttune.models.state import HostState, facts
from hosttune.tuners.knobs import Change, Plan, reach_of


@dataclass(frozen=True)
class Recommendation:
    knob: str
    before: str | None
    after: str
    reason: str
    evidence: tuple[str, ...]
    rule: str  # rule id, or "learned:<class>"
    source: str
    effect: str
    # "change" goes into the plan; "advice" is for the admin only
    kind: str = "change"
    why_advice: str = ""

    @property
    def reaches(self) -> str:
        """running | new | next job | reboot: whether a job already running feels it."""
        return reach_of(self.knob)[0]

    def to_dict(self) -> dict[str, Any]:
        reach, why = reach_of(self.knob)
        return {
            "knob": self.knob, "before": self.before, "after": self.after,
            "reason": self.reason, "evidence": list(self.evidence), "rule": self.rule,
            "source": self.source, "effect": self.effect, "kind": self.kind,
            "why_advice": self.why_advice, "reaches": reach, "reaches_why": why,
        }


@dataclass
class Recommendations:
    workload: str
    changes: list[Recommendation] = field(default_factory=list)
    advice: list[Recommendation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # actions on running processes (per-process huge pages): not knobs
    actions: list[ProcessAction] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "changes": [c.to_dict() for c in self.changes],
            "advice": [a.to_dict() for a in self.advice],
            "actions": [a.to_dict() for a in self.actions],
            "notes": list(self.notes),
        }


def placement_value(node: int, cpus: tuple[int, ...]) -> str:
    """The value of a `numa:pid:N` knob: CPUs and memory node."""
    return f"cpus={describe_cpus(cpus)} mems={node}"


def recommend(state: HostState, priors: Priors | None = None,
              learned: LearnedModel | None = None) -> Recommendations:
    priors = priors if priors is not None else load_priors()
    fact_map = facts(state)
    out = Recommendations(workload=state.workload)
    proposed: dict[str, Recommendation] = {}
    rules_class = priors.rules_class(state.workload)
    if rules_class != state.workload:
        out.notes.append(
            f"no priors of its own for '{state.workload}': "
            + ("only the rules for any workload apply" if rules_class == "any"
               else f"the rules for '{rules_class}' apply"))

    for firing in evaluate(priors.rules, fact_map, rules_class):
        rule = firing.rule
        if rule.action in ("set", "advise"):
            for knob, value in firing.knobs.items():
                before = state.knobs.get(knob)
                if rule.action == "set" and before is not None and _same(before, value):
                    continue
                rec = Recommendation(
                    knob=knob, before=before, after=value, reason=firing.reason,
                    evidence=(*firing.evidence, f"rule {rule.id}"), rule=rule.id,
                    source=rule.source, effect=rule.effect,
                    kind="change" if rule.action == "set" else "advice",
                    why_advice="" if rule.action == "set" else "the rule only advises",
                )
                if rule.action == "set" and knob not in state.knobs:
                    rec = _as_advice(rec, "this host does not expose the knob")
                if rec.kind == "change":
                    proposed.setdefault(knob, rec)  # first rule in file order wins
                else:
                    out.advice.append(rec)
        elif rule.action == "placement":
            for node_plan in plan_placement(state):
                _plan_notes(node_plan, out)
                for pl in node_plan.processes:
                    if not pl.needs_change:
                        continue
                    knob = f"numa:pid:{pl.pid}"
                    ev = [f"pid {pl.pid} ({pl.comm}) drives {', '.join(pl.accelerators)} "
                          f"on node {pl.node}",
                          f"runs on CPUs {describe_cpus(pl.current_cpus)}"]
                    if pl.memory_off_node_pages:
                        ev.append(f"{pl.memory_off_node_pages} pages off node {pl.node}")
                    proposed[knob] = Recommendation(
                        knob=knob, before=None, after=placement_value(pl.node, pl.cpus),
                        reason=f"{pl.comm} (pid {pl.pid}) drives accelerators on node "
                               f"{pl.node}: run it on CPUs {describe_cpus(pl.cpus)} of that "
                               f"node and keep its memory there."
                               + _isolated_text(state, node_plan, pl.cpus),
                        evidence=(*ev, f"rule {rule.id}"), rule=rule.id, source=rule.source,
                        effect=rule.effect)
        elif rule.action == "irq_placement":
            for node_plan in plan_placement(state):
                _plan_notes(node_plan, out)
                for irq in node_plan.irqs:
                    if not irq.needs_change:
                        continue
                    knob = f"irq:{irq.irq}"
                    proposed[knob] = Recommendation(
                        knob=knob, before=describe_cpus(irq.current) if irq.current else None,
                        after=describe_cpus(irq.cpus),
                        reason=f"IRQ {irq.irq} of {irq.role} {irq.device} (node {irq.node}) "
                               f"should be served on node {irq.node}'s CPUs "
                               f"{describe_cpus(irq.cpus)}, off the feeder cores "
                               f"{describe_cpus(irq.feeders)}."
                               + _isolated_text(state, node_plan, ()),
                        evidence=(f"{irq.device} is on node {irq.node}",
                                  f"affinity now {describe_cpus(irq.current)}",
                                  f"rule {rule.id}"),
                        rule=rule.id, source=rule.source, effect=rule.effect)

    if learned is not None:
        _apply_learned(state, learned, proposed, out)
        # Outcomes of per-process actions (procthp:collapse) inform the action,
        # not a knob: there is nothing of that name to set.
        for knob in [k for k in proposed if k.startswith("procthp:")]:
            del proposed[knob]

    collapse = choose_collapse(state)
    out.actions.extend(collapse.actions)
    for pid, comm, why in collapse.skipped:
        out.notes.append(f"per-process huge pages: {comm} (pid {pid}) left alone: {why}")
    if state.collapse not in ("", "yes") and any(p.uses_torch for p in state.processes):
        out.notes.append(f"per-process huge pages unavailable: {state.collapse}")

    for knob, rec in proposed.items():
        owner = state.owned.get(knob)
        if owner:
            why = owner if owner.startswith("owned by ") else f"admin-owned ({owner})"
            out.advice.append(_as_advice(rec, why))
        else:
            out.changes.append(rec)
    if state.isolated:
        out.notes.append(f"{explain_reserved(state.isolated)}: hosttune places no interrupts "
                         "and no AI processes there")
    for note in state.notes:
        if note not in out.notes:
            out.notes.append(note)
    if not state.processes:
        out.notes.append("no AI process is running: process-specific rules (THP by "
                         "allocator, placement, IRQs) had nothing to look at")
    for collector, why in sorted(state.gaps.items()):
        out.notes.append(f"not observed: {collector}: {why}")
    return out


def _isolated_text(state: HostState, node_plan: NodePlan, kept: tuple[int, ...]) -> str:
    """" Left alone: CPUs 64-71 are isolated by isolcpus=64-71 on the kernel
    command line." for a node with isolated CPUs (less those a process keeps
    because it was pinned there)."""
    left = tuple(c for c in node_plan.isolated if c not in kept)
    if not left:
        return ""
    return f" Left alone: {explain_reserved(state.isolated, left)}."


def _plan_notes(node_plan: NodePlan, out: Recommendations) -> None:
    for note in node_plan.notes:
        if note not in out.notes:
            out.notes.append(note)


def _apply_learned(state: HostState, learned: LearnedModel,
                   proposed: dict[str, Recommendation], out: Recommendations) -> None:
    prior_values = {k: r.after for k, r in proposed.items()}
    best = learned.best(state.knobs, prior_values)
    if best is None:
        out.notes.append(
            f"measured outcomes for '{learned.workload}': {learned.count} (weight "
            f"{learned.evidence:g}), fewer than the {learned.min_evidence} needed or no "
            "better setting found; the priors stand")
        return
    # Whose measurements these are: this host's, or its siblings' (weighted).
    where = "on this host"
    if learned.imported_count:
        where = (f"({learned.local_count} on this host, {learned.imported_count} imported "
                 f"from {learned.imported_hosts} other host(s); weight {learned.evidence:g})")
    out.notes.append(
        f"using {learned.count} measured outcomes for '{learned.workload}' {where} "
        f"ahead of the priors (model predicts {best.predicted:.3g}x, priors "
        f"{best.prior_predicted:.3g}x)")
    for knob, value in best.values.items():
        before = state.knobs.get(knob)
        prior = proposed.get(knob)
        if before is not None and _same(before, value):
            if prior is not None:
                del proposed[knob]  # the measurements say leave it
            continue
        over = f" instead of the prior's {prior.after} ({prior.rule})" if prior else ""
        proposed[knob] = Recommendation(
            knob=knob, before=before, after=value,
            reason=f"Measured {where}: {knob}={value} predicted "
                   f"{best.predicted:.3g}x the baseline for '{learned.workload}'{over}.",
            evidence=(f"{learned.count} outcomes recorded for '{learned.workload}'",
                      f"model: {learned.kind}", f"learned:{learned.workload}"),
            rule=f"learned:{learned.workload}",
            source=f"outcomes measured {where} ({learned.count} runs)",
            effect=f"predicted {best.predicted:.3g}x baseline throughput")


def _as_advice(rec: Recommendation, why: str) -> Recommendation:
    return Recommendation(
        knob=rec.knob, before=rec.before, after=rec.after, reason=rec.reason,
        evidence=rec.evidence, rule=rec.rule, source=rec.source, effect=rec.effect,
        kind="advice", why_advice=why)


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return " ".join(a.split()) == " ".join(b.split())


def to_plan(recs: Recommendations) -> Plan:
    """The changes as a tuners Plan (what `hosttune apply` reads); advice
    stays out of it and is named in the plan's note."""
    changes = [
        Change(knob=r.knob, after=r.after, before=r.before, reason=r.reason,
               evidence={"facts": [e for e in r.evidence if not e.startswith("rule ")],
                         "rule": r.rule, "cited": r.source, "expected_effect": r.effect},
               source="model" if r.rule.startswith("learned:") else "expert")
        for r in recs.changes
    ]
    note_parts = [f"hosttune recommend for workload '{recs.workload}'"]
    if recs.advice:
        note_parts.append("advice not applied: " + "; ".join(
            f"{a.knob} -> {a.after} ({a.why_advice})" for a in recs.advice))
    return Plan(changes=changes, workload=recs.workload, note=". ".join(note_parts))
