"""The model card as Markdown, rendered from the machine-readable card in a
model's schema (so the two never disagree)."""

from __future__ import annotations

from typing import Any

from hosttune.models.classifier import validated_geometry


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.1f}"
    except (TypeError, ValueError):
        return "-"


def _geometries(schema: dict[str, Any]) -> str:
    g = validated_geometry(schema)
    (lo_i, hi_i), (lo_w, hi_w) = g["interval_seconds"], g["window_seconds"]
    return (f"rows every {lo_i:g}-{hi_i:g} s, windows of {lo_w:g}-{hi_w:g} s "
            f"(validated: {', '.join(g['validated'])}; `hosttune classify` default "
            f"{schema.get('window_seconds')} s)")


def scores_table(scores: dict[str, Any]) -> list[str]:
    """Markdown: one table per model (per-class P/R/F1), its macro-F1 and
    confusion matrix."""
    out: list[str] = []
    if not scores:
        return out
    out += ["| model | macro-F1 | window accuracy | run accuracy (majority vote) |",
            "| --- | --- | --- | --- |"]
    for name, s in scores.items():
        out.append(f"| {name} | {_pct(s['macro_f1'])} | {_pct(s['accuracy'])} | "
                   f"{_pct(s['run_accuracy'])} |")
    out += geometry_table(scores)
    for name, s in scores.items():
        classes = s["classes"]
        out += ["", f"### {name}", "",
                f"macro-F1 {_pct(s['macro_f1'])} %, accuracy {_pct(s['accuracy'])} % over "
                f"{s['folds']} folds; at confidence >= {s['unknown_below']}: "
                f"{_pct(s['coverage'])} % of windows answered, {_pct(s['answered_accuracy'])} % "
                "of those right.", "",
                "| class | precision | recall | F1 | windows |", "| --- | --- | --- | --- | --- |"]
        for c in classes:
            d = s["per_class"][c]
            out.append(f"| {c} | {_pct(d['precision'])} | {_pct(d['recall'])} | "
                       f"{_pct(d['f1'])} | {d['support']} |")
        short = [c[:8] for c in classes]
        out += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
                "| true \\ predicted | " + " | ".join(short) + " |",
                "| --- |" + " --- |" * len(classes)]
        for c, row in zip(classes, s["confusion"], strict=True):
            out.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    return out


def geometry_table(scores: dict[str, Any]) -> list[str]:
    """Markdown: each model's scores on each tested geometry alone."""
    rows = [(name, tag, g) for name, s in scores.items()
            for tag, g in (s.get("geometries") or {}).items()]
    if not rows:
        return []
    out = ["", "Per geometry (rows every INTERVAL s, windows of WINDOW s; trained on "
           + ", ".join(next(iter(scores.values())).get("trained_on", [])) + "):", "",
           "| model | geometry | macro-F1 | window accuracy | answered | right when answered "
           "| windows |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, tag, g in rows:
        out.append(f"| {name} | {tag} | {_pct(g['macro_f1'])} | {_pct(g['accuracy'])} | "
                   f"{_pct(g['coverage'])} | {_pct(g['answered_accuracy'])} | "
                   f"{g.get('windows', '-')} |")
    return out


def class_geometry_table(s: dict[str, Any]) -> list[str]:
    """Markdown: one model's per-class F1 on each tested geometry."""
    geos = s.get("geometries") or {}
    if not geos:
        return []
    out = ["| class | " + " | ".join(geos) + " |", "| --- |" + " --- |" * len(geos)]
    for c in s["classes"]:
        out.append(f"| {c} | " + " | ".join(_pct(g["per_class"][c]["f1"])
                                            for g in geos.values()) + " |")
    return out


def render(schema: dict[str, Any]) -> str:
    card: dict[str, Any] = schema.get("card") or {}
    data = card.get("data", {})
    lines = [
        f"# Model card: workload classifier ({schema.get('estimator', schema.get('kind'))})",
        "",
        "Recognises what an AI host is doing from a window of telemetry rows. Served with "
        "numpy alone from `.npz` arrays and this schema (no pickle); trained with "
        "scikit-learn by `hosttune model train`.",
        "",
        "| | |", "| --- | --- |",
        f"| classes | {', '.join(schema.get('classes', []))} |",
        f"| estimator | {schema.get('estimator', '-')} ({schema.get('kind')}) |",
        f"| features | {len(schema.get('features', []))} "
        f"(feature set `{schema.get('feature_set')}`, version {schema.get('feature_version')}) |",
        f"| geometries | {_geometries(schema)} |",
        f"| unknown below | confidence {schema.get('unknown_below')} |",
        f"| schema version | {schema.get('schema_version')} |",
        f"| trained | {card.get('trained_at', '-')} |",
        f"| hosttune | {card.get('hosttune_version', '-')} |",
        f"| scikit-learn | {card.get('sklearn_version', '-')} (training only) |",
        f"| numpy | {card.get('numpy_version', '-')} |",
        f"| training data | {data.get('runs', '-')} runs, {data.get('windows', '-')} windows, "
        f"sha256 `{data.get('sha256', '-')}` |",
        "",
    ]
    if data.get("runs_per_class"):
        lines += ["## Data", "", "| class | runs | windows |", "| --- | --- | --- |"]
        for c, n in data["runs_per_class"].items():
            lines.append(f"| {c} | {n} | {data.get('windows_per_class', {}).get(c, '-')} |")
        lines += ["", f"Sources: {', '.join(data.get('sources', []))}.", ""]
    if card.get("scores"):
        lines += ["## Scores", "", card.get("evaluation", ""), ""]
        pooled = any(s.get("geometries") for s in card["scores"].values())
        if pooled:
            lines += ["The first table and the per-model sections pool the windows of every "
                      "validated geometry; the per-geometry rows follow the first table.", ""]
        lines += scores_table(card["scores"])
        chosen = card.get("chosen")
        lines += ["", f"Chosen: **{chosen}** (highest "
                  + ("mean macro-F1 over the validated geometries" if pooled else "macro-F1")
                  + ").", ""]
        if pooled and chosen in card["scores"]:
            lines += [f"F1 per class and geometry ({chosen}):", ""]
            lines += [*class_geometry_table(card["scores"][chosen]), ""]
    lines += ["## Features", "", ", ".join(f"`{f}`" for f in schema.get("features", [])), ""]
    if card.get("limitations"):
        lines += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(lines)
