"""results/report.html: the report in one self-contained page (figures embedded as data URIs, no
CDN, opens from a laptop after `scp`), rendered from templates/report.html.j2. Per experiment: a
sortable stage table (state, attempts, job id, wall time, cost, main metric), then what report.md
says (stage sections with curves and confusion matrices, the variant comparison and its Pareto
plot), its markdown rendered to HTML."""
from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path

import safeio
from pipeline.accounting.record import METRIC_COLUMNS, device_hours
from pipeline.core import paths

IMAGE = re.compile(r'(<img\s[^>]*?src=")([^"]+)(")')


def write_html(results: Path, sections: list[dict]) -> Path:
    """sections: {experiment, rows (the efficiency rows), table (report.md's summary table), body
    (report.md's markdown after that table, links relative to results/)}. Returns the page's path."""
    import jinja2
    from markupsafe import Markup
    env = jinja2.Environment(loader=jinja2.PackageLoader("pipeline.reporting", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True)
    experiments = [{"name": s["experiment"], "stages": stage_rows(s["rows"]),
                    "table": Markup(body_html(results, s["table"])), "body": Markup(body_html(results, s["body"]))}
                   for s in sections]
    page = env.get_template("report.html.j2").render(experiments=experiments, generated=safeio.now_iso())
    path = Path(results) / paths.REPORT_HTML
    safeio.atomic_write_text(path, page)
    return path


def stage_rows(rows: list[dict]) -> list[dict]:
    """The stage table's cells, each a (text, sort key) pair: numbers sort as numbers."""
    out = []
    for r in rows:
        cost = device_hours(r)
        metric = next((c for c in METRIC_COLUMNS if r.get(c) not in (None, "")), None)
        out.append({"stage": r.get("stage"), "variant": r.get("variant") or "", "state": r.get("status") or "",
                    "attempts": _num(r.get("attempts")), "job_id": r.get("job_id") or "",
                    "wall_s": _num(r.get("wall_s")), "gpu_hours": _num(cost["gpu_hours"]),
                    "cpu_hours": _num(cost["cpu_hours"]), "metric": metric or "",
                    "value": _num(r.get(metric)) if metric else None})
    return out


def _num(value) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def body_html(results: Path, markdown: str) -> str:
    """report.md's sections as HTML: tables sortable, every local image embedded."""
    from markdown_it import MarkdownIt
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    html = html.replace("<table>", '<table class="sortable">')
    return IMAGE.sub(lambda m: m.group(1) + _data_uri(Path(results), m.group(2)) + m.group(3), html)


def _data_uri(results: Path, src: str) -> str:
    """A figure as a data URI; a remote or missing one keeps its link (the page says nothing false)."""
    path = results / src
    if re.match(r"^[a-z]+:", src) or not path.is_file():
        return src
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"
