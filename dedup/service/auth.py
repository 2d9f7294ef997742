"""Bearer tokens mapped to a role and a name, enforced per RPC by one server interceptor.

reader: Lookup, BatchLookup, GetSeed, ListSeeds, Stats, WhoAmI; analyst: + seed writes, the
audit trail (GetSeedHistory, ListOps) and seed content (GetSeedContent); admin: + Reload,
PublishSnapshot and changing the model (AddShadowSpace, WriteEmbeddings, PromoteSpace,
RollbackSpace, RetireSpace). Health and reflection need no token, so stock tools work with none. The name is
what the op log records as the actor of a write (never the token).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from dataclasses import dataclass
from typing import Mapping, Sequence

import grpc

from dedup.errors import PermissionDenied, Unauthenticated
from dedup.service.convert import status_for
from dedup.types import ROLES

_RANK = {role: i for i, role in enumerate(ROLES)}

SERVICE = "/dedup.v1.Dedup/"
METHOD_ROLES: dict[str, str] = {
    **{SERVICE + m: "reader" for m in ("Lookup", "BatchLookup", "GetSeed", "ListSeeds", "Stats",
                                       "WhoAmI")},
    **{SERVICE + m: "analyst" for m in ("AddSeeds", "RemoveSeeds", "RelabelSeed", "RestoreSeed",
                                        "GetSeedHistory", "ListOps", "GetSeedContent")},
    **{SERVICE + m: "admin" for m in ("Reload", "PublishSnapshot", "AddShadowSpace",
                                      "WriteEmbeddings", "PromoteSpace", "RollbackSpace",
                                      "RetireSpace")},
}
PUBLIC_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a role, and the actor name the op log records (never the token)."""

    role: str
    actor: str


ANONYMOUS_READER = Principal("reader", "anonymous")


def _role_and_name(spec: object) -> tuple[str, str]:
    """A token's config entry (a role, or a TokenSpec / {role, name}) -> (role, name)."""
    if isinstance(spec, str):
        return spec, ""
    if isinstance(spec, Mapping):
        return str(spec.get("role", "")), str(spec.get("name", "") or "")
    return str(getattr(spec, "role", "")), str(getattr(spec, "name", "") or "")

# The principal of the RPC being served; set by the interceptor around the handler call.
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "dedup_principal", default=None)


# What an anonymous caller may do where the config allows it (the loopback demo): match content
# and read the bank's size -- never read seeds themselves (texts, notes, sources, contents).
ANONYMOUS_METHODS = frozenset(SERVICE + m for m in ("Lookup", "BatchLookup", "Stats"))


def required_role(method: str) -> str | None:
    """The least role a method needs; None for public methods. Unknown methods need admin."""
    if method.startswith(PUBLIC_PREFIXES):
        return None
    return METHOD_ROLES.get(method, "admin")


class Authenticator:
    """Resolve ``authorization: Bearer <token>`` metadata to a Principal and check its role."""

    def __init__(self, tokens: Mapping[str, object], allow_anonymous_reader: bool = False):
        # Compare digests, not tokens: constant time, and no raw token kept in a lookup table.
        self._principals: dict[bytes, Principal] = {}
        for token, spec in tokens.items():
            role, name = _role_and_name(spec)
            if role not in _RANK:
                raise ValueError(f"unknown role {role!r}")
            digest = hashlib.sha256(token.encode()).digest()
            self._principals[digest] = Principal(role, name or f"{role}:{digest.hex()[:8]}")
        self.allow_anonymous_reader = allow_anonymous_reader

    def principal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal | None:
        """The caller's principal, or None when no token was sent. Unknown token: Unauthenticated."""
        header = next((v for k, v in (metadata or ()) if k == "authorization"), None)
        if header is None:
            return None
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        digest = hashlib.sha256(token.strip().encode()).digest()
        found = None
        for known, principal in self._principals.items():
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise Unauthenticated("unknown token")
        return found

    def authorize(self, method: str, metadata) -> Principal | None:
        """The principal allowed to call ``method``; raises Unauthenticated / PermissionDenied."""
        need = required_role(method)
        if need is None:
            return None
        principal = self.principal(metadata)
        if principal is None:
            if not (self.allow_anonymous_reader and method in ANONYMOUS_METHODS):
                # no credentials at all: the caller must authenticate, whatever else is allowed
                raise Unauthenticated(f"{method} needs a bearer token (authorization metadata)")
            principal = ANONYMOUS_READER
        if _RANK[principal.role] < _RANK[need]:
            raise PermissionDenied(f"role {principal.role} may not call {method} (needs {need})")
        return principal


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call before its handler runs; the handler sees ``current_principal``."""

    def __init__(self, authenticator: Authenticator):
        self._auth = authenticator

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or required_role(method) is None:
            return handler
        if handler.unary_unary is None:  # every Dedup RPC is unary: never serve others unchecked
            return None
        behavior = handler.unary_unary
        auth = self._auth
        metadata = handler_call_details.invocation_metadata

        async def checked(request, context):
            try:
                principal = auth.authorize(method, metadata)
            except (Unauthenticated, PermissionDenied) as e:
                await context.abort(*status_for(e))
            token = current_principal.set(principal)
            try:
                return await behavior(request, context)
            finally:
                current_principal.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
