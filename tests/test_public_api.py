"""The public surface is what __all__ says, and each name resolves."""

import servesim


def test_exports():
    assert sorted(servesim.__all__) == sorted({
        "ConfigError", "EngineConfig", "EngineRun", "KVConfig", "Requests", "RunConfig",
        "SLOConfig", "Scenario", "ServesimError", "SimResult", "SimulationError", "TraceError",
        "__version__", "add_latency_columns", "apply_overrides", "load_scenario", "run_engine",
        "run_to_dir", "scenario_from_dict", "simulate", "summarize", "write_outputs"})
    for name in servesim.__all__:
        assert getattr(servesim, name) is not None


def test_errors_are_value_errors():
    assert issubclass(servesim.ConfigError, ValueError)
    assert issubclass(servesim.ConfigError, servesim.ServesimError)
    assert issubclass(servesim.TraceError, ValueError)
