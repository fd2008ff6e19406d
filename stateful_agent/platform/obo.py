"""The OAuth 2.0 on-behalf-of flow, for MCP servers that act as the caller (``auth: {"type": "caller"}``).

The caller's token was issued for *this* app; it is never sent anywhere. The app exchanges it with Microsoft
Entra ID for a token to the MCP server's own resource (its ``scope``), as the app registration that Easy Auth
validates tokens for (``AUTH_CLIENT_ID``). The app proves who it is keylessly with its managed identity, a
federated identity credential of that registration (or, for local runs, a client secret). See
``docs/tools.md#servers-that-act-as-the-caller``.
"""

from __future__ import annotations

from typing import Any, Protocol

#: The audience of a managed identity token that serves as a federated client assertion.
FEDERATION_SCOPE = "api://AzureADTokenExchange/.default"


class TokenExchange(Protocol):
    """Exchanges a caller's token for a token to another resource."""

    async def exchange(self, assertion: str, scope: str) -> Any:
        """A token for ``scope`` on behalf of the user of ``assertion``: an object with ``token`` and
        ``expires_on`` (seconds since the epoch), as ``azure.core``'s ``AccessToken``.

        Raises:
            Exception: Entra refused the exchange (no consent, a token that expired) or cannot be reached.
        """
        ...

    async def close(self) -> None: ...


class OnBehalfOf:
    """``TokenExchange`` with ``azure-identity``'s ``OnBehalfOfCredential``: the app registration ``client_id``
    of ``tenant_id`` as the confidential client, authenticated by ``client_secret`` when given, otherwise by a
    token of the managed identity ``identity_client_id`` (a federated identity credential)."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        identity_client_id: str | None = None,
        identity: Any = None,
    ) -> None:
        self.tenant_id, self.client_id = tenant_id, client_id
        self._secret = client_secret
        self._identity_client_id = identity_client_id
        self._identity = identity  # the managed identity credential (made on first use unless given)
        self._owns_identity = identity is None

    def __repr__(self) -> str:  # never the secret
        return f"OnBehalfOf(tenant_id={self.tenant_id!r}, client_id={self.client_id!r})"

    async def exchange(self, assertion: str, scope: str) -> Any:
        from azure.identity.aio import OnBehalfOfCredential

        if self._secret:
            credential = OnBehalfOfCredential(
                self.tenant_id, self.client_id, client_secret=self._secret, user_assertion=assertion
            )
        else:
            federated = (await self._managed_identity().get_token(FEDERATION_SCOPE)).token
            credential = OnBehalfOfCredential(
                self.tenant_id, self.client_id, client_assertion_func=lambda: federated, user_assertion=assertion
            )
        async with credential:
            return await credential.get_token(scope)

    def _managed_identity(self) -> Any:
        if self._identity is None:
            from azure.identity.aio import ManagedIdentityCredential

            self._identity = ManagedIdentityCredential(client_id=self._identity_client_id)
        return self._identity

    async def close(self) -> None:
        if self._identity is not None and self._owns_identity:
            await self._identity.close()
            self._identity = None
