"""The HTML report: self-contained (plotly.js inlined), every static figure exported, the
notes that say how to read it, and rendered by a real browser at two widths."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from servesim.cli.main import run_cli
from servesim.experiments.execute import run_sweep
from servesim.experiments.sweep import load_sweep
from servesim.report.data import load_report_data
from servesim.report.stats import GROWING, latency_by_load, stability_table

STATIC = ("latency_vs_load", "latency_cdfs", "system_over_time", "batch_composition",
          "stability")
"""Figures this sweep draws; the KV plot is left out, as its cache is effectively unlimited."""
CHROMIUM = next((p for p in (os.environ.get("SERVESIM_CHROMIUM"), "/usr/bin/chromium",
                             shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and Path(p).is_file()), None)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, base_scenario_text: str) -> Path:
    """One small sweep (2 policies x 2 loads x 2 seeds, a 10M-block cache) and its report."""
    root = tmp_path_factory.mktemp("report")
    (root / "base.toml").write_text(base_scenario_text, encoding="utf-8")
    (root / "sweep.toml").write_text(
        '[sweep]\nscenario = "base.toml"\nseeds = 2\n'
        'set = { "engine.kv.blocks" = 10000000 }\n[grid]\n'
        '"engine.batching" = ["orca", "vllm"]\nload = [0.6, 1.3]\n', encoding="utf-8")
    out = root / "out"
    run_sweep(load_sweep(root / "sweep.toml"), out, executor="serial")
    assert run_cli(["report", str(out)]) == 0
    return out


def _page(report_dir: Path) -> str:
    return (report_dir / "report.html").read_text(encoding="utf-8")


def test_report_is_self_contained_with_exports(report_dir: Path) -> None:
    page = _page(report_dir)
    assert "<script src" not in page and "plotly.js v" in page  # plotly.js inlined, no CDN
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    # Outside the scripts, no reference to anything outside the file: only data URIs.
    assert not re.search(r'(src|href)="(?!data:|#)', markup)
    for stem in STATIC:
        assert f'id="{stem}"' in page
        png = (report_dir / "figures" / f"{stem}.png").read_bytes()
        svg = (report_dir / "figures" / f"{stem}.svg").read_text(encoding="utf-8")
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert "<svg" in svg
        assert base64.b64encode(png).decode("ascii") in page
        assert f'download="{stem}.svg"' in page
        assert f'id="{stem}-plot-1"' in page  # its interactive panels
    assert "Stability verdicts" in page


def test_kv_plot_is_replaced_by_a_note(report_dir: Path) -> None:
    page = _page(report_dir)
    section = page[page.index('<section id="kv_over_time">'):]
    section = section[:section.index("</section>")]
    assert "Not drawn" in section and "effectively unlimited" in section
    assert "plotly-graph-div" not in section
    assert not (report_dir / "figures" / "kv_over_time.png").exists()


def test_report_notes_and_table(report_dir: Path) -> None:
    page = _page(report_dir)
    # Two seeds: no interval bars, and the page says why.
    assert "No confidence bars: a 95% interval needs at least 3 seeds" in page
    # Every policy's backlog grows at 1.3 lambda*: those points are drawn hollow, explained.
    assert "Hollow markers are truncated points" in page
    assert "at load 1.3" in page
    # The verdict table: named columns with units, the constant lambda* said once.
    assert "slope_lo" not in page and "slope_hi" not in page
    assert "<th>load (λ / λ*)</th>" in page
    assert "The same in every row: λ* (requests/s): 13.87" in page
    assert "<th>λ* (requests/s)</th>" not in page


def test_report_tables(report_dir: Path) -> None:
    """The log-space CI needs 3 seeds; the overloaded load is unstable and so truncated."""
    data = load_report_data(report_dir)
    assert data.x == "load" and data.reference == pytest.approx(0.6)
    table = latency_by_load(data.points, "load", "e2e_mean_s", data.truncated)
    assert set(table["n"]) == {2} and table["lo"].isna().all()
    assert (table["centre"] > 0).all()
    verdicts = stability_table(data.points, "load")
    overloaded = verdicts[verdicts["x"] > 1]
    # At 1.3 lambda* the backlog of every policy grows (Theorem 2: slope >= 0.3 mu* > 0).
    assert set(overloaded["state"]) == {"unstable"}
    assert {data.truncated[(label, 1.3)] for label in ("orca", "vllm")} <= {
        GROWING, "more than half of the requests unfinished at the horizon"}
    assert data.truncated[("orca", 0.6)] == ""
    assert set(data.series) == {"orca", "vllm"}
    assert {limit.binds for limit in data.limits.values()} == {"token budget"}


def _render(page: Path, tmp_path: Path, width: int) -> tuple[str, str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", "--disable-background-networking",
           "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / f'profile-{width}'}", f"--window-size={width},2000",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
           page.as_uri()]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize(("width", "side_by_side"), [(1400, 3), (700, 1)])
def test_report_renders_in_headless_chromium(report_dir: Path, tmp_path: Path, width: int,
                                             side_by_side: int) -> None:
    page = report_dir / "report.html"
    expected = _page(report_dir).count('class="plotly-graph-div"')
    assert expected >= 9  # 3 latency, 2 CDF, 2 series, 2 composition, 1 stability
    dom, stderr = _render(page, tmp_path, width)
    # The page's load handler counts plotly plots with a drawn trace layer of non-zero width.
    match = re.search(r'data-plots-rendered="(\d+)/(\d+)"', dom)
    assert match is not None, dom[:500]
    assert int(match.group(1)) == int(match.group(2)) == expected
    assert re.search(r'data-errors="0"', dom)
    # Wide: the three latency panels side by side; narrow: stacked.
    assert re.search(rf'data-first-row="{side_by_side}"', dom)
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
