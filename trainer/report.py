"""The run report: one static HTML page (plus the run's PNG plots) per trainer run.

It reads what `trainer fit` and `trainer eval` left in the run folder (metrics.json,
fit.json, predictions.json, config.resolved.json and the PNG plots) and writes
``report.html`` beside them: metrics with 95% intervals beside the baselines, the
confusion matrix, learning curves, per-view score histogram, a few example questions
with their retrieved context and the model's answer, and the resolved config. No
scripts, no external resources: the page opens from disk anywhere.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

from store.atomic import atomic_write_text

REPORT_NAME = "report.html"
PLOTS = (
    ("confusion_matrix.png", "Confusion matrix (test questions)"),
    ("learning_curves.png", "Learning curves"),
    ("view_scores.png", "P(yes) per view, by gold label"),
)
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0}.plots img{max-width:520px;border:1px solid #ddd}
.ex{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:.8em 0}
.ok{color:#176e1a}.bad{color:#a11}.ctx{white-space:pre-wrap;font-size:.9em;background:#fafafa;padding:.4em}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}
"""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [("model", metrics["model"]), *metrics.get("baselines", {}).items()]
    out = ["<table><tr><th>system</th><th>accuracy</th><th>F1 yes</th><th>F1 no</th><th>macro F1 [95% CI]</th></tr>"]
    for name, m in rows:
        lo, hi = m["macro_f1_ci"]
        out.append(
            f"<tr><td>{html.escape(name)}</td><td class=num>{m['accuracy']:.3f}</td>"
            f"<td class=num>{m['f1_yes']:.3f}</td><td class=num>{m['f1_no']:.3f}</td>"
            f"<td class=num>{m['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}]</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _fit_table(fit: dict[str, Any]) -> str:
    keys = (
        ("train_examples", "training examples"),
        ("steps", "optimizer steps"),
        ("seconds", "seconds"),
        ("examples_per_second", "examples / second"),
        ("peak_memory_mb", "peak memory (MB)"),
        ("best_valid", "best valid macro F1"),
        ("class_weights", "class weights (no, yes)"),
    )
    rows = []
    for key, label in keys:
        if key in fit and fit[key] is not None:
            value = fit[key]
            if isinstance(value, dict) and "macro_f1" in value:
                value = value["macro_f1"]
            if isinstance(value, float):
                value = f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
            elif isinstance(value, list):
                value = ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
            rows.append(f"<tr><th>{label}</th><td class=num>{html.escape(str(value))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>" if rows else "<p>No fit summary in this run folder.</p>"


def _pick_examples(predictions: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    right = [p for p in predictions if p.get("gold") == p.get("predicted")]
    wrong = [p for p in predictions if p.get("gold") != p.get("predicted")]
    half = count // 2
    picked = wrong[:half] + right[: count - min(half, len(wrong))]
    return picked[:count]


def _example(p: dict[str, Any]) -> str:
    verdict = "ok" if p.get("gold") == p.get("predicted") else "bad"
    parts = [
        f"<div class=ex><p><b>{html.escape(p['body'])}</b></p>",
        f"<p class={verdict}>model: <b>{html.escape(str(p['predicted']))}</b> (P(yes) = {p['p_yes']:.2f})"
        f" &middot; gold: <b>{html.escape(str(p.get('gold')))}</b></p>",
    ]
    for view in p.get("views", []):
        pmids = ", ".join(str(x) for x in view.get("source_pmids", []))
        parts.append(
            f"<p>view <code>{html.escape(view['view'])}</code> from {html.escape(view.get('source', ''))}"
            f"{' (PMIDs ' + html.escape(pmids) + ')' if pmids else ''}</p>"
            f"<div class=ctx>{html.escape(view['context'][:1500])}</div>"
        )
    parts.append("</div>")
    return "".join(parts)


def write_report(run: str | Path, examples: int = 6) -> Path:
    """Write ``report.html`` for a run folder from what fit and eval left there."""
    folder = Path(run)
    metrics = _read_json(folder / "metrics.json")
    fit = _read_json(folder / "fit.json") or {}
    predictions = _read_json(folder / "predictions.json") or []
    config = _read_json(folder / "config.resolved.json")
    body = [f"<h1>Run report: {html.escape(folder.name)}</h1>"]
    body.append(
        f"<p>Run folder <code>{html.escape(str(folder))}</code>, report written {dt.datetime.now():%Y-%m-%d %H:%M}.</p>"
    )
    body.append("<h2>Metrics</h2>")
    if metrics:
        body.append(
            f"<p>{metrics.get('questions', 0)} questions ({metrics.get('views', 0)} views); a question with several "
            "views is answered by averaging their logits. Intervals: bootstrap over questions.</p>"
        )
        body.append(_metrics_table(metrics))
    else:
        body.append("<p>Not evaluated yet: run <code>trainer eval</code>.</p>")
    body.append("<h2>Training</h2>" + _fit_table(fit))
    figures = [
        f"<figure><img src='{name}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in PLOTS
        if (folder / name).is_file()
    ]
    body.append("<h2>Plots</h2><div class=plots>" + "".join(figures) + "</div>")
    if predictions:
        body.append("<h2>Example questions</h2>")
        body.extend(_example(p) for p in _pick_examples(predictions, examples))
    if config is not None:
        body.append("<h2>Resolved config</h2><pre>" + html.escape(json.dumps(config, indent=2)) + "</pre>")
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Run report: {html.escape(folder.name)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    target = folder / REPORT_NAME
    atomic_write_text(target, page)
    return target
