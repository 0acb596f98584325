"""servesim: an iteration-level lab for scheduling LLM inference, checked against theory.

The public surface is listed in ``__all__``; everything else is private and may change. The
names are imported on first use (module ``__getattr__``), so ``import servesim`` and the
command line's ``--help`` and ``--version`` load no numpy, pandas or pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servesim.api import SimResult, simulate
    from servesim.core.errors import ConfigError, ServesimError, SimulationError, TraceError
    from servesim.engine.config import EngineConfig, KVConfig
    from servesim.engine.replica import EngineRun, run_engine
    from servesim.experiments.outputs import run_to_dir, write_outputs
    from servesim.metrics.summary import add_latency_columns, summarize
    from servesim.scenario import (
        RunConfig,
        Scenario,
        SLOConfig,
        apply_overrides,
        load_scenario,
        scenario_from_dict,
    )
    from servesim.workload.requests import Requests

__version__ = "0.1.0"

_HOMES = {
    "servesim.api": ("SimResult", "simulate"),
    "servesim.core.errors": ("ConfigError", "ServesimError", "SimulationError", "TraceError"),
    "servesim.engine.config": ("EngineConfig", "KVConfig"),
    "servesim.engine.replica": ("EngineRun", "run_engine"),
    "servesim.experiments.outputs": ("run_to_dir", "write_outputs"),
    "servesim.metrics.summary": ("add_latency_columns", "summarize"),
    "servesim.scenario": ("RunConfig", "Scenario", "SLOConfig", "apply_overrides",
                          "load_scenario", "scenario_from_dict"),
    "servesim.workload.requests": ("Requests",),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "ConfigError",
    "EngineConfig",
    "EngineRun",
    "KVConfig",
    "Requests",
    "RunConfig",
    "SLOConfig",
    "Scenario",
    "ServesimError",
    "SimResult",
    "SimulationError",
    "TraceError",
    "__version__",
    "add_latency_columns",
    "apply_overrides",
    "load_scenario",
    "run_engine",
    "run_to_dir",
    "scenario_from_dict",
    "simulate",
    "summarize",
    "write_outputs",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'servesim' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value   # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
