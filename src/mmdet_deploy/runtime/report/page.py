"""The review page: header (run summary, banners), histogram, the table, all in one self-contained HTML file.

The page loads nothing: CSS and JavaScript are inline, pictures are ``data:`` URIs, and its Content Security
Policy forbids every fetch (``default-src 'none'``) and runs only the page's own script and style (by hash),
so even a name that slipped past escaping could not run code or reach the network.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from mmdet_deploy import __version__
from mmdet_deploy.runtime.records import FACES_NAME, WINDOWS_NAME
from mmdet_deploy.runtime.report import svg
from mmdet_deploy.runtime.report.data import RunData
from mmdet_deploy.runtime.report.rows import choose_rows, esc, row_html
from mmdet_deploy.runtime.results import ERROR, NO_FACE, OK, RESULTS_NAME, SKIPPED, STATUSES

_PLACEHOLDER = re.compile(r"@(CSP|VERSION|TITLE|STYLE|SCRIPT|BODY)@")
#: Rows shown at most by default; past it, the highest- and lowest-scoring files.
MAX_FILES = 500


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _facts(data: RunData) -> list[tuple[str, str]]:
    """(label, HTML) pairs of the run summary; values already escaped."""
    m, summary = data.manifest, data.summary or {}
    contract: Mapping[str, Any] = m.get("contract") or {}
    backend: Mapping[str, Any] = m.get("backend") or {}
    counts = {status: 0 for status in STATUSES}
    for row in data.rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    facts = [("files", f"{len(data.rows)} (" + ", ".join(f"{esc(k)} {v}" for k, v in counts.items()) + ")")]
    if summary:
        speed = f"{float(summary.get('files_per_s', 0.0)):.3f} media files/s, {float(summary.get('wall_s', 0.0)):.1f} s"
        if summary.get("previous_rows"):
            speed += f" (last invocation, which resumed after {int(summary['previous_rows'])} rows)"
        facts.append(("speed", esc(speed)))
    if m.get("model"):
        facts.append(("model", esc(m["model"])))
    parts = [f"{k} {m.get(k) if m.get(k) is not None else contract.get(k)}" for k in ("config", "head", "preset")]
    parts += [f"precision {m.get('precision', contract.get('precision', '?'))}",
              f"{m.get('frames', '?')} frames of {m.get('image_size', '?')} px"]
    if contract.get("exporter"):
        parts.append(f"exporter {contract['exporter']} (opset {contract.get('opset', '?')})")
    facts.append(("contract", esc(", ".join(parts))))
    if m.get("checkpoint_sha256"):
        facts.append(("checkpoint sha256", esc(str(m["checkpoint_sha256"]))))
    source = contract.get("threshold_source")
    facts.append(("threshold", esc(f"{data.threshold:.4g}" + (f" (from {source})" if source else ""))))
    if backend:
        keys = ("backend", "device", "providers", "precision", "onnxruntime", "tensorrt")
        facts.append(("backend", esc(", ".join(f"{k} {backend[k]}" for k in keys if backend.get(k) not in (None, "")))))
    if m.get("face_detectors"):
        facts.append(("face detectors", esc(", ".join(str(d) for d in m["face_detectors"]))))
    if m.get("input"):
        facts.append(("input", esc(m["input"])))
    return facts


def _header(data: RunData) -> str:
    m = data.manifest
    title = f"Review report: {data.out_dir.resolve().name}"
    out = [f"<header><h1>{esc(title)}</h1>"]
    demo = m.get("demo_weights")
    if demo is None:
        demo = (m.get("contract") or {}).get("demo_weights")
    if demo:
        out.append('<div class="banner demo" role="alert">This model carries demo weights (seeded random '
                   "values, not a trained detector): its scores mean nothing.</div>")
    if data.summary is None:
        out.append('<div class="banner partial">No summary.json: this run did not finish (or is still running). '
                   "Every row written so far is shown.</div>")
    if data.dropped_lines:
        out.append(f'<div class="banner partial">{data.dropped_lines} incomplete line(s) of results.csv were '
                   "skipped (an interrupted write); <code>mmdet-run --resume</code> redoes those files.</div>")
    facts = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in _facts(data))
    scored = [r for r in data.rows if r.prob_fake is not None]
    hist = svg.histogram([r.prob_fake or 0.0 for r in scored if r.status == OK], data.threshold,
                         [r.prob_fake or 0.0 for r in scored if r.status == NO_FACE])
    links = [f'<a href="{RESULTS_NAME}">{RESULTS_NAME}</a>']
    for name in (FACES_NAME, WINDOWS_NAME, "run.json", "summary.json"):
        if (data.out_dir / name).is_file():
            links.append(f'<a href="{esc(name)}">{esc(name)}</a>')
    out.append(f'<div class="summary"><dl class="facts">{facts}<dt>files here</dt><dd>{" · ".join(links)}</dd></dl>'
               f'<div class="hist-box"><h2>p(fake) of the {len(scored)} scored files</h2>{hist}'
               '<div class="small">blue: face found; amber: no face (whole frames scored)</div></div></div>')
    out.append("</header>")
    return "".join(out)


def _table(data: RunData, max_files: int, report_dir: Path) -> str:
    shown = choose_rows(data.rows, max_files)
    counts = {status: sum(1 for r in shown if r.status == status) for status in STATUSES}
    filters = "".join(
        f'<label><input type="checkbox" data-filter="{s}" checked> <span class="st st-{s}">{s}</span> '
        f"{counts[s]}</label>"
        for s in (OK, NO_FACE, ERROR, SKIPPED)
    )
    out = ['<main><h2>Files</h2>']
    hidden = len(data.rows) - len(shown)
    if hidden:
        out.append(f'<div class="more">{len(data.rows)} files: showing the {len(shown)} highest- and lowest-scoring; '
                   f'the other {hidden} are in <a href="{RESULTS_NAME}">{RESULTS_NAME}</a>.</div>')
    out.append(f'<div class="controls">{filters}<span>showing <b id="shown-count">{len(shown)}</b> of {len(shown)}'
               '</span><span class="keys"><kbd>j</kbd>/<kbd>k</kbd> or <kbd>&darr;</kbd>/<kbd>&uarr;</kbd> '
               "next/previous file, <kbd>o</kbd> or <kbd>Enter</kbd> open the original, "
               "click a column title to sort</span></div>")
    out.append('<table><thead><tr><th>frame</th><th>crops scored</th><th data-key="name" aria-sort="none">'
               '<button type="button">file</button></th><th data-key="status" aria-sort="none"><button type="button">'
               'status</button></th><th data-key="p" aria-sort="descending"><button type="button">p(fake)</button>'
               '</th><th>detector</th></tr></thead><tbody id="rows">')
    out.extend(row_html(i, row, data, report_dir) for i, row in enumerate(shown))
    out.append("</tbody></table></main>")
    return "".join(out)


def render(data: RunData, max_files: int = MAX_FILES, report_dir: Path | None = None) -> str:
    """The whole page for a run folder; ``report_dir`` is where the page will live (links are relative)."""
    style, script = _asset("report.css"), _asset("report.js")
    csp = (f"default-src 'none'; img-src data:; style-src {_sha256(style)}; script-src {_sha256(script)}; "
           "base-uri 'none'; form-action 'none'")
    body = _header(data) + _table(data, max_files, report_dir or data.out_dir)
    body += f"<footer>mmdet-deploy {esc(__version__)}, built {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</footer>"
    values = {"CSP": csp, "VERSION": esc(__version__), "TITLE": esc(f"Review: {data.out_dir.resolve().name}"),
              "STYLE": style, "SCRIPT": script, "BODY": body}
    # One pass over the template: inserted text (file names included) is never scanned for placeholders.
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], _asset("template.html"))
