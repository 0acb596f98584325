"""The Ray executor on a real local Ray instance gives the local executor's results."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim.experiments.execute import run_sweep
from servesim.experiments.store import finished_ids
from servesim.experiments.sweep import load_sweep

ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'servesim[ray]')")


@pytest.fixture
def local_ray(tmp_path_factory, monkeypatch):
    # Ray's session folder holds Unix sockets, whose paths are limited to about 100 bytes, so it
    # goes directly under pytest's base temporary folder rather than a test's longer one.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    temp_dir = tmp_path_factory.getbasetemp() / "ray"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(temp_dir))
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_executor_matches_local(local_ray, make_sweep, tmp_path: Path, same_results) -> None:
    sweep = load_sweep(make_sweep(policies=("orca", "vllm"), loads=(0.5, 1.2), seeds=1))
    run = run_sweep(sweep, tmp_path / "ray_out", executor="ray")
    assert (run.ran, run.skipped) == (4, 0)
    assert finished_ids(tmp_path / "ray_out") == {p.point_id for p in sweep.points}
    run_sweep(sweep, tmp_path / "local_out", executor="local", workers=2)
    same_results(tmp_path / "ray_out", tmp_path / "local_out")
    # Resume works the same through Ray: nothing left to run.
    again = run_sweep(sweep, tmp_path / "ray_out", executor="ray")
    assert (again.ran, again.skipped) == (0, 4)
