"""Trace readers: small files written on the fly, malformed rows, and the real public traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from servesim.core.errors import ConfigError, TraceError
from servesim.workload.traces import (
    read_azure,
    read_column,
    read_csv,
    read_lengths_csv,
    read_mooncake,
)

# The shared folder beside the repository root: <root>/../shared/data.
DATA = (Path(__file__).resolve().parents[2] / "../shared/data").resolve()

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, newline="")
    return path


def trace_error(fn, *args, **kwargs) -> TraceError:
    with pytest.raises(TraceError) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


# -- Azure -------------------------------------------------------------------------------------


def test_azure_seven_fractional_digits_and_relative_times(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_HEADER
                 + "2023-11-16 18:15:46.6805900,374,44\n"
                 + "2023-11-16 18:15:50.9951690,396,109\n"
                 + "2023-11-16 18:15:50.9951691,10,1\n")
    rows = read_azure(path)
    assert rows.arrival_s.tolist() == [0.0, 4.314579, 4.3145791]
    assert rows.prompt_tokens.tolist() == [374, 396, 10]
    assert rows.output_tokens.tolist() == [44, 109, 1]
    assert rows.prompt_tokens.dtype == np.int64 and rows.arrival_s.dtype == np.float64


def test_azure_crosses_midnight_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_HEADER.replace("\n", "\r\n")
                 + "2023-12-31 23:59:59.9,1,1\r\n\r\n"
                 + "2024-01-01 00:00:00.1,2,2\r\n")
    rows = read_azure(path)
    assert rows.arrival_s == pytest.approx([0.0, 0.2], abs=1e-12)


def test_unsorted_trace_is_sorted_stably(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_HEADER
                 + "2023-11-16 18:00:05,1,1\n"
                 + "2023-11-16 18:00:01,2,2\n"
                 + "2023-11-16 18:00:05,3,3\n"
                 + "2023-11-16 18:00:03,4,4\n")
    rows = read_azure(path)
    assert rows.arrival_s.tolist() == [0.0, 2.0, 4.0, 4.0]
    assert rows.prompt_tokens.tolist() == [2, 4, 1, 3]


@pytest.mark.parametrize("row,column,cell,expected", [
    ("2023-11-16 18:15:47.1,374,abc", "GeneratedTokens", "abc", "an integer >= 1"),
    ("2023-11-16 18:15:47.1,-3,4", "ContextTokens", "-3", "an integer >= 1"),
    ("2023-11-16 18:15:47.1,12.5,4", "ContextTokens", "12.5", "an integer >= 1"),
    ("2023-11-16 18:15:47.1,12,", "GeneratedTokens", "", "an integer >= 1"),
    ("2023-11-16 18:15:47.1,0,4", "ContextTokens", "0", "an integer >= 1"),
    ("16/11/2023 18:15,3,4", "TIMESTAMP", "16/11/2023 18:15", "a timestamp like"),
    ("2023-13-16 18:15:47.1,3,4", "TIMESTAMP", "2023-13-16 18:15:47.1", "a timestamp like"),
    ("2023-11-16 25:15:47.1,3,4", "TIMESTAMP", "2023-11-16 25:15:47.1", "a timestamp like"),
])
def test_azure_malformed_row_names_line_column_and_cell(tmp_path, row, column, cell, expected):
    path = write(tmp_path, "a.csv", AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n\n"
                 + row + "\n")
    err = trace_error(read_azure, path)
    assert err.line == 4  # header 1, good row 2, blank 3, bad row 4
    at = AZURE_HEADER.strip().split(",").index(column) + 1  # the CSV field, 1-based
    assert err.column == at
    assert str(err).startswith(f"{path}:4:{at}: column {column!r}: got {cell!r}, "
                               f"expected {expected}")


def test_short_row_is_a_missing_column(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_HEADER + "2023-11-16 18:15:46.6805900,374\n")
    err = trace_error(read_azure, path)
    assert err.line == 2 and "column 'GeneratedTokens': missing" in str(err)


def test_missing_header_column_is_line_one_and_lists_header(tmp_path):
    path = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,Generated\n2023-11-16 18:00:00,1,1\n")
    err = trace_error(read_azure, path)
    assert err.line == 1
    assert "missing column 'GeneratedTokens'" in str(err)
    assert "'TIMESTAMP', 'ContextTokens', 'Generated'" in str(err)


def test_zero_tokens_error_by_default_and_drop_on_request(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_HEADER
                 + "2023-11-16 18:00:00,5,5\n2023-11-16 18:00:01,7,0\n2023-11-16 18:00:02,9,9\n")
    err = trace_error(read_azure, path)
    assert err.line == 3 and 'zero_tokens = "drop"' in str(err)
    rows = read_azure(path, zero_tokens="drop")
    assert rows.prompt_tokens.tolist() == [5, 9]
    assert rows.arrival_s.tolist() == [0.0, 2.0]
    assert rows.n_dropped == 1
    with pytest.raises(ConfigError, match="zero_tokens"):
        read_azure(path, zero_tokens="clip")


def test_missing_file_is_a_config_error_on_the_path_field(tmp_path):
    with pytest.raises(ConfigError) as info:
        read_azure(tmp_path / "nope.csv")
    assert info.value.field == "workload.trace.path"


def test_reading_20k_rows_keeps_every_row(tmp_path):
    # Reading speed is measured by benchmarks/bench_traces.py, not here.
    lines = [f"2023-11-16 18:{i // 600 % 60:02d}:{i // 10 % 60:02d}.{i % 10}000000,{i % 900 + 1},"
             f"{i % 300 + 1}\n" for i in range(20_000)]
    path = write(tmp_path, "big.csv", AZURE_HEADER + "".join(lines))
    rows = read_azure(path)
    assert len(rows) == 20_000
    assert rows.prompt_tokens.tolist() == [i % 900 + 1 for i in range(20_000)]
    assert rows.output_tokens.tolist() == [i % 300 + 1 for i in range(20_000)]
    # Timestamps are 0.1 s apart (20,000 rows span 2000 s, within the hour).
    np.testing.assert_allclose(np.diff(rows.arrival_s), 0.1, atol=1e-9)


# -- Mooncake ----------------------------------------------------------------------------------


def mooncake_line(ts, inp, out, **extra) -> str:
    return json.dumps({"timestamp": ts, "input_length": inp, "output_length": out,
                       "hash_ids": [0, 1], **extra}) + "\n"


def test_mooncake_times_in_ms(tmp_path):
    path = write(tmp_path, "m.jsonl", mooncake_line(1000, 6758, 500) + mooncake_line(1000, 10, 1)
                 + "\n" + mooncake_line(3500.5, 20, 2))
    rows = read_mooncake(path)
    assert rows.arrival_s.tolist() == [0.0, 0.0, 2.5005]
    assert rows.prompt_tokens.tolist() == [6758, 10, 20]
    assert rows.output_tokens.tolist() == [500, 1, 2]


@pytest.mark.parametrize("bad,fragment", [
    ('{"timestamp": 5, "input_length": 3,\n', "bad JSON"),
    ("[1, 2, 3]\n", "expected a JSON object, got list"),
    ('{"timestamp": 5, "input_length": 3}\n', "column 'output_length': missing"),
    (mooncake_line(5, "7", 1), "column 'input_length': got '7', expected an integer >= 1"),
    (mooncake_line(5, 7.5, 1), "column 'input_length': got 7.5, expected an integer >= 1"),
    (mooncake_line(5, True, 1), "column 'input_length': got True, expected an integer >= 1"),
    (mooncake_line("soon", 7, 1), "column 'timestamp': got 'soon', expected a finite number"),
])
def test_mooncake_malformed_rows(tmp_path, bad, fragment):
    path = write(tmp_path, "m.jsonl", mooncake_line(0, 1, 1) + mooncake_line(1, 1, 1) + bad)
    err = trace_error(read_mooncake, path)
    assert err.line == 3
    assert str(err).startswith(f"{path}:3:")
    assert fragment in str(err)


# -- lengths-only and generic CSV --------------------------------------------------------------


def test_lengths_csv_ignores_other_columns(tmp_path):
    path = write(tmp_path, "l.csv", "num_prefill_tokens,num_decode_tokens,num_total_tokens,"
                 "pd_ratio\n74,918,992,0.08\n290,905,1195,0.32\n")
    rows = read_lengths_csv(path)
    assert rows.arrival_s is None
    assert rows.prompt_tokens.tolist() == [74, 290]
    assert rows.output_tokens.tolist() == [918, 905]
    bad = write(tmp_path, "b.csv", "num_prefill_tokens,num_decode_tokens\n1,2\n3,x\n")
    err = trace_error(read_lengths_csv, bad)
    assert err.line == 3 and "column 'num_decode_tokens': got 'x'" in str(err)


def test_generic_csv_with_seconds_and_milliseconds(tmp_path):
    path = write(tmp_path, "g.csv", "t,in,out,extra\n10.5,5,6,a\n12,7,8,b\n")
    rows = read_csv(path, {"prompt_tokens": "in", "output_tokens": "out", "arrival_s": "t"})
    assert rows.arrival_s.tolist() == [0.0, 1.5]
    assert rows.prompt_tokens.tolist() == [5, 7]
    rows = read_csv(path, {"prompt_tokens": "in", "output_tokens": "out", "arrival_ms": "t"})
    assert rows.arrival_s.tolist() == [0.0, 0.0015]
    rows = read_csv(path, {"prompt_tokens": "in", "output_tokens": "out"})
    assert rows.arrival_s is None


def test_generic_csv_bad_time_cell(tmp_path):
    path = write(tmp_path, "g.csv", "t,in,out\n1,5,6\nnan,7,8\n")
    err = trace_error(read_csv, path, {"prompt_tokens": "in", "output_tokens": "out",
                                       "arrival_s": "t"})
    assert err.line == 3 and "column 't': got 'nan', expected a finite number" in str(err)


@pytest.mark.parametrize("columns,field,fragment", [
    ({"prompt": "in", "output_tokens": "out"}, "workload.trace.columns.prompt",
     "did you mean 'prompt_tokens'?"),
    ({"output_tokens": "out"}, "workload.trace.columns.prompt_tokens", "required"),
    ({"prompt_tokens": "in", "output_tokens": "out", "arrival_s": "t", "arrival_ms": "t"},
     "workload.trace.columns.arrival_ms", "at most one"),
    ({"prompt_tokens": 3, "output_tokens": "out"}, "workload.trace.columns.prompt_tokens",
     "a column name"),
])
def test_generic_csv_bad_column_mapping(tmp_path, columns, field, fragment):
    path = write(tmp_path, "g.csv", "t,in,out\n1,5,6\n")
    with pytest.raises(ConfigError) as info:
        read_csv(path, columns)
    assert info.value.field == field and fragment in str(info.value)


def test_read_column(tmp_path):
    path = write(tmp_path, "c.csv", "a,b\n1,2\n3,4\n")
    assert read_column(path, "b").tolist() == [2, 4]


# -- the real public traces (optional) ---------------------------------------------------------

REAL = [
    ("azure_llm_2023_conv.csv", read_azure, 19_366),
    ("azure_llm_2023_code.csv", read_azure, 8_819),
    ("mooncake_conversation_trace.jsonl", read_mooncake, 12_031),
    ("sharegpt_8k_lengths_llama2.csv", read_lengths_csv, 30_731),
    ("bwb_lengths_llama2.csv", read_lengths_csv, 33_768),
    ("arxiv_summarization_lengths_llama2.csv", read_lengths_csv, 28_257),
]


@pytest.mark.parametrize("name,reader,n_rows", REAL, ids=[r[0] for r in REAL])
def test_real_trace_loads(name, reader, n_rows):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (public data lives beside the repository, not in it)")
    rows = reader(path)
    assert len(rows) == n_rows and rows.n_dropped == 0
    assert rows.prompt_tokens.min() >= 1 and rows.output_tokens.min() >= 1
    if rows.arrival_s is not None:
        assert rows.arrival_s[0] == 0.0
        assert np.all(np.diff(rows.arrival_s) >= 0)
        assert 3000 < rows.arrival_s[-1] < 3700  # each timed trace covers about one hour
