"""Reading config YAML within bounds: a file's size, its aliases' expansion, its nesting.

Every YAML document steerbench reads (configs, a results folder's resolved config, the
leaderboard's task definitions) comes through ``load_yaml``, so a hostile file costs one
line of error, never minutes or gigabytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from steerbench.errors import SteerbenchError


def configs_root() -> Path:
    """The shipped ``configs/`` folder (in an installed wheel or the source tree)."""
    package = Path(__file__).resolve().parents[1]  # steerbench/
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "default.yaml").is_file():
            return candidate
    raise SteerbenchError("steerbench's configs folder is missing; reinstall steerbench")


def default_tasks_document() -> dict:
    """The tasks of the shipped default config: what a config without ``tasks`` gets."""
    raw = yaml.safe_load((configs_root() / "default.yaml").read_text(encoding="utf-8"))
    return raw["tasks"]


MAX_YAML_BYTES = 1_000_000
MAX_YAML_NODES = 100_000
"""Bounds on a YAML document steerbench reads: a config is a few kilobytes, and an alias
bomb (aliases of aliases, "billion laughs") would otherwise expand into billions of
values in everything that walks the config."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` stands for with every alias expanded (memoised on the
    shared nodes, so counting costs what the document's text does), stopping past
    ``limit``."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            children = []
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = list(node.value)
        if not children_done:
            stack.append((node, True))
            stack += [(child, False) for child in children if id(child) not in sizes]
            continue
        sizes[id(node)] = min(limit + 1, 1 + sum(sizes.get(id(c), 0) for c in children))
    return sizes[id(root)]


def load_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a file within the bounds above, or one line naming the bound or
    the syntax error's line. Aliases are counted on the composed node graph, which shares
    aliased nodes instead of expanding them."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise SteerbenchError(
                f"{path} is {size:,} bytes; a YAML file steerbench reads may have at most "
                f"{MAX_YAML_BYTES:,}"
            )
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None
        if _expanded_size(root, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise SteerbenchError(
                f"{path} expands (through its YAML aliases) to more than {MAX_YAML_NODES:,} "
                f"values; write the values out instead of aliasing aliases"
            )
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SteerbenchError(f"{path} is not valid YAML{where}; fix the syntax") from err
    except RecursionError:
        raise SteerbenchError(f"{path} is nested too deeply to be a config") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SteerbenchError(f"cannot read {path} as UTF-8 text: {err}") from err
