"""``hubctl status``: one screen on whether the hub is well.

Each part is read on its own and a part that cannot be read says so, rather than the whole
command failing: a status screen is most needed when something is wrong.

- services: each service process's ``/health`` (the ports ``hubctl up`` uses, from
  ``--metrics-port``), and whether each durable consumer has a process fetching from it;
- restarts: how often ``hubctl up`` started each child again, and any crash loop;
- consumer lag: messages not yet delivered and delivered but not yet acknowledged;
- dead letters: how many, and the command to list them;
- open pages, oldest first;
- on-call members with no contact channel;
- the last signed audit checkpoint, and how old it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import nats.errors
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from referral_hub.audit.adapters import read_checkpoints
from referral_hub.cli.commands import SERVICES, connect, fetch_registry, out
from referral_hub.cli.datadir import SUPERVISION_FILE
from referral_hub.cli.paging_commands import all_pages
from referral_hub.cli.screen import page_severity
from referral_hub.cli.supervise import read_record
from referral_hub.contracts.registry import ChannelKind
from referral_hub.errors import HubError
from referral_hub.notifications import oncall
from referral_hub.runtime.broker import permissions
from referral_hub.runtime.jetstream import streams, topology

HEALTH_SECONDS: Final = 1.0
READ_SECONDS: Final = 3.0
UNREADABLE: Final = (NotFoundError, nats.errors.Error, TimeoutError, OSError)


def health(url: str) -> str:
    """``ready``, ``not ready (failing checks)`` or ``not answering``, from one ``/health`` probe."""
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_SECONDS) as reply:  # noqa: S310 - a loopback http URL we built
            body = json.load(reply)
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return "not answering"
    failing = [name for name, ok in body.get("checks", {}).items() if not ok]
    return "ready" if body.get("ready") else f"not ready ({', '.join(failing) or 'starting'})"


async def status(args: argparse.Namespace) -> int:
    """``hubctl status``: services, consumer lag, dead letters, open pages, last checkpoint."""
    host = args.metrics_host
    probes = [(name, f"http://{host}:{args.metrics_port + offset}/health") for offset, name in enumerate(SERVICES)]
    answers = await asyncio.gather(*(asyncio.to_thread(health, url) for _, url in probes))
    out(f"Referral Hub at {args.nats_url}")
    out("services (health endpoints)")
    for (name, url), answer in zip(probes, answers, strict=True):
        out(f"  {name:<15} {answer:<40} {url}")
    _restarts(args.data_dir / SUPERVISION_FILE)
    connection = await connect(args.nats_url, "hubctl-status")
    try:
        js = connection.jetstream()
        out("consumers                  fetching  undelivered  unacknowledged")
        for spec in topology.CONSUMERS:
            try:
                info = await js.consumer_info(spec.stream, spec.durable, timeout=READ_SECONDS)
            except UNREADABLE:
                out(f"  {spec.durable:<24} cannot be read")
                continue
            fetching = "yes" if (info.num_waiting or 0) > 0 else "no"
            out(f"  {spec.durable:<24} {fetching:<9} {info.num_pending or 0:>11}  {info.num_ack_pending or 0:>14}")
        try:
            dead = (await asyncio.wait_for(js.stream_info(streams.HUB_DEADLETTER), READ_SECONDS)).state.messages
            out(f"dead letters     {dead}" + ("  (hubctl dlq list)" if dead else ""))
        except UNREADABLE:
            out("dead letters     cannot be read")
        try:
            pages = [page for page in await all_pages(connection) if page.status == "open"]
            out(f"open pages       {len(pages)}" + ("  (hubctl pages)" if pages else ""))
            for page in sorted(pages, key=lambda p: p.opened_at)[:5]:
                out(
                    f"  {str(page.page_id)[:8]}  {page.intent.clinic:<20} {page_severity(page.intent.severity)}"
                    f"  since {page.opened_at.isoformat(timespec='seconds')}"
                )
        except UNREADABLE:
            out("open pages       cannot be read")
        await _oncall_reach(connection)
    finally:
        await connection.drain()
    await _last_checkpoint(args.nats_url)
    return 0


async def _oncall_reach(connection: Client) -> None:
    """On-call members with no contact channel at all: a page to them would reach nobody.

    Whether e-mail and SMS are configured is the notifications service's to know; its metric
    ``hub_oncall_unreachable_members`` counts against what it can deliver on.
    """
    try:
        clinics = await asyncio.wait_for(fetch_registry(connection), READ_SECONDS)
    except (*UNREADABLE, HubError):
        out("on-call reach    cannot be read")
        return
    now = datetime.now(UTC)
    unreachable = {c.id: oncall.unreachable_on_call(c, now, frozenset(ChannelKind)) for c in clinics}
    unreachable = {clinic: members for clinic, members in unreachable.items() if members}
    if not unreachable:
        out("on-call reach    every on-call member has a contact channel")
        return
    count = sum(len(members) for members in unreachable.values())
    out(f"on-call reach    WARNING: {count} on-call member(s) with no contact channel; a page to them reaches nobody")
    for clinic, members in sorted(unreachable.items()):
        out(f"  {clinic:<20} {', '.join(members)}  (hubctl roster show --clinic {clinic})")


def _restarts(record: Path) -> None:
    """Each child of ``hubctl up`` (when one runs on this data folder): restarts, last exit, crash loop."""
    children = read_record(record)
    if not children:
        return
    out("processes (hubctl up)      restarts  last exit")
    for name, state in children.items():
        loop = "  CRASH LOOP" if state.get("crash_loop") else ""
        out(f"  {name:<24} {state.get('restarts', 0):>8}  {state.get('last_exit') or '-'}{loop}")


async def _last_checkpoint(nats_url: str) -> None:
    try:
        connection = await connect(nats_url, "hubctl-status-audit", user=permissions.AUDITOR)
    except UNREADABLE:
        out("audit            cannot be read (no auditor key here?)")
        return
    try:
        checkpoints = await asyncio.wait_for(read_checkpoints(connection.jetstream()), READ_SECONDS)
    except UNREADABLE:
        out("audit            cannot be read")
        return
    finally:
        with contextlib.suppress(*UNREADABLE):
            await connection.drain()
    if not checkpoints:
        out("audit            no signed checkpoint yet")
        return
    last = checkpoints[-1]
    age = (datetime.now(UTC) - last.created_at).total_seconds()
    out(
        f"audit            checkpoint {last.checkpoint_index} covers {last.tree_size or last.to_index} entries, "
        f"signed {last.created_at.isoformat(timespec='seconds')} ({age:.0f}s ago)"
    )


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: object) -> None:
    """``hubctl status``."""
    parser = sub.add_parser("status", help="one screen: services, consumer lag, dead letters, open pages, checkpoint")
    common(parser)  # type: ignore[operator]
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9101,
        help="the first service's metrics port, as given to hubctl up (default: %(default)s)",
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="where the services listen (default: %(default)s)")
    parser.set_defaults(run=status)
