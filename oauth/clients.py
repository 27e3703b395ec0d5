"""What client metadata we register: the rules shared by dynamic client registration (RFC 7591)
and client ID metadata documents, and the CIMD fetcher that applies them."""
from __future__ import annotations

from urllib.parse import urlsplit

from oauth2_provider.cimd import CIMDError, SafeMetadataFetcher

REGISTRATION_GRANT_TYPES = {"authorization_code", "refresh_token"}
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def redirect_uri_problem(uri) -> str | None:
    """Why a redirect URI may not be registered, or None: it must be an absolute ``https`` URI,
    or ``http`` on a loopback host (RFC 8252 §7.3; OAuth 2.1 §2.3.1), without fragment or userinfo."""
    if not isinstance(uri, str) or len(uri) > 2000:
        return "each redirect_uri must be a string of at most 2000 characters"
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri or "@" in parts.netloc:
        return f"redirect_uri {uri!r} must not have a fragment or userinfo"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return None
    return f"redirect_uri {uri!r} must use https, or http on a loopback host (127.0.0.1, [::1], localhost)"


def registration_metadata_problem(metadata) -> str | None:
    """Why RFC 7591 client metadata may not be registered here, or None: only the
    authorization-code grant (optionally with refresh_token), ``code`` responses, and at least one
    redirect URI passing ``redirect_uri_problem``."""
    if not isinstance(metadata, dict):
        return None  # django-oauth-toolkit answers malformed JSON itself
    grant_types = metadata.get("grant_types", ["authorization_code"])
    if not isinstance(grant_types, list) or not set(grant_types) <= REGISTRATION_GRANT_TYPES or \
            "authorization_code" not in grant_types:
        return "grant_types must be authorization_code (and optionally refresh_token)."
    response_types = metadata.get("response_types", ["code"])
    if not isinstance(response_types, list) or set(response_types) != {"code"}:
        return 'response_types must be ["code"].'
    uris = metadata.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        return "redirect_uris must be a non-empty array."
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem:
            return problem
    return None


class CheckedMetadataFetcher(SafeMetadataFetcher):
    """django-oauth-toolkit's SSRF-hardened client ID metadata document fetcher (https only, public
    addresses only, no redirects, ``CIMD_FETCH_TIMEOUT_SECONDS``, ``CIMD_MAX_DOCUMENT_SIZE``; the
    document is cached on its ``Application`` for its Cache-Control max-age, clamped), plus our
    registration rules (``registration_metadata_problem``) on the document
    (draft-ietf-oauth-client-id-metadata-document §4). Set as ``CIMD_METADATA_FETCHER``."""

    def fetch_document(self, client_id: str) -> tuple[dict, int]:
        """The document at ``client_id`` and its cache lifetime in s; raises ``CIMDError``."""
        return super().fetch(client_id)

    def fetch(self, client_id: str) -> tuple[dict, int]:
        """``fetch_document``, then refuse (``CIMDError``: the client stays unknown) a document our
        registration rules refuse."""
        metadata, max_age = self.fetch_document(client_id)
        problem = registration_metadata_problem(metadata)
        if problem:
            raise CIMDError(problem)
        return metadata, max_age
