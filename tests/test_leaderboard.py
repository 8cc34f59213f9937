import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerbench.errors import SteerbenchError
from steerbench.leaderboard import build, submit
from steerbench.results import consolidate

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
    assert "### Ranking (strengths chosen on" in readme and "| cna |" in readme
    html = (out / "index.html").read_text()
    assert EVIL not in html and "&lt;script&gt;" in html
    assert html.count("<tr data-method=") == 5
    assert list(out.glob("*.png")) and list(out.glob("*.svg"))


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
    pq.write_table(table.filter(pa.compute.invert(table.column("is_baseline"))), no_baseline)
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
    chromium() is None, reason="Chromium is not installed (apt-get install chromium)"
)
def test_page_renders_rows_and_plots_in_headless_chromium(results_dir, tmp_path):
    import subprocess

    out = build([results_dir], tmp_path / "board")
    profile = tmp_path / "profile"
    done = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--dump-dom",
            (out / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = done.stdout
    assert dom.count("<tr data-method=") == 5, done.stderr[-2000:]
    assert 'data-loaded="yes"' in dom  # the SVG plot was fetched and decoded
    assert "<script>alert" not in dom  # escaped model output stays text
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
