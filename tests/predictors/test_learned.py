"""The learned output-length predictor: training, each head, determinism, the model folder's
round trip and version check, bad input in one line, the CLI, and a scheduled simulation that
reads it. Data are made here; the case on the real AlpacaEval files skips without them."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from servesim.api import simulate
from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError, TraceError
from servesim.engine.mg1 import simulate_mg1
from servesim.policies.ordering import make_ordering
from servesim.predictors import make_predictor
from servesim.predictors.learned.data import load_dataset, read_prompts
from servesim.predictors.learned.evaluate import METRIC_KEYS, cross_validate, fold_of
from servesim.predictors.learned.model import load_model, train_model
from servesim.scenario import load_scenario

pytest.importorskip("sklearn")

HEADS = ("bins", "regression", "rank")
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
# Long answers for essays and lists, short ones for yes/no questions: a signal in the words.
LONG = ["Write a detailed essay about {}.", "Explain step by step how {} works, with examples.",
        "List twenty facts about {} and describe each one."]
SHORT = ["Is {} a noun? Answer yes or no.", "Give one word for {}.", "Say hi to {}."]
TOPICS = ["rivers", "bread", "jazz", "volcanoes", "chess", "tea", "bridges", "owls", "glass",
          "maps", "rain", "clocks"]


def make_data(folder: Path, models=("alpha-7b", "beta-13b")) -> Path:
    """Prompts JSONL and lengths CSV (AlpacaEval's shapes) in ``folder``; the prompts path."""
    rng = np.random.default_rng(7)
    rows, lengths = [], ["prompt_id,generator,output_tokens,output_chars"]
    for i, (template, topic) in enumerate((t, x) for x in TOPICS for t in LONG + SHORT):
        text = template.format(topic)
        rows.append(json.dumps({"prompt_id": i, "instruction": text}))
        base = 400.0 if template in LONG else 12.0
        for m, model in enumerate(models):
            n = max(1, int(base * (1 + m) * rng.lognormal(0.0, 0.3)))
            lengths.append(f"{i},{model},{n},{4 * n}")
    (folder / "alpacaeval_prompts.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "alpacaeval_output_lengths.csv").write_text("\n".join(lengths) + "\n",
                                                          encoding="utf-8")
    return folder / "alpacaeval_prompts.jsonl"


@pytest.fixture
def data(tmp_path) -> Path:
    return make_data(tmp_path)


def trained(prompts: Path, head: str = "bins", seed: int = 0):
    d = load_dataset(prompts, "alpha-7b")
    return d, train_model(d.texts, d.prompt_tokens, d.output_tokens, target_model="alpha-7b",
                          head=head, seed=seed)


@pytest.mark.parametrize("head", HEADS)
def test_each_head_learns_the_signal_and_round_trips(data, tmp_path, head):
    d, model = trained(data, head)
    pred = model.predict(d.texts, d.prompt_tokens)
    assert pred.shape == (len(d),) and np.all(np.isfinite(pred)) and np.all(pred > 0)
    long = np.array([t.startswith(("Write", "Explain", "List")) for t in d.texts])
    assert pred[long].min() > pred[~long].max()   # the words tell long from short
    again = load_model(model.save(tmp_path / f"m_{head}"))
    assert np.array_equal(again.predict(d.texts, d.prompt_tokens), pred)
    assert again.target_model == "alpha-7b" and again.head.name == head
    assert load_model(tmp_path / f"m_{head}" / "model.json").head.name == head


@pytest.mark.parametrize("head", HEADS)
def test_training_is_deterministic_for_a_seed(data, head):
    d, a = trained(data, head, seed=3)
    _, b = trained(data, head, seed=3)
    assert np.array_equal(a.predict(d.texts, d.prompt_tokens), b.predict(d.texts, d.prompt_tokens))


def test_cross_validation_splits_by_prompt_and_beats_the_baseline(data):
    d = load_dataset(data, "alpha-7b")
    folds = fold_of(np.repeat(d.prompt_ids, 2), 4, seed=1)
    assert np.all(folds[::2] == folds[1::2])           # a prompt's rows share one fold
    assert np.array_equal(fold_of(d.prompt_ids, 4, 1), fold_of(d.prompt_ids, 4, 1))
    cv = cross_validate(d, 4, head="regression")
    report = cv.report()
    assert set(METRIC_KEYS) <= set(report) and set(METRIC_KEYS) == set(report["baseline"])
    assert report["spearman"] > 0.6 and report["spearman"] > report["baseline"]["spearman"]
    assert cv.sizes.shape == cv.predictions.shape == (len(d),)   # the joint (size, prediction)
    with pytest.raises(ConfigError, match="--cv: got 1"):
        fold_of(d.prompt_ids, 1)


def test_another_format_version_is_refused_in_one_line(data, tmp_path):
    _, model = trained(data, "regression")
    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    meta["format_version"] = 99
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="model format version 99.*reads version 1") as err:
        load_model(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not a learned predictor model"):
        load_model(tmp_path)


def test_bad_prompt_files_and_names_are_one_line_errors(data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": 0, "instruction": "hi"}\n{"prompt_id": 1}\n')
    with pytest.raises(TraceError, match=r"bad.jsonl:2: missing field 'instruction'"):
        read_prompts(bad)
    bad.write_text('{"prompt_id": 0, "instruction": "hi"}\nnot json\n')
    with pytest.raises(TraceError, match=r"bad.jsonl:2:1: not JSON"):
        read_prompts(bad)
    with pytest.raises(ConfigError, match="--target-model: got 'alpha-7'.*did you mean 'alpha-7b'"):
        load_dataset(data, "alpha-7")
    with pytest.raises(ConfigError, match="got 'betta-13b'.*did you mean 'beta-13b'"):
        load_dataset(data, "betta-13b")
    d = load_dataset(data, "alpha-7b")
    for key, value, message in [("head", "rnak", "did you mean 'rank'"),
                                ("embedder", "tfdf", "did you mean 'tfidf'")]:
        with pytest.raises(ConfigError, match=message):
            train_model(d.texts, d.prompt_tokens, d.output_tokens, target_model="a",
                        **{key: value})


def test_a_neural_embedder_without_its_package_names_the_extra(data):
    pytest.importorskip("sklearn")
    try:
        import model2vec  # noqa: F401
        pytest.skip("model2vec is installed")
    except ImportError:
        pass
    d = load_dataset(data, "alpha-7b")
    with pytest.raises(ConfigError, match=r"needs the package 'model2vec'.*servesim\[predict\]"):
        train_model(d.texts, d.prompt_tokens, d.output_tokens, target_model="a",
                    embedder="model2vec", embedder_options={"path": str(data.parent)})


class _FakeStatic:
    """A stand-in for model2vec's StaticModel: a fixed vector per text, from its words."""

    loaded: list[str] = []

    @classmethod
    def from_pretrained(cls, path):
        cls.loaded.append(path)
        return cls()

    def encode(self, texts):
        keys = ("write", "explain", "list", "yes", "word", "hi")
        return np.array([[t.lower().count(k) for k in keys] for t in texts], dtype=np.float32)


def test_the_neural_adapter_trains_saves_and_loads(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "model2vec", types.SimpleNamespace(StaticModel=_FakeStatic))
    d = load_dataset(data, "alpha-7b")
    model = train_model(d.texts, d.prompt_tokens, d.output_tokens, target_model="alpha-7b",
                        embedder="model2vec", head="regression",
                        embedder_options={"path": str(tmp_path)})
    pred = model.predict(d.texts, d.prompt_tokens)
    again = load_model(model.save(tmp_path / "m2v"))
    assert again.embedder.name == "model2vec" and again.embedder.path == str(tmp_path.resolve())
    assert np.array_equal(again.predict(d.texts, d.prompt_tokens), pred)
    assert _FakeStatic.loaded[-1] == str(tmp_path.resolve())


def test_one_file_with_prompts_and_lengths(data, tmp_path):
    prompts = read_prompts(data)
    two_files = load_dataset(data, "beta-13b")
    rows = []
    for pid, text in zip(prompts.ids.tolist(), prompts.texts, strict=True):
        for gen in ("alpha-7b", "beta-13b"):
            n = int(two_files.output_tokens[pid]) if gen == "beta-13b" else 5
            rows.append(json.dumps({"prompt_id": pid, "instruction": text, "generator": gen,
                                    "output_tokens": n}))
    joined = tmp_path / "sub" / "joined.jsonl"
    joined.parent.mkdir()
    joined.write_text("\n".join(rows) + "\n")
    one_file = load_dataset(joined, "beta-13b")
    assert np.array_equal(one_file.output_tokens, two_files.output_tokens)
    assert one_file.texts == two_files.texts and len(read_prompts(joined)) == len(prompts)
    joined.write_text(rows[0] + "\n" + rows[0].replace('"beta', '"x').replace(
        '"instruction": "', '"instruction": "Other ') + "\n")
    with pytest.raises(TraceError, match="joined.jsonl:2: prompt_id 0 appears twice"):
        read_prompts(joined)


def test_cli_train_and_eval_json(data, tmp_path, capsys):
    out = tmp_path / "model"
    assert run_cli(["predictor", "train", str(data), "--target-model", "beta-13b", "--out",
                    str(out), "--head", "regression"]) == 0
    capsys.readouterr()
    assert run_cli(["predictor", "eval", str(out), str(data), "--json",
                    "--save", str(tmp_path / "r.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(METRIC_KEYS) <= set(report) and set(METRIC_KEYS) <= set(report["baseline"])
    assert report["n_prompts"] == len(TOPICS) * 6 and report["target_model"] == "beta-13b"
    assert json.loads((tmp_path / "r.json").read_text()) == report
    joint = tmp_path / "joint.csv"
    assert run_cli(["predictor", "eval", str(out), str(data), "--cv", "3", "--json",
                    "--joint", str(joint)]) == 0
    cv = json.loads(capsys.readouterr().out)
    assert cv["folds"] == 3 and cv["spearman"] > cv["baseline"]["spearman"]
    lines = joint.read_text().splitlines()
    assert lines[0] == "prompt_id,output_tokens,predicted_tokens,baseline_tokens,fold"
    assert len(lines) == 1 + report["n_prompts"]
    assert run_cli(["predictor", "eval", str(out), str(data)]) == 0
    assert "Kendall tau" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train", "{data}", "--target-model", "alpha-7", "--out", "{tmp}/m"],
     "did you mean 'alpha-7b'"),
    (["train", "{tmp}/bad.jsonl", "--target-model", "alpha-7b", "--out", "{tmp}/m",
      "--lengths", "{tmp}/alpacaeval_output_lengths.csv"], "bad.jsonl:1: missing field"),
    (["eval", "{tmp}", "{data}"], "not a learned predictor model"),
])
def test_cli_bad_input_is_one_line_exit_2(data, tmp_path, capsys, args, message):
    (tmp_path / "bad.jsonl").write_text('{"instruction": "hi"}\n')
    argv = [a.format(data=data, tmp=tmp_path) for a in args]
    assert run_cli(["predictor", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_simulator_draws_are_deterministic_and_index_the_prompts(data, tmp_path):
    d, model = trained(data, "bins")
    model.save(tmp_path / "m")
    spec = {"kind": "learned", "model": str(tmp_path / "m"), "prompts": str(data)}
    expected = model.predict(d.texts, d.prompt_tokens)
    n = len(d) + 5   # more requests than prompts: the prompts cycle
    draws = [make_predictor(spec, seed=s).predict(np.ones(n)) for s in (0, 0, 9)]
    assert np.array_equal(draws[0], draws[1]) and np.array_equal(draws[0], draws[2])
    assert np.array_equal(draws[0][:len(d)], expected)
    assert np.array_equal(draws[0][len(d):], expected[:5])
    shifted = make_predictor({**spec, "offset": 2}).predict(np.ones(3))
    assert np.array_equal(shifted, expected[2:5])
    with pytest.raises(ConfigError, match="policy.predictor.modle.*did you mean 'model'"):
        make_predictor({**spec, "modle": "x"})


SCENARIO = """
[run]
seed = 3
requests = {n}

[workload]
arrival = {{ kind = "poisson", rate_per_s = 40.0 }}
trace = {{ format = "lengths_csv", path = "{trace}" }}

[engine]
batching = "sarathi"
token_budget = 512
max_batch_size = 8
kv = {{ block_tokens = 16, blocks = 400 }}
cost = {{ kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }}

[schedule]
order = "spjf"
predictor = {{ kind = "learned", model = "{model}", prompts = "{prompts}" }}
"""


def test_spjf_run_with_the_learned_predictor(data, tmp_path):
    d, model = trained(data, "rank")
    model.save(tmp_path / "m")
    trace = tmp_path / "trace.csv"   # the prompts' own lengths, in prompts-file order
    trace.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(
        f"{p},{o}\n" for p, o in zip(d.prompt_tokens, d.output_tokens, strict=True)))
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(n=len(d), trace=trace, model=tmp_path / "m", prompts=data))
    runs = [simulate(load_scenario(path)) for _ in range(2)]
    recs = [r.requests.sort_values("id").reset_index(drop=True) for r in runs]
    assert len(recs[0]) == len(d) and (recs[0]["status"] == recs[0]["status"].iloc[0]).all()
    assert recs[0].equals(recs[1])
    pred = model.predict(d.texts, d.prompt_tokens)
    np.testing.assert_allclose(recs[0]["predicted_tokens"].to_numpy(), pred, atol=1e-4)


def test_learned_paths_are_read_from_the_scenario_folder(data, tmp_path, monkeypatch):
    """Relative ``model`` and ``prompts`` paths resolve against the scenario's folder, as a
    trace's path does, whatever the working directory."""
    d, model = trained(data, "regression")
    model.save(tmp_path / "m")
    trace = tmp_path / "trace.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(
        f"{p},{o}\n" for p, o in zip(d.prompt_tokens, d.output_tokens, strict=True)))
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(n=len(d), trace="trace.csv", model="m",
                                    prompts=data.relative_to(tmp_path)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recs = simulate(load_scenario(path)).requests.sort_values("id")
    pred = model.predict(d.texts, d.prompt_tokens)
    np.testing.assert_allclose(recs["predicted_tokens"].to_numpy(), pred, atol=1e-4)


def test_mg1_mode_reads_the_learned_predictor(data, tmp_path):
    d, model = trained(data, "regression")
    model.save(tmp_path / "m")
    predictor = make_predictor({"kind": "learned", "model": str(tmp_path / "m"),
                                "prompts": str(data)})
    sizes = d.output_tokens.astype(float) / 100.0   # job i is prompt i, in seconds

    def draw(rng, n):
        return sizes[:n]

    runs = [simulate_mg1(make_ordering("spjf"), 0.3, len(d), draw, predictor=predictor, seed=s)
            for s in (1, 1)]
    assert np.array_equal(runs[0].response_s, runs[1].response_s)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "alpacaeval_prompts.jsonl").is_file(),
                    reason="the shared AlpacaEval files are not here")
def test_real_alpacaeval_prompts_beat_prompt_length():
    d = load_dataset(SHARED / "alpacaeval_prompts.jsonl", "gpt4_1106_preview")
    report = cross_validate(d, 5, head="regression").report()
    assert report["n_prompts"] == 805
    assert report["spearman"] > 0.3 > report["baseline"]["spearman"]
