"""The HTML report: self-contained, every figure exported, and rendered by a real browser."""

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
from servesim.report.data import latency_by_load, load_report_data, stability_table

FIGURES = ("latency_vs_load", "latency_cdfs", "system_over_time", "kv_over_time",
           "batch_composition", "stability")
CHROMIUM = next((p for p in (os.environ.get("SERVESIM_CHROMIUM"), "/usr/bin/chromium",
                             shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and Path(p).is_file()), None)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, base_scenario_text: str) -> Path:
    """One small sweep (2 policies x 2 loads x 2 seeds) and its report, shared by the tests."""
    root = tmp_path_factory.mktemp("report")
    (root / "base.toml").write_text(base_scenario_text, encoding="utf-8")
    (root / "sweep.toml").write_text(
        '[sweep]\nscenario = "base.toml"\nseeds = 2\n[grid]\n'
        '"engine.batching" = ["orca", "vllm"]\nload = [0.6, 1.3]\n', encoding="utf-8")
    out = root / "out"
    run_sweep(load_sweep(root / "sweep.toml"), out, executor="serial")
    assert run_cli(["report", str(out)]) == 0
    return out


def test_report_is_self_contained_with_exports(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    # No reference to anything outside the file: every image is a data URI.
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    for stem in FIGURES:
        assert f'id="{stem}"' in page
        png = (report_dir / "figures" / f"{stem}.png").read_bytes()
        svg = (report_dir / "figures" / f"{stem}.svg").read_text(encoding="utf-8")
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert "<svg" in svg
        assert base64.b64encode(png).decode("ascii") in page
        assert f'download="{stem}.svg"' in page
    assert "Stability verdicts" in page


def test_report_tables(report_dir: Path) -> None:
    """The CI half-width is t_{0.975, n-1} * sd / sqrt(n) over the seeds of a (policy, load)."""
    data = load_report_data(report_dir)
    assert data.x == "load" and data.reference == pytest.approx(0.6)
    table = latency_by_load(data.points, "load", "e2e_mean_s")
    assert set(table["n"]) == {2}
    assert (table["lo"] <= table["mean"]).all() and (table["mean"] <= table["hi"]).all()
    verdicts = stability_table(data.points, "load")
    overloaded = verdicts[verdicts["x"] > 1]
    # At 1.3 lambda* the backlog of every policy grows (Theorem 2: slope >= 0.3 mu* > 0).
    assert set(overloaded["state"]) == {"unstable"}
    assert set(data.series) == {"orca", "vllm"}


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    page = report_dir / "report.html"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom",
           page.as_uri()]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The page's load handler records how many images decoded with a non-zero size.
    match = re.search(r'data-figures-rendered="(\d+)/(\d+)"', proc.stdout)
    assert match is not None, proc.stdout[:500]
    assert match.group(1) == match.group(2) == str(len(FIGURES))
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
