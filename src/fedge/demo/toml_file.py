"""Write the role configs a local federation starts its processes with, as TOML files.

Only what those configs hold: strings, booleans, numbers and one level of inline tables, under
top-level keys and ``[section]`` tables. Strings are escaped, so paths with quotes or
backslashes survive; :mod:`tomllib` reads the result back unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["toml_value", "write_toml"]


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (a dict as an inline table, anything else as a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, top: dict[str, Any], sections: dict[str, dict[str, Any]]) -> Path:
    """Write ``top`` keys, then each of ``sections`` as a ``[name]`` table, to ``path``."""
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in values.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
