"""The project README's leaderboard tables: ``leaderboard build --readme`` rewrites only
what lies between the markers, the same data rewrites nothing, a README without markers is
refused in one line, and names from results files arrive as text, not markup."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerbench.errors import SteerbenchError
from steerbench.publish.intake import submit
from steerbench.publish.leaderboard import build
from steerbench.publish.markdown import md_cell
from steerbench.publish.readme import README_END, README_START, update_readme

HEAD = "# A project\n\nIntro, with a table that is not generated:\n\n| a | b |\n|---|---|\n\n"
TAIL = "\n\n## Later\n\nMentions " + README_END + " again, in prose, after the region.\n"
EVIL = "x<script>alert(1)</script><img src=x onerror=alert(2)> | forged | row ![a](http://e) *em*"


def readme_with(tmp_path: Path, region: str = "old table\nby hand\n") -> Path:
    path = tmp_path / "README.md"
    path.write_text(HEAD + README_START + "\n" + region + README_END + TAIL, encoding="utf-8")
    return path


def region(text: str) -> str:
    """What lies between the first start marker and the first end marker after it."""
    return text.split(README_START, 1)[1].split(README_END, 1)[0]


def test_only_the_marked_region_changes_and_a_second_run_changes_nothing(tmp_path):
    readme = readme_with(tmp_path)
    update_readme(readme, ["new | table", "", "second"])
    text = readme.read_text(encoding="utf-8")
    assert text == HEAD + README_START + "\nnew | table\n\nsecond\n" + README_END + TAIL
    update_readme(readme, ["new | table", "", "second"])
    assert readme.read_text(encoding="utf-8") == text


@pytest.mark.parametrize(
    "text",
    [
        "# no markers at all\n",
        f"only the start {README_START}\n",
        f"only the end {README_END}\n",
        f"the end {README_END} before the start {README_START}\n",
    ],
)
def test_a_readme_without_both_markers_is_refused_in_one_line(tmp_path, text):
    readme = tmp_path / "README.md"
    readme.write_text(text, encoding="utf-8")
    message = re.escape(f"has no {README_START} ... {README_END} markers; add them")
    with pytest.raises(SteerbenchError, match=message) as err:
        update_readme(readme, ["table"])
    assert "\n" not in str(err.value) and str(readme) in str(err.value)
    assert readme.read_text(encoding="utf-8") == text  # untouched


def test_build_writes_the_first_boards_rankings_between_the_markers(finished_run, tmp_path):
    _, results, _ = finished_run
    readme = readme_with(tmp_path)
    board = build([results], tmp_path / "board", readme=readme)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(HEAD + README_START + "\n") and text.endswith(README_END + TAIL)
    tables = region(text)
    assert "by hand" not in tables
    (model,) = set(pq.read_table(results / "results.parquet").column("model").to_pylist())
    for task in ("remove-refusal", "add-refusal"):  # the default tasks, each with its ranking
        assert f"**{task}** ({model}):" in tables
        section = (board / "README.md").read_text(encoding="utf-8").split(f"### {task}:")[1]
        ranking = [line for line in section.splitlines() if line.startswith("|")][:6]
        assert "\n".join(ranking) in tables  # the same table as the leaderboard's own page
    build([results], tmp_path / "board", readme=readme)
    assert readme.read_text(encoding="utf-8") == text  # same data: not a byte changed


def test_build_refuses_a_readme_without_markers_in_one_line(finished_run, tmp_path, capsys):
    from steerbench.cli import main

    _, results, _ = finished_run
    readme = tmp_path / "README.md"
    readme.write_text("# A README someone forgot to mark\n", encoding="utf-8")
    argv = ["leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "b")]
    assert main([*argv, "--readme", str(readme)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "has no <!-- leaderboard:start -->" in err[0], err
    assert readme.read_text(encoding="utf-8") == "# A README someone forgot to mark\n"


def test_markup_in_model_and_method_names_arrives_escaped(finished_run, tmp_path):
    _, results, _ = finished_run
    frame = pq.read_table(results / "results.parquet").to_pandas()
    frame["model"] = EVIL
    frame["method"] = frame["method"].where(frame["is_unsteered"], EVIL + frame["method"])
    crafted = tmp_path / "crafted.parquet"
    schema = pq.read_schema(results / "results.parquet")
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), crafted)
    board = tmp_path / "board"
    submit(crafted, board)
    readme = readme_with(tmp_path)
    build([], board, readme=readme)
    tables = region(readme.read_text(encoding="utf-8"))
    assert "<script>" not in tables and "<img" not in tables and "![a]" not in tables
    assert "*em*" not in tables and "&lt;script&gt;" in tables
    assert f"** ({md_cell(EVIL)} \\[tiny, submitted " in tables  # the board's name, as text
    assert md_cell(EVIL + "cna") in tables
    columns = None
    for line in tables.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        count = len(re.findall(r"(?<!\\)\|", line))
        columns = count if columns is None else columns
        assert count == columns, line  # no row forged extra columns
