"""``hubctl bench pages``: the raw nats-py chain it compares with, and the figures it derives from its runs."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats

from referral_hub.cli import raw_chain
from referral_hub.cli.bench import Baseline
from referral_hub.cli.bench_pages import Arrivals, PagesReport, Run, Team, raw_sender, receiver, saturation
from referral_hub.contracts.base import Modality
from referral_hub.contracts.registry import Clinic
from referral_hub.notifications.webhooks import WebhookSecrets, new_secret
from referral_hub.runtime.broker.embedded import EmbeddedNats

PT, ACU = "harbor-pt", "lotus-acu"
PAGE_WAIT_SECONDS = 10.0


def run(offered: float, latencies_ms: list[float], lost: int = 0) -> Run:
    """A run whose alerts were sent one per 1/offered s, with these latencies, and ``lost`` more never paged."""
    sent = {f"a{n}": n / offered for n in range(len(latencies_ms) + lost)}
    arrived = {f"a{n}": sent[f"a{n}"] + ms / 1000 for n, ms in enumerate(latencies_ms)}
    return Run(offered, sent, arrived)


def test_the_raw_fan_out_copies_an_alert_to_every_team_member_but_the_raiser() -> None:
    alert = raw_chain.RawAlert("a1", "patient-1", PT)

    copies = raw_chain.copies(alert, {"patient-1": [PT, ACU, "kin-chiro"], "patient-2": ["other"]})

    assert [copy.clinic for copy in copies] == [ACU, "kin-chiro"]


def test_a_run_that_lost_a_page_did_not_keep_up() -> None:
    assert not run(50.0, [10.0] * 99, lost=1).kept_up


def test_a_run_paging_slower_than_offered_did_not_keep_up() -> None:
    # 100 alerts offered over 2 s, the last paged 3 s after it was sent: 100 pages in ~5 s.
    assert not run(50.0, [10.0] * 99 + [3000.0]).kept_up


def test_saturation_is_the_lowest_offered_rate_not_kept_up_with() -> None:
    runs = [run(25.0, [10.0] * 50), run(50.0, [10.0] * 99, lost=1), run(100.0, [10.0] * 200, lost=3)]

    assert saturation(runs) == 50.0
    assert saturation(runs[:1]) is None


def test_p99_ratio_is_the_hub_p99_over_the_raw_chain_p99_at_the_same_rate() -> None:
    report = PagesReport("always", Baseline(1000.0, 1000.0))
    report.hub.append(run(50.0, [30.0] * 100))
    report.raw.append(run(50.0, [10.0] * 100))

    [row] = report.per_rate()

    assert (row["p99_ms"], row["raw_chain_p99_ms"], row["p99_ratio"]) == (30.0, 10.0, 3.0)
    assert report.figures()["raw_chain_p99_ms"] == 10.0


async def test_the_raw_chain_pages_the_other_team_member_with_a_signed_webhook(nats_server: EmbeddedNats) -> None:
    arrivals = Arrivals(secrets={PT: new_secret(), ACU: new_secret()})
    http = receiver(arrivals)
    connection = await nats.connect(nats_server.url)
    await raw_chain.provision(connection.jetstream())
    hops = [
        asyncio.create_task(raw_chain.fan_out(connection, {"patient-1": [PT, ACU]})),
        asyncio.create_task(
            raw_chain.page(
                connection,
                f"http://127.0.0.1:{http.server_address[1]}/page",
                WebhookSecrets.parse(arrivals.table()),
            )
        ),
    ]
    try:
        alert_id = await raw_sender(connection)(
            Team("patient-1", Clinic(id=PT, name=PT, modalities=(Modality.PHYSICAL_THERAPY,)), ACU)
        )
        deadline = time.monotonic() + PAGE_WAIT_SECONDS
        while alert_id not in arrivals.at and time.monotonic() < deadline:  # noqa: ASYNC110 - arrivals come from a thread
            await asyncio.sleep(0.02)
    finally:
        for hop in hops:
            hop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*hops)
        await connection.close()
        http.shutdown()

    assert alert_id in arrivals.at
    assert arrivals.bad_signatures == 0
