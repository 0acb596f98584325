"""README.md's short tour runs as written: every command of its ```bash block exits 0.

Each command runs from a temporary folder holding a copy of ``examples/``, so the outputs it
writes under ``out/`` land there and nothing is written into the repository. A command's words
are split as the shell splits them (quotes, comments, backslash line continuations) and given,
after the leading ``.venv/bin/servesim``, to ``run_cli``, the function behind that program, in
this process: the same code without an interpreter start-up per command (the console script
itself is run by tests/test_cli.py). Commands that read another's output (the query and the
report read the sweep's ``out/policies``) run in one test, in the README's order, in one folder.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from servesim.cli.main import run_cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PROGRAM = ".venv/bin/servesim"
TOUR = re.compile(r"^## A short tour\n.*?^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
OUT_DIR = re.compile(r"\bout/([\w.-]+)")


def _complete(command: str) -> bool:
    """Whether ``command`` is a whole shell command: no trailing backslash, quotes closed."""
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def tour_commands(text: str | None = None) -> list[str]:
    """The commands of the tour's bash block, a command spanning lines joined into one."""
    text = README.read_text(encoding="utf-8") if text is None else text
    match = TOUR.search(text)
    assert match, "README.md has no ```bash block under '## A short tour'"
    commands, pending = [], ""
    for line in match.group(1).splitlines():
        if not line.strip() and not pending:
            continue
        pending = f"{pending}\n{line}" if pending else line
        if _complete(pending):
            commands.append(pending)
            pending = ""
    assert not pending, f"the tour ends inside a command: {pending!r}"
    return commands


def groups(commands: list[str]) -> dict[str, list[str]]:
    """Commands grouped by the ``out/`` folder they name (each command alone if none)."""
    grouped: dict[str, list[str]] = {}
    for index, command in enumerate(commands):
        folders = OUT_DIR.findall(command)
        key = f"out/{folders[0]}" if folders else f"{index + 1}: {command.split()[1]}"
        grouped.setdefault(key, []).append(command)
    return grouped


def shell_words(command: str) -> list[str]:
    """The words bash passes the program: quotes removed, comments and line continuations
    dropped."""
    return shlex.split(command.replace("\\\n", " "), comments=True)


GROUPS = groups(tour_commands())
# The bisection, the sweep with its report, and the M/G/1 numerics take seconds each.
SLOW_GROUPS = {key for key, cmds in GROUPS.items()
               if any(word in " ".join(cmds) for word in ("--empirical", " sweep ", " theory "))}


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_GROUPS
                                 else k for k in GROUPS])
def test_tour_command_runs_as_written(key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    for command in GROUPS[key]:
        program, *args = shell_words(command)
        assert program == PROGRAM, f"a tour line is not a servesim command: {command}"
        code = run_cli(args)
        out, err = capsys.readouterr()
        assert code == 0, f"{command}\nexit {code}\n{err}"
        if args[0] == "query":
            _assert_rows_ordered(out)
    written = {p.name for p in tmp_path.iterdir()} - {"examples"}
    assert written <= {"out"}, f"the tour wrote outside out/: {sorted(written)}"


def _assert_rows_ordered(table: str) -> None:
    """The query's rows come out in (policy, load) order, as its ORDER BY ALL asks."""
    rows = [line.split() for line in table.splitlines()[1:] if line.strip()]
    keys = [(row[0], float(row[1])) for row in rows]
    assert len(keys) == 16 and keys == sorted(keys), table


def test_tour_has_no_placeholders() -> None:
    commands = tour_commands()
    assert len(commands) >= 10
    for command in commands:
        for word in shell_words(command):
            if word.startswith("examples/"):
                assert (REPO / word).is_file(), f"{command}: no file {word}"
            assert word not in ("SCENARIO.toml", "DIR", "FILE"), f"placeholder in {command}"


def test_commands_spanning_lines_are_joined() -> None:
    text = ("## A short tour\n\n```bash\n.venv/bin/servesim a \\\n    --b 1   # note\n"
            '.venv/bin/servesim query out/x "SELECT 1,\n    2"\n\n.venv/bin/servesim c\n```\n')
    assert tour_commands(text) == [".venv/bin/servesim a \\\n    --b 1   # note",
                                   '.venv/bin/servesim query out/x "SELECT 1,\n    2"',
                                   ".venv/bin/servesim c"]
    assert list(groups(tour_commands(text))) == ["1: a", "out/x", "3: c"]
    assert shell_words(tour_commands(text)[0]) == [".venv/bin/servesim", "a", "--b", "1"]
    assert shell_words(tour_commands(text)[1])[-1] == "SELECT 1,\n    2"
