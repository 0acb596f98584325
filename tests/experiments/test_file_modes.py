"""Every output file gets the mode the user's umask gives new files (0o666 & ~umask), and
every folder 0o777 & ~umask: run outputs, sweep folders, the catalogue and the report."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from servesim.experiments.outputs import new_file_mode

SHORT = '\n[sweep.set]\n"run.horizon_s" = 5.0\n'

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def _write_everything(root: Path, umask: int) -> None:
    """A run and a sweep written by a child process under ``umask``: the umask is
    process-wide, so the test process keeps its own."""
    code = textwrap.dedent(f"""
        from pathlib import Path
        from servesim.experiments.execute import run_sweep
        from servesim.experiments.outputs import run_to_dir
        from servesim.experiments.sweep import load_sweep
        from servesim.scenario import load_scenario

        root = Path({str(root)!r})
        run_to_dir(load_scenario(root / "base.toml"), root / "run")
        run_sweep(load_sweep(root / "sweep.toml"), root / "sweep", executor="serial")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, umask=umask)
    assert proc.returncode == 0, proc.stderr


def _modes(root: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


def _wrong(modes: dict[Path, int], umask: int) -> dict[str, str]:
    return {p.name: oct(mode) for p, mode in modes.items()
            if mode != (0o777 & ~umask if p.is_dir() else 0o666 & ~umask)}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(make_sweep, tmp_path: Path, umask: int) -> None:
    make_sweep(policies=("orca", "vllm"), loads=(0.5,), seeds=1, extra=SHORT)
    (tmp_path / "base.toml").write_text((tmp_path / "base.toml").read_text()
                                        .replace("horizon_s = 20.0", "horizon_s = 5.0"))
    _write_everything(tmp_path, umask)
    files = {**_modes(tmp_path / "run"), **_modes(tmp_path / "sweep")}
    assert {"summary.json", "requests.parquet", "iterations.parquet", "point.json",
            "catalog.duckdb", "sweep.json", "sweep.lock"} <= {p.name for p in files}
    assert _wrong(files, umask) == {}
    # Nothing temporary is left behind.
    assert not [p for p in files if p.name.startswith(".")]


def test_report_files_follow_the_umask(make_sweep, tmp_path: Path, monkeypatch) -> None:
    """The report writes through ``atomic_write`` too. The umask it applies is stubbed (0o027,
    which no default gives) rather than set, so this runs in the test process."""
    from servesim.experiments import outputs
    from servesim.experiments.execute import run_sweep
    from servesim.experiments.sweep import load_sweep
    from servesim.report import build_report

    out = tmp_path / "out"
    run_sweep(load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=1, extra=SHORT)),
              out, executor="serial")
    monkeypatch.setattr(outputs, "_umask", lambda: 0o027)
    build_report(out)
    files = {p: mode for p, mode in _modes(out).items()
             if p.name == "report.html" or p.parent.name == "figures"}
    assert len(files) > 2 and all(not p.is_dir() for p in files)
    assert _wrong(files, 0o027) == {}


def test_new_file_mode_is_the_process_umask() -> None:
    code = "from servesim.experiments.outputs import new_file_mode; print(new_file_mode())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, umask=0o027)
    assert int(proc.stdout) == 0o640, proc.stderr
    assert new_file_mode() & 0o600 == 0o600
