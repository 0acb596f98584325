"""The commands defined outside ``main.py``, resolved by name only when one is used.

``servesim --help`` lists every command with its short help, read from the command function's
docstring in the module's source (``ast``), so listing them imports none of the modules, and
with them no numpy, pandas or scipy. A command module lists its click commands in
``COMMANDS``; each command's function has the command's name.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util

import click

LAZY_COMMANDS: dict[str, str] = {
    "capacity": "analysis",
    "stability": "analysis",
    "theory": "theory",
    "network": "network",
    "sweep": "experiments",
    "query": "experiments",
    "report": "experiments",
    "serve": "serve",
    "observe": "observe",
    "calibrate": "fidelity",
    "fidelity": "fidelity",
    "predictor": "predictor",
}
"""Command name -> its module under ``servesim.cli``."""


class LazyGroup(click.Group):
    """A click group that adds the commands of ``LAZY_COMMANDS`` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            module = importlib.import_module(f"servesim.cli.{LAZY_COMMANDS[cmd_name]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own version asks every command for its help, importing every module.
        names = [n for n in self.list_commands(ctx)
                 if n not in self.commands or not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, self.commands[n].get_short_help_str(limit) if n in self.commands
                 else short_help(n, limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def short_help(name: str, limit: int = 45) -> str:
    """The short help of lazy command ``name``, from its function's docstring, as click
    shortens it to ``limit`` characters."""
    return click.Command(name, help=_docstring(name)).get_short_help_str(limit)


def _docstring(name: str) -> str | None:
    spec = importlib.util.find_spec(f"servesim.cli.{LAZY_COMMANDS[name]}")
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_docstring(node)
    return None
