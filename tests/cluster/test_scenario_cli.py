"""Network scenario files and ``servesim network``: one-line errors naming field, value,
expectation and the nearest name; the command's tables and JSON."""

from __future__ import annotations

import json
import tomllib

import pytest

from servesim.cli.main import run_cli
from servesim.cluster import load_network, network_from_dict
from servesim.core.errors import ConfigError


@pytest.fixture
def rs_table(examples):
    return tomllib.loads((examples / "network_rybko_stolyar.toml").read_text())


@pytest.mark.parametrize("name", ["network_rybko_stolyar", "network_rybko_stolyar_reverse",
                                  "network_agent_dag", "network_fork_join",
                                  "network_review_loop"])
def test_examples_load(examples, name):
    sc = load_network(examples / f"{name}.toml")
    assert sc.run.horizon_s > 0 and sc.network.classes


def _edit(table, path, value):
    node = table
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return table


@pytest.mark.parametrize("path, value, field, hint", [
    (("network", "classes", "A1", "engine"), "S11", "network.classes.A1.engine", "'S1'"),
    (("network", "classes", "A1", "next"), ["A22"], "network.classes.A1.next", "'A2'"),
    (("network", "engines", "S1", "batching"), "sarathy", "network.engines.S1.batching",
     "'sarathi'"),
    (("network", "engines", "S1", "token_budgt"), 64, "network.engines.S1.token_budgt",
     "'token_budget'"),
    (("network", "engines", "S1", "router"), "jsqq", "network.engines.S1.router", "'jsq'"),
    (("network", "engines", "S1", "priority"), ["B2", "A11"], "network.engines.S1.priority",
     "'A1'"),
    (("network", "engines", "S1", "kv"), {"blocks": 0}, "network.engines.S1.kv.blocks", None),
    (("network", "workflows", "A", "entry"), ["A11"], "network.workflows.A.entry", "'A1'"),
    (("network", "workflows", "A", "arrival"), {"kind": "poison"},
     "network.workflows.A.arrival.kind", "'poisson'"),
    (("network", "classes", "A1", "routing"), {"A2": 1.5}, "network.classes.A1.routing.A2",
     None),
    (("run", "horizon_s"), None, "run.horizon_s", None),
    (("network", "classes", "A2", "join"), "yes", "network.classes.A2.join", None),
    (("network", "classes", "A2", "join"), True, "network.classes.A2.join", None),
    (("network", "engines", "S1", "batching"), "wait", "network.engines.S1.batching", None),
    (("network", "engines", "S1", "priority"), ["B2", "B2"], "network.engines.S1.priority",
     None),
    (("network", "workflows", "A", "entry"), ["A1", "A1"], "network.workflows.A.entry", None),
    (("network", "engines", "S1", "kv"), {"block_tokens": 16, "blocks": 4},
     "network.classes.B2.prompt_tokens", None),
])
def test_bad_fields_give_one_line_errors(rs_table, path, value, field, hint):
    with pytest.raises(ConfigError) as info:
        network_from_dict(_edit(rs_table, path, value))
    msg = str(info.value)
    assert info.value.field == field and "\n" not in msg and "expected" in msg
    if hint is not None:
        assert f"did you mean {hint}" in msg


def test_cli_json_reports_theory_virtual_station_and_verdict(examples, capsys):
    """S1 and S2 both have rho = 3.0769 * (32 + 256) / (64 / 0.065) = 0.9; the exit priority
    makes {A2, B2} a virtual station of load 2 * 3.0769 * 256 / 984.6 = 1.6."""
    code = run_cli(["network", str(examples / "network_rybko_stolyar.toml"), "--seed", "4",
                    "--seeds", "2", "--horizon-s", "40", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["theory"]["rho"] == pytest.approx({"S1": 0.9, "S2": 0.9}, abs=1e-4)
    [vs] = out["theory"]["virtual_stations"]
    assert vs["flagged"] and vs["load"] == pytest.approx(1.6, abs=1e-4)
    assert [r["seed"] for r in out["runs"]] == [4, 5]
    assert out["verdict"]["state"] in ("stable", "unstable", "inconclusive")
    assert {e["engine"] for e in out["engines"]} == {"S1", "S2"}
    assert {w["workflow"] for w in out["workflows"]} == {"A", "B"}


def test_cli_text_warns_and_prints_tables(examples, capsys):
    code = run_cli(["network", str(examples / "network_rybko_stolyar.toml"), "--seeds", "1",
                    "--horizon-s", "20"])
    text = capsys.readouterr().out
    assert code == 0
    assert "WARNING: virtual station A2+B2" in text
    for word in ("rho_j", "classes (hops)", "workflows", "stability verdict"):
        assert word in text


def test_fork_join_example_declares_its_join(examples):
    """The reduce step waits for its three maps only because the file says ``join = true``."""
    net = load_network(examples / "network_fork_join.toml").network
    assert net.is_join("reduce") and net.parents["reduce"] == 3
    assert not any(net.is_join(k) for k in net.classes if k != "reduce")


def test_cli_bad_scenario_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[run]\nhorizon_s = 10.0\n[network.engines.e]\nbatching = "vlm"\n'
                   '[network.classes.a]\nengine = "e"\n'
                   'prompt_tokens = { kind = "deterministic", value = 1 }\n'
                   'output_tokens = { kind = "deterministic", value = 1 }\n'
                   '[network.workflows.w]\narrival = { kind = "poisson", rate_per_s = 1.0 }\n'
                   'entry = ["a"]\n')
    assert run_cli(["network", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: network.engines.e.batching: got 'vlm'")
    assert "did you mean 'vllm'" in err


def test_rybko_stolyar_example_script_runs(examples, capsys):
    """The example script prints both priority assignments, the check and a verdict each."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("network_rs_example",
                                                  examples / "network_rybko_stolyar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--seeds", "1", "--horizon-s", "30"]) == 0
    text = capsys.readouterr().out
    assert "virtual station overloaded: A2+B2" in text
    assert "no virtual station overloaded" in text
    assert text.count("verdict:") == 2
