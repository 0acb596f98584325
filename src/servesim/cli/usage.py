"""click's usage errors as servesim's one line: ``servesim run: missing option '--out'; see
'servesim run --help'``, or ``...; did you mean '--seed' or '--set'?`` when click or the
command names suggest something, instead of click's three lines of usage, hint and error."""

from __future__ import annotations

import difflib
import re

import click

__all__ = ["usage_line"]

# click words its hint either way, depending on its version and on which commands are loaded.
_NO_COMMAND = re.compile(r"No such command '(.+?)'\.(?: \(?Did you mean .*)?")
_CLICK_HINT = re.compile(r"\s*\(Did you mean (?:one of: )?(.+)\?\)\s*$")


def usage_line(e: click.UsageError) -> str:
    """One line for a click usage error: the command, what is wrong, and either the closest
    valid names or where to find help."""
    ctx = e.ctx
    where = ctx.command_path if ctx is not None else "servesim"
    what, suggestions = _what(e)
    if suggestions:
        tail = "; did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
    else:
        tail = f"; see '{where} --help'"
    return f"{where}: {what}{tail}"


def _what(e: click.UsageError) -> tuple[str, list[str]]:
    if isinstance(e, click.NoSuchOption):
        return f"no such option {e.option_name!r}", sorted(e.possibilities or ())
    if isinstance(e, click.MissingParameter) and e.param is not None:
        param = e.param
        name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
        return f"missing {param.param_type_name} {name!r}", []
    message = " ".join(e.format_message().split())
    missing = _NO_COMMAND.fullmatch(message)
    if missing is not None:
        return f"no such command {missing.group(1)!r}", _close_commands(e.ctx, missing.group(1))
    hint = _CLICK_HINT.search(message)
    suggestions = re.findall(r"'([^']+)'", hint.group(1)) if hint else []
    message = _CLICK_HINT.sub("", message).rstrip(".")
    return message[:1].lower() + message[1:], suggestions


def _close_commands(ctx: click.Context | None, name: str) -> list[str]:
    if ctx is None or not isinstance(ctx.command, click.Group):
        return []
    return difflib.get_close_matches(name, ctx.command.list_commands(ctx), n=3, cutoff=0.6)
