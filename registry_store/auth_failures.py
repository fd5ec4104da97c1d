"""Failed token attempts per client address, counted in the database so every replica shares them.

Time is cut into fixed windows; an address that failed ``limit`` times in the current window is
refused (429, ``Retry-After``) until the window ends, valid token or not, so guessing gains nothing.
One row per address and window; each new failure deletes the rows of past windows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from registry_store.db import Database
from registry_store.errors import RateLimitedError
from registry_store.tables import AuthFailureRow

__all__ = ["FAILURES", "FailureLimit"]

_MAX_ADDRESS_CHARS = 64
FAILURES = (
    select(col(AuthFailureRow.failures))
    .where(col(AuthFailureRow.address) == bindparam("address"), col(AuthFailureRow.window_start) == bindparam("window"))
    .scalar_subquery()
)
"""The failures of ``:address`` in the window starting at ``:window`` (NULL when none): built once."""


@dataclass(frozen=True)
class FailureLimit:
    """At most ``limit`` failed attempts per address in each window of ``window_ms``."""

    db: Database
    limit: int = 30
    window_ms: int = 60_000

    def window(self, now: int) -> int:
        """The start of the window holding ``now``."""
        return now - now % self.window_ms

    def params(self, address: str, now: int) -> dict[str, str | int]:
        """The parameters of ``FAILURES`` for ``address`` now."""
        return {"address": address[:_MAX_ADDRESS_CHARS], "window": self.window(now)}

    def check(self, failures: int | None, now: int) -> None:
        """Raise ``RateLimitedError`` when ``failures`` (this window's count) reached the limit."""
        if failures is not None and failures >= self.limit:
            retry_after_ms = self.window(now) + self.window_ms - now
            raise RateLimitedError(
                "Too many failed authentication attempts from this address; try again later.",
                retry_after_s=-(-retry_after_ms // 1000),
            )

    def current(self, address: str, now: int) -> int | None:
        """This window's failures of ``address``."""
        with self.db.read_connection() as connection:
            failures: int | None = connection.execute(select(FAILURES), self.params(address, now)).scalar()
        return failures

    def record(self, address: str, now: int) -> None:
        """Count one failure of ``address`` and purge past windows, in one transaction."""
        window = self.window(now)
        insert = postgresql.insert if self.db.is_postgres else sqlite.insert
        statement = insert(AuthFailureRow).values(address=address[:_MAX_ADDRESS_CHARS], window_start=window, failures=1)
        statement = statement.on_conflict_do_update(
            index_elements=["address", "window_start"], set_={"failures": col(AuthFailureRow.failures) + 1}
        )
        with self.db.write_connection() as connection:
            connection.execute(delete(AuthFailureRow).where(col(AuthFailureRow.window_start) < window))
            connection.execute(statement)
