"""Broker URLs as we may show them: never with a password."""

from __future__ import annotations

from kombu.utils.url import maybe_sanitize_url


def safe_url(url: str) -> str:
    """The URL with any password replaced by ``**`` (kombu's own masking)."""
    return str(maybe_sanitize_url(url))


def scheme_of(url: str) -> str:
    """The URL's scheme (``amqp``, ``redis``, ...), lower-cased; empty if it has none."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""
