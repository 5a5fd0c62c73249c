"""Who may publish and subscribe to what: the broker-enforced half of clinic isolation.

The hub's Python code checks identities too (``runtime.admission``), but a clinic's
isolation must not depend on it: nats-server refuses, before any service sees it, a clinic
that publishes as another clinic, subscribes to another clinic's inbox, creates a consumer
on another clinic's subjects, or reads a stream through the JetStream API.

Everything here is a pure function of the registry and the options; ``runtime.credentials``
writes the files and ``hubctl nats-config`` is the command.

Decisions (see SECURITY.md):
- **nkeys, one per clinic and per hub user**, in one account. A seed is a private key that
  never leaves the machine it was written on; the server holds only public keys, so its
  configuration file is not a secret.
- **Allow-lists**, never deny-lists, for clinics: anything not named is refused.
- **Reply inboxes are per identity** (``_INBOX.clinic.<id>.>``), so no clinic can subscribe
  to the replies, or the ordered-consumer deliveries, meant for another.
- **Consumers are scoped by the API subject.** Since nats-server 2.9 a named consumer is
  created on ``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`` and the server refuses a
  request whose configured filter differs from the one in the subject, so a permission on
  ``...CLINIC_IN.*.clinic.<id>.in.>`` admits only consumers on the clinic's own inbox.
  Clinics read through push consumers, delivered to their own inbox prefix; they get no
  pull (``MSG.NEXT``), no direct get, no stream info and no consumer info.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from referral_hub.errors import HubError
from referral_hub.runtime import subjects, topology

ADMIN: Final = "admin"
"""Provisioning and the operator's hubctl: every right. Keep its seed off clinic machines."""
OPS: Final = "ops"
"""Monitoring: JetStream stream and consumer info, never a message."""
SERVICE_USERS: Final = ("referrals", "notifications", "audit")
HUB_USERS: Final = (*SERVICE_USERS, ADMIN, OPS)


class NatsAuthError(HubError):
    """A NATS authorization option makes no sense (for example half of the TLS files)."""


JS_API: Final = "$JS.API"
_SERVICE_DENIED_API: Final = (
    f"{JS_API}.STREAM.CREATE.>",
    f"{JS_API}.STREAM.UPDATE.>",
    f"{JS_API}.STREAM.DELETE.>",
    f"{JS_API}.STREAM.PURGE.>",
    f"{JS_API}.STREAM.MSG.DELETE.>",
    f"{JS_API}.CONSUMER.DELETE.>",
)
"""No service may create, reconfigure, empty or delete a stream, nor delete a durable
consumer: provisioning (the admin user) owns the topology."""


def clinic_inbox_prefix(clinic_id: str) -> str:
    """The reply-subject prefix a clinic's connection must use (nats-py ``inbox_prefix``)."""
    return f"_INBOX.clinic.{clinic_id}"


def hub_inbox_prefix(user: str) -> str:
    """The reply-subject prefix of a hub user's connection."""
    return f"_INBOX.hub.{user}"


@dataclass(frozen=True)
class Permissions:
    """One user's publish and subscribe rights, as nats-server's ``permissions`` block."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()


@dataclass(frozen=True)
class User:
    """A NATS user: a public nkey, what it is (for the comment) and its rights."""

    nkey: str
    label: str
    permissions: Permissions


def clinic_permissions(clinic_id: str) -> Permissions:
    """A partner clinic: publish its own submissions, read its own inbox, nothing else."""
    return Permissions(
        publish=(
            subjects.clinic_out(clinic_id, ">"),
            f"{JS_API}.CONSUMER.CREATE.{topology.CLINIC_IN}.*.{subjects.clinic_inbox(clinic_id)}",
            f"$JS.FC.{topology.CLINIC_IN}.>",
        ),
        subscribe=(
            subjects.clinic_inbox(clinic_id),
            subjects.clinic_heartbeat(clinic_id),
            f"{clinic_inbox_prefix(clinic_id)}.>",
        ),
    )


def service_permissions(service: str) -> Permissions:
    """A hub service: the JetStream API less topology changes, and its own output subjects.

    No service may publish on ``clinic.*.out.>``: the hub never speaks for a clinic.
    """
    outputs: dict[str, tuple[str, ...]] = {
        "referrals": (
            subjects.EVENTS_ALL,
            subjects.CLINIC_IN_ALL,
            subjects.clinic_heartbeat("*"),
            subjects.deadletter(service),
            f"$KV.{topology.REFERRALS_KV}.>",
            f"$KV.{topology.CARETEAMS_KV}.>",
        ),
        "notifications": (
            subjects.EVENTS_ALL,
            subjects.CLINIC_IN_ALL,
            subjects.deadletter(service),
            f"$KV.{topology.PAGES_KV}.>",
            f"$KV.{topology.NOTIFY_STATE_KV}.>",
        ),
        "audit": (subjects.AUDIT_ENTRY, subjects.AUDIT_CHECKPOINT, subjects.deadletter(service)),
    }
    return Permissions(
        publish=(*outputs[service], f"{JS_API}.>", "$JS.ACK.>", "$JS.FC.>"),
        subscribe=(f"{hub_inbox_prefix(service)}.>",),
        deny_publish=_SERVICE_DENIED_API,
    )


def admin_permissions() -> Permissions:
    """Everything: provisioning, the registry and the operator's read commands."""
    return Permissions(publish=(">",), subscribe=(">",))


def ops_permissions() -> Permissions:
    """Read-only JetStream metadata (depths, consumer lag), never message contents."""
    return Permissions(
        publish=(
            f"{JS_API}.INFO",
            f"{JS_API}.STREAM.NAMES",
            f"{JS_API}.STREAM.LIST",
            f"{JS_API}.STREAM.INFO.*",
            f"{JS_API}.CONSUMER.NAMES.*",
            f"{JS_API}.CONSUMER.LIST.*",
            f"{JS_API}.CONSUMER.INFO.*.*",
        ),
        subscribe=(f"{hub_inbox_prefix(OPS)}.>",),
    )


def hub_permissions(user: str) -> Permissions:
    """The rights of one of :data:`HUB_USERS`."""
    if user == ADMIN:
        return admin_permissions()
    if user == OPS:
        return ops_permissions()
    return service_permissions(user)


@dataclass(frozen=True)
class TlsFiles:
    """Server-side TLS: its certificate and key, the CA it trusts, and whether clients need certificates."""

    cert_file: str
    key_file: str
    ca_file: str
    verify_clients: bool = False


@dataclass(frozen=True)
class ClusterOptions:
    """A cluster block: this node's route port and its peers (``nats-route://host:port``)."""

    name: str
    port: int
    routes: tuple[str, ...]
    host: str = "0.0.0.0"  # noqa: S104 - routes listen where the peers can reach them; set --cluster-host to narrow


@dataclass(frozen=True)
class ServerOptions:
    """Where the server listens and keeps its store."""

    store_dir: str
    host: str = "127.0.0.1"
    port: int = 4222
    monitor_port: int = 8222
    sync_interval: str = "always"
    server_name: str = "hub"
    max_payload: str = "1MB"


def _quoted(items: Iterable[str]) -> str:
    """A NATS config list; every subject is quoted, because ``$JS`` unquoted is a variable."""
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render_user(user: User) -> str:
    """One entry of ``authorization.users``."""
    rights = user.permissions
    publish = f"allow: {_quoted(rights.publish)}"
    if rights.deny_publish:
        publish += f", deny: {_quoted(rights.deny_publish)}"
    return (
        f"    # {user.label}\n"
        f'    {{ nkey: "{user.nkey}", permissions: {{\n'
        f"        publish: {{ {publish} }},\n"
        f"        subscribe: {{ allow: {_quoted(rights.subscribe)} }} }} }}"
    )


def render_auth(users: Sequence[User], tls: TlsFiles | None = None) -> str:
    """The ``authorization`` block (and ``tls`` when given): what an existing config includes."""
    text = "authorization {\n  users = [\n" + ",\n".join(render_user(user) for user in users) + "\n  ]\n}\n"
    if tls is not None:
        text += (
            "tls {\n"
            f'  cert_file: "{tls.cert_file}"\n'
            f'  key_file: "{tls.key_file}"\n'
            f'  ca_file: "{tls.ca_file}"\n'
            f"  verify: {'true' if tls.verify_clients else 'false'}\n"
            "  timeout: 2\n"
            "}\n"
        )
    return text


def render_cluster(cluster: ClusterOptions) -> str:
    """The ``cluster`` block of one node."""
    return (
        "cluster {\n"
        f"  name: {cluster.name}\n"
        f"  listen: {cluster.host}:{cluster.port}\n"
        f"  routes: {_quoted(cluster.routes)}\n"
        "}\n"
    )


def render_server_config(
    server: ServerOptions,
    users: Sequence[User],
    tls: TlsFiles | None = None,
    cluster: ClusterOptions | None = None,
) -> str:
    """A whole ``nats-server.conf``: listeners, JetStream with the hub's fsync policy, auth, TLS, cluster."""
    text = (
        "# Generated by hubctl nats-config. Holds public nkeys only: no secret is in this file.\n"
        f"server_name: {server.server_name}\n"
        f"listen: {server.host}:{server.port}\n"
        f"http: 127.0.0.1:{server.monitor_port}\n"
        f"max_payload: {server.max_payload}\n"
        "jetstream {\n"
        f'  store_dir: "{server.store_dir}"\n'
        f"  sync_interval: {server.sync_interval}\n"
        "}\n"
    )
    text += render_auth(users, tls)
    if cluster is not None:
        text += render_cluster(cluster)
    return text
