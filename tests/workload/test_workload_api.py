"""The public surface of servesim.workload is exactly what __all__ says."""

import servesim.workload as workload

EXPECTED = {
    "ARRIVALS", "MMPP2", "TOKEN_DISTS", "TRACE_READERS", "ArrivalProcess", "Deterministic",
    "DeterministicArrivals", "Empirical", "Explicit", "GammaRenewal", "Geometric", "LogNormal",
    "Poisson", "PoissonArrivals", "Requests", "TokenDist", "TraceRows", "TraceSource",
    "UniformInt", "Workload", "WorkloadClass", "build_workload", "make_arrivals",
    "make_token_dist", "read_azure", "read_csv", "read_lengths_csv", "read_mooncake",
}


def test_exports():
    assert set(workload.__all__) == EXPECTED
    for name in workload.__all__:
        assert getattr(workload, name) is not None


def test_registries_are_plain_dicts():
    assert sorted(workload.TOKEN_DISTS) == ["deterministic", "empirical", "geometric",
                                            "lognormal", "poisson", "uniform"]
    assert sorted(workload.ARRIVALS) == ["deterministic", "gamma", "list", "mmpp2", "poisson"]
    assert sorted(workload.TRACE_READERS) == ["azure", "csv", "lengths_csv", "mooncake"]


def test_distributions_and_arrivals_satisfy_their_protocols():
    assert isinstance(workload.LogNormal(100, 1.0), workload.TokenDist)
    assert isinstance(workload.MMPP2(1, 2, 3, 4), workload.ArrivalProcess)
    assert isinstance(workload.PoissonArrivals(1.0), workload.ArrivalProcess)
