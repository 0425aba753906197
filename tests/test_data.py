"""Preference-data loading (files, folders, hub names) and column validation."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from dpo_plugin.data import load_preference_data, train_eval_splits, validate_preference_columns
from dpo_plugin.errors import ConfigError

ROWS = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(10)]


def _write(path, rows=ROWS):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        Dataset.from_list(rows).to_parquet(str(path))
    elif path.suffix == ".csv":
        Dataset.from_list(rows).to_csv(str(path), index=False)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_local_files(tmp_path, suffix):
    loaded = load_preference_data(str(_write(tmp_path / f"pairs{suffix}")))
    assert list(loaded) == ["train"] and loaded["train"]["chosen"] == [r["chosen"] for r in ROWS]


def test_folder_with_split_files_and_saved_dataset(tmp_path):
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "train.jsonl")
    _write(tmp_path / "data" / "test.jsonl", ROWS[:3])
    loaded = load_preference_data(str(tmp_path / "data"))
    train, evaluation = train_eval_splits(loaded)
    assert len(train) == 10 and len(evaluation) == 3
    DatasetDict({"train": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    assert load_preference_data(str(tmp_path / "saved"), split="train")["prompt"][0] == "p0"


def test_split_selection_and_fraction(tmp_path):
    loaded = load_preference_data(str(_write(tmp_path / "pairs.jsonl")))
    with pytest.raises(ConfigError, match="no split 'validation'; its splits are: train"):
        load_preference_data(str(tmp_path / "pairs.jsonl"), split="validation")
    train, evaluation = train_eval_splits(loaded)
    assert evaluation is None
    train, evaluation = train_eval_splits(loaded, eval_fraction=0.3, seed=1)
    assert len(train) == 7 and len(evaluation) == 3
    assert set(train["prompt"]) | set(evaluation["prompt"]) == {r["prompt"] for r in ROWS}


def test_missing_paths_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_preference_data(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match="unsupported file type '.txt'"):
        load_preference_data(str(_write(tmp_path / "pairs.jsonl").rename(tmp_path / "pairs.txt")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="hub is offline"):
        load_preference_data("someone/preferences")


def test_columns():
    validate_preference_columns(Dataset.from_list(ROWS))
    validate_preference_columns(Dataset.from_list([{"chosen": "a b", "rejected": "a c"}]))  # implicit prompt
    with pytest.raises(ConfigError) as info:
        validate_preference_columns(Dataset.from_list([{"question": "q", "answer": "a"}]))
    assert "['question', 'answer']" in str(info.value) and "missing: ['chosen', 'rejected']" in str(info.value)
