"""``servesim theory``: the example reproduces the survey's Table 1 (E[T] = the closed forms in
docs/mg1.md for Exp(1) sizes with exponential predictions, to the printed precision), and every
bad input is one ``error:`` line with exit code 2."""

import json
from pathlib import Path

import pytest

from servesim.cli.main import run_cli
from servesim.theory.mg1 import mean_response_time

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mg1_table.toml"
TABLE = {0.5: {"fcfs": 2.000, "sjf": 1.7127, "spjf": 1.7948, "psjf": 1.5314, "pspjf": 1.6637,
               "srpt": 1.4254},
         0.8: {"fcfs": 5.000, "sjf": 2.8822, "spjf": 3.3758, "psjf": 2.6589, "pspjf": 3.1945,
               "srpt": 2.3528}}


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(body, encoding="utf-8")
    return str(path)


def test_example_reproduces_published_table_as_json(capsys):
    assert run_cli(["theory", str(EXAMPLE), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for entry in report["loads"]:
        published = TABLE[round(entry["load"], 3)]
        got = {row["policy"]: row for row in entry["policies"]}
        for policy, value in published.items():
            assert got[policy]["mean_response_time"] == pytest.approx(value, abs=5e-5)
            assert got[policy]["method"] == "closed form"
        assert got["spjf"]["price_of_misprediction"] > 1
        assert got["sjf"]["price_of_misprediction"] is None
        # TRAIL twice: on the file's predictions (SOAP), and on a row's own oracle (closed).
        trail = [row for row in entry["policies"] if row["policy"] == "trail"]
        assert [row["method"] for row in trail] == ["SOAP numeric", "closed form"]
        assert trail[1]["predictor"] == {"kind": "oracle"}
        assert trail[1]["mean_response_time"] == pytest.approx(mean_response_time(
            "trail", {"kind": "exponential", "mean": 1.0}, None, entry["arrival_rate"], c=0.5))
        assert trail[0]["price_of_misprediction"] > 1 and trail[1]["price_of_misprediction"] \
            is None
        best = entry["best_one_bit_threshold"]
        assert best["preemptive"]["mean_response_time"] < best["non_preemptive"][
            "mean_response_time"]


def test_text_output_names_formula_and_threshold(tmp_path, capsys):
    path = _write(tmp_path, """
[mg1]
policies = ["srpt", "sprpt_bounce", "one_bit"]
sizes = { kind = "exponential", mean = 1.0 }
predictor = { kind = "exponential" }
arrival_rate = 0.5
best_one_bit_threshold = false
[mg1.params]
one_bit = { threshold = 1.0 }
""")
    assert run_cli(["theory", path]) == 0
    out = capsys.readouterr().out
    assert "1.4254" in out and "SOAP numeric" in out and "closed form" in out
    assert "best 1-bit threshold" not in out


def test_best_threshold_is_printed(tmp_path, capsys):
    path = _write(tmp_path, """
[mg1]
policy = "one_bit_preemptive"
sizes = { kind = "lognormal", mean = 1.0, cv = 2.0 }
load = 0.7
[mg1.params]
one_bit_preemptive = { threshold = 1.0 }
""")
    assert run_cli(["theory", path]) == 0
    assert "best 1-bit threshold (preemptive): T =" in capsys.readouterr().out


@pytest.mark.parametrize(("body", "needle"), [
    ('[mg1]\npolicy = "sprtp"\nsizes = { kind = "exponential" }\nload = 0.5\n',
     "did you mean 'sprpt'"),
    ('[mg1]\npolicy = "srpt"\nsizes = { kind = "exponential" }\nload = 1.2\n', "mg1.load"),
    ('[mg1]\npolicy = "srpt"\nsizes = { kind = "exponential", mean = 2 }\narrival_rate = 0.6\n',
     "impossible"),
    ('[mg1]\npolicy = "spjf"\nsizes = { kind = "exponential" }\nload = 0.5\n'
     'predictor = { kind = "gausian", mae = 1 }\n', "did you mean 'gaussian'"),
    ('[mg1]\npolicy = "srpt"\nsize = { kind = "exponential" }\nload = 0.5\n',
     "did you mean 'sizes'"),
    ('[mg1]\npolicy = "trail"\nsizes = { kind = "exponential" }\nload = 0.5\n'
     '[mg1.params]\ntrail = { c = -1 }\n', "mg1.params.trail.c"),
    ('[mg1]\npolicy = "limited_srpt"\nsizes = { kind = "exponential" }\nload = 0.5\n',
     "did you mean 'trail'"),
    ('[mg1]\npolicy = "one_bit"\nsizes = { kind = "exponential" }\nload = 0.5\n',
     "mg1.params.one_bit.threshold"),
    ("[engine]\nbatching = 'vllm'\n", "[mg1]"),
    ("[mg1\n", "valid TOML"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, body, needle):
    assert run_cli(["theory", _write(tmp_path, body)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err


def test_missing_file(tmp_path, capsys):
    assert run_cli(["theory", str(tmp_path / "nope.toml")]) == 2
    assert "an existing scenario file" in capsys.readouterr().err
