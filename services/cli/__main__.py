"""``python -m referral_hub.cli`` is ``hubctl``."""

from referral_hub.cli.main import main

main()
