"""docs/format/audit.md lists every event name keysplit writes (keysplit.audit.events)."""

from __future__ import annotations

from paths import REPO

from keysplit.audit.events import SCHEMAS


def test_every_event_is_listed_in_the_format() -> None:
    page = (REPO / "docs" / "format" / "audit.md").read_text()
    missing = [name for name in sorted(SCHEMAS) if f"`{name}`" not in page]
    assert not missing, f"docs/format/audit.md does not list: {missing}"


def test_the_readme_names_every_event_outside_the_cluster() -> None:
    readme = (REPO / "README.md").read_text()
    assert "`cluster-*`" in readme
    missing = [
        n for n in sorted(SCHEMAS) if not n.startswith("cluster-") and f"`{n}`" not in readme
    ]
    assert not missing, f"README.md's audit section does not name: {missing}"
