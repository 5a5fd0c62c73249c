"""The one exception base of the ``referral_hub`` package."""


class HubError(Exception):
    """Base of every error the hub raises on purpose.

    The CLI prints these as one line and exits non-zero; anything else is a bug and keeps
    its traceback.
    """
