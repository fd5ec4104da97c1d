"""S3 helpers shared by the artifact store and the source fetcher: client, URIs, error kinds."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from registry_store.errors import InvalidParameterError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["ErrorKind", "classify_error", "make_s3_client", "parse_s3_uri"]

ErrorKind = Literal[
    "unreachable", "no_credentials", "bad_request", "no_bucket", "denied", "not_found", "server", "other"
]

_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidToken",
    }
)
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})


def make_s3_client(endpoint_url: str | None = None, *, max_attempts: int = 3) -> S3Client:
    """A boto3 S3 client; path-style addressing when a custom (S3-compatible) endpoint is given."""
    config = Config(
        connect_timeout=10,
        read_timeout=60,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key (the key may be empty)."""
    if not uri.startswith("s3://"):
        raise InvalidParameterError(f"Not an S3 URI: '{uri}'")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise InvalidParameterError(f"Invalid S3 bucket name in '{uri}'")
    if "\x00" in key:
        raise InvalidParameterError(f"Invalid S3 key in '{uri}'")
    return bucket, key


def classify_error(exc: Exception) -> ErrorKind:
    """Sort a boto3/botocore exception into the kinds the callers map to domain errors."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return "unreachable"
    if isinstance(exc, NoCredentialsError):
        return "no_credentials"
    if isinstance(exc, ParamValidationError):
        return "bad_request"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code == "NoSuchBucket":
            return "no_bucket"
        if code in _DENIED or status == 403:
            return "denied"
        if code in _NOT_FOUND or status == 404:
            return "not_found"
        if status >= 500:
            return "server"
    return "other"
