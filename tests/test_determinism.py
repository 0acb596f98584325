"""The same scenario and seed give identical records; another seed gives other ones."""

import pandas as pd

from servesim import run_to_dir, scenario_from_dict

TABLE = {
    "run": {"requests": 3000, "seed": 5},
    "workload": {"arrival": {"kind": "gamma", "rate_per_s": 12.0, "cv": 2.0},
                 "prompt_tokens": {"kind": "lognormal", "mean": 200, "cv": 1.0},
                 "output_tokens": {"kind": "geometric", "mean": 100}},
    "engine": {"batching": "vllm", "token_budget": 4096,
               "kv": {"block_tokens": 16, "blocks": 800, "preemption": "swap",
                      "host_blocks": 200}},
}


def test_same_seed_identical_requests_parquet(tmp_path):
    scenario = scenario_from_dict(TABLE)
    run_to_dir(scenario, tmp_path / "a")
    run_to_dir(scenario, tmp_path / "b")
    run_to_dir(scenario, tmp_path / "c", seed=6)
    a = pd.read_parquet(tmp_path / "a" / "requests.parquet")
    b = pd.read_parquet(tmp_path / "b" / "requests.parquet")
    c = pd.read_parquet(tmp_path / "c" / "requests.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (a.preemptions > 0).any()          # the scenario exercises preemption
    assert not a.arrival_s.equals(c.arrival_s)
    assert (tmp_path / "a" / "requests.parquet").read_bytes() == \
        (tmp_path / "b" / "requests.parquet").read_bytes()
