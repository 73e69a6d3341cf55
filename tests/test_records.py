"""sparse24.records: the one environment record and result writers of benches and reports."""

from __future__ import annotations

import math

import pytest

from sparse24 import records


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H200", "h200"), ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA L40S", "l40s"), ("cpu", "cpu"), ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"),
])
def test_device_slug(name, slug):
    assert records.device_slug(name) == slug


def test_results_go_to_the_device_folder_of_the_checkout():
    assert records.results_dir("NVIDIA H200") == records.repo_root() / "bench" / "results" / "h200"


def test_commit_from_the_environment_wins(monkeypatch):
    monkeypatch.setenv(records.COMMIT_ENV, "0123abc")
    assert records.git_state() == ("0123abc", None)
    assert records.env_record()["git_commit"] == "0123abc"


def test_env_record_names_the_device_and_versions(monkeypatch):
    monkeypatch.delenv(records.COMMIT_ENV, raising=False)
    env = records.env_record({"extra": 1})
    assert env["device"] and env["torch"] and env["extra"] == 1
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert env["device"].split(" ")[0] in records.env_line(env)


def test_json_lines_are_strict_and_grouped_by_run(tmp_path):
    rec = records.Recorder("demo", tmp_path, {"device": "x"})
    rec.add({"a": math.nan, "b": (1, 2)})
    rec.add({"a": 1.5})
    other = records.Recorder("demo", tmp_path, {"device": "x"})
    other.add({"a": 3.0})
    rows = records.read_jsonl(tmp_path / "demo.jsonl")
    assert rows[0]["a"] is None and rows[0]["b"] == [1, 2]
    assert [r["a"] for r in records.select_run(rows)] == [3.0]
    assert [r["a"] for r in records.select_run(rows, rec.run_id)] == [None, 1.5]


def test_markdown_table_pads_columns():
    assert records.markdown_table(["n", "speedup"], [[768, "1.25x"]]).splitlines() == [
        "| n   | speedup |", "| --- | ------- |", "| 768 | 1.25x   |"]
