"""The project README's headline tables: the first board's task rankings, written between
the README's leaderboard markers so they are regenerated with the leaderboard and never
edited by hand. Everything outside the markers is left byte for byte as it was."""

from __future__ import annotations

from pathlib import Path

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_text
from steerbench.publish.markdown import md_cell
from steerbench.publish.tables import ranking_rows
from steerbench.publish.verdicts import Standings

README_START, README_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def headline(standings: Standings) -> list[str]:
    """The lines for the README: per task, the first board's ranking under its name and
    power statement."""
    model = standings.models[0]
    lines: list[str] = []
    for verdict in standings.rankings_of(model):
        lines += [f"**{md_cell(verdict.task.name)}** ({md_cell(model)}):", ""]
        lines += [md_cell(verdict.power), ""] if verdict.power else []
        lines += [*ranking_rows(verdict, standings.columns), ""]
    return lines[:-1]


def update_readme(
    readme: Path, section: list[str], markers: tuple[str, str] = (README_START, README_END)
) -> None:
    """Replace what lies between the leaderboard markers (or other ``markers``) of a project
    README with ``section`` (generated tables, never edited by hand), atomically. Only the
    first start marker and the first end marker after it count."""
    first, last = markers
    text = readme.read_text(encoding="utf-8")
    head, start, rest = text.partition(first)
    _, end, tail = rest.partition(last)
    if not start or not end:  # missing, or the end marker only before the start
        raise SteerbenchError(
            f"{readme} has no {first} ... {last} markers; add them where the tables should go"
        )
    atomic_write_text(readme, head + first + "\n" + "\n".join(section) + "\n" + last + tail)
