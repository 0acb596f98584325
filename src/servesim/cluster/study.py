"""Run a network scenario over seeds and gather theory, metrics and the verdict in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from servesim.analysis.stability import Verdict
from servesim.cluster.report import class_table, engine_table, network_verdict, workflow_table
from servesim.cluster.scenario import NetworkScenario, check_network_size
from servesim.cluster.sim import NetworkRun, simulate_network
from servesim.cluster.theory import NetworkTheory, network_theory
from servesim.core.errors import ConfigError
from servesim.core.fields import number
from servesim.core.progress import Fraction, Progress, part, run_fraction

__all__ = ["NetworkStudy", "run_network", "study_network"]


@dataclass
class NetworkStudy:
    """Theory next to measurement for one network scenario over several seeds."""

    scenario: NetworkScenario
    theory: NetworkTheory
    runs: list[NetworkRun]
    engines: pd.DataFrame
    classes: pd.DataFrame
    workflows: pd.DataFrame
    verdict: Verdict

    @property
    def stop_reasons(self) -> list[str]:
        return [r.stop_reason for r in self.runs]


def run_network(scenario: NetworkScenario, seed: int | None = None,
                horizon_s: float | None = None, progress: Fraction | None = None) -> NetworkRun:
    """One run of the scenario; ``seed`` and ``horizon_s`` override ``[run]``; ``progress``
    gets the simulated fraction of the horizon now and then."""
    run = scenario.run
    horizon = run.horizon_s if horizon_s is None else number(horizon_s, "--horizon-s", low=0,
                                                             low_open=True)
    if horizon_s is not None:
        check_network_size(scenario.network, horizon, run.max_in_system, "--horizon-s")
    warmup = min(run.warmup_s, horizon / 2)
    return simulate_network(scenario.network, run.seed if seed is None else seed,
                            horizon_s=horizon, warmup_s=warmup,
                            max_in_system=run.max_in_system, progress=progress)


def study_network(scenario: NetworkScenario, seeds: Sequence[int],
                  horizon_s: float | None = None,
                  progress: Progress | None = None) -> NetworkStudy:
    """Run every seed, then tabulate per engine, class and workflow and judge stability.

    A warm-up longer than half a shortened horizon is cut to half of it. ``progress`` counts
    runs, one per seed ("seed 2/5"). Raises ConfigError for no seeds or a bad horizon.
    """
    if not seeds:
        raise ConfigError("seeds", list(seeds), "at least one seed")
    theory = network_theory(scenario.network)
    n = len(seeds)
    runs = []
    for i, s in enumerate(seeds):
        what = f"seed {i + 1}/{n} (seed {s})"
        if progress is not None:
            progress(what, i, n)
        runs.append(run_network(scenario, s, horizon_s, run_fraction(part(progress, i, 1, n),
                                                                     what)))
    if progress is not None:
        progress(f"seed {n}/{n}", n, n)
    return NetworkStudy(scenario, theory, runs, engine_table(runs, theory),
                        class_table(runs, theory), workflow_table(runs), network_verdict(runs))
