"""Settings refuse unknown ``CALABI_*`` variables, and ``settings_environment`` rebuilds them in a child."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from calabi.processes import child_environment
from calabi.settings import Settings, settings_environment


@pytest.fixture(autouse=True)
def _no_calabi_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("CALABI_"):
            monkeypatch.delenv(key)


def test_unknown_calabi_variables_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALABI_DATABSE_URL", "sqlite:///typo.db")
    monkeypatch.setenv("calabi_colour", "blue")

    with pytest.raises(ValidationError) as refused:
        Settings()

    message = str(refused.value)
    assert "CALABI_DATABSE_URL" in message and "calabi_colour" in message and "CALABI_DATABASE_URL" in message


def test_every_field_is_a_known_variable_including_the_cli_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALABI_URL", "http://registry:8080")
    monkeypatch.setenv("CALABI_TOKEN", "t" * 24)
    monkeypatch.setenv("calabi_data_dir", "/srv/calabi")
    monkeypatch.setenv("OTHER_VARIABLE", "ignored")

    settings = Settings()

    assert (settings.url, settings.data_dir) == ("http://registry:8080", Path("/srv/calabi"))


def test_the_child_environment_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        data_dir=Path("/srv/calabi"), database_url="postgresql+psycopg://db/calabi",
        local_source_roots=[Path("/models"), Path("/shared/models")], protected_aliases=["champion", "gold"],
        temporal_tls=True, temporal_api_key=SecretStr("key"), webhook_urls=["http://hooks/a", "http://hooks/b"],
    )
    monkeypatch.setenv("CALABI_ADMIN_TOKEN", "a" * 24)  # the parent's own: not passed on unless in ``settings``

    env = child_environment(settings)

    assert "CALABI_ADMIN_TOKEN" not in env and env["PATH"]
    assert settings_environment(settings) == {k: v for k, v in env.items() if k.startswith("CALABI_")}
    monkeypatch.delenv("CALABI_ADMIN_TOKEN")
    for key, value in settings_environment(settings).items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings
