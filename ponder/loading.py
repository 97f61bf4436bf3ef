"""Load a Python object named by reference: ``package.module:attr`` or ``path/to/file.py:attr``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from ponder.config import ConfigurationError, missing_extra


def load_object(ref: str, base_dir: str | Path | None = None) -> Any:
    """The object ``ref`` names. A file path is resolved against ``base_dir`` (default: cwd)."""
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref or not attr:
        raise ConfigurationError(
            f"{ref!r} does not name an object: write module:attr (e.g. myapp.agents:support) "
            "or path/to/file.py:attr"
        )
    if module_ref.endswith(".py"):
        path = Path(base_dir or ".") / module_ref
        if not path.is_file():
            raise ConfigurationError(f"{ref!r}: the file {path} does not exist")
        name = f"_ponder_target_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # Let the file import its neighbours, as `python file.py` would.
        sys.path.insert(0, str(path.parent.resolve()))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent.resolve()))
    else:
        try:
            module = importlib.import_module(module_ref)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(f"{ref!r}: cannot import {module_ref!r} "
                                     f"({missing_extra(exc) or exc})") from None
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigurationError(f"{ref!r}: {module_ref} has no attribute {attr!r}") from None
    return obj
