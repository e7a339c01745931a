"""Resolve a `"module.path:attr"` string to the object it names (samplers, metrics, datasets, feature spaces,
trainers and user networks are all named this way). A bottom-level module: it imports only the standard library.

`import_target` raises plain exceptions and each caller turns them into its own one-line `BenchError`:
`MalformedTarget` (a ValueError) when the string is not `module:attr`, `ImportError` when the module does not
import, `MissingAttribute` (an AttributeError) when the module lacks the attribute.
"""

from __future__ import annotations

import importlib
from typing import Any


class MalformedTarget(ValueError):
    """The string is not of the form 'module.path:attr'."""


class MissingAttribute(AttributeError):
    """The module imported but has no such attribute (the message is Python's own: module 'm' has no attribute 'a')."""


def split_target(target: str) -> tuple[str, str]:
    """('module.path', 'attr') of 'module.path:attr'; MalformedTarget if either part is empty."""
    module_name, _, attr = str(target).partition(":")
    if not module_name or not attr:
        raise MalformedTarget(f"{target!r} is not 'module.path:attr'")
    return module_name, attr


def import_target(target: str) -> Any:
    """The object named by 'module.path:attr' (attr may be dotted: 'module:Class.factory')."""
    module_name, attr = split_target(target)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MissingAttribute(f"module {module_name!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj
