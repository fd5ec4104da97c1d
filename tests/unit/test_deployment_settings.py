"""Settings an operator needs at scale: the database pool per process, TLS and mTLS to a Temporal cluster."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.service import TLSConfig

from calabi.bootstrap import build_services, temporal_tls
from calabi.settings import Settings, setting_variables


def test_the_pool_size_setting_sizes_each_process_pool(tmp_path: Path) -> None:
    services = build_services(Settings(data_dir=tmp_path, database_pool_size=3))
    try:
        assert services.db.engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        services.close()


def test_temporal_tls_is_off_on_or_configured_from_pem_files(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_bytes(f"PEM of {path.name}".encode())

    assert temporal_tls(Settings()) is False
    assert temporal_tls(Settings(temporal_tls=True)) is True
    assert temporal_tls(Settings(temporal_tls_ca_file=ca)) == TLSConfig(server_root_ca_cert=b"PEM of ca.pem")
    assert temporal_tls(Settings(temporal_tls_cert_file=cert, temporal_tls_key_file=key)) == TLSConfig(
        client_cert=b"PEM of client.pem", client_private_key=b"PEM of client.key")
    with pytest.raises(ValidationError, match="set together"):
        Settings(temporal_tls_cert_file=cert)
    with pytest.raises(ValidationError, match="temporal_tls_ca_file"):
        Settings(temporal_tls_ca_file=tmp_path / "missing.pem")


def test_every_setting_the_deployment_guide_names_exists() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    named = set(re.findall(r"CALABI_[A-Z0-9_]*[A-Z0-9]", guide))
    assert len(named) > 20 and named <= setting_variables(), named - setting_variables()
