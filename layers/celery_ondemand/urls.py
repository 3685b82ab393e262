"""Broker URLs as we may show them: never with a password."""

from __future__ import annotations

from kombu.utils.url import maybe_sanitize_url


def safe_url(url: str) -> str:
    """The URL with every password replaced by ``**``.

    Each URL of a failover list (``amqp://a//;amqp://b//``, Celery's way to name several
    brokers) is masked on its own; a URL kombu cannot parse (a Sentinel list, say) is shown
    as its scheme and hosts only, never as given.
    """
    masked = []
    for part in url.split(";"):
        try:
            masked.append(str(maybe_sanitize_url(part)))
        except ValueError:
            masked.append(_hosts_only(part))
    return ";".join(masked)


def _hosts_only(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}" if sep else "<unreadable URL>"


def scheme_of(url: str) -> str:
    """The URL's scheme (``amqp``, ``redis``, ...), lower-cased; empty if it has none."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""
