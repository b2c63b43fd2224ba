"""Latency against size, log-log, one line per transport, written as a PNG (Agg backend)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use("Agg")

from ._units import format_size

Series = Mapping[str, Sequence[tuple[int, float]]]  # transport -> (size, seconds)


def plot_latency(
    path: Path,
    series: Series,
    title: str,
    highlight: str | None = None,
    dashed: Collection[str] = (),
) -> None:
    """Draw median round trip (seconds) against size (bytes) per transport into `path` (PNG).

    `highlight` gets a thick line, `dashed` (floors, say) dashed ones.
    """
    figure, axes = plt.subplots(figsize=(10, 7), dpi=120)
    palette = plt.get_cmap("tab20")  # pairs of dark and light: 20 lines, not 10
    try:
        for index, (name, points) in enumerate(series.items()):
            sizes = [size for size, _ in points]
            seconds = [value for _, value in points]
            axes.loglog(
                sizes,
                seconds,
                marker="o",
                linewidth=3.0 if name == highlight else 1.5,
                linestyle="--" if name in dashed else "-",
                color=palette(2 * index % 20 + 2 * index // 20 % 2),
                label=name,
            )
        sizes = sorted({size for points in series.values() for size, _ in points})
        axes.set_xticks(sizes, [format_size(size) for size in sizes])
        axes.minorticks_off()
        axes.set_xlabel("tensor size (sent, then the same size back)")
        axes.set_ylabel("median round trip (s)")
        axes.set_title(title)
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize="small", ncols=2)
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
