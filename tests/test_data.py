import shutil

import pytest

from steerbench.errors import SteerbenchError
from steerbench.run import data_files
from steerbench.run import prompt_sets as data
from steerbench.run.prompt_sets import PROMPT_SETS, load_prompts, load_registered, stratified_split

UPSTREAM_COUNTS = {
    "jbb-harmful": 100,
    "jbb-benign": 100,
    "advbench": 520,
    "strongreject": 313,
    "strongreject-small": 60,
    "xstest-safe": 250,
    "xstest-unsafe": 200,
}


@pytest.mark.parametrize("name", list(PROMPT_SETS))
def test_every_set_has_its_documented_row_count_and_text(name):
    records = load_registered(name)
    assert len(records) == PROMPT_SETS[name].rows
    assert len(records) == UPSTREAM_COUNTS.get(name, len(records))
    assert all(r.text and r.source == name for r in records)
    assert len({r.id for r in records}) == len(records)


def test_checksum_file_covers_every_registered_file():
    files = {info.path for info in PROMPT_SETS.values()}
    assert files <= set(data.expected_checksums())


def test_no_python_files_in_datasets_folder():
    # datasets/__init__.py would shadow Hugging Face `datasets` (and break sae-lens).
    assert not list(data.datasets_root().rglob("*.py"))


def test_xstest_types_rebuilt_from_blocks():
    safe = load_registered("xstest-safe")
    assert safe[0].category == "homonyms" and safe[24].category == "homonyms"
    assert safe[25].category == "figurative_language"
    assert safe[249].category == "privacy_fictional"
    assert load_registered("xstest-unsafe")[199].category == "contrast_privacy"


def test_modified_file_is_detected(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    shutil.copytree(data.datasets_root(), root)
    with (root / "jbb" / "harmful-behaviors.csv").open("a") as handle:
        handle.write("100,extra row,,,\n")
    monkeypatch.setattr(data_files, "datasets_root", lambda: root)
    data_files.verified_path.cache_clear()
    data_files.expected_checksums.cache_clear()
    try:
        with pytest.raises(SteerbenchError, match="does not match its checksum"):
            load_registered("jbb-harmful")
    finally:
        data_files.verified_path.cache_clear()
        data_files.expected_checksums.cache_clear()


@pytest.mark.parametrize("name", ["jbb-harmful", "jbb-benign", "strongreject", "advbench"])
def test_splits_are_disjoint_complete_and_stratified(name):
    records = load_registered(name)
    split = stratified_split(records)
    discovery, validation, evaluation = (
        {r.id for r in split[name]} for name in ("discovery", "validation", "evaluation")
    )
    assert discovery.isdisjoint(evaluation) and validation.isdisjoint(discovery | evaluation)
    assert discovery | validation | evaluation == {r.id for r in records}
    for category in {r.category for r in records}:
        total = sum(r.category == category for r in records)
        for name, fraction in (("discovery", 0.4), ("validation", 0.2), ("evaluation", 0.4)):
            share = sum(r.category == category for r in split[name])
            assert abs(share - total * fraction) <= 1


def test_split_is_seeded_and_named_splits_resolve():
    first = [r.id for r in load_prompts("jbb-harmful:discovery")]
    assert first == [r.id for r in load_prompts("jbb-harmful:discovery")]
    assert first != [r.id for r in load_prompts("jbb-harmful:discovery", split_seed=1)]
    # Topic-matched JBB pairs land on the same side.
    benign = [r.id for r in load_prompts("jbb-benign:discovery")]
    assert [i.rsplit("-", 1)[1] for i in first] == [i.rsplit("-", 1)[1] for i in benign]


def test_user_files_txt_csv_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\n second prompt \n")
    (tmp_path / "p.csv").write_text('goal,category\n"a, b",x\nc,y\n')
    (tmp_path / "p.jsonl").write_text('{"prompt": "hello", "id": "h1"}\n{"prompt": "bye"}\n')
    assert [r.text for r in load_prompts(str(tmp_path / "p.txt"))] == [
        "first prompt",
        "second prompt",
    ]
    assert [(r.text, r.category) for r in load_prompts(str(tmp_path / "p.csv"))] == [
        ("a, b", "x"),
        ("c", "y"),
    ]
    assert [r.id for r in load_prompts(str(tmp_path / "p.jsonl"))] == ["h1", "p-0001"]


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("", "empty.txt", "contains no prompts"),
        ("colour,size\nred,1\n", "bad.csv", "no prompt column"),
        ('{"prompt": "ok"}\nnot json\n', "bad.jsonl", "line 2 is not valid JSON"),
        ("x", "p.parquet", "unsupported prompt file type"),
    ],
)
def test_bad_prompt_files_give_clear_errors(tmp_path, content, name, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(SteerbenchError, match=message):
        load_prompts(str(tmp_path / name))


def test_unknown_set_or_split_lists_the_choices(tmp_path):
    with pytest.raises(SteerbenchError, match=r"unknown prompt set 'jbb'.*jbb-harmful"):
        load_prompts("jbb")
    with pytest.raises(SteerbenchError, match="unknown split 'train'"):
        load_prompts("jbb-harmful:train")
    with pytest.raises(SteerbenchError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.txt"))


def test_duplicates_across_sets_are_reported():
    pairs = data.find_duplicates(["jbb-harmful", "advbench"])
    assert len(pairs) == 11
    assert all(a.source == "jbb-harmful" and b.source == "advbench" for a, b in pairs)


def test_user_file_readers_stay_importable_from_prompt_sets_and_the_old_path(tmp_path):
    """Plugins import ``PromptRecord`` and the readers from ``steerbench.data``."""
    import importlib

    from steerbench.run import prompt_files

    old = importlib.import_module("steerbench.data")
    assert old is data
    for name in ("PromptRecord", "PROMPT_COLUMNS", "read_jsonl", "read_text", "read_rows"):
        assert getattr(old, name) is getattr(prompt_files, name), name
    (tmp_path / "p.jsonl").write_text('{"text": "a", "category": 3}\n')
    assert data.load_prompt_file(tmp_path / "p.jsonl") == [
        data.PromptRecord("p-0000", "a", "3", "p.jsonl")
    ]


def test_splits_follow_their_fractions_in_order():
    assert data.SPLITS == ("discovery", "validation", "evaluation")
    assert dict(zip(data.SPLITS, data.SPLIT_FRACTIONS))["validation"] == 0.2


def test_a_union_of_prompt_sets_drops_what_an_earlier_set_holds_in_any_split():
    union = load_prompts("jbb-harmful:evaluation + strongreject:evaluation")
    jbb = load_prompts("jbb-harmful:evaluation")
    assert union[: len(jbb)] == jbb  # the first part whole, in its order
    anywhere_in_jbb = {data.normalise_text(r.text) for r in load_registered("jbb-harmful")}
    later = union[len(jbb) :]
    assert later and not any(data.normalise_text(r.text) in anywhere_in_jbb for r in later)
    strongreject = load_prompts("strongreject:evaluation")
    overlap = [r for r in strongreject if data.normalise_text(r.text) in anywhere_in_jbb]
    assert len(later) == len(strongreject) - len(overlap) and overlap  # the overlap is real
    with pytest.raises(SteerbenchError, match="empty part"):
        load_prompts("jbb-harmful + ")
