"""The benchmark plots, drawn from fixed figures: a real PNG of the promised size, and clear refusals."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest
from matplotlib import image

from referral_hub.cli import plots
from referral_hub.cli.bench import Baseline
from referral_hub.cli.bench_pages import PagesReport, Run
from referral_hub.cli.main import build_parser

FIGURES = plots.LatencyPlot(
    heading="hubctl bench load: 20 clinics, 1 NATS node(s), sync always",
    offered_per_s=(25.0, 50.0, 100.0),
    achieved_per_s=(25.1, 50.1, 99.2),
    curves=(
        plots.Curve("referral.request", (12.5, 14.0, 30.2), (40.0, 61.3, 140.8)),
        plots.Curve("alert.raise", (9.1, 0.0, 22.0), (20.4, 0.0, 90.1)),
    ),
    baseline_js_publish_per_s=2_950.0,
    baseline_kv_put_per_s=2_800.0,
)


def test_the_plot_is_a_png_of_the_promised_size() -> None:
    data = plots.render_png(FIGURES)
    assert data.startswith(plots.PNG_MAGIC)
    pixels = image.imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (
        round(plots.HEIGHT_INCHES * plots.DPI),
        round(plots.WIDTH_INCHES * plots.DPI),
    )
    assert pixels.std() > 0  # something was drawn, not a blank canvas
    assert len(data) < 150_000


def test_written_whole_to_the_file_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "load.png"
    plots.write_png(FIGURES, target)
    assert target.read_bytes().startswith(plots.PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["load.png"]


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        (plots.LatencyPlot("x", (), (), FIGURES.curves, 1.0, 1.0), "nothing to plot"),
        (plots.LatencyPlot("x", (10.0, 20.0), (10.0,), FIGURES.curves, 1.0, 1.0), "one value per offered rate"),
        (plots.LatencyPlot("x", (25.0, 50.0, 100.0), (1.0, 2.0, 3.0), FIGURES.curves, 0.0, 1.0), "positive"),
    ],
)
def test_figures_that_do_not_line_up_are_refused(figures: plots.LatencyPlot, reason: str) -> None:
    with pytest.raises(plots.PlotError, match=reason):
        plots.render_png(figures)


BENCHMARKS = {"load": "referral_hub.cli.bench_load.bench_load", "pages": "referral_hub.cli.bench_pages.bench_pages"}


def refuse_to_run(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    async def benchmark(*_: object) -> object:
        msg = "the benchmark ran"
        raise AssertionError(msg)

    monkeypatch.setattr(BENCHMARKS[which], benchmark)


@pytest.mark.parametrize("which", ["load", "pages"])
def test_without_matplotlib_plot_fails_in_one_line_before_the_benchmark(
    which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = build_parser().parse_args(["bench", which, "--plot", str(tmp_path / "p.png")])
    refuse_to_run(monkeypatch, which)
    monkeypatch.setitem(sys.modules, "matplotlib", None)

    with pytest.raises(plots.PlotError) as refused:
        asyncio.run(args.run(args))
    assert str(refused.value) == "--plot needs matplotlib: pip install 'referral-hub[bench]' (make up installs it)"


def test_plot_into_a_missing_directory_is_refused_before_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = build_parser().parse_args(["bench", "load", "--plot", str(tmp_path / "nowhere" / "p.png")])
    refuse_to_run(monkeypatch, "load")

    with pytest.raises(plots.PlotError, match="does not exist"):
        asyncio.run(args.run(args))


def pages_report() -> PagesReport:
    """One rate: 100 alerts at 50/s, every page 12.5 ms after its alert, the raw chain's 10 ms after."""
    sent = {f"a{n}": n / 50.0 for n in range(100)}
    report = PagesReport("always", Baseline(2_950.0, 2_800.0))
    report.hub.append(Run(50.0, sent, {a: t + 0.0125 for a, t in sent.items()}))
    report.raw.append(Run(50.0, sent, {a: t + 0.010 for a, t in sent.items()}))
    return report


@pytest.mark.parametrize("asked", [True, False])
def test_bench_pages_draws_its_figures_only_where_asked(
    asked: bool,  # noqa: FBT001 - a parametrized flag
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "asked.png"
    args = build_parser().parse_args(["bench", "pages", "--json", *(["--plot", str(target)] if asked else [])])

    async def benchmark(*_: object, **__: object) -> PagesReport:
        return pages_report()

    monkeypatch.setattr(BENCHMARKS["pages"], benchmark)

    assert asyncio.run(args.run(args)) == 0
    assert '"p99_ratio": 1.25' in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == (["asked.png"] if asked else [])
    if asked:
        assert target.read_bytes().startswith(plots.PNG_MAGIC)
