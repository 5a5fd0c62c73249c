"""NATS server URLs as the command line and the environment give them: one, or a cluster's list.

``--nats-url nats://a:4222,nats://b:4222`` names every node of a cluster, as the ``nats``
CLI accepts. nats-py takes a single URL string as one server, so the list is split here,
in the one place every connection goes through, and the client fails over between nodes.
"""

from __future__ import annotations


def server_urls(nats_url: str) -> list[str]:
    """Every server in a comma-separated URL list, blanks dropped, order kept."""
    return [url.strip() for url in nats_url.split(",") if url.strip()]
