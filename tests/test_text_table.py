"""Text tables: headers and formats per column, missing values as '-'."""

import math

import pandas as pd

from servesim.metrics.text import format_table


def test_format_table():
    frame = pd.DataFrame({"system": ["vllm", "orca"], "e2e_s": [1.23456, math.nan]})
    text = format_table(frame, {"system": ("sys", "{}"), "e2e_s": ("E2E s", "{:.2f}")})
    lines = text.splitlines()
    assert lines[0].split() == ["sys", "E2E", "s"]
    assert lines[1].split() == ["vllm", "1.23"]
    assert lines[2].split() == ["orca", "-"]
