"""Fleet identity: a CA on disk, role/site certificates, revocation, mutual TLS, authorization
and Ed25519 release signing (ARCHITECTURE.md §5).

Typical server use::

    verifier = PeerVerifier(paths.ca_cert, paths.crl)          # once, at start-up
    ctx = server_ssl_context(paths.ca_cert, cert_path, key_path)
    ...
    identity = verifier.verify(peer_der)                       # every request
    authorize(identity, roles={Role.DEVICE}, site=my_site)

Modules: :mod:`.certificates` (encoding, parsing, verification), :mod:`.pki` (the CA directory),
:mod:`.inventory`, :mod:`.revocation`, :mod:`.tls`, :mod:`.authz`, :mod:`.signing`, :mod:`.cli`.
Only ``_x509`` and ``signing`` import ``cryptography.hazmat``.
"""

from __future__ import annotations

from fedge.identity.authz import authorize
from fedge.identity.certificates import (
    Identity,
    RevocationSource,
    Role,
    identity_from_certificate,
    load_certificate,
    parse_certificate,
    verify_peer,
)
from fedge.identity.pki import (
    InventoryEntry,
    IssuedCertificate,
    PkiPaths,
    init_pki,
    issue,
    list_certificates,
    revoke,
)
from fedge.identity.revocation import (
    PeerVerifier,
    RevocationChecker,
    RevocationList,
    load_revocation_list,
)
from fedge.identity.signing import (
    ReleaseSigningKey,
    ReleaseVerifyKey,
    canonical_release_message,
    sign_release,
    verify_release,
    verify_release_digest,
)
from fedge.identity.tls import client_ssl_context, server_ssl_context

__all__ = [
    "Identity",
    "InventoryEntry",
    "IssuedCertificate",
    "PeerVerifier",
    "PkiPaths",
    "ReleaseSigningKey",
    "ReleaseVerifyKey",
    "RevocationChecker",
    "RevocationList",
    "RevocationSource",
    "Role",
    "authorize",
    "canonical_release_message",
    "client_ssl_context",
    "identity_from_certificate",
    "init_pki",
    "issue",
    "list_certificates",
    "load_certificate",
    "load_revocation_list",
    "parse_certificate",
    "revoke",
    "server_ssl_context",
    "sign_release",
    "verify_peer",
    "verify_release",
    "verify_release_digest",
]
