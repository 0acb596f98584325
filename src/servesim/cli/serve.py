"""``servesim serve``: the scenario's engine as an OpenAI-compatible server on loopback, its
tokens streamed at the simulated times (``servesim.real.emulator``).

SIGINT and SIGTERM shut it down cleanly (streams in flight end, the port is released) and the
command exits 0: stopping is how a server's run ends, not an interruption of work to keep.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import click


async def _serve(scenario: Any, host: str, port: int, time_scale: float,
                 model: str | None) -> str:
    """Serve until SIGINT or SIGTERM; return the signal's name."""
    from servesim.real.emulator import start_emulator

    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[str] = loop.create_future()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # The loop's handlers replace the command line's for the life of the server (only the
        # main thread can have them; elsewhere the caller's KeyboardInterrupt stops it).
        try:
            loop.add_signal_handler(sig, lambda s=sig: stopped.done() or
                                    stopped.set_result(s.name))
        except (ValueError, RuntimeError):
            break
        installed.append(sig)
    try:
        try:
            handle = await start_emulator(scenario, host, port, time_scale, model)
        except OSError as e:
            # asyncio words a bind error with the address twice; a lookup error has errno < 0.
            reason = os.strerror(e.errno).lower() if e.errno and e.errno > 0 \
                else (e.strerror or str(e))
            raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from None
        for note in handle.engine.notes:
            click.echo(f"warning: {note}", err=True)
        try:
            click.echo(f"serving {handle.url}/v1 (model {handle.model!r}, time scale "
                       f"{time_scale:g} wall s per simulated s); ready")
            return await stopped
        finally:
            await handle.close()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: a free one, printed when ready).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback by default).")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Wall seconds per simulated second (2: half speed; 0.1: ten times faster).")
@click.option("--model", default=None,
              help="The model name to serve, and the only one accepted (default: any name, "
                   "served as engine.kv.model or 'servesim').")
def serve(scenario: Path, port: int, host: str, time_scale: float, model: str | None) -> None:
    """Serve SCENARIO's engine as an OpenAI-compatible API streaming at simulated times."""
    from servesim.real.emulator_engine import check_time_scale
    from servesim.scenario import load_scenario

    check_time_scale(time_scale)
    loaded = load_scenario(scenario)
    name = asyncio.run(_serve(loaded, host, port, time_scale, model))
    click.echo(f"stopped ({name})", err=True)


COMMANDS = [serve]
