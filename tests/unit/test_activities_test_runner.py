"""Pure helpers of the test runner: pytest-style counts and the command's environment."""

from __future__ import annotations

import pytest

from activities.test_runner import command_environment, parse_counts


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


def test_registry_settings_and_credentials_are_scrubbed() -> None:
    environ = {"PATH": "/usr/bin", "HOME": "/home/w", "CALABI_DATABASE_URL": "postgresql://x", "calabi_token": "t",
               "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1", "MLFLOW_TRACKING_TOKEN": "m",
               "AWS_SECURITY_TOKEN": "legacy", "AWS_SHARED_CREDENTIALS_FILE": "/root/.aws/credentials"}

    assert command_environment(environ) == {"PATH": "/usr/bin", "HOME": "/home/w", "AWS_REGION": "eu-west-1"}
