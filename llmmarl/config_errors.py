"""One clear line for anything wrong with a config file: where it is and what is wrong, never a traceback.

Config loaders raise three kinds of error: ``OSError`` (no such file...), ``yaml.YAMLError`` (not valid YAML;
not a ``ValueError``) and ``ValueError`` (pydantic's ``ValidationError`` included: a key or value is wrong).
:data:`CONFIG_ERRORS` catches all three; :func:`describe_config_error` turns each into
``invalid config FILE: line L, column C: ...`` or ``invalid config FILE: key.path: ...``.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

CONFIG_ERRORS = (OSError, ValueError, yaml.YAMLError)


def describe_config_error(path: str | Path, error: BaseException) -> str:
    """``invalid config PATH: WHERE: WHAT`` on one line."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark  # 0-based
        what = " ".join(str(x) for x in (error.context, error.problem) if x)
        detail = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"
    elif isinstance(error, yaml.YAMLError):
        detail = f"not valid YAML: {error}"
    elif isinstance(error, ValidationError):
        parts = []
        for err in error.errors():
            where = ".".join(str(x) for x in err["loc"]) or "(top level)"
            parts.append(f"{where}: {err['msg']}")
        detail = "; ".join(parts)
    elif isinstance(error, OSError):
        detail = error.strerror or str(error)
    else:
        detail = str(error)
    detail = " ".join(detail.split())  # one line, whatever the library put in its message
    prefix = f"{path}: "
    return f"invalid config {path}: {detail.removeprefix(prefix)}"
