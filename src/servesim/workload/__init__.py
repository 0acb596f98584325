"""Workloads: token-length distributions, arrival processes, trace readers and the builder.

Arrival classes are exported with an ``Arrivals`` suffix where a distribution has the same name
(``Poisson`` is the length law, ``PoissonArrivals`` the process); the modules keep the short names.
"""

from servesim.workload.arrivals import (
    ARRIVALS,
    MMPP2,
    ArrivalProcess,
    Explicit,
    GammaRenewal,
    make_arrivals,
)
from servesim.workload.arrivals import Deterministic as DeterministicArrivals
from servesim.workload.arrivals import Poisson as PoissonArrivals
from servesim.workload.build import TraceSource, Workload, WorkloadClass, build_workload
from servesim.workload.distributions import (
    TOKEN_DISTS,
    Deterministic,
    Empirical,
    Geometric,
    LogNormal,
    Poisson,
    TokenDist,
    UniformInt,
    make_token_dist,
)
from servesim.workload.requests import Requests
from servesim.workload.traces import (
    TRACE_READERS,
    TraceRows,
    read_azure,
    read_csv,
    read_lengths_csv,
    read_mooncake,
)

__all__ = [
    "ARRIVALS",
    "MMPP2",
    "TOKEN_DISTS",
    "TRACE_READERS",
    "ArrivalProcess",
    "Deterministic",
    "DeterministicArrivals",
    "Empirical",
    "Explicit",
    "GammaRenewal",
    "Geometric",
    "LogNormal",
    "Poisson",
    "PoissonArrivals",
    "Requests",
    "TokenDist",
    "TraceRows",
    "TraceSource",
    "UniformInt",
    "Workload",
    "WorkloadClass",
    "build_workload",
    "make_arrivals",
    "make_token_dist",
    "read_azure",
    "read_csv",
    "read_lengths_csv",
    "read_mooncake",
]
