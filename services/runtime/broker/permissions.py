"""Who may publish and subscribe to what: the broker-enforced half of clinic isolation.

The hub's Python code checks identities too (``runtime.messaging.admission``), but a clinic's
isolation must not depend on it: nats-server refuses, before any service sees it, a clinic
that publishes as another clinic, subscribes to another clinic's inbox, creates a consumer
on another clinic's subjects, or reads a stream through the JetStream API.

Everything here is a pure function of the registry and the options; ``runtime.broker.credentials``
writes the files and ``hubctl nats-config`` is the command.

Decisions (see SECURITY.md and docs/decisions/0001-accounts.md):
- **nkeys, one per clinic and per hub user.** A seed is a private key that never leaves the
  machine it was written on; the server holds only public keys, so its configuration file
  is not a secret.
- **Accounts are the tenancy boundary.** The hub (``HUB``), the audit log (``AUDIT``) and
  every clinic (``CLINIC_<id>``) have their own account. A clinic's account has no
  JetStream: it can create no consumer and no stream, so a consumer's unchecked
  ``deliver_subject`` can never be turned against the hub. It imports exactly its out
  subjects, its inbox consumer's ``MSG.NEXT`` and ``ACK``, its inbox read request, and its
  inbox and heartbeat messages. The server caps its connections and subscriptions.
- **The audit log has its own account**, written only by the audit service, which reads
  the hub's streams through four imported durables. Nothing in the hub account, an
  operator's consumer or a service's KV watch included, can store a byte in it.
- **Allow-lists**, never deny-lists, for clinics and services: anything not named is
  refused. Services pull only their own provisioned durables; they never create, update
  or pause one. The everyday operator key is denied every destructive API; a separate
  break-glass key per account, written outside the hub's data, has those rights.
- **Reply inboxes are per identity** (``_INBOX.clinic.<id>.>``), so no clinic can subscribe
  to the replies meant for another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from referral_hub.errors import HubError
from referral_hub.runtime.jetstream import streams, subjects, topology

HUB_ACCOUNT: Final = "HUB"
"""The hub's own account: every stream and bucket but the audit log, the referrals and
notifications services, and the operators."""
AUDIT_ACCOUNT: Final = "AUDIT"
"""The audit log's account: only the audit service writes there, so nothing another account
can do (a consumer's free ``deliver_subject`` included) ever stores a byte in it."""
HUB_API_PREFIX: Final = "$JS.HUB.API"
"""Where the audit account reaches the hub account's JetStream API (its own is ``$JS.API``)."""

ADMIN: Final = "admin"
"""The operator's everyday hubctl key: provisioning by creation, the registry, every read.
It cannot delete, purge, update, snapshot or restore a stream, nor reach the audit account."""
OPS: Final = "ops"
"""Monitoring: JetStream stream and consumer info, never a message."""
AUDITOR: Final = "auditor"
"""Reads the audit log (verify, prove, query) by direct gets; creates the audit streams."""
BREAK_GLASS: Final = "breakglass"
"""Every right in the hub account: stream upgrades and budgets. Kept apart, never used by default."""
AUDIT_BREAK_GLASS: Final = "audit-breakglass"
"""Every right in the audit account. Kept apart, never used by default."""
SERVICE_USERS: Final = ("referrals", "notifications", "audit")
GATEWAY: Final = "gateway"
"""The FHIR gateway's hub user: its own buckets only (see :func:`gateway_permissions`)."""
PORTAL: Final = "portal"
"""The clinic portal's hub user: its own buckets only (see :func:`portal_permissions`)."""
HUB_USERS: Final = (*SERVICE_USERS, ADMIN, OPS, AUDITOR, PORTAL, GATEWAY)
"""Users whose seeds live in the hub's credentials directory."""
BREAK_GLASS_USERS: Final = (BREAK_GLASS, AUDIT_BREAK_GLASS)
"""Users whose seeds are written to a separate directory, outside the hub's data."""
_AUDIT_ACCOUNT_USERS: Final = frozenset({"audit", AUDITOR, AUDIT_BREAK_GLASS})


class NatsAuthError(HubError):
    """A NATS authorization option makes no sense (for example half of the TLS files)."""


JS_API: Final = "$JS.API"
_DESTRUCTIVE_API: Final = (
    f"{JS_API}.STREAM.DELETE.>",
    f"{JS_API}.STREAM.UPDATE.>",
    f"{JS_API}.STREAM.PURGE.>",
    f"{JS_API}.STREAM.MSG.DELETE.>",
    f"{JS_API}.STREAM.SNAPSHOT.>",
    f"{JS_API}.STREAM.RESTORE.>",
    f"{JS_API}.STREAM.PEER.REMOVE.>",
    f"{JS_API}.STREAM.LEADER.STEPDOWN.>",
    f"{JS_API}.CONSUMER.DELETE.>",
    f"{JS_API}.CONSUMER.PAUSE.>",
    f"{JS_API}.CONSUMER.UNPIN.>",
    f"{JS_API}.CONSUMER.LEADER.STEPDOWN.>",
    f"{JS_API}.SERVER.REMOVE",
    f"{JS_API}.ACCOUNT.PURGE.>",
)
"""What only a break-glass key may do: destroy, shrink or reconfigure a stream, or stop a consumer."""


def account_of(user: str) -> str:
    """The account a hub user belongs to."""
    return AUDIT_ACCOUNT if user in _AUDIT_ACCOUNT_USERS else HUB_ACCOUNT


def clinic_account(clinic_id: str) -> str:
    """A clinic's own account: no JetStream, only what it imports from the hub."""
    return f"CLINIC_{clinic_id}"


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
    allow_responses: bool = False
    """May answer requests it received (the reply subjects of service imports)."""


@dataclass(frozen=True)
class User:
    """A NATS user: a public nkey, what it is (for the comment), its account and its rights."""

    nkey: str
    label: str
    permissions: Permissions
    account: str = HUB_ACCOUNT


@dataclass(frozen=True)
class Link:
    """One subject an account exports and another imports: a service (requests) or a stream (messages).

    ``local`` renames it in the importing account; ``streamed`` lets one request get many
    replies (a pull consumer's ``MSG.NEXT``).
    """

    kind: str
    subject: str
    exporter: str
    importer: str
    local: str | None = None
    streamed: bool = False


@dataclass(frozen=True)
class AccountLimits:
    """What the server enforces per clinic account."""

    max_connections: int = 16
    max_subscriptions: int = 1000


def _pull_api(spec: topology.ConsumerSpec, prefix: str = JS_API) -> tuple[str, ...]:
    """Pull, acknowledge and look at one named durable consumer: nothing that changes it."""
    return (
        f"{prefix}.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}",
        f"{prefix}.CONSUMER.INFO.{spec.stream}.{spec.durable}",
        f"$JS.ACK.{spec.stream}.{spec.durable}.>",
    )


def _stream_read_api(stream: str) -> tuple[str, ...]:
    """Info and single-message reads of one stream (direct or through its leader)."""
    return (
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
    )


def _kv_api(bucket: str, *, write: bool) -> tuple[str, ...]:
    """Read (and with ``write``, put) one KV bucket, and watch it.

    A watch is an ordered push consumer (nats-py names it, looks it up, then creates it on
    ``CONSUMER.CREATE.KV_<bucket>.<name>.<filter>``): a hub service may watch the buckets it
    needs, and its deliveries stay inside the hub account.
    """
    stream = f"KV_{bucket}"
    rights = (
        *_stream_read_api(stream),
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"$JS.FC.{stream}.>",
    )
    return (*rights, f"$KV.{bucket}.>") if write else rights


def clinic_permissions(clinic_id: str) -> Permissions:
    """A partner clinic, inside its own account: send its submissions, read its own inbox.

    Its account has no JetStream, so it can create no consumer or stream at all; these are
    the subjects its account imports from the hub, listed again as a second fence.
    """
    inbox = topology.clinic_inbox_consumer(clinic_id)
    return Permissions(
        publish=(
            subjects.clinic_out(clinic_id, ">"),
            f"{JS_API}.CONSUMER.MSG.NEXT.{inbox.stream}.{inbox.durable}",
            f"$JS.ACK.{inbox.stream}.{inbox.durable}.>",
            subjects.inbox_read(clinic_id),
        ),
        subscribe=(
            subjects.clinic_inbox(clinic_id),
            subjects.clinic_heartbeat(clinic_id),
            f"{clinic_inbox_prefix(clinic_id)}.>",
        ),
    )


_SERVICE_KV: Final[dict[str, tuple[tuple[str, bool], ...]]] = {
    "referrals": (
        (topology.REFERRALS_KV, True),
        (topology.CARETEAMS_KV, True),
        (topology.REGISTRY_KV, False),
    ),
    "notifications": (
        (topology.PAGES_KV, True),
        (topology.NOTIFY_STATE_KV, True),
        (topology.REGISTRY_KV, False),
        (topology.CARETEAMS_KV, False),
        (topology.REFERRALS_KV, False),
    ),
}
_HUB_STREAMS: Final = (
    streams.CLINIC_OUT,
    streams.CLINIC_IN,
    streams.HUB_EVENTS,
    streams.HUB_DEADLETTER,
    streams.HUB_ADVISORIES,
)


def service_consumers(service: str) -> tuple[topology.ConsumerSpec, ...]:
    """The durable consumers a service pulls from (all made by provisioning, none by the service)."""
    return {
        "referrals": (topology.REFERRALS_INTAKE, topology.EXHAUSTED),
        "notifications": (topology.NOTIFICATIONS_EVENTS, topology.NOTIFICATIONS_ACKS),
        "audit": topology.AUDIT_CONSUMERS,
    }[service]


def service_permissions(service: str) -> Permissions:
    """A hub service: its own outputs, its own durables and buckets, and nothing that changes the topology.

    No service may publish on ``clinic.*.out.>`` (the hub never speaks for a clinic), create
    or update a durable consumer, pause one, or touch a stream's configuration.
    """
    pulls = tuple(right for spec in service_consumers(service) for right in _pull_api(spec))
    if service == "audit":
        hub_pulls = tuple(right for spec in service_consumers(service) for right in _pull_api(spec, HUB_API_PREFIX))
        audit_streams = (streams.AUDIT, streams.AUDIT_CHECKPOINTS)
        return Permissions(
            publish=(
                subjects.AUDIT_ENTRY,
                subjects.AUDIT_CHECKPOINT,
                subjects.deadletter(service),
                *hub_pulls,
                *(f"{HUB_API_PREFIX}.STREAM.INFO.{stream}" for stream in _HUB_STREAMS),
                *_witness_rights(),
                f"{JS_API}.INFO",
                *(right for stream in audit_streams for right in _stream_read_api(stream)),
                *(f"$JS.ACK.{spec.stream}.{spec.durable}.>" for spec in service_consumers(service)),
            ),
            subscribe=(f"{hub_inbox_prefix(service)}.>",),
        )
    outputs: dict[str, tuple[str, ...]] = {
        "referrals": (
            subjects.EVENTS_ALL,
            subjects.CLINIC_IN_ALL,
            subjects.clinic_heartbeat("*"),
            subjects.deadletter(service),
            *(right for stream in _HUB_STREAMS for right in _stream_read_api(stream)),
        ),
        "notifications": (
            subjects.EVENTS_ALL,
            subjects.CLINIC_IN_ALL,
            subjects.deadletter(service),
            *_stream_read_api(streams.CLINIC_IN),
        ),
    }
    buckets = tuple(right for bucket, write in _SERVICE_KV[service] for right in _kv_api(bucket, write=write))
    subscribe: tuple[str, ...] = (f"{hub_inbox_prefix(service)}.>",)
    if service == "referrals":
        subscribe = (*subscribe, subjects.INBOX_READ_ALL)
    return Permissions(
        publish=(*outputs[service], *pulls, *buckets, f"{JS_API}.INFO"),
        subscribe=subscribe,
        allow_responses=service == "referrals",
    )


def admin_permissions() -> Permissions:
    """The everyday operator: provisioning by creation, the registry, every read; nothing destructive."""
    return Permissions(publish=(">",), subscribe=(">",), deny_publish=_DESTRUCTIVE_API)


def auditor_permissions() -> Permissions:
    """Reads the audit log without a consumer (direct gets), and creates its two append-only streams.

    Creating is safe: the streams' deny-delete and deny-purge flags are fixed at creation,
    and a second create with another configuration is refused. Updating is break-glass.
    """
    audit_streams = (streams.AUDIT, streams.AUDIT_CHECKPOINTS)
    return Permissions(
        publish=(
            f"{JS_API}.INFO",
            f"{JS_API}.STREAM.NAMES",
            *(right for stream in audit_streams for right in _stream_read_api(stream)),
            *(f"{JS_API}.STREAM.CREATE.{stream}" for stream in audit_streams),
        ),
        subscribe=(f"{hub_inbox_prefix(AUDITOR)}.>",),
    )


def break_glass_permissions() -> Permissions:
    """Everything in its account. Its seed is kept apart from the everyday keys."""
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


# --- The clinic portal ------------------------------------------------------------------------
PORTAL_BUCKETS: Final = (
    topology.PORTAL_MEMBERS_KV,
    topology.PORTAL_INVITES_KV,
    topology.PORTAL_SESSIONS_KV,
    topology.PORTAL_LOGINS_KV,
    topology.PORTAL_UNREAD_KV,
)


def portal_permissions() -> Permissions:
    """The portal's own state, the registry read-only (for the clinics' public sealing keys), and the document store.

    It acts for clinics only with each clinic's own credentials (its own account), so this
    key reads no stream, publishes no clinic subject and pulls no durable. It reads (never
    writes) the registry, so invites and logins follow the live rosters. The document
    store and its index it shares with the gateway (:func:`_document_api`).
    """
    return Permissions(
        publish=(
            *(right for bucket in PORTAL_BUCKETS for right in _kv_api(bucket, write=True)),
            *_kv_api(topology.REGISTRY_KV, write=False),
            *_document_api(),
            f"{JS_API}.INFO",
        ),
        subscribe=(f"{hub_inbox_prefix(PORTAL)}.>",),
    )


# --- The FHIR gateway -------------------------------------------------------------------------


def _object_api(bucket: str) -> tuple[str, ...]:
    """Put and get objects in one object store (its chunks and metadata, read by an ordered consumer)."""
    stream = f"OBJ_{bucket}"
    return (
        *_stream_read_api(stream),
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"$JS.FC.{stream}.>",
        f"$O.{bucket}.>",
        # nats-py's object get looks its stream up by subject first: stream names, never contents.
        f"{JS_API}.STREAM.NAMES",
    )


def _document_api() -> tuple[str, ...]:
    """Documents attached to referrals (``referral_hub.documents``): the object store and its index.

    Only the two doors that check a member's or token's party to the referral (the portal
    and the gateway) hold these; no clinic account can reach either.
    """
    return (*_object_api(topology.GATEWAY_DOCUMENTS), *_kv_api(topology.DOCUMENTS_INDEX_KV, write=True))


def gateway_permissions() -> Permissions:
    """The gateway's own state, and nothing of the hub's: its buckets, client registrations and registry read only.

    The registry gives the clinics' public sealing keys (patient details are sealed to them).
    It acts for a clinic only with that clinic's own credentials (the clinic's account), so
    this key reads no stream, publishes on no clinic subject and pulls no durable; and it
    cannot register a client key, so a stolen gateway key cannot mint a clinic's access.
    """
    owned = (topology.GATEWAY_REPLAY_KV, topology.GATEWAY_KEYS_KV, topology.GATEWAY_SUBSCRIPTIONS_KV)
    return Permissions(
        publish=(
            *(right for bucket in owned for right in _kv_api(bucket, write=True)),
            *_kv_api(topology.GATEWAY_CLIENTS_KV, write=False),
            *_kv_api(topology.REGISTRY_KV, write=False),
            *_document_api(),
            f"{JS_API}.INFO",
        ),
        subscribe=(f"{hub_inbox_prefix(GATEWAY)}.>",),
    )


def hub_permissions(user: str) -> Permissions:
    """The rights of one of :data:`HUB_USERS` or :data:`BREAK_GLASS_USERS`."""
    special = {
        ADMIN: admin_permissions,
        OPS: ops_permissions,
        AUDITOR: auditor_permissions,
        BREAK_GLASS: break_glass_permissions,
        AUDIT_BREAK_GLASS: break_glass_permissions,
        PORTAL: portal_permissions,
        GATEWAY: gateway_permissions,
    }
    return special[user]() if user in special else service_permissions(user)


def clinic_links(clinic_id: str) -> tuple[Link, ...]:
    """What a clinic's account imports from the hub: its out subjects, its inbox consumer, its reads."""
    account = clinic_account(clinic_id)
    inbox = topology.clinic_inbox_consumer(clinic_id)
    return (
        Link("service", subjects.clinic_out(clinic_id, ">"), HUB_ACCOUNT, account),
        Link(
            "service", f"{JS_API}.CONSUMER.MSG.NEXT.{inbox.stream}.{inbox.durable}", HUB_ACCOUNT, account, streamed=True
        ),
        Link("service", f"$JS.ACK.{inbox.stream}.{inbox.durable}.>", HUB_ACCOUNT, account),
        Link("service", subjects.inbox_read(clinic_id), HUB_ACCOUNT, account),
        Link("stream", subjects.clinic_inbox(clinic_id), HUB_ACCOUNT, account),
        Link("stream", subjects.clinic_heartbeat(clinic_id), HUB_ACCOUNT, account),
    )


def audit_links() -> tuple[Link, ...]:
    """What the audit account imports from the hub: its four durables, stream depths, its dead letters.

    The JetStream API subjects are renamed under :data:`HUB_API_PREFIX`, because the audit
    account's own JetStream answers ``$JS.API`` itself.
    """
    links: list[Link] = []
    for spec in topology.AUDIT_CONSUMERS:
        next_subject = f"CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}"
        info_subject = f"CONSUMER.INFO.{spec.stream}.{spec.durable}"
        links += [
            Link(
                "service",
                f"{JS_API}.{next_subject}",
                HUB_ACCOUNT,
                AUDIT_ACCOUNT,
                f"{HUB_API_PREFIX}.{next_subject}",
                streamed=True,
            ),
            Link("service", f"{JS_API}.{info_subject}", HUB_ACCOUNT, AUDIT_ACCOUNT, f"{HUB_API_PREFIX}.{info_subject}"),
            Link("service", f"$JS.ACK.{spec.stream}.{spec.durable}.>", HUB_ACCOUNT, AUDIT_ACCOUNT),
        ]
    links += [
        Link(
            "service",
            f"{JS_API}.STREAM.INFO.{stream}",
            HUB_ACCOUNT,
            AUDIT_ACCOUNT,
            f"{HUB_API_PREFIX}.STREAM.INFO.{stream}",
        )
        for stream in _HUB_STREAMS
    ]
    links.append(Link("service", subjects.deadletter("audit"), HUB_ACCOUNT, AUDIT_ACCOUNT))
    links.append(Link("service", subjects.clinic_in("*", WITNESSED), HUB_ACCOUNT, AUDIT_ACCOUNT))
    links += [
        Link(
            "service",
            f"{JS_API}.STREAM.MSG.GET.{stream}",
            HUB_ACCOUNT,
            AUDIT_ACCOUNT,
            f"{HUB_API_PREFIX}.STREAM.MSG.GET.{stream}",
        )
        for stream in _WITNESS_READS
    ]
    return tuple(links)


WITNESSED: Final = "audit.checkpoint.witnessed"
"""The inbox message type of a signed checkpoint delivered to a clinic (``audit.witnessing``)."""
_WITNESS_READS: Final = (streams.CLINIC_IN, f"KV_{topology.REGISTRY_KV}")
"""What the audit service reads in the hub account to witness: inbox heads and the clinic list."""


def _witness_rights() -> tuple[str, ...]:
    """The audit user's rights to deliver checkpoints to inboxes: that one message type, and two reads.

    It can store exactly ``clinic.<id>.in.audit.checkpoint.witnessed`` (a message that carries
    nothing but a signed checkpoint) and read the inbox heads and registry it numbers by.
    """
    return (
        subjects.clinic_in("*", WITNESSED),
        *(f"{HUB_API_PREFIX}.STREAM.MSG.GET.{stream}" for stream in _WITNESS_READS),
    )


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
    """One entry of an account's ``users``."""
    rights = user.permissions
    publish = f"allow: {_quoted(rights.publish)}"
    if rights.deny_publish:
        publish += f", deny: {_quoted(rights.deny_publish)}"
    responses = ", allow_responses: true" if rights.allow_responses else ""
    return (
        f"      # {user.label}\n"
        f'      {{ nkey: "{user.nkey}", permissions: {{\n'
        f"          publish: {{ {publish} }},\n"
        f"          subscribe: {{ allow: {_quoted(rights.subscribe)} }}{responses} }} }}"
    )


def render_link_export(link: Link) -> str:
    """One entry of the exporting account's ``exports``, open to the importing account only."""
    streamed = ", response_type: stream" if link.streamed else ""
    return f'      {{ {link.kind}: "{link.subject}", accounts: [{link.importer}]{streamed} }}'


def render_link_import(link: Link) -> str:
    """One entry of the importing account's ``imports``."""
    local = f', to: "{link.local}"' if link.local else ""
    return f'      {{ {link.kind}: {{ account: {link.exporter}, subject: "{link.subject}" }}{local} }}'


def render_accounts(users: Sequence[User], limits: AccountLimits | None = None) -> str:
    """The ``accounts`` block: the hub, the audit log, and one account per clinic, with what each shares.

    Accounts are nats-server's tenancy boundary: a clinic's account has no JetStream and sees
    only what it imports, and its connections and subscriptions are capped by the server.
    """
    clinic_limits = limits or AccountLimits()
    clinics = sorted({user.account for user in users} - {HUB_ACCOUNT, AUDIT_ACCOUNT})
    links = [*audit_links(), *(link for account in clinics for link in clinic_links(account.removeprefix("CLINIC_")))]
    blocks = []
    for account in (HUB_ACCOUNT, AUDIT_ACCOUNT, *clinics):
        members = [render_user(user) for user in users if user.account == account]
        lines = [f"  {account} {{"]
        if account in {HUB_ACCOUNT, AUDIT_ACCOUNT}:
            lines.append("    jetstream: enabled")
        else:
            lines.append(
                f"    limits {{ max_connections: {clinic_limits.max_connections}, "
                f"max_subscriptions: {clinic_limits.max_subscriptions} }}"
            )
        lines.append("    users = [\n" + ",\n".join(members) + "\n    ]")
        exports = [render_link_export(link) for link in links if link.exporter == account]
        if exports:
            lines.append("    exports = [\n" + ",\n".join(exports) + "\n    ]")
        imports = [render_link_import(link) for link in links if link.importer == account]
        if imports:
            lines.append("    imports = [\n" + ",\n".join(imports) + "\n    ]")
        lines.append("  }")
        blocks.append("\n".join(lines))
    return "accounts {\n" + "\n".join(blocks) + "\n}\n"


def render_auth(users: Sequence[User], tls: TlsFiles | None = None) -> str:
    """The ``accounts`` block (and ``tls`` when given): what an existing config includes."""
    text = render_accounts(users)
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
