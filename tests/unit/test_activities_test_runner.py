"""Pure helpers of the test runner: pytest-style counts."""

from __future__ import annotations

import pytest

from activities.test_runner import parse_counts


@pytest.mark.parametrize(
    ("output", "counts"),
    [
        ("", (0, 0)),
        ("all good\n", (0, 0)),
        ("3 passed", (3, 0)),
        ("==== 12 passed, 2 failed in 3.1s ====\n", (12, 2)),
        ("==== 1 failed, 1 passed, 2 errors in 0.4s ====", (1, 3)),
        ("=== 1 error in 0.1s ===", (0, 1)),
        ("=== 5 passed, 1 xfailed, 2 xpassed, 1 skipped in 1s ===", (5, 0)),
        ("log: 9 failed to connect\n==== 4 passed in 0.2s ====\ntrailing noise\n", (4, 0)),
        ("13 passed\n", (13, 0)),
    ],
)
def test_counts_come_from_the_last_summary_line(output: str, counts: tuple[int, int]) -> None:
    assert parse_counts(output) == counts

