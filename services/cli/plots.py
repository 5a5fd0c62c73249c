"""PNG plots of the load benchmarks: latency against offered load, beside raw NATS of the same run.

A benchmark's absolute figures belong to the machine it ran on; what carries over to another
machine is the ratio to raw nats-py on the same server in the same run. So every plot draws
the hub's p50 and p99 beside that baseline and says so in its title.

matplotlib is an optional extra (``bench``) and slow to import, so it is imported inside
:func:`render_png` only: no other hubctl command pays for it, and a missing matplotlib is a
one-line error before a benchmark starts, not a traceback after it ran. It draws with the Agg
backend on a figure of its own, never pyplot's global state, so nothing needs a display.
"""

from __future__ import annotations

import importlib.util
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from referral_hub.errors import HubError

INSTALL_HINT: Final = "pip install 'referral-hub[bench]' (make up installs it)"
PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
WIDTH_INCHES: Final = 10.0
HEIGHT_INCHES: Final = 4.4
DPI: Final = 100
COMPARE_NOTE: Final = "absolute figures are this machine's; the ratio to raw NATS (same server, same run) compares"


class PlotError(HubError):
    """A plot cannot be drawn: matplotlib is missing, the figures do not line up, or the file has nowhere to go."""


@dataclass(frozen=True)
class Curve:
    """One flow's latency quantiles, one value per offered rate, in milliseconds."""

    label: str
    p50_ms: tuple[float, ...]
    p99_ms: tuple[float, ...]


@dataclass(frozen=True)
class LatencyPlot:
    """Everything one plot shows: what ran, the hub's figures per offered rate, and the raw baseline."""

    heading: str
    offered_per_s: tuple[float, ...]
    achieved_per_s: tuple[float, ...]
    curves: tuple[Curve, ...]
    baseline_js_publish_per_s: float
    baseline_kv_put_per_s: float

    def check(self) -> None:
        """Refuse figures that cannot be drawn honestly: missing, misaligned, or not positive."""
        rates = len(self.offered_per_s)
        if rates == 0 or not self.curves:
            msg = "nothing to plot: no offered rate or no latency curve"
            raise PlotError(msg)
        lengths = (
            {len(self.achieved_per_s)} | {len(c.p50_ms) for c in self.curves} | {len(c.p99_ms) for c in self.curves}
        )
        if lengths != {rates}:
            msg = f"every series needs one value per offered rate ({rates}); got lengths {sorted(lengths)}"
            raise PlotError(msg)
        if min(self.offered_per_s) <= 0 or min(self.baseline_js_publish_per_s, self.baseline_kv_put_per_s) <= 0:
            msg = "offered rates and raw baselines must be positive"
            raise PlotError(msg)


def require_matplotlib() -> None:
    """Fail in one line, before any benchmark runs, when the ``bench`` extra is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        msg = f"--plot needs matplotlib: {INSTALL_HINT}"
        raise PlotError(msg)


def render_png(plot: LatencyPlot) -> bytes:
    """The plot as PNG bytes: latency against offered load (left), throughput against raw NATS (right).

    The raw baselines are sequential round trips, so ``1000 / rate`` is one raw publish's (or
    KV put's) latency in milliseconds: the left panel draws that under the hub's quantiles, the
    right one draws the raw rates over the hub's achieved throughput.
    """
    plot.check()
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional extra, slow import
    from matplotlib.figure import Figure  # noqa: PLC0415 - as above

    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    latency, throughput = figure.subplots(1, 2)
    offered = list(plot.offered_per_s)
    for index, curve in enumerate(plot.curves):
        colour = f"C{index}"
        latency.plot(offered, _drawable(curve.p50_ms), marker="o", color=colour, label=f"{curve.label} p50")
        latency.plot(
            offered, _drawable(curve.p99_ms), marker="^", linestyle="--", color=colour, label=f"{curve.label} p99"
        )
    js_ms = 1000 / plot.baseline_js_publish_per_s
    kv_ms = 1000 / plot.baseline_kv_put_per_s
    latency.axhline(js_ms, color="0.35", linestyle=":", label=f"raw JS publish+ack {js_ms:.2f} ms")
    latency.axhline(kv_ms, color="0.6", linestyle="-.", label=f"raw KV put {kv_ms:.2f} ms")
    latency.set_yscale("log")
    latency.set_xlabel("offered load (messages/s)")
    latency.set_ylabel("latency (ms, log scale)")
    latency.set_title("hub latency beside one raw NATS round trip", fontsize="medium")
    latency.legend(fontsize="x-small")
    latency.grid(visible=True, which="both", alpha=0.3)

    throughput.plot(offered, offered, color="0.8", linestyle="-", label="offered")
    throughput.plot(offered, list(plot.achieved_per_s), marker="o", color="C0", label="hub answered")
    ratio = max(plot.achieved_per_s) / plot.baseline_kv_put_per_s
    throughput.axhline(
        plot.baseline_js_publish_per_s,
        color="0.35",
        linestyle=":",
        label=f"raw JS publish+ack {plot.baseline_js_publish_per_s:,.0f}/s",
    )
    throughput.axhline(
        plot.baseline_kv_put_per_s, color="0.6", linestyle="-.", label=f"raw KV put {plot.baseline_kv_put_per_s:,.0f}/s"
    )
    throughput.set_xlabel("offered load (messages/s)")
    throughput.set_ylabel("messages/s")
    throughput.set_title(f"throughput beside raw NATS: best ratio to KV put {ratio:.3g}", fontsize="medium")
    throughput.legend(fontsize="x-small")
    throughput.grid(visible=True, alpha=0.3)

    figure.suptitle(f"{plot.heading}\n{COMPARE_NOTE}", fontsize="medium")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _drawable(values: tuple[float, ...]) -> list[float]:
    """A rate with no answers has latency 0 in the figures; on a log axis it is a gap, not a point."""
    return [value if value > 0 else math.nan for value in values]


def write_png(plot: LatencyPlot, path: Path) -> None:
    """Draw the plot into ``path`` (written whole, then renamed, so a reader never sees half a PNG)."""
    data = render_png(plot)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def check_target(path: Path) -> None:
    """Refuse ``--plot FILE`` in one line before a benchmark runs: no matplotlib, or nowhere to write."""
    require_matplotlib()
    if not path.parent.is_dir():
        msg = f"--plot {path}: directory {path.parent} does not exist"
        raise PlotError(msg)
