"""Shared fixtures: real PostgreSQL, a moto S3 server and live Calabi servers."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.servers",
    "tests.fixtures.tracking",
]
