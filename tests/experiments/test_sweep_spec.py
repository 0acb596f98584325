"""Sweep files: expansion into points, stable point ids, and one-line errors for bad files."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError
from servesim.experiments.sweep import load_sweep, sweep_from_dict

BASE_TABLE = {
    "run": {"seed": 0, "horizon_s": 10.0},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 5.0},
                 "prompt_tokens": {"kind": "deterministic", "value": 64},
                 "output_tokens": {"kind": "deterministic", "value": 16}},
    "engine": {"batching": "sarathi", "token_budget": 256},
}


def test_grid_times_seeds_and_load(make_sweep) -> None:
    sweep = load_sweep(make_sweep(policies=("orca", "vllm", "sarathi"), loads=(0.5, 0.9),
                                  seeds=2))
    assert len(sweep.points) == 3 * 2 * 2
    assert sweep.axes == ("engine.batching", "load")
    assert len({p.point_id for p in sweep.points}) == len(sweep.points)
    for point in sweep.points:
        rate = point.table["workload"]["arrival"]["rate_per_s"]
        # load = lambda / lambda*, lambda* = mu* / (m_p + m_d) = (512 / 0.15316 s) / 241.
        assert math.isclose(rate / point.lambda_star, point.params["load"], rel_tol=1e-12)
        assert math.isclose(point.lambda_star, 512 / 0.15316 / 241, rel_tol=1e-9)
        assert point.table["run"]["seed"] == point.seed
    # The same file gives the same ids, so a second run can resume.
    again = load_sweep(make_sweep(policies=("orca", "vllm", "sarathi"), loads=(0.5, 0.9),
                                  seeds=2))
    assert [p.point_id for p in again.points] == [p.point_id for p in sweep.points]


def test_zip_axes_advance_together(make_sweep) -> None:
    extra = ('\n[[zip]]\n"engine.token_budget" = [256, 512]\n'
             '"engine.chunk_tokens" = [128, 512]\n')
    sweep = load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=1, extra=extra))
    pairs = [(p.table["engine"]["token_budget"], p.table["engine"]["chunk_tokens"])
             for p in sweep.points]
    assert pairs == [(256, 128), (512, 512)]


@settings(max_examples=15, deadline=None)
@given(budgets=st.lists(st.sampled_from([128, 256, 512]), min_size=1, max_size=3, unique=True),
       policies=st.lists(st.sampled_from(["orca", "vllm", "sarathi"]), min_size=1, max_size=3,
                         unique=True),
       seeds=st.integers(min_value=1, max_value=3))
def test_point_count_is_the_product(tmp_path_factory, budgets, policies, seeds) -> None:
    """Invariant: |points| = prod(|axis|) * |seeds|, every id distinct, every combination once."""
    base = tmp_path_factory.mktemp("base")
    path = base / "base.toml"
    path.write_text('[run]\nhorizon_s = 10.0\n[workload]\narrival = { kind = "poisson", '
                    'rate_per_s = 5.0 }\nprompt_tokens = { kind = "deterministic", value = 64 }'
                    '\noutput_tokens = { kind = "deterministic", value = 16 }\n',
                    encoding="utf-8")
    raw = {"sweep": {"scenario": str(path), "seeds": seeds},
           "grid": {"engine": {"token_budget": budgets, "batching": policies}}}
    sweep = sweep_from_dict(raw)
    assert len(sweep.points) == len(budgets) * len(policies) * seeds
    assert len({p.point_id for p in sweep.points}) == len(sweep.points)
    combos = {(p.params["engine.token_budget"], p.params["engine.batching"], p.seed)
              for p in sweep.points}
    assert len(combos) == len(sweep.points)


@pytest.mark.parametrize(("extra_grid", "field", "hint"), [
    ('"engine.batchng" = ["orca"]', "engine.batchng", "did you mean 'batching'"),
    ('"engine.batching" = ["sarathy"]', "engine.batching", "did you mean 'sarathi'"),
    ('"engin.token_budget" = [256]', "engin", "did you mean 'engine'"),
    ('"engine.token_budget" = 256', "grid.engine.token_budget", "a non-empty list"),
    ('"run.horizon_s" = [-1.0]', "run.horizon_s", "> 0"),
])
def test_bad_sweep_file_is_one_line_exit_2(make_sweep, tmp_path: Path, capsys, extra_grid: str,
                                           field: str, hint: str) -> None:
    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=1)
    path.write_text(path.read_text().replace('"engine.batching" = ["orca"]', extra_grid))
    code = run_cli(["sweep", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith(f"error: {field}")
    assert hint in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("raw_sweep", "field"), [
    ({"scenario": "base.toml", "seeds": 0}, "sweep.seeds"),
    ({"scenario": "base.toml", "sedes": 2}, "sweep.sedes"),
    ({"scenario": "missing.toml"}, "sweep.scenario"),
    ({}, "sweep.scenario"),
])
def test_bad_sweep_header(make_sweep, raw_sweep, field: str) -> None:
    base_dir = make_sweep().parent
    with pytest.raises(ConfigError) as info:
        sweep_from_dict({"sweep": raw_sweep, "grid": {"load": [0.5]}}, base_dir=base_dir)
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_zip_lengths_must_match(make_sweep) -> None:
    base_dir = make_sweep().parent
    raw = {"sweep": {"scenario": "base.toml"},
           "zip": [{"engine": {"token_budget": [256, 512], "chunk_tokens": [128]}}]}
    with pytest.raises(ConfigError, match=r"zip\[0\]\.engine\.chunk_tokens: got 1, expected 2"):
        sweep_from_dict(raw, base_dir=base_dir)


def test_bad_file_leaves_finished_points(make_sweep, tmp_path: Path) -> None:
    """A bad sweep file run against a folder with finished points changes nothing there."""
    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=1)
    out = tmp_path / "out"
    assert run_cli(["sweep", str(path), "--out", str(out), "--executor", "serial"]) == 0
    before = sorted(p.name for p in out.rglob("*"))
    path.write_text(path.read_text().replace('"orca"', '"orcaa"'))
    proc = subprocess.run([sys.executable, "-m", "servesim", "sweep", str(path), "--out",
                           str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: engine.batching: got 'orcaa'")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.rglob("*")) == before


def test_example_sweep_loads() -> None:
    """examples/sweep_policies.toml: 4 policies x 4 loads x 3 seeds on the Fig. 1 scenario."""
    path = Path(__file__).resolve().parents[2] / "examples" / "sweep_policies.toml"
    sweep = load_sweep(path)
    assert len(sweep.points) == 48
    assert {p.params["engine.batching"] for p in sweep.points} == {
        "fastertransformer", "vllm", "orca", "sarathi"}
    assert all(p.table["run"]["horizon_s"] == 60.0 for p in sweep.points)


def test_cli_executor_choices_match_the_registry() -> None:
    """The CLI spells the executor names out (for a fast --help); they must be the registry's."""
    from servesim.cli.experiments import _EXECUTORS
    from servesim.experiments.execute import EXECUTORS

    assert sorted(_EXECUTORS) == sorted(EXECUTORS)
