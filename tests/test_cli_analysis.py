"""``servesim capacity`` and ``servesim stability`` from the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "src" / "servesim" / "scenarios" / "demo.toml"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "servesim", *args], capture_output=True,
                          text=True, timeout=120)


def test_capacity_json_has_formulas_and_values():
    out = cli("capacity", str(DEMO), "--json", "--set", "engine.max_batch_size=64",
              "--set", "engine.batching=fastertransformer")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # mu* = b_max / t(b_max) = 512 / (11.28 + 4 * 35.47) ms; lambda* = mu* / (129 + 112).
    assert report["token_capacity"]["value"] == pytest.approx(512 / 0.15316)
    assert report["request_capacity"]["value"] == pytest.approx(512 / 0.15316 / 241)
    assert "b_max / t(b_max)" in report["token_capacity"]["formula"]
    assert report["fastertransformer"]["request_capacity"]["value"] == pytest.approx(
        3 / (0.15316 + 112 * 0.04675))
    assert report["batch_cap_region"]["operating_point"]["inside"] is True
    assert report["skipped"]["static"] == "applies to batching = 'static' only"


def test_capacity_of_the_sarathi_demo_skips_the_fastertransformer_cycle():
    out = cli("capacity", str(DEMO), "--json", "--set", "engine.max_batch_size=64")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "fastertransformer" not in report and report["batching"] == "sarathi"
    assert report["skipped"]["fastertransformer"] == \
        "applies to batching = 'fastertransformer' only"
    assert report["batch_cap_region"]["operating_point"]["inside"] is True


def test_stability_verdicts(tmp_path):
    out = cli("stability", str(DEMO), "--loads", "0.7,1.3", "--seeds", "3",
              "--horizon-s", "60", "--set", "run.warmup_s=0", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["state"] for r in rows] == ["stable", "unstable"]


def test_bad_loads_one_line():
    out = cli("stability", str(DEMO), "--loads", "0.8,abc")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: --loads")
    assert "Traceback" not in out.stderr


def test_capacity_empirical_bracket_beside_theory():
    out = cli("capacity", str(DEMO), "--json", "--empirical", "--seeds", "3", "--horizon-s",
              "120", "--iterations", "3", "--set", "run.warmup_s=0")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["empirical"]
    assert [r["policy"] for r in rows] == ["sarathi"]
    lam = 512 / 0.15316 / 241
    assert rows[0]["theory_lambda_star"] == pytest.approx(lam)
    # A bracket inside the search range [0.5, 1.5] lambda*, below or around lambda*.
    assert 0.5 * lam <= rows[0]["lo"] < rows[0]["hi"] <= 1.5 * lam
