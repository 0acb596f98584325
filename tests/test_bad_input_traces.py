"""Bad trace files: every bad cell is a TraceError at path:line:column naming the value and what
was expected; empty files and files in another format say so in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError, TraceError
from servesim.scenario import load_scenario
from servesim.workload.traces import read_azure, read_csv, read_lengths_csv, read_mooncake

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
LENGTHS = "num_prefill_tokens,num_decode_tokens\n"
MOONCAKE_ROW = '{"timestamp": 0, "input_length": 10, "output_length": 5}\n'


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def trace_error(fn, *args, **kwargs) -> TraceError:
    with pytest.raises(TraceError) as info:
        fn(*args, **kwargs)
    return info.value


def scenario_with_trace(tmp_path: Path, fmt: str, trace: Path, extra: str = "") -> Path:
    return write(tmp_path, "s.toml", f"""
[run]
requests = 1
[workload]
arrival = {{ kind = "poisson", rate_per_s = 1 }}
trace = {{ format = "{fmt}", path = "{trace.name}"{extra} }}
[engine]
""")


@pytest.mark.parametrize("cell", ["99999999999999999999", "1000000000000", "1000000001", "-5",
                                  "nan", "inf", "1.5", "1e3", "abc", ""])
def test_every_bad_token_cell_is_located(tmp_path: Path, cell: str) -> None:
    path = write(tmp_path, "a.csv", AZURE + "2023-11-16 18:15:46.68,3,4\n"
                 f"2023-11-16 18:15:47.10,{cell},4\n")
    err = trace_error(read_azure, path)
    assert (err.line, err.column) == (3, 2)
    assert str(err) == (f"{path}:3:2: column 'ContextTokens': got {cell!r}, expected an integer "
                        ">= 1 and <= 1000000000 (a token count)")


@pytest.mark.parametrize("cell", ["99999999999999999999", "1000000000000"])
def test_huge_counts_through_a_scenario_name_the_file_not_an_internal_field(
        tmp_path: Path, cell: str, capsys) -> None:
    trace = write(tmp_path, "t.csv", LENGTHS + f"{cell},5\n")
    path = scenario_with_trace(tmp_path, "lengths_csv", trace)
    with pytest.raises(TraceError, match=rf"t\.csv:2:1: column 'num_prefill_tokens': got '{cell}'"):
        load_scenario(path)
    assert run_cli(["validate", str(path)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {trace}:2:1: ") and "empirical" not in line


@pytest.mark.parametrize("value,shown", [("99999999999999999999999", "99999999999999999999999"),
                                         ("1e400", "inf"), ("NaN", "nan"), ("-3", "-3"),
                                         ("2.5", "2.5"), ('"7"', "'7'")])
def test_bad_mooncake_lengths_are_located_at_their_key(tmp_path: Path, value, shown) -> None:
    row = f'{{"timestamp": 1, "input_length": {value}, "output_length": 5}}\n'
    path = write(tmp_path, "m.jsonl", MOONCAKE_ROW + row)
    err = trace_error(read_mooncake, path)
    assert (err.line, err.column) == (2, row.index('"input_length"') + 1)
    assert f"column 'input_length': got {shown}, expected an integer >= 1" in str(err)


@pytest.mark.parametrize("value", ["1" + "0" * 400, "1e400", "NaN", "1e16"])
def test_bad_mooncake_timestamps_are_refused(tmp_path: Path, value: str) -> None:
    row = f'{{"timestamp": {value}, "input_length": 3, "output_length": 5}}\n'
    err = trace_error(read_mooncake, write(tmp_path, "m.jsonl", MOONCAKE_ROW + row))
    assert (err.line, err.column) == (2, 2)
    assert "column 'timestamp'" in str(err) and "a finite number of magnitude at most" in str(err)


def test_a_trace_spanning_more_than_the_float_range_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "t,p,o\n0,1,1\n2e9,1,1\n")
    err = trace_error(read_csv, path, {"arrival_s": "t", "prompt_tokens": "p",
                                       "output_tokens": "o"})
    assert str(err).startswith(f"{path}: the times span 2e+09 s, expected at most 1e+09 s")


def test_time_scale_cannot_stretch_a_trace_beyond_the_float_range(tmp_path: Path) -> None:
    trace = write(tmp_path, "t.csv", "t,p,o\n0,1,1\n100,1,1\n")
    path = scenario_with_trace(tmp_path, "csv", trace, ', columns = { arrival_s = "t", '
                               'prompt_tokens = "p", output_tokens = "o" }, time_scale = 1e9')
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert info.value.field == "workload.trace.time_scale"


@pytest.mark.parametrize("reader,expected", [
    (read_azure, "a header line with columns TIMESTAMP, ContextTokens, GeneratedTokens"),
    (read_lengths_csv, "a header line with columns num_prefill_tokens, num_decode_tokens"),
    (read_mooncake, "one JSON object per line with keys timestamp, input_length, output_length"),
])
@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_an_empty_trace_says_so(tmp_path: Path, reader, expected, text) -> None:
    path = write(tmp_path, "empty.txt", text)
    assert str(trace_error(reader, path)) == f"{path}: the file is empty; expected {expected}"


def test_a_header_without_rows_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", AZURE)
    assert str(trace_error(read_azure, path)) == \
        f"{path}:1: no row after the header; expected at least one"


@pytest.mark.parametrize("reader,text,guess", [
    (read_azure, MOONCAKE_ROW, "mooncake"),
    (read_lengths_csv, MOONCAKE_ROW, "mooncake"),
    (read_lengths_csv, AZURE + "2023-11-16 18:15:46.68,3,4\n", "azure"),
    (read_azure, LENGTHS + "3,4\n", "lengths_csv"),
    (read_mooncake, AZURE + "2023-11-16 18:15:46.68,3,4\n", "azure"),
    (read_mooncake, LENGTHS + "3,4\n", "lengths_csv"),
    (read_mooncake, "t,in,out\n0,3,4\n", "csv"),
])
def test_a_file_in_another_format_suggests_it(tmp_path: Path, reader, text, guess) -> None:
    path = write(tmp_path, "trace.txt", text)
    err = trace_error(reader, path)
    assert (err.line, err.column) == (1, 1)
    assert str(err).endswith(f"did you mean format = {guess!r}?")
    assert "\n" not in str(err)


def test_a_misspelt_header_column_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedToken\n"
                 "2023-11-16 18:15:46.68,3,4\n")
    err = trace_error(read_azure, path)
    assert err.line == 1 and str(err).endswith("did you mean 'GeneratedToken'?")


def test_an_empirical_column_with_a_huge_value_is_located(tmp_path: Path) -> None:
    write(tmp_path, "lengths.csv", "n\n5\n99999999999999999999\n")
    path = write(tmp_path, "s.toml", """
[run]
requests = 1
[workload]
arrival = { kind = "poisson", rate_per_s = 1 }
prompt_tokens = { kind = "empirical", path = "lengths.csv", column = "n" }
output_tokens = { kind = "deterministic", value = 1 }
[engine]
""")
    with pytest.raises(TraceError, match=r"lengths\.csv:3:1: column 'n': got '9{20}'"):
        load_scenario(path)
