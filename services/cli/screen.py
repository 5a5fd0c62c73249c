"""What ``hubctl``'s live screens print besides messages: the legend, and severities in plain words.

Page severities on the wire are PagerDuty's (``critical``, ``error``, ``warning``, ``info``);
on a screen ``error`` reads like a fault of the hub, so people see what each asks of them.
"""

from __future__ import annotations

from typing import Final

LEGEND: Final = (
    "legend:  -> a clinic sends   <- a clinic's inbox receives   ** a page goes out   "
    "!! a contraindication alert or a rejection"
)
PAGE_SEVERITY_WORDS: Final[dict[str, str]] = {
    "critical": "stop treatment",
    "error": "change treatment",
    "warning": "avoid a site",
    "info": "for information",
}
"""A page's PagerDuty severity, as what it asks of the person paged."""
ALERT_SEVERITY_WORDS: Final[dict[str, str]] = {
    "absolute": "stop treatment",
    "relative": "change treatment",
    "local": "avoid a site",
    "caution": "for information",
}
"""A contraindication alert's severity, in the same words as the page it causes."""


def page_severity(severity: str) -> str:
    """``critical`` as ``stop treatment (critical)``; an unknown label as itself."""
    words = PAGE_SEVERITY_WORDS.get(severity) or ALERT_SEVERITY_WORDS.get(severity)
    return f"{words} ({severity})" if words else severity
