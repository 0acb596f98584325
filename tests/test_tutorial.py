"""docs/tutorial.md runs: its ```python blocks, concatenated in order, execute as one script.

The tutorial's own ``assert`` statements check the facts it teaches (Sarathi's mean TTFT is below
vLLM's at the same load, Little's law holds, a hand-computed first-token time, the ConfigError
suggestion); this test checks that the script runs, quickly, and leaves those results behind.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TIME_LIMIT_S = 20.0


def tutorial_blocks() -> list[str]:
    """The ```python fenced blocks of the tutorial, in order."""
    return PYTHON_BLOCK.findall(TUTORIAL.read_text(encoding="utf-8"))


def test_tutorial_has_python_blocks() -> None:
    blocks = tutorial_blocks()
    assert len(blocks) >= 8
    script = "\n".join(blocks)
    for call in ("scenario_from_dict(", "simulate(", "apply_overrides(", "load_scenario(",
                 "run_to_dir(", "ConfigError", "run_engine(", "Requests.from_lists("):
        assert call in script, f"the tutorial no longer shows {call}"


def test_tutorial_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    script = "\n".join(tutorial_blocks())
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    start = time.perf_counter()
    exec(compile(script, str(TUTORIAL), "exec"), namespace)
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT_S, f"the tutorial took {elapsed:.1f} s"

    out = capsys.readouterr().out
    assert "did you mean 'sarathi'?" in out
    assert "SimResult seed 1" in out
    # Its temporary directory is cleaned up, and nothing was written to the working directory.
    assert not Path(str(namespace["workdir"])).exists()
    assert list(tmp_path.iterdir()) == []
    # The comparison it prints is the one it describes.
    comparison = namespace["comparison"]
    assert isinstance(comparison, pd.DataFrame)
    assert list(comparison.index) == ["sarathi", "vllm"]
    assert comparison.loc["sarathi", "TTFT mean"] < comparison.loc["vllm", "TTFT mean"]
