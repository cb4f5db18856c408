"""The shared dataset reader and input resolution in handlers/_forge.py, called
directly: format detection, row numbers, malformed lines, bounded memory for Parquet,
and the inputs contract (job["inputs"][param] = local path, never a user's path)."""
import json

import pytest

import _forge as forge
from handlers_kit import RECORDS, pa, write_csv, write_jsonl, write_parquet


def rows(path, **kw):
    return list(forge.Dataset(str(path), **kw).rows())


def exit_code(excinfo):
    return excinfo.value.code


# ---- formats ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv", "tsv"])
def test_every_format_reads_the_same_records(datasets, fmt):
    ds = forge.Dataset(str(datasets[fmt]))
    assert ds.format == {"tsv": "csv"}.get(fmt, fmt)
    got = [r.record for r in ds.rows()]
    assert got == RECORDS
    assert all(r.error is None for r in ds.rows())


def test_format_is_sniffed_when_the_name_says_nothing(tmp_path, datasets):
    for fmt, src in (("parquet", "parquet"), ("jsonl", "jsonl"), ("csv", "csv")):
        target = tmp_path / f"upload-{fmt}.bin"
        target.write_bytes(datasets[src].read_bytes())
        assert forge.dataset_format(str(target)) == fmt


def test_parquet_magic_wins_over_the_name(tmp_path, datasets):
    target = tmp_path / "mislabelled.jsonl"
    target.write_bytes(datasets["parquet"].read_bytes())
    assert forge.dataset_format(str(target)) == "parquet"
    assert [r.record for r in rows(target)] == RECORDS


def test_a_parquet_name_without_the_magic_exits_2_naming_the_param(tmp_path, capsys):
    target = tmp_path / "data.parquet"
    target.write_text('{"a": 1}\n')
    with pytest.raises(SystemExit) as info:
        forge.Dataset(str(target), key="dataset_uri")
    assert exit_code(info) == 2
    assert "params.dataset_uri" in capsys.readouterr().err


def test_a_truncated_parquet_file_exits_2(tmp_path, datasets, capsys):
    target = tmp_path / "cut.parquet"
    target.write_bytes(datasets["parquet"].read_bytes()[:200])
    with pytest.raises(SystemExit) as info:
        rows(target)
    assert exit_code(info) == 2
    assert "params.dataset_uri: not a readable Parquet file" in capsys.readouterr().err


# ---- row numbers and malformed lines ---------------------------------------------------

def test_jsonl_malformed_lines_carry_their_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": "x"}\n\nnot json\n[1, 2]\n{"a": "\xff"}\n{"a": "y"}\n')
    got = [(r.number, r.record, r.error) for r in rows(path)]
    assert got == [(1, {"a": "x"}, None), (3, None, "not JSON"),
                   (4, None, "not a JSON object"), (5, None, "not JSON"),
                   (6, {"a": "y"}, None)]
    assert forge.Row(3, None, "not JSON").where == "line 3"


def test_csv_rows_with_the_wrong_field_count_are_malformed(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('instruction,response\n"multi\nline",ok\nx,y,z\n\n,empty\n')
    got = [(r.number, r.record, r.error) for r in rows(path)]
    assert got == [(2, {"instruction": "multi\nline", "response": "ok"}, None),
                   (4, None, "3 fields, the header has 2"),
                   (6, {"instruction": "", "response": "empty"}, None)]


def test_a_huge_csv_field_is_one_malformed_row_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(forge, "CSV_FIELD_LIMIT", 1000)
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n" + "3," + "x" * 5000 + "\n5,6\n")
    got = [(r.record, r.error is not None) for r in rows(path)]
    assert got[0] == ({"a": "1", "b": "2"}, False)
    assert got[1][1] is True and "field larger than field limit" in rows(path)[1].error
    assert got[-1] == ({"a": "5", "b": "6"}, False)


def test_parquet_rows_are_numbered_and_keep_nulls_and_types(tmp_path):
    path = write_parquet(tmp_path / "t.parquet",
                         [{"text": "a", "n": 1, "ok": True}, {"text": None, "n": 2, "ok": False}])
    got = rows(path)
    assert [(r.number, r.where) for r in got] == [(1, "row 1"), (2, "row 2")]
    assert got[1].record == {"text": None, "n": 2, "ok": False}


def test_progress_reaches_one(datasets):
    for fmt in ("parquet", "jsonl", "csv"):
        seen = []
        list(forge.Dataset(str(datasets[fmt])).rows(seen.append))
        assert seen and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)


def test_parquet_is_read_a_row_group_at_a_time(tmp_path):
    """Arrow's own allocations while iterating stay near one row group, far below the
    file's data (pyarrow's default pre_buffer would hold every column chunk)."""
    import random
    rng = random.Random(1)
    alphabet = "abcdefghijklmnopqrstuvwxyz "
    text = "".join(rng.choice(alphabet) for _ in range(1 << 20))
    recs = [{"text": text[i * 400 % (len(text) - 400):][:400]} for i in range(40_000)]
    path = write_parquet(tmp_path / "big.parquet", recs, row_group_size=1000)
    data_bytes = 40_000 * 400
    peak = 0
    n = 0
    for r in forge.Dataset(str(path)).rows():
        n += 1
        if n % 500 == 0:
            peak = max(peak, pa.total_allocated_bytes())
    assert n == 40_000
    assert peak < data_bytes / 8, (peak, data_bytes)


# ---- inputs ---------------------------------------------------------------------------

def job_with(params, inputs=None):
    job = {"params": params}
    if inputs is not None:
        job["inputs"] = inputs
    return job


def test_open_dataset_reads_the_agents_file(datasets):
    job = job_with({"dataset_uri": "s3://bucket/data.parquet"},
                   {"dataset_uri": str(datasets["parquet"])})
    ds = forge.open_dataset(job)
    assert ds.format == "parquet" and ds.uri == "s3://bucket/data.parquet"
    assert repr(ds).startswith("s3://bucket/data.parquet (")


@pytest.mark.parametrize("params,inputs,code,needle", [
    ({}, None, 2, "params.dataset_uri is required"),
    ({"dataset_uri": 7}, None, 2, "params.dataset_uri must be a non-empty string"),
    ({"dataset_uri": "/etc/passwd"}, None, 2, "params.dataset_uri must be an s3://"),
    ({"dataset_uri": "file:///etc/passwd"}, None, 2,
     "params.dataset_uri: file:// URIs are refused"),
    ({"dataset_uri": "FILE:///etc/passwd"}, {"dataset_uri": "/etc/passwd"}, 2, "file://"),
    ({"dataset_uri": "s3://bucket/x.parquet"}, None, 2,
     "params.dataset_uri: s3://bucket/x.parquet was not fetched"),
    ({"dataset_uri": "s3://bucket/x.parquet"}, {"other": "/etc/passwd"}, 2,
     "no inputs.dataset_uri"),
    ({"dataset_uri": "artifact://art_1"}, {"dataset_uri": "relative/path"}, 75,
     "inputs.dataset_uri must be an absolute local path"),
    ({"dataset_uri": "artifact://art_1"}, {"dataset_uri": "/nonexistent/x"}, 75,
     "does not exist"),
    ({"dataset_uri": "artifact://art_1"}, [{"param": "dataset_uri"}], 75,
     "inputs must be an object"),
])
def test_open_dataset_refuses(params, inputs, code, needle, capsys):
    with pytest.raises(SystemExit) as info:
        forge.open_dataset(job_with(params, inputs))
    assert exit_code(info) == code
    assert needle in capsys.readouterr().err


def test_a_bare_model_name_needs_no_input():
    assert forge.model_input(job_with({"model_id": "tiny-gpt"})) is None


def test_a_model_uri_is_the_agents_file(tmp_path):
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"type": "interpolated-bigram"}))
    job = job_with({"model_id": "artifact://art_9"}, {"model_id": str(model)})
    assert forge.model_input(job) == str(model)


def test_pyarrow_missing_is_a_retryable_worker_fault(tmp_path, monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(SystemExit) as info:
        forge._pyarrow()
    assert exit_code(info) == 75
    assert "handlers/requirements.txt" in capsys.readouterr().err


def test_write_parquet_is_atomic_and_batched(tmp_path):
    path = tmp_path / "out.parquet"
    size = forge.write_parquet(str(path), ["a"], ({"a": str(i)} for i in range(25)),
                               batch_rows=10)
    assert size == path.stat().st_size and not (tmp_path / "out.parquet.tmp").exists()
    import pyarrow.parquet as pq
    meta = pq.ParquetFile(str(path)).metadata
    assert meta.num_rows == 25 and meta.num_row_groups == 3


def test_csv_and_jsonl_helpers_round_trip(tmp_path):
    # the handlers_kit writers themselves produce what the reader expects
    assert [r.record for r in rows(write_jsonl(tmp_path / "a.jsonl", RECORDS[:2]))] == \
        RECORDS[:2]
    assert [r.record for r in rows(write_csv(tmp_path / "a.csv", RECORDS[:2]))] == RECORDS[:2]
