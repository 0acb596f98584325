"""build_workload: the [workload] table to Requests, for every shape, and its bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.workload.arrivals import Explicit, Poisson
from servesim.workload.build import Workload, build_workload
from servesim.workload.distributions import Deterministic, Empirical, LogNormal

DATA = (Path(__file__).resolve().parents[2] / "../shared/data").resolve()

SINGLE = {
    "arrival": {"kind": "poisson", "rate_per_s": 12.5},
    "prompt_tokens": {"kind": "deterministic", "value": 129},
    "output_tokens": {"kind": "lognormal", "mean": 112, "cv": 1.0},
}

MIXTURE = {
    "arrival": {"kind": "poisson", "rate_per_s": 10.0},
    "classes": [
        {"name": "chat", "weight": 0.7, "prompt_tokens": {"kind": "deterministic", "value": 100},
         "output_tokens": {"kind": "deterministic", "value": 7}},
        {"name": "code", "weight": 0.3, "prompt_tokens": {"kind": "deterministic", "value": 900},
         "output_tokens": {"kind": "uniform", "low": 20, "high": 30}},
    ],
}

AZURE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
         "2023-11-16 18:00:00.0,10,1\n"
         "2023-11-16 18:00:01.0,20,2\n"
         "2023-11-16 18:00:03.0,30,3\n"
         "2023-11-16 18:00:04.0,40,4\n")


def azure_file(tmp_path: Path) -> Path:
    path = tmp_path / "conv.csv"
    path.write_text(AZURE)
    return path


def lengths_file(tmp_path: Path) -> Path:
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n5,50\n6,60\n7,70\n")
    return path


# -- synthetic workloads -----------------------------------------------------------------------


def test_single_class_attributes_for_theory():
    w = build_workload(SINGLE)
    assert isinstance(w, Workload)
    assert w.arrival == Poisson(12.5)
    assert w.class_names == ("default",)
    assert w.classes[0].prompt == Deterministic(129)
    assert w.classes[0].output == LogNormal(112, 1.0)
    assert w.weights.tolist() == [1.0]
    assert w.trace is None


def test_single_class_generate_by_count_and_horizon():
    w = build_workload(SINGLE)
    r = w.generate(Streams(7), n_requests=1000)
    assert len(r) == 1000 and r.class_names == ("default",)
    assert np.all(r.prompt_tokens == 129) and r.output_tokens.min() >= 1
    assert np.all(np.diff(r.arrival_s) >= 0)
    h = w.generate(Streams(7), horizon_s=100.0)
    assert h.arrival_s.max() < 100.0
    assert abs(len(h) - 1250) <= 5 * math.sqrt(1250)  # Poisson count, 5 standard deviations


def test_same_seed_same_requests_and_streams_are_independent():
    w = build_workload(SINGLE)
    a, b = w.generate(Streams(3), n_requests=500), w.generate(Streams(3), n_requests=500)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.output_tokens, b.output_tokens)
    other = build_workload({**SINGLE, "arrival": {"kind": "deterministic", "rate_per_s": 1.0}})
    c = other.generate(Streams(3), n_requests=500)
    # Changing the arrival process does not shift the length stream.
    assert np.array_equal(a.output_tokens, c.output_tokens)


def test_mixture_assigns_classes_by_weight_and_samples_each_class():
    w = build_workload(MIXTURE)
    assert w.class_names == ("chat", "code")
    assert w.weights == pytest.approx([0.7, 0.3])
    n = 20_000
    r = w.generate(Streams(11), n_requests=n)
    chat = r.class_id == 0
    # Binomial count of "chat": within 5 standard deviations of 0.7 n.
    assert abs(chat.sum() - 0.7 * n) <= 5 * math.sqrt(n * 0.7 * 0.3)
    assert np.all(r.prompt_tokens[chat] == 100) and np.all(r.output_tokens[chat] == 7)
    assert np.all(r.prompt_tokens[~chat] == 900)
    assert r.output_tokens[~chat].min() >= 20 and r.output_tokens[~chat].max() <= 30


def test_mixture_weights_are_normalised():
    spec = {**MIXTURE, "classes": [{**c, "weight": c["weight"] * 10} for c in MIXTURE["classes"]]}
    assert build_workload(spec).weights == pytest.approx([0.7, 0.3])


def test_describe_is_plain_data():
    d = build_workload(MIXTURE).describe()
    assert d["arrival"] == {"kind": "poisson", "rate_per_s": 10.0}
    assert [c["name"] for c in d["classes"]] == ["chat", "code"]
    assert d["classes"][1]["output_tokens"] == {"kind": "uniform", "low": 20, "high": 30}


@pytest.mark.parametrize("n,horizon", [(None, None), (5, 1.0)])
def test_generate_needs_exactly_one_amount(n, horizon):
    with pytest.raises(ConfigError, match="exactly one"):
        build_workload(SINGLE).generate(Streams(0), n_requests=n, horizon_s=horizon)


# -- traces ------------------------------------------------------------------------------------


def test_azure_trace_times_and_lengths_in_file_order(tmp_path):
    azure_file(tmp_path)
    w = build_workload({"trace": {"format": "azure", "path": "conv.csv"}}, base_dir=tmp_path)
    assert isinstance(w.arrival, Explicit)
    assert w.arrival.rate_per_s == pytest.approx(3 / 4)
    assert isinstance(w.classes[0].output, Empirical)
    assert w.classes[0].output.mean == 2.5
    r = w.generate(Streams(0), n_requests=4)
    assert r.arrival_s.tolist() == [0.0, 1.0, 3.0, 4.0]
    assert r.prompt_tokens.tolist() == [10, 20, 30, 40]
    assert w.generate(Streams(0), horizon_s=3.0).output_tokens.tolist() == [1, 2]


def test_trace_time_scale_and_rate(tmp_path):
    path = azure_file(tmp_path)
    w = build_workload({"trace": {"format": "azure", "path": str(path), "time_scale": 2.0}})
    assert w.generate(Streams(0), n_requests=4).arrival_s.tolist() == [0.0, 2.0, 6.0, 8.0]
    w = build_workload({"trace": {"format": "azure", "path": str(path), "rate_per_s": 3.0}})
    r = w.generate(Streams(0), n_requests=4)
    assert (len(r) - 1) / r.arrival_s[-1] == pytest.approx(3.0)
    assert w.arrival.rate_per_s == pytest.approx(3.0)
    assert w.trace.time_factor == pytest.approx(0.25)


def test_trace_too_short_and_loop(tmp_path):
    azure_file(tmp_path)
    spec = {"trace": {"format": "azure", "path": "conv.csv"}}
    with pytest.raises(ConfigError) as info:
        build_workload(spec, base_dir=tmp_path).generate(Streams(0), n_requests=5)
    assert info.value.field == "run.requests" and "has 4 rows" in str(info.value)
    looped = build_workload({"trace": {**spec["trace"], "loop": True}}, base_dir=tmp_path)
    r = looped.generate(Streams(0), n_requests=6)
    # Repeats are shifted by the span (4 s) plus the mean gap (4/3 s): the rate is unchanged.
    assert r.arrival_s == pytest.approx([0, 1, 3, 4, 16 / 3, 19 / 3])
    assert r.prompt_tokens.tolist() == [10, 20, 30, 40, 10, 20]
    h = looped.generate(Streams(0), horizon_s=20.0)
    # Loops start at 0, 16/3, 32/3 and 16; the last contributes 16, 17, 19 (20 is not < 20).
    assert h.arrival_s.max() < 20.0 and len(h) == 15


def test_lengths_csv_with_synthetic_arrivals(tmp_path):
    lengths_file(tmp_path)
    spec = {"arrival": {"kind": "poisson", "rate_per_s": 2.0},
            "trace": {"format": "lengths_csv", "path": "lengths.csv"}}
    w = build_workload(spec, base_dir=tmp_path)
    assert w.arrival == Poisson(2.0)
    r = w.generate(Streams(1), n_requests=3)
    assert r.prompt_tokens.tolist() == [5, 6, 7] and r.output_tokens.tolist() == [50, 60, 70]
    with pytest.raises(ConfigError, match="has 3 rows"):
        w.generate(Streams(1), n_requests=4)
    with pytest.raises(ConfigError) as info:
        w.generate(Streams(1), horizon_s=100.0)
    assert info.value.field == "run.horizon_s"
    looped = build_workload({**spec, "trace": {**spec["trace"], "loop": True}}, base_dir=tmp_path)
    assert looped.generate(Streams(1), n_requests=5).prompt_tokens.tolist() == [5, 6, 7, 5, 6]


def test_arrival_overrides_trace_times(tmp_path):
    azure_file(tmp_path)
    w = build_workload({"arrival": {"kind": "deterministic", "rate_per_s": 10.0},
                        "trace": {"format": "azure", "path": "conv.csv"}}, base_dir=tmp_path)
    r = w.generate(Streams(0), n_requests=4)
    assert r.arrival_s == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert r.prompt_tokens.tolist() == [10, 20, 30, 40]


def test_generic_csv_and_mooncake_traces(tmp_path):
    (tmp_path / "g.csv").write_text("t,in,out\n0,5,6\n2,7,8\n")
    w = build_workload({"trace": {"format": "csv", "path": "g.csv", "columns": {
        "prompt_tokens": "in", "output_tokens": "out", "arrival_s": "t"}}}, base_dir=tmp_path)
    assert w.generate(Streams(0), n_requests=2).arrival_s.tolist() == [0.0, 2.0]
    (tmp_path / "m.jsonl").write_text('{"timestamp": 0, "input_length": 3, "output_length": 4}\n')
    w = build_workload({"trace": {"format": "mooncake", "path": "m.jsonl"}}, base_dir=tmp_path)
    assert w.generate(Streams(0), n_requests=1).output_tokens.tolist() == [4]


def test_real_azure_trace_rescaled():
    path = DATA / "azure_llm_2023_conv.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    w = build_workload({"trace": {"format": "azure", "path": path.name, "rate_per_s": 20.0}},
                       base_dir=DATA)
    r = w.generate(Streams(0), n_requests=len(w.trace.rows))
    assert (len(r) - 1) / r.arrival_s[-1] == pytest.approx(20.0)


# -- bad inputs --------------------------------------------------------------------------------


def config_error(spec, base_dir=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_workload(spec, base_dir=base_dir)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("spec,field,fragment", [
    ({**SINGLE, "arival": {}}, "workload.arival", "did you mean 'arrival'?"),
    ({**SINGLE, "output_tokens": {"kind": "lognormall", "mean": 1, "cv": 1}},
     "workload.output_tokens.kind", "did you mean 'lognormal'?"),
    ({**SINGLE, "output_tokens": {"kind": "lognormal", "mean": 1, "cv": 0}},
     "workload.output_tokens.cv", "> 0"),
    ({**SINGLE, "arrival": {"kind": "poisson", "rate_per_s": -1}},
     "workload.arrival.rate_per_s", "> 0"),
    ({k: v for k, v in SINGLE.items() if k != "arrival"}, "workload.arrival", "arrival process"),
    ({k: v for k, v in SINGLE.items() if k != "prompt_tokens"}, "workload.prompt_tokens",
     "required"),
    ({**MIXTURE, "prompt_tokens": {"kind": "deterministic", "value": 1}},
     "workload.prompt_tokens", "classes give lengths"),
    ({**MIXTURE, "classes": []}, "workload.classes", "non-empty"),
    ({**MIXTURE, "classes": [{**MIXTURE["classes"][0], "weight": -1}]},
     "workload.classes[0].weight", "> 0"),
    ({**MIXTURE, "classes": [MIXTURE["classes"][0], MIXTURE["classes"][0]]},
     "workload.classes[1].name", "not used by another class"),
    ({**MIXTURE, "classes": [{**MIXTURE["classes"][0], "wieght": 1}]},
     "workload.classes[0].wieght", "did you mean 'weight'?"),
    ({**MIXTURE, "classes": [{**MIXTURE["classes"][0],
                              "output_tokens": {"kind": "geometric", "mean": 0}}]},
     "workload.classes[0].output_tokens.mean", ">= 1"),
    ("poisson", "workload", "a table"),
])
def test_bad_workload_specs(spec, field, fragment):
    err = config_error(spec)
    assert err.field == field
    assert fragment in str(err)


@pytest.mark.parametrize("trace,extra,field,fragment", [
    ({"format": "azur", "path": "conv.csv"}, {}, "workload.trace.format", "did you mean 'azure'?"),
    ({"format": "azure"}, {}, "workload.trace.path", "required"),
    ({"format": "azure", "path": "nope.csv"}, {}, "workload.trace.path", "an existing file"),
    ({"format": "azure", "path": "conv.csv", "time_scale": 2, "rate_per_s": 1}, {},
     "workload.trace.rate_per_s", "not both"),
    ({"format": "azure", "path": "conv.csv", "time_scale": 0}, {}, "workload.trace.time_scale",
     "> 0"),
    ({"format": "azure", "path": "conv.csv", "rate_per_s": -3}, {}, "workload.trace.rate_per_s",
     "> 0"),
    ({"format": "azure", "path": "conv.csv", "time_scale": 2},
     {"arrival": {"kind": "poisson", "rate_per_s": 1}}, "workload.trace.time_scale",
     "overrides the trace's times"),
    ({"format": "lengths_csv", "path": "lengths.csv"}, {}, "workload.arrival",
     "has no arrival times"),
    ({"format": "lengths_csv", "path": "lengths.csv", "rate_per_s": 2},
     {"arrival": {"kind": "poisson", "rate_per_s": 1}}, "workload.trace.rate_per_s",
     "nothing here"),
    ({"format": "azure", "path": "conv.csv", "columns": {}}, {}, "workload.trace.columns",
     "only csv"),
    ({"format": "csv", "path": "conv.csv"}, {}, "workload.trace.columns", "required"),
    ({"format": "azure", "path": "conv.csv", "loop": "yes"}, {}, "workload.trace.loop",
     "true or false"),
    ({"format": "azure", "path": "conv.csv", "zero_tokens": "clip"}, {},
     "workload.trace.zero_tokens", "one of drop, error"),
    ({"format": "azure", "path": "conv.csv", "lop": True}, {}, "workload.trace.lop",
     "did you mean 'loop'?"),
])
def test_bad_trace_specs(tmp_path, trace, extra, field, fragment):
    azure_file(tmp_path)
    lengths_file(tmp_path)
    err = config_error({"trace": trace, **extra}, base_dir=tmp_path)
    assert err.field == field
    assert fragment in str(err)


def test_trace_excludes_lengths(tmp_path):
    azure_file(tmp_path)
    err = config_error({"trace": {"format": "azure", "path": "conv.csv"},
                        "output_tokens": SINGLE["output_tokens"]}, base_dir=tmp_path)
    assert err.field == "workload.output_tokens" and "a trace gives lengths" in str(err)
