"""The model card as Markdown, rendered from the machine-readable card in a
model's schema (so the two never disagree)."""

from __future__ import annotations

from typing import Any


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.1f}"
    except (TypeError, ValueError):
        return "-"


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


def render(schema: dict[str, Any]) -> str:
    card: dict[str, Any] = schema.get("card") or {}
    data = card.get("data", {})
    lines = [
        f"# Model card: workload classifier ({schema.get('estimator', schema.get('kind'))})",
        "",
        "Recognises what an AI host is doing from a 10 s window of telemetry. Served with "
        "numpy alone from `.npz` arrays and this schema (no pickle); trained with "
        "scikit-learn by `hosttune model train`.",
        "",
        "| | |", "| --- | --- |",
        f"| classes | {', '.join(schema.get('classes', []))} |",
        f"| estimator | {schema.get('estimator', '-')} ({schema.get('kind')}) |",
        f"| features | {len(schema.get('features', []))} "
        f"(feature set `{schema.get('feature_set')}`, version {schema.get('feature_version')}) |",
        f"| window | {schema.get('window_seconds')} s |",
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
        lines += scores_table(card["scores"])
        lines += ["", f"Chosen: **{card.get('chosen')}** (highest macro-F1).", ""]
    lines += ["## Features", "", ", ".join(f"`{f}`" for f in schema.get("features", [])), ""]
    if card.get("limitations"):
        lines += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(lines)
