"""`hosttune model`: the workload classifier's lifecycle (info, evaluate,
train). Training and evaluation need scikit-learn; everything else needs
numpy alone. Which model a host uses is `hosttune.agent.service.site_model`.

hosttune.models (training, datasets, resampling) and rich are imported
inside the commands: `hosttune --help` imports this module too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hosttune.agent.sense.errors import HosttuneError, ModelError
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    add_command,
    add_group,
    emit_json,
    fail,
)

_MODEL = typer.Option(None, "--model", "-m",
                      help="Model file (.npz/.json or their stem). Default: the site model "
                           "if trained, else the shipped one.")
_DATA = typer.Option(None, "--data", "-d", help="Directory of labelled traces (repeatable).")
_OUT = typer.Option(None, "--output", "-o",
                    help="Where to write the model (stem; .npz, .json and .md are written). "
                         "Default: the site model in the state directory.")
_NO_SHIPPED = typer.Option(False, "--no-shipped", help="Train on --data alone, without the "
                           "shipped dataset.")
_CANDIDATE = typer.Option(None, "--candidate", "-c",
                          help="Only this estimator (repeatable): logistic, random_forest, "
                               "gradient_boosting. Default: all, the best macro-F1 wins.")
_UNKNOWN = typer.Option(0.5, "--unknown-below", help="Confidence under which the answer is "
                        "'unknown'.")
_GEOMETRY = typer.Option(None, "--geometry", "-g",
                         help="Score windows of this geometry, INTERVAL/WINDOW in seconds "
                              "(e.g. 5/30: 5 s rows, 30 s windows, the daemon's default); "
                              "repeatable. Default: 1/10, 1/30, 5/30, 5/60.")
_TRAIN_GEOMETRY = typer.Option(None, "--train-geometry",
                               help="Train each fold on windows of this geometry "
                                    "(INTERVAL/WINDOW; repeatable). Default: 1/10.")
_TRAIN_ON = typer.Option(None, "--geometry", "-g",
                         help="Train on windows of this geometry (INTERVAL/WINDOW in "
                              "seconds; repeatable). Default: 1/10.")
_VALIDATE = typer.Option(None, "--validate",
                         help="Cross-validate on windows of this geometry (INTERVAL/WINDOW; "
                              "repeatable); the model records those it was validated on and "
                              "the daemon warns outside them. Default: 1/10, 1/30, 5/30, "
                              "5/60.")
_INTERVAL = typer.Option(None, "--interval", "-i",
                         help="With --window: score windows of rows every this many seconds "
                              "(traces are merged to it as a sampler at that interval would "
                              "have recorded them).")
_WINDOW = typer.Option(None, "--window", "-w", help="With --interval: window length in "
                       "seconds.")
_HOLDOUT = typer.Option(False, "--holdout", help="Score the model itself on --data (traces it "
                        "was not trained on) instead of cross-validating the candidates.")


def _load(path: Path | None) -> Any:
    from hosttune.agent.service.site_model import load_model  # the model: not for --help

    try:
        return load_model(path)
    except ModelError as exc:
        raise fail(str(exc)) from None


def _shipped_data() -> Path:
    # hosttune.models, rich: not at --help (see the module docstring)
    from hosttune.models import train

    return Path(train.__file__).parent / "data"


def _geometries(texts: list[str] | None, default: Any) -> list[Any]:
    # hosttune.models, rich: not at --help (see the module docstring)
    from hosttune.models.resample import Geometry

    if not texts:
        return list(default)
    out = []
    for text in texts:
        try:
            g = Geometry.parse(text)
        except ValueError as exc:
            raise fail(str(exc), 2) from None
        if g not in out:
            out.append(g)
    return out


def _test_geometries(geometry: list[str] | None, interval: float | None,
                     window: float | None, default: Any) -> list[Any]:
    if (interval is None) != (window is None):
        raise fail("give --interval and --window together (e.g. --interval 5 --window 30)", 2)
    if interval is not None and window is not None:
        geometry = [*(geometry or []), f"{interval:g}/{window:g}"]
    return _geometries(geometry, default)


def _load_dataset(dirs: list[Path], quiet: bool, geometries: list[Any] | None = None,
                  train_geometries: list[Any] | None = None) -> Any:
    # hosttune.models, rich: not at --help (see the module docstring)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hosttune.models import train
    from hosttune.models.resample import TRAIN_GEOMETRIES, VALIDATE_GEOMETRIES

    with Progress(TextColumn("reading traces"), BarColumn(), MofNCompleteColumn(),
                  transient=True, disable=quiet) as bar:
        task = bar.add_task("read", total=None)
        try:
            return train.load_dataset(
                dirs, progress=lambda i, n: bar.update(task, completed=i, total=n),
                geometries=geometries or VALIDATE_GEOMETRIES,
                train_geometries=train_geometries or TRAIN_GEOMETRIES)
        except HosttuneError as exc:
            raise fail(str(exc)) from None


def _cross_validate(ds: Any, names: list[str], unknown_below: float, quiet: bool, *,
                    train_on: list[str] | None = None,
                    test_on: list[str] | None = None) -> dict[str, Any]:
    # hosttune.models, rich: not at --help (see the module docstring)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hosttune.models import train

    scores: dict[str, Any] = {}
    with Progress(TextColumn("cross-validating [bold]{task.description}[/]"), BarColumn(),
                  MofNCompleteColumn(), transient=True, disable=quiet) as bar:
        for name in names:
            task = bar.add_task(name, total=None)

            def tick(i: int, n: int, t: Any = task) -> None:
                bar.update(t, completed=i, total=n)

            try:
                scores[name] = train.cross_validate(ds, name, unknown_below=unknown_below,
                                                    progress=tick, train_on=train_on,
                                                    test_on=test_on)
            except HosttuneError as exc:
                raise fail(str(exc)) from None
    return scores


def _candidates(given: list[str] | None) -> list[str]:
    # hosttune.models, rich: not at --help (see the module docstring)
    from hosttune.models import train

    names = list(given or train.CANDIDATES)
    bad = [n for n in names if n not in train.CANDIDATES]
    if bad:
        raise fail(f"unknown candidate {bad[0]!r}; choose from {', '.join(train.CANDIDATES)}", 2)
    return names


def _need_sklearn() -> str:
    # hosttune.models, rich: not at --help (see the module docstring)
    from hosttune.models import train

    try:
        return train.require_sklearn()
    except train.TrainingUnavailable as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    group = add_group(app, "model", "The workload classifier: info, evaluate, train.")
    add_command(group, "info", info_command)
    add_command(group, "evaluate", evaluate_command)
    add_command(group, "train", train_command)


def info_command(model: Path | None = _MODEL, json_out: bool = JSON_OPTION) -> None:
    """Describe the model in use: classes, features, training data, scores,
    versions."""
    m = _load(model)
    card = m.card
    summary = {
        "model": m.source, "kind": m.kind, "estimator": m.schema.get("estimator"),
        "classes": m.classes, "features": len(m.features),
        "feature_set": m.schema.get("feature_set"), "unknown_below": m.unknown_below,
        "window_seconds": m.schema.get("window_seconds"),
        "geometries": m.geometry,
        "schema_version": m.schema.get("schema_version"),
        "trained_at": card.get("trained_at"),
        "hosttune_version": card.get("hosttune_version"),
        "sklearn_version": card.get("sklearn_version"),
        "data": card.get("data", {}),
        "scores": {k: {"macro_f1": v.get("macro_f1"), "accuracy": v.get("accuracy"),
                       "geometries": {t: {"macro_f1": g.get("macro_f1"),
                                          "coverage": g.get("coverage")}
                                      for t, g in v.get("geometries", {}).items()}}
                   for k, v in card.get("scores", {}).items()},
        "chosen": card.get("chosen"),
    }
    if json_out:
        emit_json(summary)
        return
    data = summary["data"]
    typer.echo(f"model        {m.source}")
    typer.echo(f"estimator    {summary['estimator']} ({m.kind})")
    typer.echo(f"classes      {', '.join(m.classes)}")
    typer.echo(f"features     {len(m.features)} (set {summary['feature_set']})")
    typer.echo(f"unknown      below confidence {m.unknown_below}")
    g = m.geometry
    typer.echo(f"geometries   rows every {g['interval_seconds'][0]:g}-"
               f"{g['interval_seconds'][1]:g} s, windows of {g['window_seconds'][0]:g}-"
               f"{g['window_seconds'][1]:g} s (validated: {', '.join(g['validated'])})")
    typer.echo(f"trained      {summary['trained_at']} with hosttune "
               f"{summary['hosttune_version']}, scikit-learn {summary['sklearn_version']}")
    if data:
        typer.echo(f"data         {data.get('runs')} runs, {data.get('windows')} windows, "
                   f"sha256 {str(data.get('sha256'))[:16]}...")
    for name, s in summary["scores"].items():
        mark = " (chosen)" if name == summary["chosen"] else ""
        typer.echo(f"score        {name}: macro-F1 {s['macro_f1']:.3f}, "
                   f"accuracy {s['accuracy']:.3f} (leave-one-run-out){mark}")
        for tag, g in s.get("geometries", {}).items():
            typer.echo(f"               {tag:8} macro-F1 {g['macro_f1']:.3f}, answered "
                       f"{g['coverage']:.3f}")


def evaluate_command(  # noqa: PLR0917 (typer maps parameters to options)
    data: list[Path] | None = _DATA,
    candidate: list[str] | None = _CANDIDATE,
    geometry: list[str] | None = _GEOMETRY,
    train_geometry: list[str] | None = _TRAIN_GEOMETRY,
    interval: float | None = _INTERVAL,
    window: float | None = _WINDOW,
    holdout: bool = _HOLDOUT,
    model: Path | None = _MODEL,
    unknown_below: float = _UNKNOWN,
    json_out: bool = JSON_OPTION,
) -> None:
    """Score the candidate estimators by leave-one-run-out cross-validation
    on labelled traces (default: the shipped dataset).

    Prints per-class precision and recall, macro-F1, the confusion matrix and
    the answered share, overall and per geometry (row interval / window
    length; `--interval 5 --window 30` is what the daemon sees by default).
    With --holdout, scores the model itself on traces it never saw."""
    # hosttune.models (training, resampling): not for --help
    from hosttune.models.card import scores_table
    from hosttune.models.resample import TRAIN_GEOMETRIES, VALIDATE_GEOMETRIES

    dirs = list(data or [_shipped_data()])
    if holdout:
        if (interval is None) != (window is None):
            raise fail("give --interval and --window together", 2)
        _holdout(dirs, model, json_out, interval, window)
        return
    _need_sklearn()
    train_on = _geometries(train_geometry, TRAIN_GEOMETRIES)
    test_on = _test_geometries(geometry, interval, window, VALIDATE_GEOMETRIES)
    ds = _load_dataset(dirs, json_out, test_on, train_on)
    if not (geometry or interval):
        # by default, the validated geometries these traces are long enough for
        test_on = [g for g in test_on if g.tag in set(ds.geometry)]
    scores = _cross_validate(ds, _candidates(candidate), unknown_below, json_out,
                             train_on=[g.tag for g in train_on],
                             test_on=[g.tag for g in test_on])
    windows = sum(1 for t in ds.geometry if t in {g.tag for g in test_on})
    if json_out:
        emit_json({"data": [str(d) for d in dirs], "runs": len(ds.runs),
                   "windows": windows, "sha256": ds.data_hash,
                   "train_geometries": [g.tag for g in train_on],
                   "geometries": [g.tag for g in test_on],
                   "scores": {k: v.as_dict() for k, v in scores.items()}})
        return
    typer.echo(f"{len(ds.runs)} runs, {windows} windows from {', '.join(map(str, dirs))}; "
               f"trained on {', '.join(g.tag for g in train_on)}, scored on "
               f"{', '.join(g.tag for g in test_on)}")
    typer.echo("")
    for line in scores_table({k: v.as_dict() for k, v in scores.items()}):
        typer.echo(line)


def train_command(  # noqa: PLR0917 (typer maps parameters to options)
    data: list[Path] | None = _DATA,
    output: Path | None = _OUT,
    no_shipped: bool = _NO_SHIPPED,
    candidate: list[str] | None = _CANDIDATE,
    geometry: list[str] | None = _TRAIN_ON,
    validate: list[str] | None = _VALIDATE,
    unknown_below: float = _UNKNOWN,
    json_out: bool = JSON_OPTION,
) -> None:
    """Train the site's own workload model on its labelled traces (--data)
    plus the shipped ones.

    Trains on windows of each --geometry, cross-validates (leave one run out)
    on every --validate geometry, chooses the estimator by its mean macro-F1
    over them, and writes the model (numpy arrays + JSON schema recording the
    geometries it was validated on) with its model card."""
    # hosttune.models (training, resampling): not for --help
    from hosttune.agent.service.recording import hosttune_version
    from hosttune.agent.service.site_model import site_model
    from hosttune.models import card as card_mod
    from hosttune.models import train
    from hosttune.models.resample import TRAIN_GEOMETRIES, VALIDATE_GEOMETRIES

    sklearn_version = _need_sklearn()

    geometries = _geometries(geometry, TRAIN_GEOMETRIES)
    validated = _geometries(validate, VALIDATE_GEOMETRIES)

    dirs = [p.resolve() for p in (data or [])]
    if not no_shipped and _shipped_data().resolve() not in dirs:
        dirs.append(_shipped_data().resolve())
    if not dirs:
        raise fail("no data: give --data DIR or drop --no-shipped", 2)
    ds = _load_dataset(dirs, json_out, validated, geometries)
    if not ds.train_tags:
        raise fail("no trace gives a window of the training geometries "
                   f"({', '.join(g.tag for g in geometries)})")
    shipped = _shipped_data().resolve()
    ds.sources = ["models/data (shipped with hosttune)" if Path(d).resolve() == shipped
                  else str(d) for d in ds.sources]
    if len(ds.classes) < 2:
        raise fail("the traces hold fewer than two labels; nothing to learn")
    scores = _cross_validate(ds, _candidates(candidate), unknown_below, json_out)
    chosen = max(scores, key=lambda n: (scores[n].geometry_macro_f1,
                                        -train.CANDIDATES.index(n)))
    est, imp = train.fit(ds, chosen)
    card = train.model_card(ds, chosen, scores, sklearn_version=sklearn_version,
                            hosttune_version=hosttune_version(),
                            unknown_below=unknown_below)
    tested = [g for g in validated if g.tag in set(ds.geometry)]
    schema, arrays = train.export(est, imp, ds.features, unknown_below=unknown_below,
                                  card=card, geometries=tested,
                                  trained_on=[g for g in geometries
                                              if g.tag in ds.train_tags])
    target = output or site_model()
    try:
        npz, js = train.save(target, schema, arrays)
    except OSError as exc:
        raise fail(f"cannot write the model to {target}: {exc.strerror}") from None
    md = npz.with_suffix(".md")
    md.write_text(card_mod.render(schema))
    result = {"model": str(npz.with_suffix("")), "chosen": chosen,
              "macro_f1": round(scores[chosen].macro_f1, 4), "runs": len(ds.runs),
              "windows": card["data"]["windows"], "files": [str(npz), str(js), str(md)]}
    if json_out:
        emit_json(result)
        return
    for name, s in scores.items():
        per = ", ".join(f"{t} {g.macro_f1:.3f}" for t, g in s.geometries.items())
        typer.echo(f"{name:18} macro-F1 {s.macro_f1:.3f}  accuracy {s.accuracy:.3f}"
                   + (f"  ({per})" if per else ""))
    typer.echo(f"chose {chosen}; wrote {npz}, {js.name}, {md.name}")


def _holdout(dirs: list[Path], model_path: Path | None, json_out: bool,
             interval: float | None = None, window: float | None = None) -> None:
    """Scores a model on traces: per trace its verdict, and the share right
    (with `interval`/`window`: on windows of that geometry)."""
    # hosttune.models, rich: not at --help (see the module docstring)
    from hosttune.models.features import WINDOW_SECONDS
    from hosttune.models.recognise import classify_trace
    from hosttune.models.trace import read_trace

    m = _load(model_path)
    files = sorted(p for d in dirs for p in Path(d).glob("*.csv.gz"))
    if not files:
        raise fail(f"no traces (*.csv.gz) in {', '.join(map(str, dirs))}")
    rows = []
    for f in files:
        try:
            overall, windows = classify_trace(m, f, window or WINDOW_SECONDS,
                                              interval=interval)
        except (HosttuneError, ValueError) as exc:
            raise fail(str(exc)) from None
        label = read_trace(f).label
        rows.append({
            "trace": f.name, "label": label,
            "predicted": overall.label if overall else None,
            "confidence": round(overall.confidence, 3) if overall else None,
            "windows": len(windows),
            "windows_right": sum(1 for w in windows if w.prediction.label == label),
        })
    right = sum(1 for r in rows if r["predicted"] == r["label"])
    if json_out:
        emit_json({"model": m.source, "traces": rows, "right": right, "total": len(rows)})
        return
    for r in rows:
        typer.echo(f"{r['trace']:40} {r['label']:18} -> {r['predicted']!s:18} "
                   f"({r['confidence']}, windows {r['windows_right']}/{r['windows']})")
    typer.echo(f"{right}/{len(rows)} traces right")
