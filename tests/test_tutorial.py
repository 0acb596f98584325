"""docs/tutorial.md runs as shown: its ```python blocks execute in order, as one script, and each
block prints exactly the ```text block shown under "Output:" right after it.

The convention the tutorial follows (and states in its introduction): every ```python block is
followed by a line ``Output:`` and a ```text block holding everything the block prints; a block
that prints nothing has no output block. Lines are compared after stripping trailing spaces;
``...`` in an expected line matches any text, as doctest's ELLIPSIS does, and is meant only for
values that legitimately differ between platforms. The tutorial's own ``assert`` statements check
the facts it teaches (Sarathi's mean TTFT is below vLLM's at the same load, Little's law holds, a
hand-computed first-token time, the ConfigError suggestion).
"""

from __future__ import annotations

import contextlib
import difflib
import io
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# Between a python block and its output block: only the word "Output:" and blank lines.
OUTPUT_GAP = re.compile(r"\s*Output:\s*")
ELLIPSIS = "..."


@dataclass(frozen=True)
class Block:
    """One ```python block of the tutorial and the output the doc shows for it."""

    line: int            # 1-based line of its opening fence
    section: str         # the heading it sits under
    code: str
    expected: str | None  # None: the doc shows no output, so the block must print nothing


def _heading(text: str, pos: int) -> str:
    headings = re.findall(r"^#+ (.*)$", text[:pos], re.MULTILINE)
    return headings[-1] if headings else "(top)"


def tutorial_blocks(text: str | None = None) -> list[Block]:
    """The python blocks of the tutorial in order, each with its expected output."""
    text = TUTORIAL.read_text(encoding="utf-8") if text is None else text
    fences = list(FENCE.finditer(text))
    blocks = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        nxt = fences[i + 1] if i + 1 < len(fences) else None
        expected = None
        if (nxt is not None and nxt.group(1) == "text"
                and OUTPUT_GAP.fullmatch(text[fence.end():nxt.start()])):
            expected = nxt.group(2)
        blocks.append(Block(text.count("\n", 0, fence.start()) + 1, _heading(text, fence.start()),
                            fence.group(2), expected))
    return blocks


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_matches(want: str, got: str) -> bool:
    if ELLIPSIS not in want:
        return want == got
    pieces = want.split(ELLIPSIS)
    if not (got.startswith(pieces[0]) and got.endswith(pieces[-1])):
        return False
    pos, end = len(pieces[0]), len(got) - len(pieces[-1])
    for piece in pieces[1:-1]:
        found = got.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return pos <= end


def outputs_match(expected: str | None, printed: str) -> bool:
    """Whether ``printed`` is what the doc shows: line by line, trailing spaces ignored,
    ``...`` matching any text within its line."""
    want, got = _lines(expected or ""), _lines(printed)
    return len(want) == len(got) and all(map(_line_matches, want, got))


def _difference(block: Block, index: int, printed: str) -> str:
    diff = difflib.unified_diff(_lines(block.expected or ""), _lines(printed),
                                "shown in docs/tutorial.md", "printed", lineterm="")
    return (f"block {index + 1} (docs/tutorial.md line {block.line}, section "
            f"'{block.section}') prints something else than the doc shows:\n" + "\n".join(diff))


def run_tutorial(blocks: list[Block]) -> tuple[dict[str, object], list[str]]:
    """Execute the blocks in order in one namespace; return it and one message per block whose
    output differs from the doc. Stops at the first block that raises."""
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    problems = []
    for index, block in enumerate(blocks):
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(block.code, f"{TUTORIAL}:block{index + 1}", "exec"), namespace)
        except Exception:
            problems.append(f"block {index + 1} (docs/tutorial.md line {block.line}, section "
                            f"'{block.section}') raised:\n{traceback.format_exc()}")
            break
        if not outputs_match(block.expected, printed.getvalue()):
            problems.append(_difference(block, index, printed.getvalue()))
    return namespace, problems


def test_tutorial_shows_the_api_and_an_output_for_every_block() -> None:
    blocks = tutorial_blocks()
    assert len(blocks) >= 8
    script = "\n".join(b.code for b in blocks)
    for call in ("scenario_from_dict(", "simulate(", "apply_overrides(", "load_scenario(",
                 "run_to_dir(", "ConfigError", "run_engine(", "Requests.from_lists("):
        assert call in script, f"the tutorial no longer shows {call}"
    # Every block prints something, so every block's output is checked against the doc.
    missing = [b.line for b in blocks if b.expected is None]
    assert missing == [], f"python blocks with no Output block after them, at lines {missing}"


def test_tutorial_prints_what_it_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace, problems = run_tutorial(tutorial_blocks())
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    # Its temporary directory is cleaned up, and nothing was written to the working directory.
    assert not Path(str(namespace["workdir"])).exists()
    assert list(tmp_path.iterdir()) == []
    comparison = namespace["comparison"]
    assert isinstance(comparison, pd.DataFrame)
    assert list(comparison.index) == ["sarathi", "vllm"]


# -- the checker itself: a changed line, a missing line and an unexpected print are caught -------

DOC = """\
# A
```python
print("a")
print("b")
```

Output:

```text
a
b
```

## B
```python
x = 1
```
"""


def test_checker_pairs_blocks_with_their_output() -> None:
    first, second = tutorial_blocks(DOC)
    assert (first.line, first.section, first.expected) == (2, "A", "a\nb\n")
    assert (second.section, second.expected) == ("B", None)


@pytest.mark.parametrize(("expected", "printed", "same"), [
    ("a\nb\n", "a\nb\n", True),
    ("a\nb\n", "a  \nb\n\n", True),            # trailing spaces and blank lines at the end
    ("a\nb\n", "a\nc\n", False),               # a changed line
    ("a\nb\n", "a\n", False),                  # a missing line
    (None, "a\n", False),                      # printed with no output shown
    ("mean 0.24...\n", "mean 0.2401\n", True),
    ("mean 0.24...\n", "mean 0.25\n", False),
    ("x ... y\n", "x 1\ny\n", False),          # an ellipsis never spans lines
    ("['a', 'b', 'arrived']\n", "['a', 'b', 'stop_reason']\n", False),
])
def test_checker_compares_line_by_line(expected: str | None, printed: str, same: bool) -> None:
    assert outputs_match(expected, printed) is same


def test_a_wrong_output_names_the_block_and_the_difference() -> None:
    blocks = tutorial_blocks(DOC.replace("a\nb\n```", "a\nc\n```"))
    _, problems = run_tutorial(blocks)
    assert len(problems) == 1
    assert problems[0].startswith("block 1 (docs/tutorial.md line 2, section 'A')")
    assert "-c" in problems[0] and "+b" in problems[0]
