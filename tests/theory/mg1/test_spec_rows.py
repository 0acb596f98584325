"""``[mg1]`` policy rows that name their own predictor and params, and one-line errors that say
where (``file:line``), which field, the value and the closest name. The values compared are the
library's own closed forms (docs/mg1.md): a row must give what the library gives for its policy,
params and predictor."""

import tomllib
from pathlib import Path

import pytest

from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError
from servesim.theory.mg1 import mean_response_time
from servesim.theory.mg1.report import mg1_report
from servesim.theory.mg1.spec import load_mg1, parse_mg1
from servesim.theory.mg1.toml_lines import field_line

EXP = {"kind": "exponential", "mean": 1.0}
ROWS = """\
[mg1]
sizes = { kind = "exponential", mean = 1.0 }
predictor = { kind = "lognormal", sigma = 1.0 }
load = 0.5
best_one_bit_threshold = false
policies = [
    { kind = "spjf", predictor = { kind = "exponential" } },
    "spjf",
    { kind = "trail", c = 0.3, predictor = { kind = "oracle" } },
    "trail",
]
[mg1.params]
trail = { c = 0.6 }
"""


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rows.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_rows_name_their_own_predictor_and_params(tmp_path):
    spec = load_mg1(_write(tmp_path, ROWS.replace('\n    "trail",', "")))
    assert [r.predictor for r in spec.rows] == [
        {"kind": "exponential"}, {"kind": "lognormal", "sigma": 1.0}, {"kind": "oracle"}]
    assert [r.label for r in spec.rows] == ["spjf", "spjf", "trail(c=0.3)"]
    seen = []
    report = mg1_report(spec, progress=lambda what, done, total: seen.append((what, done,
                                                                              total)))
    got = [row["mean_response_time"] for row in report["loads"][0]["policies"]]
    assert got[0] == pytest.approx(mean_response_time("spjf", EXP, {"kind": "exponential"},
                                                      0.5))
    assert got[1] == pytest.approx(mean_response_time("spjf", EXP, spec.predictor, 0.5))
    assert got[2] == pytest.approx(mean_response_time("trail", EXP, None, 0.5, c=0.3))
    assert got[0] != pytest.approx(got[1], rel=1e-3)
    prices = [row["price_of_misprediction"] for row in report["loads"][0]["policies"]]
    assert prices[0] > 1 and prices[1] > 1 and prices[2] is None
    # The progress callback names each step before it runs, then says it is done.
    assert seen == [("rho = 0.5: spjf", 0, 3), ("rho = 0.5: spjf", 1, 3),
                    ("rho = 0.5: trail(c=0.3)", 2, 3), ("done", 3, 3)]


def test_a_string_row_takes_the_params_table():
    spec = parse_mg1(tomllib.loads(ROWS))
    assert spec.rows[3].params == {"c": 0.6} and spec.rows[2].params == {"c": 0.3}


@pytest.mark.parametrize(("old", "new", "needle"), [
    ('"trail",\n]', '{ kind = "sprtp" },\n]', ":10: mg1.policies[3].kind: got 'sprtp'"),
    ('"trail",\n]', '{ name = "trail" },\n]', ":10: mg1.policies[3].name: got 'trail'"),
    ('c = 0.3,', 'cc = 0.3,', ":9: mg1.policies[2].cc: got 'cc'"),
    ('c = 0.3,', 'c = -1,', ":9: mg1.policies[2].c: got -1"),
    ('{ kind = "exponential" } }', '{ kind = "exponental" } }',
     ":7: mg1.policies[0].predictor.kind: got 'exponental'"),
    ('{ kind = "exponential" } }', '{ kind = "one_bit", threshold = 1 } }',
     ":7: mg1.policies[0].predictor.kind: got 'one_bit'"),
    ('trail = { c = 0.6 }', 'trail = { c = -0.6 }', ":13: mg1.params.trail.c: got -0.6"),
    ('\n    "spjf",', '\n    "limited_srpt",', ":8: mg1.policies[1]: got 'limited_srpt'"),
])
def test_a_bad_row_is_one_line_with_its_place(tmp_path, capsys, old, new, needle):
    assert old in ROWS
    path = _write(tmp_path, ROWS.replace(old, new))
    assert run_cli(["theory", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}:") and "\n" not in err and needle in err, err


def test_suggestions_survive_the_location(tmp_path):
    path = _write(tmp_path, ROWS.replace('"trail",\n]', '{ kind = "sprtp" },\n]'))
    with pytest.raises(ConfigError, match="did you mean 'sprpt'") as err:
        load_mg1(path)
    assert err.value.field == "mg1.policies[3].kind" and err.value.suggestion == "sprpt"


def test_field_line_finds_headers_keys_and_array_elements():
    text = ('# ["not", "this"]\n[mg1]\npolicies = ["a, [b]", # comment, ]\n'
            '  { kind = "x", v = [1, 2] },\n  \'c\']\nload = 0.5\n[mg1.params]\n'
            'trail = { c = 1 }\n')
    assert field_line(text, "mg1.policies[0]") == 3
    assert field_line(text, "mg1.policies[1].kind") == 4
    assert field_line(text, "mg1.policies[2]") == 5
    assert field_line(text, "mg1.load") == 6
    assert field_line(text, "mg1.params.trail.c") == 8
    assert field_line(text, "mg1.params") == 7
    assert field_line(text, "engine.batching") is None
