"""scripts/audit.py: a pip-audit report that audited nothing is a skip with its reason, never a
pass; a vulnerability fails the audit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit.py"


def _audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


NOT_FOUND = "Dependency not found on PyPI and could not be audited: aiohttp (3.14.5)"


def test_an_audit_of_nothing_is_skipped_with_the_reason() -> None:
    found = _audit().verdict(
        {"dependencies": [{"name": "aiohttp", "skip_reason": NOT_FOUND}] * 3, "fixes": []}
    )
    assert found.status == "skipped" and found.exit_code == 0
    assert "SKIPPED" in found.lines[0] and NOT_FOUND in found.lines[0]
    assert _audit().verdict({"dependencies": []}).status == "skipped"


def test_a_vulnerability_fails_and_is_named() -> None:
    vuln = {"id": "PYSEC-2024-1", "fix_versions": ["3.9.4"], "description": "..."}
    found = _audit().verdict(
        {"dependencies": [{"name": "aiohttp", "version": "3.9.0", "vulns": [vuln]}]}
    )
    assert found.status == "vulnerable" and found.exit_code == 1
    assert "aiohttp 3.9.0: PYSEC-2024-1 (3.9.4)" in "\n".join(found.lines)


def test_clean_and_partial_audits_say_how_much_was_audited() -> None:
    audit = _audit()
    clean = audit.verdict({"dependencies": [{"name": "redis", "version": "7", "vulns": []}]})
    assert clean.status == "clean" and "1 pinned packages audited" in clean.lines[0]
    partial = audit.verdict(
        {
            "dependencies": [
                {"name": "redis", "version": "7", "vulns": []},
                {"name": "faust-streaming", "skip_reason": NOT_FOUND},
            ]
        }
    )
    assert partial.status == "partial" and "not audited: faust-streaming" in partial.lines[0]
