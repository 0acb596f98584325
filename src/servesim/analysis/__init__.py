"""Analysis of simulation runs: stability tests (see ``servesim.analysis.stability``)."""

from servesim.analysis.search import (
    LambdaSearch,
    Probe,
    empirical_lambda_star,
    policy_lambda_stars,
    probe_rate,
)
from servesim.analysis.stability import (
    COMPLETION_EPS,
    DOUBLING_TOL,
    ENVELOPE_REL_TOL,
    DoublingResult,
    EnvelopeResult,
    SlopeCI,
    Verdict,
    backlog_slope,
    completion_ratio,
    envelope_growth,
    fluid_slope,
    horizon_doubling,
    slope_ci,
    verdict,
    window_counts,
)
from servesim.analysis.study import Measurements, measure, study, timed_table

__all__ = [
    "Measurements",
    "measure",
    "timed_table",
    "window_counts",
    "LambdaSearch",
    "Probe",
    "empirical_lambda_star",
    "policy_lambda_stars",
    "probe_rate",
    "COMPLETION_EPS",
    "DOUBLING_TOL",
    "ENVELOPE_REL_TOL",
    "DoublingResult",
    "EnvelopeResult",
    "SlopeCI",
    "Verdict",
    "backlog_slope",
    "completion_ratio",
    "envelope_growth",
    "fluid_slope",
    "horizon_doubling",
    "slope_ci",
    "study",
    "verdict",
]
