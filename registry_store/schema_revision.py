"""Where a database's schema stands against this code's Alembic migrations (``registry_store/migrations``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

__all__ = ["MIGRATIONS", "SchemaRevision", "schema_revision"]

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class SchemaRevision:
    """A database's Alembic revision (None: never migrated) and this code's head."""

    current: str | None
    head: str
    known: bool
    """Whether ``current`` is one of this code's revisions (an unmigrated database counts as known)."""

    @property
    def is_current(self) -> bool:
        """The database is at this code's head."""
        return self.current == self.head

    @property
    def newer_than_code(self) -> bool:
        """A newer Calabi migrated the database: this code must not serve it (nor downgrade it)."""
        return not self.known

    def too_new_message(self) -> str:
        """The one line ``calabi serve``/``worker`` print when refusing a newer schema."""
        return (f"the database is at schema revision {self.current}, newer than this Calabi (head {self.head}); "
                "upgrade Calabi")


@cache
def _revisions() -> tuple[str, frozenset[str]]:
    """This code's head revision and every revision its scripts know (read once: they ship with the code)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    if head is None:
        raise RuntimeError("the migration scripts have no single head")
    return head, frozenset(script.revision for script in scripts.walk_revisions())


def schema_revision(current: str | None) -> SchemaRevision:
    """Compare a database's revision with this code's migrations."""
    head, known = _revisions()
    return SchemaRevision(current=current, head=head, known=current is None or current in known)
