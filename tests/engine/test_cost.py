"""Cost models: hand-computed iteration times, scalar/array agreement, the factory, profile fits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.core.errors import ConfigError, TraceError
from servesim.engine import cost
from servesim.engine.cost import (
    Affine,
    Constant,
    CostModel,
    Fitted,
    PiecewiseLinear,
    Roofline,
    Staircase,
    batch_time_s,
    fit_profile,
    fit_rows,
    make_cost_model,
)
from servesim.engine.hardware import GPU_PRESETS, MODEL_PRESETS

MS = 1e-3
LLAMA_2_7B = MODEL_PRESETS["llama-2-7b"]
A100 = GPU_PRESETS["a100-80gb"]


def every_model() -> list[CostModel]:
    return [
        Staircase(),
        PiecewiseLinear(10 * MS, 0.1 * MS, 256),
        Constant(20 * MS),
        Affine(5 * MS, 0.01 * MS, 0.02 * MS),
        Roofline(LLAMA_2_7B, A100),
        Roofline(MODEL_PRESETS["llama-2-70b"], GPU_PRESETS["h100-80gb"], num_gpus=4),
        Fitted(10 * MS, 0.1 * MS, -0.01 * MS, 1e-4 * MS),
    ]


def test_public_surface() -> None:
    assert set(cost.__all__) == {
        "COST_MODELS", "PROFILE_COLUMNS", "Affine", "Constant", "CostModel", "Fitted",
        "PiecewiseLinear", "Roofline", "Staircase", "batch_time_s", "fit_profile", "fit_rows",
        "make_cost_model",
    }
    assert set(cost.COST_MODELS) == {"staircase", "piecewise", "constant", "affine", "roofline",
                                     "fitted"}


@pytest.mark.parametrize("model", every_model(), ids=lambda m: type(m).__name__)
def test_every_model_meets_the_protocol(model: CostModel) -> None:
    assert isinstance(model, CostModel)
    json.dumps(model.describe())
    assert type(model.iteration_s(3, 2, 100)) is float  # the hot path stays plain Python
    assert model.iteration_s(0, 0, 0) > 0  # never priced, but the fixed cost anyway


# -- staircase ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("b", "ms"), [
    (1, 11.28 + 35.47),           # ceil(1/128) = 1 -> 46.75 ms
    (128, 11.28 + 35.47),         # 46.75 ms
    (129, 11.28 + 2 * 35.47),     # 82.22 ms
    (512, 11.28 + 4 * 35.47),     # 153.16 ms
])
def test_staircase_paper_defaults(b: int, ms: float) -> None:
    model = Staircase()
    assert model.iteration_s(b, 0, 0) == pytest.approx(ms * MS, rel=1e-12)
    # Only the token count matters: prefill or decode, and any context.
    assert model.iteration_s(b - 1, 1, 10_000) == model.iteration_s(b, 0, 0)
    assert model.uses_context is False


def test_staircase_capacity_matches_the_paper() -> None:
    # mu* = b_max / t(b_max) = 512 / 0.15316 s = 3342.9 tokens/s; with 129 + 112 tokens per
    # request, lambda* = 3342.9 / 241 = 13.87 req/s as in the reference summary.
    model = make_cost_model({"kind": "staircase"})
    mu = 512 / batch_time_s(model, 512)
    assert mu == pytest.approx(3342.9, abs=0.05)
    assert mu / (129 + 112) == pytest.approx(13.87, abs=0.005)


def test_staircase_factory_partial_and_describe() -> None:
    model = make_cost_model({"kind": "staircase", "b0": 256})
    assert isinstance(model, Staircase)
    assert model.iteration_s(256, 0, 0) == pytest.approx(46.75 * MS)
    assert model.iteration_s(257, 0, 0) == pytest.approx(82.22 * MS)
    assert model.describe() == {"kind": "staircase", "c_ms": pytest.approx(11.28),
                                "a_ms": pytest.approx(35.47), "b0": 256}


# -- piecewise ---------------------------------------------------------------------------------

def test_piecewise_by_hand() -> None:
    model = make_cost_model({"kind": "piecewise", "c_ms": 10, "a_ms": 0.1, "b0": 256})
    assert isinstance(model, PiecewiseLinear) and model.uses_context is False
    assert model.iteration_s(100, 0, 0) == pytest.approx(10 * MS)         # below b0: c
    assert model.iteration_s(200, 56, 999) == pytest.approx(10 * MS)      # at b0: c
    assert model.iteration_s(250, 50, 0) == pytest.approx(14.4 * MS)      # 10 + 0.1 x 44
    assert model.iteration_s(512, 0, 0) == pytest.approx(35.6 * MS)       # 10 + 0.1 x 256


# -- affine ------------------------------------------------------------------------------------

def test_affine_by_hand() -> None:
    model = make_cost_model({"kind": "affine", "d0_ms": 5, "d1_ms": 0.01, "decode_ms": 0.02})
    assert isinstance(model, Affine) and model.uses_context is True
    # 5 + 0.01 x (100 + 2000) + 0.02 x 4 = 26.08 ms
    assert model.iteration_s(100, 4, 2000) == pytest.approx(26.08 * MS)
    assert model.iteration_s(0, 0, 0) == pytest.approx(5 * MS)


def test_affine_without_d1_ignores_context() -> None:
    model = make_cost_model({"kind": "affine", "d0_ms": 5, "d1_ms": 0})
    assert model.uses_context is False
    assert model.iteration_s(10, 3, 100_000) == pytest.approx(5 * MS)


def test_affine_wait_fluid_iteration_time() -> None:
    # The WAIT fluid model's iteration time d0 / (1 - d1 S) is the fixed point of
    # tau = d0 + d1 * (tokens per unit time x tau) = d0 + d1 * S * tau.
    d0, d1, s = 5 * MS, 1e-5 * MS, 5e6
    model = Affine(d0, d1)
    tau = d0 / (1 - d1 * s)
    assert model.iteration_s(0, 0, round(s * tau)) == pytest.approx(tau, rel=1e-6)


# -- roofline ----------------------------------------------------------------------------------

def test_roofline_llama_2_7b_a100_by_hand() -> None:
    model = make_cost_model({"kind": "roofline", "model": "llama-2-7b", "gpu": "a100-80gb"})
    assert isinstance(model, Roofline) and model.uses_context is True
    # Batch-1 decode with no context is memory bound:
    # (13.48e9 + 524,288) B / (2.039e12 x 0.8 B/s) = 8.2641 ms, plus 1 ms overhead.
    memory = (13.48e9 + 524_288) / (2.039e12 * 0.8)
    assert model.iteration_s(0, 1, 0) == pytest.approx(1 * MS + memory, rel=1e-12)
    assert 8 * MS <= model.iteration_s(0, 1, 100) <= 10 * MS
    # A 512-token prefill is compute bound: 2 x 6.74e9 x 512 / (312e12 x 0.5) = 44.24 ms.
    compute = 2 * 6.74e9 * 512 / (312e12 * 0.5)
    assert model.iteration_s(512, 0, 0) == pytest.approx(1 * MS + compute, rel=1e-12)
    assert 20 * MS <= model.iteration_s(512, 0, 0) <= 80 * MS


def test_roofline_decode_attention_flops_and_kv_reads() -> None:
    model = Roofline(LLAMA_2_7B, A100, overhead_s=0.0)
    # 64 decoders at 1000 context: memory = (13.48e9 + 524,288 x 64,064) / 1.6312e12 B/s.
    memory = (13.48e9 + 524_288 * (64 + 64_000)) / (2.039e12 * 0.8)
    assert model.iteration_s(0, 64, 64_000) == pytest.approx(memory, rel=1e-12)
    # A huge prefill batch is compute bound, and decoders' context adds 4 x layers x hidden FLOPs.
    flops = 2 * 6.74e9 * 8192 + 4 * 32 * 4096 * 10_000
    assert model.iteration_s(8192, 0, 10_000) == pytest.approx(flops / 156e12, rel=1e-12)


def test_roofline_scales_with_hardware() -> None:
    a100 = Roofline(LLAMA_2_7B, A100)
    h100 = Roofline(LLAMA_2_7B, GPU_PRESETS["h100-80gb"])
    two = Roofline(LLAMA_2_7B, A100, num_gpus=2)
    for batch in [(0, 1, 100), (512, 0, 0), (2048, 32, 50_000)]:
        assert h100.iteration_s(*batch) < a100.iteration_s(*batch)
        assert two.iteration_s(*batch) < a100.iteration_s(*batch)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 512), st.integers(0, 10**6),
       st.sampled_from(["prefill", "decode", "context"]), st.integers(1, 1000))
def test_every_model_is_monotone_in_its_inputs(p: int, d: int, c: int, which: str,
                                               step: int) -> None:
    more = {"prefill": (p + step, d, c), "decode": (p, d + step, c), "context": (p, d, c + step)}
    for model in every_model()[:5]:  # Fitted may have a negative coefficient by design
        assert model.iteration_s(*more[which]) >= model.iteration_s(p, d, c)


def test_roofline_rejects_bad_efficiencies() -> None:
    for key, value in [("mfu", 0), ("mfu", 1.5), ("bandwidth_efficiency", -0.1)]:
        with pytest.raises(ConfigError) as info:
            make_cost_model({"kind": "roofline", "model": "llama-2-7b", "gpu": "a100-80gb",
                             key: value})
        assert info.value.field == f"engine.cost.{key}"
    with pytest.raises(ConfigError, match="Roofline.mfu"):
        Roofline(LLAMA_2_7B, A100, mfu=2.0)


def test_roofline_custom_specs_round_trip() -> None:
    spec = {"kind": "roofline", "gpu": "h100-80gb", "num_gpus": 2, "overhead_ms": 0.5,
            "model": {"preset": "llama-3-8b", "bytes_per_value": 1}}
    model = make_cost_model(spec)
    described = model.describe()
    assert described["gpu"] == "h100-80gb"
    assert described["model"]["bytes_per_value"] == 1
    json.dumps(described)
    assert make_cost_model(described) == model


# -- scalar and array agreement ------------------------------------------------------------------

counts = st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 1024), st.integers(0, 10**7)),
                  min_size=1, max_size=30)


@settings(max_examples=100, deadline=None)
@given(counts)
def test_scalar_and_array_agree_exactly(rows: list[tuple[int, int, int]]) -> None:
    p, d, c = (np.array(column, dtype=np.int64) for column in zip(*rows, strict=True))
    for model in every_model():
        vector = model.iteration_s(p, d, c)
        assert isinstance(vector, np.ndarray) and vector.dtype == np.float64
        scalar = [model.iteration_s(*row) for row in rows]
        assert vector.tolist() == scalar, type(model).__name__


@pytest.mark.parametrize("model", every_model(), ids=lambda m: type(m).__name__)
def test_arrays_broadcast_against_scalars(model: CostModel) -> None:
    # A decode-only stretch: a fixed decoder count, context growing each iteration.
    context = 1000 + 8 * np.arange(5, dtype=np.int64)
    times = model.iteration_s(0, 8, context)
    assert isinstance(times, np.ndarray) and times.shape == (5,) and times.dtype == np.float64
    assert times.tolist() == [model.iteration_s(0, 8, int(c)) for c in context]


# -- factory errors ------------------------------------------------------------------------------

def test_unknown_kind_suggests_closest() -> None:
    with pytest.raises(ConfigError) as info:
        make_cost_model({"kind": "stairs"})
    assert info.value.field == "engine.cost.kind"
    assert info.value.suggestion == "staircase"


def test_unknown_key_names_full_field_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        make_cost_model({"kind": "staircase", "a_sm": 35.47}, field="engines.e0.cost")
    assert info.value.field == "engines.e0.cost.a_sm"
    assert "did you mean 'a_ms'?" in str(info.value)


@pytest.mark.parametrize(("spec", "field"), [
    ({"kind": "staircase", "c_ms": -1}, "engine.cost.c_ms"),
    ({"kind": "staircase", "b0": 0}, "engine.cost.b0"),
    ({"kind": "piecewise", "c_ms": 1, "a_ms": 0.1}, "engine.cost.b0"),
    ({"kind": "affine", "d0_ms": 1}, "engine.cost.d1_ms"),
    ({"kind": "affine", "d0_ms": 1, "d1_ms": 0, "decode_ms": -0.5}, "engine.cost.decode_ms"),
    ({"kind": "roofline", "gpu": "a100-80gb"}, "engine.cost.model"),
    ({"kind": "roofline", "model": "llama-2-7", "gpu": "a100-80gb"}, "engine.cost.model"),
    ({"kind": "roofline", "model": "llama-2-7b", "gpu": "a100-80gb", "overhead_ms": -1},
     "engine.cost.overhead_ms"),
    ({"kind": "fitted"}, "engine.cost.path"),
    ({"c_ms": 1}, "engine.cost.kind"),
    ({"kind": "staircase", "c_ms": 0, "a_ms": 0}, "engine.cost"),
    ({"kind": "piecewise", "c_ms": 0, "a_ms": 0.1, "b0": 4}, "engine.cost"),
])
def test_bad_values_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_cost_model(spec)
    assert info.value.field == field


def test_not_a_table() -> None:
    with pytest.raises(ConfigError) as info:
        make_cost_model("staircase")  # type: ignore[arg-type]
    assert info.value.field == "engine.cost"


def test_model_typo_in_roofline_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        make_cost_model({"kind": "roofline", "model": "llama3-8b", "gpu": "a100-80gb"})
    assert info.value.suggestion == "llama-3-8b"


@pytest.mark.parametrize("spec", [
    {"kind": "staircase", "c_ms": 11.28, "a_ms": 35.47, "b0": 128},
    {"kind": "piecewise", "c_ms": 10.0, "a_ms": 0.1, "b0": 256},
    {"kind": "affine", "d0_ms": 5.0, "d1_ms": 0.01, "decode_ms": 0.02},
    {"kind": "roofline", "model": "codellama-34b", "gpu": "a100-80gb", "mfu": 0.6,
     "bandwidth_efficiency": 0.85, "overhead_ms": 2.0, "num_gpus": 1},
])
def test_describe_round_trips(spec: dict) -> None:
    model = make_cost_model(spec)
    described = model.describe()
    assert described == {k: pytest.approx(v) if isinstance(v, float) else v
                         for k, v in spec.items()}
    again = make_cost_model(described)
    assert again.iteration_s(300, 20, 4000) == pytest.approx(model.iteration_s(300, 20, 4000))


# -- fitted ------------------------------------------------------------------------------------

TRUE = (8 * MS, 0.05 * MS, 0.02 * MS, 2e-5 * MS)  # intercept, per prefill, decode, context


def write_profile(path: Path, rows: list[tuple], header: str = "prefill_tokens,decode_tokens,"
                  "context_tokens,seconds") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def exact_rows(n: int = 40) -> list[tuple[int, int, int, float]]:
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(n):
        p, d = int(rng.integers(0, 2048)), int(rng.integers(0, 256))
        c = int(d * rng.integers(1, 4000))
        rows.append((p, d, c, TRUE[0] + TRUE[1] * p + TRUE[2] * d + TRUE[3] * c))
    return rows


def test_fit_recovers_exact_coefficients(tmp_path: Path) -> None:
    model = fit_profile(write_profile(tmp_path / "profile.csv", exact_rows()))
    coefficients = (model.intercept_s, model.prefill_s, model.decode_s, model.context_s)
    assert coefficients == pytest.approx(TRUE, rel=1e-6)
    report = model.fit_report
    assert report["n_rows"] == 40 and report["rank"] == 4 and report["warnings"] == []
    assert report["r2"] == pytest.approx(1.0, abs=1e-12)
    assert report["rmse_s"] < 1e-12 and report["max_rel_error"] < 1e-9
    assert report["mean_rel_error"] <= report["max_rel_error"]
    assert report["coefficients"]["context_tokens"] == pytest.approx(TRUE[3], rel=1e-6)
    assert model.uses_context is True
    json.dumps(model.describe())


def test_fitted_via_factory_relative_to_base_dir(tmp_path: Path) -> None:
    write_profile(tmp_path / "profile.csv", exact_rows())
    model = make_cost_model({"kind": "fitted", "path": "profile.csv"}, base_dir=tmp_path)
    assert isinstance(model, Fitted)
    assert model.iteration_s(512, 0, 0) == pytest.approx(TRUE[0] + TRUE[1] * 512, rel=1e-6)
    assert model.describe()["path"] == str(tmp_path / "profile.csv")


def test_fit_with_noise_reports_errors() -> None:
    rows = exact_rows(200)
    rng = np.random.default_rng(1)
    noisy = [r[3] * (1 + 0.02 * rng.standard_normal()) for r in rows]
    model = fit_rows(*zip(*[r[:3] for r in rows], strict=True), noisy)
    report = model.fit_report
    assert 0.9 < report["r2"] < 1.0
    assert 0.005 < report["mean_rel_error"] < 0.03 < report["max_rel_error"]
    assert model.prefill_s == pytest.approx(TRUE[1], rel=0.05)


def test_negative_coefficient_is_kept_and_warned() -> None:
    rows = exact_rows()
    seconds = [r[3] - 0.03 * MS * r[1] for r in rows]  # decode coefficient becomes -0.01 ms
    model = fit_rows(*zip(*[r[:3] for r in rows], strict=True), seconds)
    assert model.decode_s == pytest.approx(-0.01 * MS, rel=1e-6)
    assert any("decode_tokens is negative" in w for w in model.fit_report["warnings"])


def test_collinear_profile_is_warned(tmp_path: Path) -> None:
    rows = [(p, 0, 0, 5 * MS + 0.1 * MS * p) for p in (16, 64, 128, 256, 512)]
    model = fit_profile(write_profile(tmp_path / "p.csv", rows))
    assert model.fit_report["rank"] == 2
    assert model.prefill_s == pytest.approx(0.1 * MS, rel=1e-9)
    assert model.decode_s == 0 and model.context_s == 0 and model.uses_context is False
    assert "no row has decode_tokens, context_tokens > 0" in model.fit_report["warnings"][0]


def test_fit_predicting_non_positive_time_is_rejected(tmp_path: Path) -> None:
    # The best line through these points has a negative intercept (-0.0985 s), so the row
    # on line 2 (prefill 0) would get a negative time.
    rows = [(0, 0, 0, 0.001), (1, 0, 0, 0.001), (2, 0, 0, 0.001), (10, 0, 0, 1.0)]
    with pytest.raises(ConfigError) as info:
        make_cost_model({"kind": "fitted", "path": "p.csv"},
                        base_dir=write_profile(tmp_path / "p.csv", rows).parent)
    assert info.value.field == "engine.cost.path"
    assert "line 2 gets -0.0985 s" in str(info.value)


def test_too_few_rows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 4 rows.*it has 3"):
        fit_profile(write_profile(tmp_path / "p.csv", exact_rows(3)))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_cost_model({"kind": "fitted", "path": "nope.csv"}, base_dir=tmp_path)
    assert info.value.field == "engine.cost.path"


@pytest.mark.parametrize(("bad_row", "problem"), [
    ("1,2,3", "expected 4 fields, got 3"),
    ("1,2,3,0.1,9", "expected 4 fields, got 5"),
    ("-1,0,0,0.1", "prefill_tokens: got '-1', expected an integer >= 0"),
    ("1,2.5,0,0.1", "decode_tokens: got '2.5', expected an integer >= 0"),
    ("1,2,x,0.1", "context_tokens: got 'x', expected an integer >= 0"),
    ("1,2,3,0", "seconds: got '0', expected a finite number > 0"),
    ("1,2,3,nan", "seconds: got 'nan', expected a finite number > 0"),
])
def test_malformed_row_reports_line(tmp_path: Path, bad_row: str, problem: str) -> None:
    path = tmp_path / "p.csv"
    # Line 1 header, lines 2-3 good, line 4 blank (skipped but counted), line 5 bad.
    path.write_text("prefill_tokens,decode_tokens,context_tokens,seconds\n"
                    "10,0,0,0.01\n0,4,400,0.012\n\n" + bad_row + "\n1,1,1,0.1\n")
    with pytest.raises(TraceError) as info:
        fit_profile(path)
    assert info.value.line == 5
    assert str(info.value) == f"{path}:5: {problem}"
    assert "\n" not in str(info.value)


def test_header_problems_are_line_1(tmp_path: Path) -> None:
    path = write_profile(tmp_path / "p.csv", exact_rows(5),
                         header="prefill_tokens,decode_token,context_tokens,seconds")
    with pytest.raises(TraceError, match=r"p.csv:1: unknown column 'decode_token'.*'decode_tokens"):
        fit_profile(path)
    path.write_text("")
    with pytest.raises(TraceError, match=r":1: empty file"):
        fit_profile(path)
    path.write_text("seconds,prefill_tokens,context_tokens\n0.1,1,1\n")
    with pytest.raises(TraceError, match=r":1: column 'decode_tokens' is missing"):
        fit_profile(path)


def test_columns_in_any_order(tmp_path: Path) -> None:
    rows = [(r[3], r[2], r[1], r[0]) for r in exact_rows()]
    path = write_profile(tmp_path / "p.csv", rows,
                         header="seconds,context_tokens,decode_tokens,prefill_tokens")
    assert fit_profile(path).prefill_s == pytest.approx(TRUE[1], rel=1e-6)


# -- the constant kind ---------------------------------------------------------------------------


def test_constant_cost_from_its_table_ignores_the_batch() -> None:
    model = make_cost_model({"kind": "constant", "iteration_ms": 20})
    assert isinstance(model, Constant) and not model.uses_context
    assert model.describe() == {"kind": "constant", "iteration_ms": 20.0}
    assert model.iteration_s(1, 0, 0) == model.iteration_s(300, 40, 10_000) == 0.02
    durations = model.iteration_s(np.array([0, 5]), np.array([3, 0]), np.array([7, 9]))
    assert durations.tolist() == [0.02, 0.02]
    with pytest.raises(ConfigError, match="engine.cost.iteration_ms"):
        make_cost_model({"kind": "constant"})
    with pytest.raises(ConfigError, match="did you mean 'iteration_ms'"):
        make_cost_model({"kind": "constant", "iteration_m": 20})


def test_constant_cost_capacity_is_exact() -> None:
    from servesim.theory.capacity import fastertransformer_cycle_capacity, token_capacity

    model = Constant(0.02)
    mu = token_capacity(model, 256)
    assert mu.exact and mu.value == 256 / 0.02
    # k = floor(256 / 100) = 2 requests per cycle of one prefill and 10 decode iterations.
    cycle = fastertransformer_cycle_capacity(model, 256, 100, 10)
    assert cycle.cycle_s.value == pytest.approx(11 * 0.02)
    assert cycle.request_capacity.value == pytest.approx(2 / (11 * 0.02))


def test_a_run_with_constant_cost_spaces_tokens_by_the_iteration_time() -> None:
    from servesim.api import simulate
    from servesim.scenario import scenario_from_dict

    table = {"run": {"requests": 20},
             "workload": {"arrival": {"kind": "poisson", "rate_per_s": 2.0},
                          "prompt_tokens": {"kind": "deterministic", "value": 50},
                          "output_tokens": {"kind": "deterministic", "value": 8}},
             "engine": {"batching": "sarathi", "token_budget": 256,
                        "cost": {"kind": "constant", "iteration_ms": 20}}}
    result = simulate(scenario_from_dict(table))
    assert result.summary["completed"] == 20
    assert np.allclose(result.iterations["duration_s"], 0.02)
    # Every decoder takes a token each iteration under Sarathi, so tokens are 20 ms apart.
    assert np.allclose(result.requests["tpot_s"], 0.02)
