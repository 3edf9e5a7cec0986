"""The README and the pages under docs/ agree with the code: every setting with its default,
every metric, links that lead somewhere, and a first screen that shows what streamproc is."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamproc.config import load_settings, settings_markdown
from streamproc.exporter.names import METRICS, Exposition
from streamproc.metrics import ExporterMetrics, WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
GENERATED = re.compile(
    r"<!-- BEGIN streamproc settings --markdown -->\n(.*?)\n<!-- END streamproc settings "
    r"--markdown -->",
    re.DOTALL,
)


def _names(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def test_the_settings_table_is_what_streamproc_settings_prints() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    found = GENERATED.search(page)
    assert found is not None, "docs/settings.md lost its generated-table markers"
    assert found.group(1) == settings_markdown(), (
        "docs/settings.md is stale: paste the output of `streamproc settings --markdown`"
    )


def test_every_metric_is_documented() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    settings = load_settings(env_file=None)
    worker = CollectorRegistry()
    WorkerMetrics.create(worker, topics=settings.topics_by_family, dlq_reasons=())
    exporter = CollectorRegistry()
    full = Exposition(partitions=1, latest_event_ms=1, watermark_ms=1, window_end_ms=1)
    ExporterMetrics.create(exporter, exposition=lambda: full)
    names = _names(worker) | _names(exporter) | {m.name for m in METRICS.values()}
    assert {"streamproc_consumer_lag_records", "shop_orders"} <= names  # the lists are real
    missing = {
        name
        for name in names
        if not name.startswith(("process_", "python_")) and f"`{name}" not in page
    }
    assert missing == set()


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_links_lead_somewhere(page: Path) -> None:
    text = page.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and anchor not in _anchors(linked.read_text())):
            broken.append(target)
    assert broken == []


def test_the_readme_first_screen() -> None:
    """What it is, one example event, the demo's picture, then the two commands."""
    text = README.read_text()
    order = [
        text.index("Real-time e-commerce KPIs"),
        text.index('"event_type": "session_start"'),
        text.index("](docs/demo.svg)"),
        text.index("scripts/demo "),
        text.index("scripts/test "),
    ]
    assert order == sorted(order)
    assert text[: order[-1]].count("\n") < 40, "the two commands are no longer on the first screen"
    picture = ET.parse(ROOT / "docs" / "demo.svg").getroot()
    shown = "".join(t.text or "" for t in picture.iter("{http://www.w3.org/2000/svg}text"))
    assert "shop KPIs" in shown.replace("\xa0", " ")


def test_every_reference_page_is_linked_from_the_readme() -> None:
    text = README.read_text()
    assert [p.name for p in PAGES if f"](docs/{p.name})" not in text] == []
