"""Safe YAML loading that remembers the line of every key, refuses duplicate keys, huge files and alias bombs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError

MAX_BYTES = 1_000_000
MAX_NODES = 100_000
MAX_ALIASES = 100
MAX_DEPTH = 50  # a suite is a few levels deep; thousands of levels exhaust Python's recursion limit

Path_ = tuple[str | int | float | bool, ...]


class LocatedYAML:
    """Parsed data plus `lines[path] -> 1-based line` for every mapping key and sequence item."""

    def __init__(self, data: Any, lines: dict[Path_, int], file: str) -> None:
        self.data, self.lines, self.file = data, lines, file

    def line_of(self, path: Path_) -> int:
        """Line of the deepest known prefix of `path` (pydantic locations may go deeper than the YAML)."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1


def load_yaml(path: str | Path) -> LocatedYAML:
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"{p}: no such suite file")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise BenchError(f"{p}:1: file is {size} bytes, over the {MAX_BYTES}-byte limit for a suite")
    return parse_yaml(p.read_text(encoding="utf-8", errors="replace"), str(p))


def parse_yaml(text: str, file: str = "<string>") -> LocatedYAML:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise BenchError(f"{file}:1: the YAML nests too deeply (a suite is a few levels deep; over "
                         f"{MAX_DEPTH} is refused)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BenchError(f"{file}:{line}: invalid YAML: {problem}") from None
    if node is None:
        raise BenchError(f"{file}:1: the suite is empty")
    lines: dict[Path_, int] = {(): node.start_mark.line + 1}
    budget = {"nodes": 0, "aliases": 0}
    seen_ids: set[int] = set()
    data = _build(node, (), lines, file, budget, seen_ids)
    return LocatedYAML(data, lines, file)


_SCALAR = yaml.constructor.SafeConstructor()


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], file: str, budget: dict[str, int],
           seen: set[int]) -> Any:
    budget["nodes"] += 1
    if len(path) > MAX_DEPTH:
        raise BenchError(f"{file}:{node.start_mark.line + 1}: {_dotted(path[:3])}...: nested over {MAX_DEPTH} "
                         "levels deep (a suite is a few levels deep)")
    if budget["nodes"] > MAX_NODES:
        raise BenchError(f"{file}:{node.start_mark.line + 1}: suite expands to over {MAX_NODES} nodes "
                         "(alias bomb?)")
    if id(node) in seen:  # the same node object reached again means an alias
        budget["aliases"] += 1
        if budget["aliases"] > MAX_ALIASES:
            raise BenchError(f"{file}:{node.start_mark.line + 1}: more than {MAX_ALIASES} alias expansions "
                             "(alias bomb?)")
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        seen.add(id(node))
        if node.tag not in ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
            raise BenchError(f"{file}:{node.start_mark.line + 1}: {_dotted(path)}: tag {node.tag!r} is not allowed "
                             "(no constructor for it in safe loading)")
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise BenchError(f"{file}:{key_node.start_mark.line + 1}: merge keys (<<) are not supported")
            key = _build(key_node, path, lines, file, budget, seen)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise BenchError(f"{file}:{key_node.start_mark.line + 1}: mapping keys must be plain scalars")
            sub = (*path, key)
            if key in out:
                raise BenchError(f"{file}:{key_node.start_mark.line + 1}: {_dotted(sub)}: duplicate key")
            lines[sub] = key_node.start_mark.line + 1
            out[key] = _build(value_node, sub, lines, file, budget, seen)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            sub = (*path, i)
            lines[sub] = item.start_mark.line + 1
            items.append(_build(item, sub, lines, file, budget, seen))
        return items
    try:
        return _SCALAR.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BenchError(f"{file}:{node.start_mark.line + 1}: {_dotted(path)}: {problem}") from None
    except Exception as e:  # PyYAML's constructors on a value its explicit tag cannot hold
        # (`!!int x1`, `!!bool ` with nothing, `!!timestamp 2020-13-45`) raise ValueError, KeyError, IndexError...
        kind = str(node.tag).rsplit(":", 1)[-1]
        why = str(e) if isinstance(e, ValueError) and str(e) else type(e).__name__
        raise BenchError(f"{file}:{node.start_mark.line + 1}: {_dotted(path)}: {node.value!r} is not a valid {kind} "
                         f"({why})") from None


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


dotted = _dotted
