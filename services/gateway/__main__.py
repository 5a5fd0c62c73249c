"""``python -m referral_hub.gateway``: the gateway alone, without the rest of ``hubctl``.

``hubctl run gateway`` is the usual way; this entry point starts the same app with the same
options for a container whose image holds only what the gateway needs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from referral_hub.gateway.app import DEFAULT_PORT, GatewaySettings, run
from referral_hub.runtime import logs


def main() -> None:
    """Parse the options and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m referral_hub.gateway", description=__doc__)
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--public-url", default=os.environ.get("HUB_GATEWAY_URL", ""))
    parser.add_argument("--tls-cert", type=Path, default=None)
    parser.add_argument("--tls-key", type=Path, default=None)
    parser.add_argument(
        "--audit-index",
        type=Path,
        default=os.environ.get("HUB_GATEWAY_AUDIT_INDEX") or None,
        help="serve AuditEvent search from this index file, reading the audit log as the auditor user",
    )
    parser.add_argument("--log-json", action="store_true")
    args = parser.parse_args()
    logs.configure("gateway", json=args.log_json)
    run(
        GatewaySettings(
            nats_url=args.nats_url,
            host=args.host,
            port=args.port,
            public_url=args.public_url,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            audit_index=args.audit_index,
        )
    )


if __name__ == "__main__":
    main()
