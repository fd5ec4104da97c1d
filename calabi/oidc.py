"""OpenID Connect for the web pages: discovery, the authorization URL (code flow with PKCE S256, state, nonce),
the code exchange (grant URI and S256 challenge by Authlib's OAuth 2 primitives, the POST by httpx: Authlib's
httpx client is deprecated in favour of httpx2) and the ID token's verification against the provider's JWKS (joserfc).

The provider's metadata and keys are cached per process for ``METADATA_TTL_S``; an ID token signed with a key id
the cache does not know fetches the keys once more (the provider rotated them). Every call to the provider is
bounded by ``TIMEOUT_S``. What the provider answers wrongly is an ``OidcError``, never a crash.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError, MissingKeyError
from joserfc.jwk import KeySet

from calabi.settings import Settings

__all__ = ["OidcClient", "OidcError", "ProviderMetadata"]

TIMEOUT_S = 10.0
METADATA_TTL_S = 3600.0
LEEWAY_S = 60
SCOPE = "openid profile email"
_NEVER_ALGORITHMS = {"none"}
_SYMMETRIC_PREFIX = "HS"


class OidcError(Exception):
    """The sign-in cannot go on: the provider refused, answered wrongly or is unreachable (``unavailable``)."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unavailable = unavailable


@dataclass(frozen=True)
class ProviderMetadata:
    """What discovery says about the provider (only what the sign-in uses)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    algorithms: tuple[str, ...]
    token_auth_methods: tuple[str, ...]


class OidcClient:
    """One provider's client, built from the settings; safe to share between requests."""

    def __init__(self, settings: Settings) -> None:
        assert settings.oidc_issuer and settings.oidc_client_id
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self._secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
        self.provider_name = settings.oidc_provider_name or urlsplit(self.issuer).netloc or self.issuer
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- discovery and keys

    async def metadata(self) -> ProviderMetadata:
        """The provider's metadata from ``<issuer>/.well-known/openid-configuration`` (cached)."""
        cached = self._metadata
        if cached is not None and time.monotonic() - cached[0] < METADATA_TTL_S:
            return cached[1]
        async with self._lock:
            document = await self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            found = _metadata(document, self.issuer)
            self._metadata, self._keys = (time.monotonic(), found), None
        return found

    async def _key_set(self, metadata: ProviderMetadata, *, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            document = await self._get_json(metadata.jwks_uri)
            try:
                self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                raise OidcError(f"The identity provider's keys (JWKS) could not be read: {exc}") from exc
        return self._keys

    async def _get_json(self, url: str, token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
                response = await http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise OidcError(f"The identity provider could not be reached ({url}): {exc}", unavailable=True) from exc
        if response.status_code != 200:
            raise OidcError(f"The identity provider answered {response.status_code} at {url}.", unavailable=True)
        try:
            document = response.json()
        except ValueError as exc:
            raise OidcError(f"The identity provider answered something other than JSON at {url}.") from exc
        if not isinstance(document, dict):
            raise OidcError(f"The identity provider answered something other than a JSON object at {url}.")
        return document

    # ---------------------------------------------------------------- the flow

    async def authorization_url(self, redirect_uri: str, *, state: str, nonce: str, verifier: str) -> str:
        """Where to send the browser: the provider's authorization endpoint with PKCE (S256), state and nonce."""
        metadata = await self.metadata()
        return str(prepare_grant_uri(
            metadata.authorization_endpoint, self.client_id, "code", redirect_uri=redirect_uri, scope=SCOPE,
            state=state, nonce=nonce, code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        ))

    async def sign_in_claims(self, *, code: str, redirect_uri: str, verifier: str, nonce: str,
                             groups_claim: str) -> dict[str, Any]:
        """Exchange the code and answer the verified ID token's claims (the groups claim from userinfo when the
        ID token has none and the provider offers userinfo)."""
        metadata = await self.metadata()
        token = await self._exchange(metadata, code=code, redirect_uri=redirect_uri, verifier=verifier)
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("The identity provider sent no ID token.")
        claims = await self.verify_id_token(id_token, nonce=nonce)
        access_token = token.get("access_token")
        if groups_claim not in claims and metadata.userinfo_endpoint and isinstance(access_token, str):
            info = await self._get_json(metadata.userinfo_endpoint, access_token)
            if info.get("sub") == claims["sub"] and groups_claim in info:
                claims[groups_claim] = info[groups_claim]
        return claims

    async def _exchange(self, metadata: ProviderMetadata, *, code: str, redirect_uri: str,
                        verifier: str) -> dict[str, Any]:
        """The token endpoint's answer to the code (RFC 6749 4.1.3 with the PKCE verifier, RFC 7636 4.5)."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier, "client_id": self.client_id}
        headers = {"Accept": "application/json"}
        if self._secret is not None:
            if "client_secret_basic" in metadata.token_auth_methods or \
                    "client_secret_post" not in metadata.token_auth_methods:
                pair = f"{quote(self.client_id, safe='')}:{quote(self._secret, safe='')}"  # RFC 6749 2.3.1
                headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            else:
                form["client_secret"] = self._secret
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
                response = await http.post(metadata.token_endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise OidcError(f"The identity provider could not be reached: {exc}", unavailable=True) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise OidcError(f"The identity provider's token endpoint answered {response.status_code} without JSON.",
                            unavailable=response.status_code >= 500)
        if response.status_code != 200 or "error" in answer:
            reason = answer.get("error_description") or answer.get("error") or response.status_code
            raise OidcError(f"The identity provider refused the sign-in code: {str(reason)[:300]}")
        return answer

    async def verify_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        """The ID token's claims once its signature (the provider's JWKS, an asymmetric algorithm the provider
        announces), issuer, audience (and authorized party), expiry, issue time and nonce check out."""
        metadata = await self.metadata()
        try:
            decoded = await self._decode(metadata, id_token)
            registry = jwt.JWTClaimsRegistry(
                leeway=LEEWAY_S, iss={"essential": True, "value": self.issuer}, sub={"essential": True},
                aud={"essential": True, "value": self.client_id}, exp={"essential": True},
                iat={"essential": True}, nonce={"essential": True, "value": nonce},
            )
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise OidcError(f"The ID token was refused: {exc}") from exc
        except ValueError as exc:  # not a JWT at all
            raise OidcError(f"The ID token could not be read: {exc}") from exc
        claims = dict(decoded.claims)
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise OidcError("The ID token was refused: it names several audiences and another authorized party.")
        return claims

    async def _decode(self, metadata: ProviderMetadata, id_token: str) -> jwt.Token:
        keys = await self._key_set(metadata)
        try:
            return jwt.decode(id_token, keys, algorithms=list(metadata.algorithms))
        except (InvalidKeyIdError, MissingKeyError):  # signed with a key this cache does not know: fetch once more
            keys = await self._key_set(metadata, refresh=True)
        return jwt.decode(id_token, keys, algorithms=list(metadata.algorithms))


def _metadata(document: dict[str, Any], issuer: str) -> ProviderMetadata:
    """Read discovery; the issuer must be exactly the configured one (OpenID Connect Discovery 1.0, 4.3)."""
    if document.get("issuer") != issuer:
        raise OidcError(f"The identity provider calls itself '{document.get('issuer')}', not '{issuer}' "
                        "(CALABI_OIDC_ISSUER must be its exact issuer).")
    needed = ("authorization_endpoint", "token_endpoint", "jwks_uri")
    missing = [key for key in needed if not isinstance(document.get(key), str)]
    if missing:
        raise OidcError(f"The identity provider's discovery document lacks {', '.join(missing)}.")
    announced = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = tuple(a for a in announced if isinstance(a, str) and a not in _NEVER_ALGORITHMS
                       and not a.startswith(_SYMMETRIC_PREFIX))
    if not algorithms:
        raise OidcError("The identity provider announces no asymmetric ID token signing algorithm.")
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    userinfo = document.get("userinfo_endpoint")
    return ProviderMetadata(
        issuer=issuer, authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"], jwks_uri=document["jwks_uri"],
        userinfo_endpoint=userinfo if isinstance(userinfo, str) else None, algorithms=algorithms,
        token_auth_methods=tuple(m for m in methods if isinstance(m, str)),
    )
