"""The public API of fedge.identity, and its hazmat boundary."""

from __future__ import annotations

import re
from pathlib import Path

from fedge import identity

HAZMAT_MODULES = {"_x509.py", "signing.py"}
SUBMODULES = {
    "authz", "binding", "certificates", "cli", "inventory", "pki", "revocation", "signing", "tls",
}  # fmt: skip
_HAZMAT_IMPORT = re.compile(r"^\s*(from|import)\s+cryptography\.hazmat", re.MULTILINE)


def test_all_is_exact_and_importable() -> None:
    assert sorted(identity.__all__) == identity.__all__
    for name in identity.__all__:
        assert getattr(identity, name) is not None
    public = {n for n in vars(identity) if not n.startswith("_")}
    assert public - SUBMODULES - {"annotations"} == set(identity.__all__)


def test_only_two_modules_import_hazmat() -> None:
    package = Path(identity.__file__).parent
    importing = {p.name for p in package.glob("*.py") if _HAZMAT_IMPORT.search(p.read_text())}
    assert importing == HAZMAT_MODULES
