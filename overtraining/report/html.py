"""One self-contained HTML page: findings table, figures (base64 data URIs), group and cell tables.

No external assets (no CSS/JS/font links, no remote images), so the file can be mailed,
attached to W&B or opened offline. A small inline script counts the figures that decoded
and writes the count into ``#render-check`` (the browser test reads it back).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
.findings li { margin: 0.4em 0; }
table.findings-table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
table.findings-table th, table.findings-table td { border: 1px solid #ccc; padding: 3px 7px; text-align: left;
  vertical-align: top; }
table.findings-table thead th { background: #f4f4f4; }
table.small { border-collapse: collapse; font-size: 0.8em; } table.small td, table.small th {
  border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
.table-wrap { overflow: auto; max-height: 600px; border: 1px solid #ddd; }
table.cells { border-collapse: collapse; font-size: 0.78em; white-space: nowrap; }
table.cells th, table.cells td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.cells thead th { position: sticky; top: 0; background: #f4f4f4; }
.meta, #render-check { color: #666; font-size: 0.85em; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var el = document.getElementById("render-check");
  el.setAttribute("data-images", String(imgs.length));
  el.setAttribute("data-rendered", String(ok));
  el.textContent = ok + " of " + imgs.length + " figures rendered";
});
"""


@dataclass(frozen=True)
class Figure:
    """A figure of the report: its PNG and what it shows."""

    path: Path
    title: str
    caption: str
    table: pd.DataFrame | None = None  # a small table shown under the figure


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure_html(fig: Figure) -> str:
    """One figure as a ``<figure>`` with an embedded image."""
    alt = html.escape(fig.title)
    return (
        f'<h2>{alt}</h2>\n<figure><img src="{data_uri(fig.path)}" alt="{alt}">'
        f"<figcaption>{html.escape(fig.caption)} ({html.escape(Path(fig.path).name)})</figcaption></figure>"
        + (small_table_html(fig.table) if fig.table is not None and not fig.table.empty else "")
    )


def small_table_html(df: pd.DataFrame) -> str:
    """A small table (e.g. update size per LR and budget), numbers to 4 significant digits."""
    return df.to_html(index=False, classes="small", border=0, na_rep="", float_format=lambda x: f"{x:.4g}")


def findings_table_html(df: pd.DataFrame) -> str:
    """The findings table (effect | appears? | numbers | interval | seeds (n))."""
    return df.to_html(index=False, classes="findings-table", border=0, na_rep="")


def table_html(df: pd.DataFrame) -> str:
    """The cell table as an HTML table (numbers to 4 significant digits)."""
    return df.to_html(index=False, classes="cells", border=0, na_rep="", float_format=lambda x: f"{x:.4g}")


def render(
    title: str,
    meta: list[str],
    findings: list[str],
    figures: list[Figure],
    cells: pd.DataFrame,
    findings_table: pd.DataFrame | None = None,
    method: str = "",
    groups: pd.DataFrame | None = None,
) -> str:
    """The whole page as a string: it opens with the findings table.

    Args:
        title: page title.
        meta: lines under the title (sources, counts).
        findings: plain-language sentences (the verdicts in detail).
        figures: the figures in order.
        cells: the cell table.
        findings_table: one row per verdict (``findings.findings_frame``), shown first.
        method: how verdicts and intervals were computed, shown under the findings table.
        groups: one row per replica group (mean [95% interval] over seeds), or None.

    Returns:
        A self-contained HTML document.
    """
    esc = html.escape
    table = [findings_table_html(findings_table)] if findings_table is not None and not findings_table.empty else []
    group_part = (
        [
            f"<h2>Replica groups ({len(groups)}): mean [95% t-interval] over seeds</h2>",
            f'<div class="table-wrap">{table_html(groups)}</div>',
        ]
        if groups is not None and not groups.empty
        else []
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        *[f'<p class="meta">{esc(m)}</p>' for m in meta],
        "<h2>Findings</h2>",
        *table,
        *([f'<p class="meta">{esc(method)}</p>'] if method and table else []),
        '<ul class="findings">' + "".join(f"<li>{esc(s)}</li>" for s in findings) + "</ul>"
        if findings
        else "<p>No fine-tuned metric spans several token budgets yet.</p>",
        *[figure_html(f) for f in figures],
        *group_part,
        f"<h2>Cells ({len(cells)})</h2>",
        f'<div class="table-wrap">{table_html(cells)}</div>',
        '<p id="render-check" data-rendered="-1">figures not checked (scripts off)</p>',
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(path: Path, **content) -> Path:
    """Writes ``render(**content)`` to ``path`` and returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(**content), encoding="utf-8")
    return path
