"""The HTML report of a sweep: the only package that imports a plotting library.

``build_report(DIR)`` reads the sweep folder's catalogue and Parquet files and writes one
self-contained HTML file (figures inlined as PNG, each with PNG and SVG downloads inlined too)
plus every figure as ``DIR/figures/<name>.png`` and ``.svg``.
"""

from __future__ import annotations

import base64
import contextlib
import html
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from servesim.experiments.outputs import atomic_write

__all__ = ["build_report"]

REPORT = "report.html"
FIGURE_DIR = "figures"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 75rem; color: #222; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9rem; color: #555; } table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 0.2rem 0.5rem; font-size: 0.85rem; }
a.export { margin-right: 0.8rem; font-size: 0.85rem; }
"""

# Records how many figures decoded, so a headless browser's DOM dump can show they rendered.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-figures-rendered", ok + "/" + imgs.length);
});
"""


def build_report(out_dir: str | Path, out_file: str | Path | None = None) -> Path:
    """Write the report of the sweep in ``out_dir``; return the HTML file's path.

    The report covers the points of the sweep last run into ``out_dir`` (``sweep.json``).
    Raises ConfigError if ``out_dir`` holds no readable sweep catalogue.
    """
    from servesim.report.data import load_report_data

    out = Path(out_dir)
    data = load_report_data(out)
    with _matplotlib_config(out):
        return _build(out, data, out_file)


@contextlib.contextmanager
def _matplotlib_config(out: Path) -> Iterator[None]:
    """Point matplotlib's config and font cache at a temporary folder inside the sweep folder,
    removed afterwards, unless MPLCONFIGDIR is set: by default matplotlib writes them under the
    home folder. Takes effect only if matplotlib is not imported yet."""
    if os.environ.get("MPLCONFIGDIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix=".mplconfig-", dir=out) as tmp:
        os.environ["MPLCONFIGDIR"] = tmp
        try:
            yield
        finally:
            os.environ.pop("MPLCONFIGDIR", None)


def _build(out: Path, data, out_file: str | Path | None) -> Path:
    from servesim.report.figures import FIGURES, render

    fig_dir = out / FIGURE_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for stem, title, draw in FIGURES:
        fig = draw(data)
        if fig is None:
            continue
        png, svg = render(fig, "png"), render(fig, "svg")
        _write(fig_dir / f"{stem}.png", png)
        _write(fig_dir / f"{stem}.svg", svg)
        sections.append(_section(stem, title, png, svg, draw.__doc__ or ""))
    page = _page(out, data, sections)
    path = Path(out_file) if out_file is not None else out / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, page.encode("utf-8"))
    return path


def _write(path: Path, payload: bytes) -> None:
    """Atomically, and readable by others like any document (temporary files start private)."""
    def write(tmp: Path) -> None:
        tmp.write_bytes(payload)
        os.chmod(tmp, 0o644)

    atomic_write(path, write)


def _data_uri(kind: str, payload: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(payload).decode('ascii')}"


def _section(stem: str, title: str, png: bytes, svg: bytes, doc: str) -> str:
    caption = html.escape(" ".join(doc.split()))
    return (f'<section id="{stem}"><h2>{html.escape(title)}</h2><figure>'
            f'<img alt="{html.escape(title)}" src="{_data_uri("image/png", png)}">'
            f"<figcaption>{caption}<br>"
            f'<a class="export" download="{stem}.png" href="{_data_uri("image/png", png)}">'
            "PNG</a>"
            f'<a class="export" download="{stem}.svg" '
            f'href="{_data_uri("image/svg+xml", svg)}">SVG</a>'
            "</figcaption></figure></section>")


def _page(out: Path, data, sections: list[str]) -> str:
    points = data.points
    policies = ", ".join(sorted(points["policy"].unique())) if len(points) else "none"
    seeds = points["seed"].nunique() if len(points) else 0
    head = (f"<p>{len(points)} finished points; policies: {html.escape(policies)}; "
            f"{seeds} seeds. Sweep folder: <code>{html.escape(str(out))}</code>.</p>")
    table = ""
    verdicts = data.verdicts
    if not verdicts.empty:
        shown = verdicts[["label", "x", "lambda_star", "seeds", "state", "slope_lo",
                          "slope_hi"]].rename(columns={"x": data.x})
        table = ("<h2>Stability verdicts</h2>"
                 + shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
    body = "\n".join([f"<h1>servesim sweep report</h1>{head}", *sections, table])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>servesim sweep report</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head>"
            f"<body>\n{body}\n</body></html>\n")
