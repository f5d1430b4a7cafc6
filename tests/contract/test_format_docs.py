"""docs/format/ names what keysplit writes: every audit event, every file of a keyring directory."""

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


def test_the_keyring_directory_table_names_every_file_keysplit_writes() -> None:
    from keysplit.keyring.home import STORE_RECORD_FILE, UNCOUNTED_FILE
    from keysplit.proof import INIT_VERIFY_FILE
    from keysplit.service.tokens import REVOKED_FILE, TOKENS_FILE

    page = (REPO / "docs" / "format" / "keyring.md").read_text()
    table = page.split("## Directory", 1)[1].split("\n## ", 1)[0]
    for name in (
        STORE_RECORD_FILE,
        UNCOUNTED_FILE,
        INIT_VERIFY_FILE,
        TOKENS_FILE,
        REVOKED_FILE,
        "cluster/",
    ):
        assert f"`{name}`" in table, name


def test_the_cluster_directory_table_names_every_file_the_administrator_writes() -> None:
    from keysplit.service.cluster_admin import CREATING_FILE
    from keysplit.service.cluster_config import DEFAULT_STORE, SUCCESSOR_FILE

    page = (REPO / "docs" / "format" / "cluster.md").read_text()
    table = page.split("## The cluster directory", 1)[1].split("\n## ", 1)[0]
    sqlite = DEFAULT_STORE.removeprefix("sqlite:")
    for name in ("cluster.json", sqlite, CREATING_FILE, SUCCESSOR_FILE):
        assert f"`{name}`" in table, name
