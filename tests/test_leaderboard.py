import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerbench.errors import SteerbenchError
from steerbench.publish.intake import publish, submit
from steerbench.publish.leaderboard import build
from steerbench.publish.sources import published_sources
from steerbench.run.results import consolidate
from steerbench.stats.comparisons import compare_cells

EVIL = "<script>alert('pwned')</script>"


@pytest.fixture
def results_dir(finished_run, tmp_path):
    _, results, _ = finished_run
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    # A model output that tries to inject HTML must come out escaped.
    for path in copy.glob("cells/*/generations.parquet"):
        table = pq.read_table(path)
        responses = [EVIL] * table.num_rows
        table = table.set_column(
            table.schema.get_field_index("response"), "response", pa.array(responses)
        )
        pq.write_table(table, path)
    consolidate(copy)
    return copy


def test_build_writes_markdown_html_and_plots(results_dir, tmp_path):
    out = build([results_dir], tmp_path / "board")
    readme = (out / "README.md").read_text()
    assert "## Summary: rank per model and task" in readme and "| cna |" in readme
    assert "### remove-refusal: minimize refusal (harmful)" in readme
    assert "### add-refusal: maximize refusal (harmful)" in readme
    html = (out / "index.html").read_text()
    assert EVIL not in html and "&lt;script&gt;" in html
    # per task a ranking of cna, random-neurons, caa and the unsteered model; the sweep:
    # all 5 cells
    assert html.count('<section class="ranking"') == 2
    assert html.count("<tr data-method=") == 2 * 4 + 5
    assert html.count("<circle ") == 5 and "<title>cna @ 0: refusal" in html
    figures = {p.name: p.read_bytes() for p in [*out.glob("*.png"), *out.glob("*.svg")]}
    assert any(name.endswith(".png") for name in figures) and any(
        name.endswith(".svg") for name in figures
    )
    again = build([results_dir], tmp_path / "board")  # same data: byte-identical figures
    assert {p.name: p.read_bytes() for p in [*again.glob("*.png"), *again.glob("*.svg")]} == figures


def test_submit_validates_schema_and_provenance(results_dir, tmp_path):
    board = tmp_path / "board"
    target = submit(results_dir / "results.parquet", board)
    assert target.parent == board / "results"
    broken = tmp_path / "broken.parquet"
    table = pq.read_table(results_dir / "results.parquet").drop(["git_commit"])
    pq.write_table(table, broken)
    with pytest.raises(SteerbenchError, match="missing columns git_commit"):
        submit(broken, board)
    no_baseline = tmp_path / "nobase.parquet"
    table = pq.read_table(results_dir / "results.parquet")
    pq.write_table(table.filter(pa.compute.invert(table.column("is_unsteered"))), no_baseline)
    with pytest.raises(SteerbenchError, match="no unsteered baseline"):
        submit(no_baseline, board)
    build([], board)  # the submitted file alone builds a board
    assert "| none |" in (board / "README.md").read_text()


def chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
    "--virtual-time-budget=5000",
]


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("STEERBENCH_REQUIRE_BROWSER"),
    reason="Chromium is not installed (apt-get install chromium); CI installs it",
)
def test_page_switches_sorts_and_escapes_in_headless_chromium(results_dir, tmp_path):
    """The page's own script, run by a real browser: the hash picks the model and task
    (only that ranking is shown), sorts the visible table, and model text stays text."""
    import re
    import subprocess

    assert chromium(), "STEERBENCH_REQUIRE_BROWSER is set but Chromium is not installed"
    out = build([results_dir], tmp_path / "board")
    profile = tmp_path / "profile"

    def dom(fragment: str) -> str:
        done = subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--dump-dom",
                (out / "index.html").as_uri() + fragment,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert 'data-ready="yes"' in done.stdout, done.stderr[-2000:]  # the script ran
        return done.stdout

    def visible_sections(page: str) -> list[str]:
        return re.findall(r'<section class="ranking" data-model="[^"]*" data-task="([^"]+)">', page)

    page = dom("")
    assert visible_sections(page) == ["remove-refusal"]  # the default: first model, first task
    assert 'data-loaded="yes"' in page  # the SVG plot was fetched and decoded
    assert "<script>alert" not in page and "&lt;script&gt;" in page  # escaped model output
    page = dom("#task=add-refusal")
    assert visible_sections(page) == ["add-refusal"]
    # sorted by method name, descending, in the visible ranking
    page = dom("#task=add-refusal&sort=method&order=desc")
    section = page.split('data-task="add-refusal">', 1)[1].split("</section>", 1)[0]
    methods = re.findall(r'<tr data-method="([^"]+)"', section)
    assert methods == sorted(methods, reverse=True) and len(methods) == 4
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (out / "index.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    if shot.is_file():  # the screenshot is a bonus; the DOM checks above are the test
        assert shot.stat().st_size > 10_000


def test_a_model_with_results_from_two_configs_gets_a_board_per_config(results_dir):
    """Cells of another config (other prompts or splits) are not compared with these: they
    get their own table and their own unsteered row for the deltas."""
    from steerbench.publish.cells import cell_table
    from steerbench.publish.sources import load_results

    frame = load_results([results_dir])
    other = frame.assign(
        config_name="other",
        cell_key=frame["cell_key"] + "-other",
        value=frame["value"].where(frame["metric"] != "mmlu", frame["value"] - 0.5),
    )
    table = cell_table(pd.concat([frame, other], ignore_index=True))
    (model,) = set(frame["model"])
    assert set(table["model"]) == {f"{model} [tiny]", f"{model} [other]"}
    for board in (f"{model} [tiny]", f"{model} [other]"):
        rows = table[table["model"] == board]
        assert len(rows) == 5 and rows["is_unsteered"].sum() == 1
        assert rows.loc[rows["is_unsteered"], "mmlu_delta"].tolist() == [0.0]
    assert set(cell_table(frame)["model"]) == {model}  # one config: the plain model name


REPO = Path(__file__).resolve().parents[1]


def test_the_published_leaderboard_rebuilds_byte_for_byte_from_its_committed_results(tmp_path):
    """leaderboard/ and the README tables are generated from leaderboard/results/: a build
    from those files alone must reproduce every committed byte."""
    published = REPO / "leaderboard"
    sources = published_sources(published)
    assert sources, "leaderboard/results/ holds no published results directories"
    board = tmp_path / "leaderboard"
    shutil.copytree(published / "results", board / "results")
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    build(published_sources(board), board, readme=readme)
    committed = sorted(p.name for p in published.iterdir() if p.is_file())
    assert sorted(p.name for p in board.iterdir() if p.is_file()) == committed
    for name in committed:
        assert (board / name).read_bytes() == (published / name).read_bytes(), name
    assert readme.read_bytes() == (REPO / "README.md").read_bytes()
    for source in sources:  # the committed comparisons are this release's tests of the items
        stored = pd.read_parquet(source / "comparisons.parquet")
        fresh = compare_cells(pd.read_parquet(source / "generations.parquet"))
        pd.testing.assert_frame_equal(stored, fresh)


def test_publish_copies_what_the_tables_are_built_from(results_dir, tmp_path):
    board = tmp_path / "board"
    target = publish(results_dir, board, "run-1")
    assert target == board / "results" / "run-1"
    assert {p.name for p in target.iterdir()} >= {
        "results.parquet",
        "generations.parquet",
        "comparisons.parquet",
        "config.resolved.yaml",
    }
    assert published_sources(board) == [target]
    first = build(published_sources(board), board)
    text = (first / "README.md").read_bytes()
    assert build([results_dir], tmp_path / "other").joinpath("README.md").read_bytes() == text
    for bad in ("..", ".hidden", "a/b"):
        with pytest.raises(SteerbenchError, match="cannot publish"):
            publish(results_dir, board, bad)
    (results_dir / "generations.parquet").unlink()
    with pytest.raises(SteerbenchError, match="per-item"):
        publish(results_dir, board, "run-2")
