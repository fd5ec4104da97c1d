"""Calabi settings: one pydantic-settings class, environment prefix ``CALABI_``.

Built once at start-up by the entry points (``calabi serve``, the worker, the CLI),
never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from policies.role_map import parse_role_map

__all__ = [
    "DEFAULT_DATA_DIR", "ENV_PREFIX", "Settings", "setting_variables", "settings_environment", "unknown_variables",
]

DEFAULT_DATA_DIR = Path("calabi-data")
ENV_PREFIX = "CALABI_"


class Settings(BaseSettings):
    """Everything an entry point needs to build the services."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True)

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in the data dir"
    )
    database_pool_size: int = Field(
        default=16, ge=1, le=1000,
        description="Connections each process keeps pooled (as many more may open under load): "
                    "PostgreSQL sees up to 2 x this per API worker process, serve's main process and worker",
    )
    artifact_root: str | None = Field(
        default=None, description="Local directory or s3://bucket/prefix; default: <data_dir>/artifacts"
    )
    s3_endpoint_url: str | None = None
    local_source_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    admin_token: SecretStr | None = None
    protected_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["champion"])
    mlflow_tracking_url: str | None = Field(
        default=None,
        description="MLflow tracking server behind /mlflow; unset: `calabi serve` starts one (--no-tracking: none)",
    )
    mlflow_tracking_token: SecretStr | None = Field(
        default=None, description="Bearer token Calabi presents to the tracking server (when it requires one)"
    )
    temporal_address: str | None = Field(
        default=None, description="host:port of a Temporal frontend; unset: `calabi serve` starts the dev server"
    )
    temporal_namespace: str = "default"
    temporal_task_queue: str = "calabi-promotions"
    heavy_activity_slots: int = Field(
        default=2, ge=1, le=64,
        description="How many heavy activities (model loads, test commands) one worker runs at once; "
                    "more wait in the <task queue>-heavy queue",
    )
    loader_pool_size: int = Field(
        default=2, ge=0, le=64,
        description="Warm sandboxed model loaders a worker keeps started (0: a cold one per load)",
    )
    temporal_tls: bool = False
    temporal_api_key: SecretStr | None = None
    temporal_tls_ca_file: FilePath | None = Field(
        default=None, description="PEM CA that signed the Temporal frontend's certificate (default: system roots)"
    )
    temporal_tls_cert_file: FilePath | None = Field(default=None, description="PEM client certificate (mTLS)")
    temporal_tls_key_file: FilePath | None = Field(default=None, description="PEM private key of that certificate")
    reconcile_every_s: float = Field(
        default=30.0, gt=0, description="How often the worker looks for live promotions without a running workflow"
    )
    reconcile_grace_s: float = Field(
        default=30.0, ge=0, description="A promotion younger than this is left to the request that is starting it"
    )
    policy_dir: Path | None = Field(
        default=None, description="Directory with default.toml and models/<name>.toml; default: the packaged policy"
    )
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Receivers of every promotion and review notification (comma-separated): each is kept as a "
                    "webhook subscription owned by 'system' (payload_format calabi) at start-up",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Signs the deliveries to CALABI_WEBHOOK_URLS (X-Calabi-Signature)"
    )
    notify_recipients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    public_url: str = Field(default="", description="The address users reach Calabi at, for links in webhook events "
                                                    "(default: CALABI_URL)")
    webhook_allow_private: bool = Field(
        default=False, description="Let webhooks reach private, loopback and link-local addresses (tests, labs)"
    )
    webhook_dispatch_interval_s: float = Field(
        default=1.0, gt=0, description="How often serve looks for due webhook deliveries"
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="One webhook request's timeout")
    webhook_lease_s: float = Field(
        default=60.0, gt=0, description="How long a dispatcher owns a delivery it claimed (a dead one's expires)"
    )
    webhook_retry_base_s: float = Field(default=2.0, gt=0, description="First retry delay; doubles per attempt")
    webhook_retry_cap_s: float = Field(default=300.0, gt=0, description="Longest retry delay")
    webhook_max_attempts: int = Field(default=12, ge=1, description="Attempts before a delivery is dead")
    webhook_pause_after: int = Field(
        default=10, ge=1, description="Failed attempts in a row (over webhook_pause_period_s) that pause a webhook"
    )
    webhook_pause_period_s: float = Field(default=600.0, ge=0, description="See webhook_pause_after")
    webhook_retention_days: float = Field(
        default=30.0, gt=0, description="Delivered webhook deliveries (and their events) older than this are pruned; "
                                        "undelivered ones are kept"
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Reverse proxies (comma-separated IPs) whose X-Forwarded-For/-Proto are trusted; default: none",
    )
    orphan_min_age_s: float = Field(
        default=600.0, ge=0,
        description="Staging dirs and unrecorded artifact trees untouched this long are left by killed registrations",
    )
    orphan_sweep_interval_s: float = Field(
        default=600.0, gt=0, description="How often `calabi serve` sweeps them (also once at start-up)"
    )
    metrics_public: bool = Field(
        default=False, description="/metrics answers without a token (an internal scrape port); else an admin's token"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per log line (serve and worker; also --log-format)"
    )
    worker_metrics_port: int | None = Field(
        default=None, ge=1, le=65534,
        description="The worker's Temporal SDK metrics on this port and Calabi's worker metrics on the next one "
                    "(Prometheus; also `calabi worker --metrics-port`); unset: none",
    )
    worker_metrics_host: str = Field(default="127.0.0.1", description="Interface of the worker's metrics ports")
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL (discovery at <issuer>/.well-known/openid-configuration); "
                    "unset: the pages sign in with an API token only",
    )
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_provider_name: str | None = Field(
        default=None, description="Shown as 'Sign in with <name>'; default: the issuer's host"
    )
    oidc_groups_claim: str = Field(default="groups", description="The ID token claim that lists the person's groups")
    oidc_role_map: str = Field(
        default="",
        description="group=role,… (e.g. churn-leads=approver,ml-eng=engineer,platform=admin); "
                    "a person in no mapped group is refused",
    )
    url: str = "http://127.0.0.1:8080"
    token: SecretStr | None = None

    @field_validator("local_source_roots", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(p) for p in value.split(":") if p.strip()]
        return value

    @field_validator("protected_aliases", "webhook_urls", "notify_recipients", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("oidc_role_map")
    @classmethod
    def _check_role_map(cls, value: str) -> str:
        parse_role_map(value)
        return value

    @model_validator(mode="after")
    def _oidc_needs_a_client(self) -> Settings:
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("CALABI_OIDC_ISSUER is set without CALABI_OIDC_CLIENT_ID")
        return self

    @property
    def oidc_enabled(self) -> bool:
        """Whether the pages offer OpenID Connect sign-in."""
        return bool(self.oidc_issuer and self.oidc_client_id)

    @model_validator(mode="after")
    def _client_certificate_with_its_key(self) -> Settings:
        if (self.temporal_tls_cert_file is None) != (self.temporal_tls_key_file is None):
            raise ValueError("CALABI_TEMPORAL_TLS_CERT_FILE and CALABI_TEMPORAL_TLS_KEY_FILE are set together")
        return self

    @model_validator(mode="after")
    def _refuse_unknown_variables(self) -> Settings:
        unknown = unknown_variables(os.environ)
        if unknown:
            known = ", ".join(sorted(setting_variables()))
            raise ValueError(f"unknown setting(s) {', '.join(unknown)} in the environment (known: {known})")
        return self

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``<data_dir>/calabi.db``."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'calabi.db').resolve()}"

    def resolved_policy_dir(self) -> Path:
        """The policy directory, defaulting to the policy shipped in the ``policies`` package."""
        if self.policy_dir is not None:
            return self.policy_dir
        import policies

        return Path(policies.__file__).parent

    def resolved_temporal_address(self) -> str:
        """Where the worker and the API find Temporal (the embedded dev server by default)."""
        return self.temporal_address or "127.0.0.1:7233"

    def resolved_artifact_root(self) -> str:
        """The artifact root, defaulting to ``<data_dir>/artifacts``."""
        return self.artifact_root or str((self.data_dir / "artifacts").resolve())


def setting_variables() -> set[str]:
    """The environment variable of every setting (upper case)."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``CALABI_*`` names in ``environ`` that name no setting (compared case-insensitively), sorted."""
    known = setting_variables()
    return sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``CALABI_*`` variables that rebuild ``settings`` in a child process (unset values are left out)."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = (":" if name == "local_source_roots" else ",").join(str(v) for v in value)
        env[ENV_PREFIX + name.upper()] = str(value)
    return env
