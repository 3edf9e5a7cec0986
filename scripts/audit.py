"""Dependency audit: the installed, pinned set of .venv against PyPI's vulnerability data.

    .venv/bin/python scripts/audit.py          (scripts/test runs it before the tests)

pip-audit runs from a venv of its own (``.venv-audit``, so its dependencies are not audited as
ours) over ``pip freeze`` of ``.venv``. pip-audit prints "No known vulnerabilities found" even
when it could audit nothing (its vulnerability service unreachable, or a PyPI mirror without
vulnerability data answering "not found" for every package): here such an audit says that it was
skipped, and why. Exit status: 0 clean, or skipped with the reason printed; 1 a known
vulnerability in a pinned package.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / ".venv-audit"
PIP_AUDIT = "pip-audit>=2.7,<3"


@dataclass(frozen=True)
class Verdict:
    status: str  # "clean", "partial", "skipped" or "vulnerable"
    lines: list[str]

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "vulnerable" else 0


def verdict(report: dict[str, Any]) -> Verdict:
    """What a pip-audit JSON report (``-f json``) says, never "clean" for an audit of nothing."""
    deps = list(report.get("dependencies", []))
    skipped = [d for d in deps if d.get("skip_reason")]
    vulnerable = [d for d in deps if d.get("vulns")]
    if vulnerable:
        lines = [f"{len(vulnerable)} pinned package(s) with known vulnerabilities:"]
        for dep in vulnerable:
            for vuln in dep["vulns"]:
                fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
                lines.append(f"  {dep['name']} {dep.get('version', '?')}: {vuln['id']} ({fixed})")
        return Verdict("vulnerable", lines)
    if not deps or len(skipped) == len(deps):
        reason = skipped[0]["skip_reason"] if skipped else "pip-audit listed no package"
        return Verdict(
            "skipped",
            [
                f"SKIPPED: none of the {len(deps)} pinned packages could be audited; the "
                "vulnerability service is not reachable from here (or answers from a mirror "
                f"without vulnerability data). pip-audit said, e.g.: {reason}"
            ],
        )
    audited = len(deps) - len(skipped)
    if skipped:
        names = ", ".join(d["name"] for d in skipped[:10])
        return Verdict(
            "partial",
            [
                f"{audited} of {len(deps)} packages audited, no known vulnerability; not audited: "
                f"{names}{' ...' if len(skipped) > 10 else ''}"
            ],
        )
    return Verdict("clean", [f"{audited} pinned packages audited: no known vulnerability"])


def _tool() -> Path | str:
    """pip-audit in its own venv; a string (the reason) when it cannot be installed."""
    binary = TOOL / "bin" / "pip-audit"
    if binary.exists():
        return binary
    venv.create(TOOL, with_pip=True)
    installed = subprocess.run(
        [
            str(TOOL / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PIP_AUDIT,
        ],
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        return f"pip-audit could not be installed: {installed.stderr.strip()[-500:]}"
    return binary


def main() -> int:
    tool = _tool()
    if isinstance(tool, str):
        print(f"SKIPPED: {tool}")
        return 0
    frozen = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "freeze",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requirements = ROOT / ".venv-audit" / "requirements.txt"
    requirements.write_text(frozen)
    ran = subprocess.run(
        [str(tool), "-r", str(requirements), "-f", "json", "--progress-spinner", "off"],
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(ran.stdout)
    except json.JSONDecodeError:
        last = (ran.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"SKIPPED: pip-audit could not reach its vulnerability service: {last[:500]}")
        return 0
    found = verdict(report)
    print("\n".join(found.lines))
    return found.exit_code


if __name__ == "__main__":
    sys.exit(main())
