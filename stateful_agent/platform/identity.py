"""Who is calling: the owner of the sessions a request may touch, from ``AUTH_MODE``.

- ``none``: function keys only; every caller shares the anonymous owner ``""``.
- ``easyauth``: Azure App Service Authentication (Easy Auth) authenticates the caller and injects
  ``X-MS-CLIENT-PRINCIPAL-ID`` and ``X-MS-CLIENT-PRINCIPAL-IDP``; the owner is the pair
  (identity provider, principal id). Any client can send those headers, so they are trusted only
  when the platform says Easy Auth is on (``WEBSITE_AUTH_ENABLED=True``), or when
  ``EASYAUTH_LOCAL_HEADERS=true`` and the app is not running in Azure (local development).
- ``header``: a trusted backend (a backend-for-frontend holding the function key) authenticates its
  users itself and names the user in ``AUTH_USER_HEADER``; the owner is (``header``, that value).

This module imports no agent or cloud SDK: it runs before anything else on every request.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigurationError, UnauthenticatedError
from .settings import Settings

PRINCIPAL_ID = "x-ms-client-principal-id"
PRINCIPAL_IDP = "x-ms-client-principal-idp"
PRINCIPAL_NAME = "x-ms-client-principal-name"
PRINCIPAL = "x-ms-client-principal"

_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_PRINCIPAL_ID = re.compile(r"[\x21-\x7e]{1,256}")


@dataclass(frozen=True)
class Caller:
    """The owner of the sessions a request may touch, and a display name when the platform gave one."""

    provider: str = ""
    principal_id: str = ""
    name: str | None = None

    @property
    def owner(self) -> str:
        """The storage key of the owner: ``""`` for everyone in ``none`` mode, else ``provider/principal id``.

        Providers never contain ``/``, so two different pairs never share a key.
        """
        return f"{self.provider}/{self.principal_id}" if self.provider else ""


ANONYMOUS = Caller()


def is_owner_key(owner: str) -> bool:
    """Whether ``owner`` is a storage key ``Caller.owner`` can produce: ``""`` or ``provider/principal id``."""
    provider, _, principal_id = owner.partition("/")
    return owner == "" or bool(_PROVIDER.fullmatch(provider) and _PRINCIPAL_ID.fullmatch(principal_id))


def caller(headers: Mapping[str, str], settings: Settings) -> Caller:
    """The caller of a session request.

    Raises:
        UnauthenticatedError: The mode needs a principal and the request has none (or a malformed one).
        ConfigurationError: ``AUTH_MODE=easyauth`` but nothing vouches for the identity headers.
    """
    if settings.auth_mode == "none":
        return ANONYMOUS
    if settings.auth_mode == "header":
        value = headers.get(settings.auth_user_header.lower()) or ""
        if not _PRINCIPAL_ID.fullmatch(value):
            raise UnauthenticatedError(f"Name the user in the {settings.auth_user_header} header (visible ASCII).")
        return Caller("header", value)
    if not trusts_identity_headers(settings):
        raise ConfigurationError(
            "AUTH_MODE=easyauth, but App Service Authentication is not enabled (WEBSITE_AUTH_ENABLED is not True), "
            "so identity headers could be forged. Enable it, or set EASYAUTH_LOCAL_HEADERS=true for local runs."
        )
    principal_id = headers.get(PRINCIPAL_ID) or ""
    provider = (headers.get(PRINCIPAL_IDP) or _provider_from_principal(headers.get(PRINCIPAL)) or "").lower()
    if not principal_id:
        raise UnauthenticatedError("Sign in first: this API needs an authenticated user.")
    if not _PRINCIPAL_ID.fullmatch(principal_id) or not _PROVIDER.fullmatch(provider):
        raise UnauthenticatedError("The caller's identity headers are malformed.")
    name = headers.get(PRINCIPAL_NAME)
    return Caller(provider, principal_id, name[:256] if name else None)


def trusts_identity_headers(settings: Settings) -> bool:
    """Whether ``X-MS-CLIENT-PRINCIPAL-*`` headers come from Easy Auth rather than from the client."""
    return settings.easyauth_enabled or (settings.easyauth_local_headers and not settings.in_azure)


def _provider_from_principal(encoded: str | None) -> str | None:
    """``auth_typ`` of the base64 ``X-MS-CLIENT-PRINCIPAL`` document, when the IDP header is missing."""
    if not encoded:
        return None
    try:
        document = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=False))
    except (ValueError, TypeError, RecursionError):
        return None
    provider = document.get("auth_typ") if isinstance(document, dict) else None
    return provider if isinstance(provider, str) else None
