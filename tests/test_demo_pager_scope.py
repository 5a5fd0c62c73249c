"""The demo answers only its own pages, and ``hubctl up`` keeps its traffic to a few referrals a minute."""

from __future__ import annotations

import uuid

from referral_hub.cli.main import build_parser
from referral_hub.demo.pager import DemoActivity

from .test_channels_receivers import PT, deliver, demo_pager, page

DEMO_ALERT, HAND_ALERT = str(uuid.uuid4()), str(uuid.uuid4())


def test_the_demo_caused_its_own_alerts_and_flags_on_its_own_patients_only() -> None:
    activity = DemoActivity()
    activity.alert_raised(DEMO_ALERT)
    activity.patient_referred("pt-0a1b2c")

    assert activity.caused(f"alert:{DEMO_ALERT}:{PT}", "pt-0a1b2c")
    assert not activity.caused(f"alert:{HAND_ALERT}:{PT}", "pt-0a1b2c")
    assert activity.caused(f"flag:{uuid.uuid4()}:{PT}", "pt-0a1b2c")
    assert not activity.caused(f"flag:{uuid.uuid4()}:{PT}", "pt-typed-by-hand")


async def test_the_demo_pager_leaves_a_page_for_an_alert_raised_by_hand_open() -> None:
    with demo_pager() as (pager, said, channels, pt_hook):
        pager.activity.alert_raised(DEMO_ALERT)
        demo_page, hand_page = str(uuid.uuid4()), str(uuid.uuid4())
        assert await deliver(channels, pt_hook, page(PT, page_id=demo_page, dedup_key=f"alert:{DEMO_ALERT}:{PT}"))
        assert await deliver(channels, pt_hook, page(PT, page_id=hand_page, dedup_key=f"alert:{HAND_ALERT}:{PT}"))

    assert pager.acknowledging == [demo_page]
    assert "left open for you" not in said[0]
    assert "(not from the demo: left open for you, see hubctl pages) [signature ok]" in said[1]


def test_up_sends_a_few_demo_referrals_a_minute_unless_told_otherwise() -> None:
    default = build_parser().parse_args(["up"])
    faster = build_parser().parse_args(["up", "--demo-rate", "30"])

    assert (default.demo_rate, default.demo_interval) == (4.0, None)
    assert faster.demo_rate == 30.0
