"""Checks shared by the ordered-stepper tests (a uniquely named module, as ``engine_cases``)."""

from __future__ import annotations

from servesim.engine.config import EngineConfig
from servesim.engine.state import EngineRun


def assert_every_request_completes(run: EngineRun, config: EngineConfig) -> None:
    """Every request finishes exactly once (or is rejected at arrival) with all its tokens, each
    decode token is one generated token, and the KV cache stays within bounds and ends empty."""
    df, it = run.requests, run.iterations
    done = df["status"] == "finished"
    assert set(df["status"]) <= {"finished", "rejected"}
    assert df["finish_s"][done].notna().all() and df["finish_s"][~done].isna().all()
    assert (df["generated_tokens"][done] == df["output_tokens"][done]).all()
    assert it["decode_tokens"].sum() == df["generated_tokens"].sum()
    assert (it["kv_blocks_used"] <= config.kv.blocks).all()
    assert (it["kv_blocks_used"].iloc[-1:] == 0).all()
