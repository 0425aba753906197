"""Preference-data loading (files, folders, saved datasets, hub names), split selection and column validation."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from dpo_plugin.errors import ConfigError
from dpo_plugin.preference_data import load_preference_data, train_eval_splits, validate_preference_columns

REPO = Path(__file__).resolve().parents[1]
ROWS = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(10)]
USER, ASSISTANT = "user", "assistant"


def _messages(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


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


def _without_chained_traceback(error: BaseException) -> bool:
    """No datasets traceback is printed under the ConfigError (no cause, and no context or one suppressed)."""
    return error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_local_files_become_a_train_split(tmp_path, suffix):
    loaded = load_preference_data(str(_write(tmp_path / f"pairs{suffix}")))
    assert isinstance(loaded, DatasetDict) and list(loaded) == ["train"]
    assert loaded["train"].to_list() == ROWS
    split = load_preference_data(str(tmp_path / f"pairs{suffix}"), split="train")
    assert isinstance(split, Dataset) and list(split["rejected"]) == [r["rejected"] for r in ROWS]


def test_conversational_jsonl_keeps_the_messages(tmp_path):
    rows = [
        {
            "prompt": _messages((USER, f"q{i}")),
            "chosen": _messages((ASSISTANT, "yes")),
            "rejected": _messages((ASSISTANT, "no")),
        }
        for i in range(3)
    ]
    loaded = load_preference_data(str(_write(tmp_path / "chat.jsonl", rows)), split="train")
    assert loaded.to_list() == rows


def test_folder_with_split_files(tmp_path):
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "train.jsonl")
    _write(tmp_path / "data" / "test.jsonl", ROWS[:3])
    loaded = load_preference_data(str(tmp_path / "data"))
    assert sorted(loaded) == ["test", "train"]
    train, evaluation = train_eval_splits(loaded)
    assert train.to_list() == ROWS and evaluation.to_list() == ROWS[:3]


def test_saved_dataset_dict_and_saved_dataset(tmp_path):
    DatasetDict({"train": Dataset.from_list(ROWS), "dev": Dataset.from_list(ROWS[:2])}).save_to_disk(
        str(tmp_path / "dict")
    )
    loaded = load_preference_data(str(tmp_path / "dict"))
    assert sorted(loaded) == ["dev", "train"] and loaded["dev"].to_list() == ROWS[:2]
    Dataset.from_list(ROWS[:4]).save_to_disk(str(tmp_path / "single"))  # a single Dataset becomes the train split
    single = load_preference_data(str(tmp_path / "single"))
    assert isinstance(single, DatasetDict) and list(single) == ["train"] and single["train"].to_list() == ROWS[:4]


def test_streaming_gives_iterable_datasets(tmp_path):
    streamed = load_preference_data(str(_write(tmp_path / "pairs.jsonl")), streaming=True)
    assert isinstance(streamed, IterableDatasetDict) and list(streamed["train"]) == ROWS
    DatasetDict({"train": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    saved = load_preference_data(str(tmp_path / "saved"), split="train", streaming=True)
    assert isinstance(saved, IterableDataset) and list(saved) == ROWS


def test_missing_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_preference_data("missing.jsonl")
    assert str(info.value).startswith(
        f"No such file or directory 'missing.jsonl' (resolved to {tmp_path / 'missing.jsonl'})"
    )
    with pytest.raises(ConfigError, match=r"No such file or directory './no/such/folder'"):
        load_preference_data("./no/such/folder")


def test_unreadable_files_give_short_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unsupported file type '\.txt'; preference data files must end in \.json"):
        load_preference_data(str(_write(tmp_path / "pairs.jsonl").rename(tmp_path / "pairs.txt")))
    (tmp_path / "pairs.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError) as info:
        load_preference_data(str(tmp_path / "pairs.parquet"))
    message = str(info.value)
    assert message.startswith(f"Cannot read '{tmp_path / 'pairs.parquet'}' as parquet: ") and "\n" not in message
    assert _without_chained_traceback(info.value)
    with pytest.raises(ConfigError, match="applies to hub datasets and dataset folders, not to a single data file"):
        load_preference_data(str(_write(tmp_path / "p.csv")), config="x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="Cannot load the folder .* as a dataset: .*holds data files"):
        load_preference_data(str(tmp_path / "empty"))


def test_offline_hub_name():
    # conftest sets HF_HUB_OFFLINE=1 before datasets is imported
    with pytest.raises(ConfigError) as info:
        load_preference_data("someone/preferences")
    assert str(info.value) == (
        "No such file or directory 'someone/preferences', and 'someone/preferences' is not in the local cache and "
        "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)."
    )
    assert _without_chained_traceback(info.value)


class _NoRepos(http.server.BaseHTTPRequestHandler):
    """A hub endpoint that knows no repository (404 for every request)."""

    def _not_found(self) -> None:
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _not_found

    def log_message(self, *args) -> None:
        pass


def test_unknown_hub_name_against_a_real_endpoint(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoRepos)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    script = (
        "from dpo_plugin.preference_data import load_preference_data\n"
        "from dpo_plugin.errors import ConfigError\n"
        "try:\n    load_preference_data('someone/preferences')\n"
        "except ConfigError as error:\n    print(error)\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert result.stdout.strip() == (
        "No such file or directory 'someone/preferences', and 'someone/preferences' is not a dataset on the Hugging "
        "Face Hub (if it is private or gated, log in: hf auth login)."
    ), result.stderr[-2000:]


def test_split_selection_errors_list_the_splits(tmp_path):
    path = str(_write(tmp_path / "pairs.jsonl"))
    with pytest.raises(ConfigError, match=r"no split 'validation'; its splits are: train\. Choose one of them\."):
        load_preference_data(path, split="validation")
    two = DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:2])})
    with pytest.raises(ConfigError, match=r"no split 'training'; its splits are: train, test"):
        train_eval_splits(two, train_split="training")


def test_eval_split_present_missing_or_carved_by_fraction():
    only_train = DatasetDict({"train": Dataset.from_list(ROWS)})
    assert train_eval_splits(only_train)[1] is None
    single = Dataset.from_list(ROWS)
    assert train_eval_splits(single) == (single, None)
    train, evaluation = train_eval_splits(only_train, eval_fraction=0.3, seed=1)
    assert len(train) == 7 and len(evaluation) == 3
    assert sorted([*train["prompt"], *evaluation["prompt"]]) == sorted(r["prompt"] for r in ROWS)
    again_train, again_eval = train_eval_splits(only_train, eval_fraction=0.3, seed=1)
    assert again_eval.to_list() == evaluation.to_list() and again_train.to_list() == train.to_list()
    with_test = DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:2])})
    train, evaluation = train_eval_splits(with_test, eval_fraction=0.5)  # an existing eval split wins
    assert len(train) == 10 and evaluation.to_list() == ROWS[:2]
    for fraction in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match="eval_fraction must lie strictly between 0 and 1"):
            train_eval_splits(only_train, eval_fraction=fraction)
    with pytest.raises(ConfigError, match="not a streaming one"):
        train_eval_splits(IterableDatasetDict({"train": single.to_iterable_dataset()}), eval_fraction=0.2)


def test_accepted_formats():
    assert validate_preference_columns(Dataset.from_list(ROWS)) == "text"
    assert validate_preference_columns(Dataset.from_list([{"chosen": "Q: a A: b", "rejected": "Q: a A: c"}])) == "text"
    conversation = {
        "chosen": _messages((USER, "q"), (ASSISTANT, "yes")),
        "rejected": _messages((USER, "q"), (ASSISTANT, "no")),
    }
    assert validate_preference_columns(Dataset.from_list([conversation])) == "messages"  # implicit prompt
    explicit = {
        "prompt": _messages((USER, "q")),
        "chosen": _messages((ASSISTANT, "y")),
        "rejected": _messages((ASSISTANT, "n")),
    }
    assert validate_preference_columns(Dataset.from_list([explicit])) == "messages"

    def generate():
        yield explicit

    streamed = IterableDataset.from_generator(generate)
    assert streamed.features is None and validate_preference_columns(streamed) == "messages"


def test_missing_columns_name_found_and_expected():
    with pytest.raises(ConfigError) as info:
        validate_preference_columns(Dataset.from_list([{"question": "q", "answer": "a", "chosen": "c"}]))
    message = str(info.value)
    assert "columns ['question', 'answer', 'chosen']" in message and "missing: ['rejected']" in message
    with pytest.raises(ConfigError, match="unpaired preference data .*KTO"):
        validate_preference_columns(Dataset.from_list([{"prompt": "p", "completion": "c", "label": True}]))


def test_wrong_column_types():
    with pytest.raises(ConfigError, match=r"Column 'chosen' holds Value\('int64'\); expected text"):
        validate_preference_columns(Dataset.from_list([{"prompt": "p", "chosen": 1, "rejected": "r"}]))
    with pytest.raises(ConfigError, match=r"Column 'rejected' holds no values \(null in every row\)"):
        validate_preference_columns(Dataset.from_list([{"prompt": "p", "chosen": "c", "rejected": None}]))
    sharegpt = [{"from": "human", "value": "hi"}]
    with pytest.raises(ConfigError, match="maybe_convert_to_chatml"):
        validate_preference_columns(Dataset.from_list([{"chosen": sharegpt, "rejected": sharegpt}]))
    with pytest.raises(ConfigError, match="'chosen' holds text but 'rejected' holds messages"):
        validate_preference_columns(Dataset.from_list([{"chosen": "c", "rejected": _messages((ASSISTANT, "r"))}]))
    mixed = {"prompt": "q", "chosen": _messages((ASSISTANT, "y")), "rejected": _messages((ASSISTANT, "n"))}
    with pytest.raises(
        ConfigError, match="'prompt' holds text but chosen/rejected hold messages.*remove the prompt column"
    ):
        validate_preference_columns(Dataset.from_list([mixed]))


PAIR = '{"prompt": "p", "chosen": "c", "rejected": "r"}'
FIX_LINE = (
    "Fix or remove the line: each line of a JSON Lines file is one object, "
    'such as {"prompt": "…", "chosen": "…", "rejected": "…"}.'
)
ONE_FORMAT = (
    'Write every row\'s {0} in one format: text (a JSON string), or a list of {{"role": …, "content": …}} messages.'
)


def _refused(path) -> str:
    """The one-line ConfigError that loading ``path`` gives (no datasets traceback chained under it)."""
    with pytest.raises(ConfigError) as info:
        load_preference_data(str(path))
    assert _without_chained_traceback(info.value) and "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_bytes_that_are_not_utf8_name_the_line(tmp_path, suffix):
    path = tmp_path / f"pairs{suffix}"
    header = b"prompt,chosen,rejected\n" if suffix == ".csv" else b""
    row = b"p,c,r\n" if suffix == ".csv" else PAIR.encode() + b"\n"
    bad = b"p,caf\xe9,r\n" if suffix == ".csv" else b'{"prompt": "p", "chosen": "caf\xe9", "rejected": "r"}\n'
    path.write_bytes(header + row * 2 + bad + row)  # Latin-1 é on the third pair
    line = 4 if suffix == ".csv" else 3
    assert _refused(path) == (
        f"{path}, line {line}: byte 0xe9 is not UTF-8 text. Save the file as UTF-8 (your editor's encoding setting, "
        "or iconv -f <its encoding> -t utf-8)."
    )


def test_a_multibyte_character_cut_across_the_read_chunks_is_fine_and_one_cut_by_the_end_is_named(tmp_path):
    from dpo_plugin.text_files import CHUNK_BYTES

    path = tmp_path / "pairs.jsonl"  # the é (2 bytes) starts at the last byte of the first chunk read
    head = '{"prompt": "p", "rejected": "r", "chosen": "'
    pad = "x" * (CHUNK_BYTES - len(head) - 1)
    path.write_text(f'{head}{pad}é"}}\n{PAIR}\n', encoding="utf-8")
    assert path.read_bytes()[CHUNK_BYTES - 1 : CHUNK_BYTES + 1] == "é".encode()
    assert load_preference_data(str(path), split="train")["chosen"][0] == pad + "é"
    path.write_bytes(f"{PAIR}\n{PAIR}\n".encode() + "é".encode()[:1])
    assert _refused(path).startswith(f"{path}, line 3: byte 0xc3 is not UTF-8 text.")


@pytest.mark.parametrize(
    "second, column, reason",
    [
        ('{"prompt": "p", "chosen": "c", "rejected": "r",}', 48, "Expecting property name enclosed in double quotes"),
        ('{"prompt": "p", "chosen": "c", "rejected": }', 44, "Expecting value"),
        ('{"prompt": "p", "chosen": "c" "rejected": "r"}', 31, "Expecting ',' delimiter"),
    ],
)
def test_a_malformed_json_line_is_named_with_its_column(tmp_path, second, column, reason):
    path = tmp_path / "pairs.jsonl"
    path.write_text(f"{PAIR}\n{second}\n{PAIR}\n")
    assert _refused(path) == f"{path}, line 2: not valid JSON ({reason} at column {column}). {FIX_LINE}"


def test_a_json_line_that_is_no_object_and_a_broken_json_array(tmp_path):
    lines = tmp_path / "pairs.jsonl"
    lines.write_text(f'{PAIR}\n\n"just text"\n')
    assert _refused(lines) == (
        f'{lines}, line 3: a JSON str, not an object such as {{"prompt": "…", "chosen": "…", "rejected": "…"}}.'
    )
    array = tmp_path / "pairs.json"
    array.write_text(f"[{PAIR},\n {PAIR}\n {PAIR}]")
    assert _refused(array) == f"{array}, line 3: not valid JSON (Expecting ',' delimiter at column 2)."


@pytest.mark.parametrize(
    "value, shown",
    [
        ("3", "int 3, but line 1 holds text"),
        ('["c"]', "list ['c'], but line 1 holds text"),
        ('{"text": "c"}', "dict {'text': 'c'}, but line 1 holds text"),
        ('[{"role": "assistant", "content": "c"}]', "messages, but line 1 holds text"),
    ],
)
def test_one_row_of_another_type_is_named_by_its_line(tmp_path, value, shown):
    """datasets types such a column as Json; the row is named by its line (blank lines counted) before TRL sees it."""
    path = tmp_path / "pairs.jsonl"
    path.write_text(f'{PAIR}\n{PAIR}\n{{"prompt": "p", "chosen": {value}, "rejected": "r"}}\n{PAIR}\n')
    assert _refused(path) == f"{path}, line 3: 'chosen' holds {shown}. {ONE_FORMAT.format('chosen')}"


def test_conversational_rows_among_text_rows_name_the_first_that_differs(tmp_path):
    path = tmp_path / "pairs.json"
    conversation = {
        "prompt": _messages((USER, "q")),
        "chosen": _messages((ASSISTANT, "y")),
        "rejected": _messages((ASSISTANT, "n")),
    }
    path.write_text(json.dumps([ROWS[0], ROWS[1], conversation, ROWS[2]]))
    assert _refused(path) == (
        f"{path}, object 3 of the array: 'prompt' holds messages, but object 1 of the array holds text. "
        + ONE_FORMAT.format("prompt")
    )
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "train.jsonl", ROWS[:2])
    _write(folder / "test.jsonl", [ROWS[0], conversation])  # each file of a folder is checked
    assert _refused(folder) == (
        f"{folder / 'test.jsonl'}, line 2: 'prompt' holds messages, but line 1 holds text. "
        + ONE_FORMAT.format("prompt")
    )


@pytest.mark.parametrize(
    "suffix, text, hint",
    [
        (
            ".jsonl",
            "",
            'A preference data file holds one pair per line, such as {"prompt": "…", "chosen": "…", "rejected": "…"}.',
        ),
        (
            ".json",
            "\n  \n",
            'A preference data file holds one pair per line, such as {"prompt": "…", "chosen": "…", "rejected": "…"}.',
        ),
        (".csv", "", "A preference CSV file holds a header line (prompt,chosen,rejected), then one pair per line."),
        (".parquet", "", "Write the pairs again (Dataset.to_parquet)."),
    ],
)
def test_an_empty_file_says_so(tmp_path, suffix, text, hint):
    path = tmp_path / f"pairs{suffix}"
    path.write_text(text)
    assert _refused(path) == f"{path} is empty. {hint}"


def test_a_csv_header_naming_a_pair_column_twice_is_refused(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected,chosen\np,c,r,c2\n")
    assert _refused(path) == (
        f"{path}, line 1: the header names the column 'chosen' 2 times, so which one holds the chosen text is "
        "ambiguous (pandas would rename the others chosen.1, …). Keep one column of that name."
    )
    path.write_text("prompt,chosen,rejected,note,note\np,c,r,a,b\n")  # other repeated columns are not ours to judge
    assert load_preference_data(str(path), split="train").column_names == [
        "prompt",
        "chosen",
        "rejected",
        "note",
        "note.1",
    ]


def test_the_train_command_names_the_bad_line_before_any_model_loads(tmp_path):
    """The real command: a data error is one `error:` line, exit 2, though the model does not even exist."""
    data = tmp_path / "pairs.jsonl"
    data.write_text(f'{PAIR}\n{{"prompt": "p", "chosen": 3, "rejected": "r"}}\n')
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name_or_path: {tmp_path / 'no-such-model'}\ndataset_name: {data}\n"
        f"output_dir: {tmp_path / 'out'}\nbf16: false\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "dpo_plugin", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == (
        f"error: {data}, line 2: 'chosen' holds int 3, but line 1 holds text. " + ONE_FORMAT.format("chosen")
    )
    assert "Traceback" not in result.stderr


def test_a_pretty_printed_json_object_is_left_to_datasets(tmp_path):
    """One JSON object over several lines is valid JSON, though not JSON Lines: no line is blamed, datasets reads it."""
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}, indent=2))
    assert load_preference_data(str(path), split="train").to_list() == [{"prompt": "p", "chosen": "c", "rejected": "r"}]


def test_a_folder_with_one_split_in_two_formats_names_both_files(tmp_path):
    """The newcomer's folder: train.jsonl (48 rows) beside train.parquet (10 rows); datasets read the 10 alone."""
    from dpo_plugin.data_checks import check_data

    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(48)]
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "train.jsonl", rows)
    _write(tmp_path / "data" / "train.parquet", rows[:10])
    message = (
        f"The data folder '{tmp_path / 'data'}' holds the train split in 2 formats (train.jsonl and train.parquet): "
        "datasets would read only one of them and ignore the others' rows."
    )
    with pytest.raises(ConfigError) as info:
        load_preference_data(str(tmp_path / "data"))
    assert str(info.value).startswith(message)
    (tmp_path / "data" / "train.parquet").unlink()
    assert check_data(load_preference_data(str(tmp_path / "data"), split="train")).rows == 48


def test_a_lone_surrogate_is_named_by_its_file_line(tmp_path):
    """Valid JSON, not text: Arrow refused it as 0-based "row 4" (twice in the log) for line 5."""
    lines = [json.dumps(row) for row in ROWS]
    lines[4] = '{"prompt": "p4 \\ud800 x", "chosen": "c", "rejected": "r"}'
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_preference_data(str(path))
    assert str(info.value) == (
        f"{path}, line 5: the escape \\ud800 is half of a UTF-16 surrogate pair without its other half, which is "
        "not text. Write the character itself, or both halves of its \\uXXXX pair."
    )
