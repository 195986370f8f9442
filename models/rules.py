"""Expert priors: a YAML file of rules, each a condition over facts about the
host and what it should change. Conditions are data (a small tree of
comparisons), evaluated here; nothing in the file is ever executed.

Facts are a flat mapping of name to value: knob names with their current
value ("sysctl:vm.swappiness" -> "60"), host and topology facts
("host.numa_nodes" -> 2), AI-process facts ("ai.anon_huge_fraction" -> 0.0)
and telemetry ("mem.hugepages_total" -> 0). A leaf on a fact that is absent is
false (so a rule never fires on something it could not see), except `missing`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hosttune.agent.sense.errors import ConfigError
from hosttune.models import workload_classes

FactValue = str | int | float | bool | None
Facts = Mapping[str, FactValue]

ACTIONS = ("set", "advise", "placement", "irq_placement")
OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "exists", "missing", "eq_fact")
_REQUIRED = ("id", "applies_to", "when", "action", "reason", "effect", "source")
_TEMPLATE = re.compile(r"\{([A-Za-z0-9_.:\-]+)\}")
DEFAULT_PRIORS = Path(__file__).with_name("priors.yaml")


@dataclass(frozen=True)
class Leaf:
    fact: str
    op: str
    value: Any = None

    def evaluate(self, facts: Facts, seen: list[str]) -> bool:
        present = self.fact in facts and facts[self.fact] is not None
        if self.op == "missing":
            ok = not present
        elif self.op == "exists":
            ok = present
        elif not present:
            # `in` with null among the values: absence is one of the accepted values
            ok = self.op == "in" and None in (self.value or [])
        else:
            ok = _compare(facts[self.fact], self.op, self.value, facts)
        if ok:
            seen.append(f"{self.fact}={_show(facts.get(self.fact))}")
        return ok


@dataclass(frozen=True)
class Node:
    kind: str  # all | any | not
    children: tuple[Condition, ...]

    def evaluate(self, facts: Facts, seen: list[str]) -> bool:
        if self.kind == "all":
            return all(c.evaluate(facts, seen) for c in self.children)
        if self.kind == "any":
            return any(c.evaluate(facts, seen) for c in self.children)
        scratch: list[str] = []
        return not self.children[0].evaluate(facts, scratch)


Condition = Leaf | Node


@dataclass(frozen=True)
class Rule:
    id: str
    applies_to: tuple[str, ...]
    when: Condition
    action: str
    knobs: dict[str, str]
    reason: str
    effect: str
    source: str

    def applies(self, workload: str) -> bool:
        return "any" in self.applies_to or workload in self.applies_to


@dataclass(frozen=True)
class Firing:
    """A rule whose condition held: its knobs with templates filled, and the
    facts that made it fire (the evidence)."""

    rule: Rule
    knobs: dict[str, str]
    reason: str
    evidence: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Priors:
    version: int
    classes: tuple[str, ...]  # workload_classes.recommendable()
    rules: tuple[Rule, ...]
    path: str
    # a class no rule names -> the class whose rules it takes ("any": only
    # the rules for any class)
    fallback: dict[str, str] = field(default_factory=dict)

    def rules_class(self, workload: str) -> str:
        """The class whose rules hold for `workload` (itself, or its fallback);
        a ConfigError for a name that is not a workload class."""
        workload_classes.check(workload)
        return self.fallback.get(workload, workload)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _equal(a: Any, b: Any) -> bool:
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return na == nb
    return str(a).strip() == str(b).strip()


def _compare(actual: Any, op: str, expected: Any, facts: Facts) -> bool:
    if op == "eq":
        return _equal(actual, expected)
    if op == "ne":
        return not _equal(actual, expected)
    if op == "eq_fact":
        other = facts.get(str(expected))
        return other is not None and _equal(actual, other)
    if op in ("in", "not_in"):
        hit = any(v is not None and _equal(actual, v) for v in expected)
        return hit if op == "in" else not hit
    a, b = _number(actual), _number(expected)
    if a is None or b is None:
        return False
    return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]


def _show(value: FactValue) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fill(template: str, facts: Facts) -> str:
    """Replace "{fact}" with the fact's value ("?" when absent)."""
    def one(match: re.Match[str]) -> str:
        value = facts.get(match.group(1))
        return "?" if value is None else _show(value)
    return " ".join(_TEMPLATE.sub(one, template).split())


def evaluate(rules: tuple[Rule, ...], facts: Facts, workload: str) -> list[Firing]:
    firings: list[Firing] = []
    for rule in rules:
        if not rule.applies(workload):
            continue
        seen: list[str] = []
        if not rule.when.evaluate(facts, seen):
            continue
        knobs = {fill(k, facts): v for k, v in rule.knobs.items()}
        if any("?" in k for k in knobs):
            continue  # a templated knob whose fact is missing: nothing to act on
        firings.append(Firing(rule=rule, knobs=knobs, reason=fill(rule.reason, facts),
                              evidence=tuple(dict.fromkeys(seen))))
    return firings


# -- loading and schema validation ---------------------------------------------

def _condition(raw: Any, where: str, path: str) -> Condition:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("a condition must be a mapping", path=path, key=where)
    if set(raw) <= {"all", "any"} and len(raw) == 1:
        kind = next(iter(raw))
        items = raw[kind]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"'{kind}' needs a non-empty list", path=path, key=where)
        return Node(kind, tuple(_condition(c, f"{where}.{kind}[{i}]", path)
                                for i, c in enumerate(items)))
    if set(raw) == {"not"}:
        return Node("not", (_condition(raw["not"], f"{where}.not", path),))
    unknown = set(raw) - {"fact", "op", "value"}
    if unknown or "fact" not in raw or "op" not in raw:
        raise ConfigError(f"a leaf is {{fact, op, value}}; got keys {sorted(raw)}",
                          path=path, key=where)
    op = raw["op"]
    if op not in OPS:
        raise ConfigError(f"unknown op {op!r} (one of {', '.join(OPS)})", path=path, key=where)
    value = raw.get("value")
    if op in ("in", "not_in") and not isinstance(value, list):
        raise ConfigError(f"'{op}' needs a list value", path=path, key=where)
    if op in ("lt", "le", "gt", "ge") and _number(value) is None:
        raise ConfigError(f"'{op}' needs a number, got {value!r}", path=path, key=where)
    if op not in ("exists", "missing") and "value" not in raw:
        raise ConfigError(f"'{op}' needs a value", path=path, key=where)
    return Leaf(str(raw["fact"]), op, value)


# Where a value sits in the priors file: its line (1-based), or None when the
# file's layout is unknown (priors handed over as data).
LineOf = Callable[[Sequence[str | int]], int | None]


def _no_lines(keys: Sequence[str | int]) -> int | None:
    return None


def _rule(raw: Any, index: int, path: str, line_of: LineOf) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError("a rule must be a mapping", path=path, key=where,
                          line=line_of(("rules", index)))
    rid = raw.get("id")
    if isinstance(rid, str):
        where = f"rule {rid}"
    for key in _REQUIRED:
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigError(f"missing '{key}'", path=path, key=where,
                              line=line_of(("rules", index)))
    applies = raw["applies_to"]
    if not isinstance(applies, list) or not applies:
        raise ConfigError("'applies_to' must be a non-empty list", path=path, key=where,
                          line=line_of(("rules", index, "applies_to")))
    for i, cls in enumerate(applies):
        if cls != "any":
            workload_classes.check(str(cls), path=path, key=f"{where}.applies_to",
                                   line=line_of(("rules", index, "applies_to", i)))
    action = raw["action"]
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})",
                          path=path, key=where)
    knobs_raw = raw.get("knobs") or {}
    if not isinstance(knobs_raw, dict):
        raise ConfigError("'knobs' must be a mapping of knob to value", path=path, key=where)
    if action in ("set", "advise") and not knobs_raw:
        raise ConfigError(f"action '{action}' needs knobs", path=path, key=where)
    for knob in knobs_raw:
        if ":" not in str(knob):
            raise ConfigError(f"knob {knob!r} is not family:key", path=path, key=where)
    return Rule(
        id=str(rid), applies_to=tuple(str(a) for a in applies),
        when=_condition(raw["when"], f"{where}.when", path), action=action,
        knobs={str(k): str(v) for k, v in knobs_raw.items()},
        reason=str(raw["reason"]).strip(), effect=str(raw["effect"]).strip(),
        source=str(raw["source"]).strip(),
    )


def _fallback(raw: Any, rules: tuple[Rule, ...], path: str, line_of: LineOf) -> dict[str, str]:
    """The `fallback` section, checked: every workload class is named by a
    rule or falls back, explicitly, to a class that is (or to `any`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("'fallback' must be a mapping of class to class", path=path,
                          key="fallback", line=line_of(("fallback",)))
    named = {c for r in rules for c in r.applies_to if c != "any"}
    out: dict[str, str] = {}
    for cls, target in raw.items():
        line = line_of(("fallback", cls))
        workload_classes.check(str(cls), path=path, key="fallback", line=line)
        if cls in named:
            raise ConfigError(f"{cls!r} has rules of its own: drop its fallback",
                              path=path, key="fallback", line=line)
        if target != "any":
            workload_classes.check(str(target), path=path, key=f"fallback.{cls}", line=line)
            if target not in named:
                raise ConfigError(f"{cls!r} falls back to {target!r}, which no rule names",
                                  path=path, key=f"fallback.{cls}", line=line)
        out[str(cls)] = str(target)
    bare = [c for c in workload_classes.recommendable() if c not in named and c not in out]
    if bare:
        raise ConfigError(
            f"no priors for workload class(es) {', '.join(bare)}: name each in a rule's "
            "applies_to or give it a fallback (a class, or 'any' for the rules that apply "
            "to any class)", path=path, key="fallback", line=line_of(("fallback",)))
    return out


def parse_priors(data: Any, path: str, line_of: LineOf = _no_lines) -> Priors:
    if not isinstance(data, dict):
        raise ConfigError("the priors file must be a mapping", path=path)
    version = data.get("version")
    if version != 1:
        raise ConfigError(f"unsupported priors version {version!r} (expected 1)",
                          path=path, key="version", line=line_of(("version",)))
    if "classes" in data:
        # a second list would drift from the first: the classes live in one module
        raise ConfigError("'classes' is not read: the workload classes are listed in "
                          "hosttune.models.workload_classes", path=path, key="classes",
                          line=line_of(("classes",)))
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError("'rules' must be a non-empty list", path=path, key="rules",
                          line=line_of(("rules",)))
    rules = tuple(_rule(r, i, path, line_of) for i, r in enumerate(raw_rules))
    ids = [r.id for r in rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"duplicate rule ids: {', '.join(dupes)}", path=path, key="rules",
                          line=line_of(("rules",)))
    fallback = _fallback(data.get("fallback"), rules, path, line_of)
    return Priors(version=1, classes=workload_classes.recommendable(), rules=rules,
                  path=path, fallback=fallback)


def _line_finder(root: yaml.Node | None) -> LineOf:
    """Line of the value at a key path (mapping keys, list indexes) in a
    composed YAML document; the nearest enclosing node's line when the path
    runs out."""
    def line_of(keys: Sequence[str | int]) -> int | None:
        node = root
        if node is None:
            return None
        for key in keys:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                child = node.value[key] if 0 <= key < len(node.value) else None
            if child is None:
                break
            node = child
        return int(node.start_mark.line) + 1
    return line_of


def load_priors(path: str | Path | None = None) -> Priors:
    where = Path(path) if path is not None else DEFAULT_PRIORS
    try:
        text = where.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(where)) from exc
    # composed once and kept: the node tree gives the line of any value an
    # error names
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          path=str(where), line=line) from None
    finally:
        loader.dispose()
    return parse_priors(data, str(where), _line_finder(root))
