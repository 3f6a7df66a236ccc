"""`report.html`: one self-contained page per run (config, metrics, curves, confusion matrix,
gradient norms, the doctor's verdicts), the plots embedded as base64 PNG so the file travels
alone (attach it to an issue, open it offline)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from torchloom.io import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; }
td.value { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; margin: 0.5em 0; }
.verdict { border-left: 5px solid #999; padding: 0.4em 0.8em; margin: 0.6em 0;
  background: #fafafa; }
.verdict.error { border-color: #c0392b; } .verdict.warning { border-color: #e67e22; }
.verdict.info { border-color: #2980b9; } .severity { font-weight: bold; text-transform: uppercase; }
.note { color: #555; font-size: 0.9em; }
"""


def _image(path: Path) -> str:
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{payload}">'


def _table(rows: list[tuple[str, float]]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(key)}</td><td class='value'>{_value(value)}</td></tr>"
        for key, value in rows
    )
    return f"<table>{cells}</table>"


def _value(value) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _verdicts(diagnosis) -> str:
    if diagnosis is None:
        return "<p>The doctor did not run.</p>"
    if not diagnosis.verdicts:
        parts = ["<p>No problems found.</p>"]
    else:
        parts = [
            f"<div class='verdict {v.severity}'><span class='severity'>{v.severity}</span> "
            f"<code>{html.escape(v.id)}</code>: {html.escape(v.finding)}<br>"
            f"<b>Try:</b> {html.escape(v.advice)}</div>"
            for v in diagnosis.verdicts
        ]
    parts += [f"<p class='note'>Note: {html.escape(note)}</p>" for note in diagnosis.notes]
    return "\n".join(parts)


def write_html_report(run, summary: dict, images: list[Path], diagnosis) -> Path:
    """Write `report.html` in the run directory and return its path.

    Args:
        run: the finished `Run` (with `dir`).
        summary: what `summary.json` holds (epochs, steps, seconds, final logs, test metrics).
        images: the PNG plots to embed, in order.
        diagnosis: the doctor's `Diagnosis`, or None.
    """
    name = html.escape(run.dir.name)
    config_path = run.dir / "config.yaml"
    config_text = config_path.read_text(encoding="utf-8") if config_path.is_file() else ""
    sections = [
        f"<h1>Run {name}</h1>",
        f"<p>{html.escape(run.task.name)}, {summary['epochs']} epochs, {summary['steps']} "
        f"optimizer steps, {summary['seconds']:.1f} s.</p>",
        "<h2>Doctor</h2>",
        _verdicts(diagnosis),
    ]
    metrics = summary.get("test")
    if metrics:
        headline = [(key, value) for key, value in metrics.items() if "/" not in key]
        sections += ["<h2>Test metrics</h2>", _table(headline)]
    final = summary.get("final") or {}
    if final:
        shown = [(key, value) for key, value in final.items() if key.count("/") <= 1]
        sections += ["<h2>Last epoch</h2>", _table(shown)]
    sections += ["<h2>Plots</h2>", *(_image(path) for path in images if path.is_file())]
    sections += ["<h2>Config</h2>", f"<pre>{html.escape(config_text)}</pre>"]
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>torchloom run {name}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
    path = run.dir / "report.html"
    atomic_write_text(path, page)
    return path
