"""``python -m referral_hub.portal``: the portal process alone (``hubctl run portal`` runs the same)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from referral_hub.portal.app import PortalSettings, run
from referral_hub.runtime import logs


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m referral_hub.portal")
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8480)
    parser.add_argument("--registry-file", type=Path, default=None)
    args = parser.parse_args()
    logs.configure("portal", json=False)
    run(PortalSettings(nats_url=args.nats_url, host=args.host, port=args.port, registry_file=args.registry_file))


if __name__ == "__main__":
    main()
