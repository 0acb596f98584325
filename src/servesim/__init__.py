"""servesim: an iteration-level lab for scheduling LLM inference, checked against theory.

The public surface is listed in ``__all__``; everything else is private and may change.
"""

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
