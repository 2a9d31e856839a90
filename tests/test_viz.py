"""Figures the package draws stay legible on a phone: at most 7 inches wide, 8 panels per row, 9-pt text."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from xai_robust import viz  # noqa: E402


def _texts(fig):
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def test_image_grid_wraps_at_eight_and_caps_the_width():
    fig = viz.image_grid(torch.rand(20, 3, 8, 8), [f"image {i}" for i in range(20)], ncols=20, title="t")
    assert fig.get_size_inches()[0] <= viz.MAX_WIDTH + 1e-9
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 20 and len({round(ax.get_position().x0, 3) for ax in shown}) <= viz.MAX_COLUMNS
    assert min(t.get_fontsize() for t in _texts(fig)) >= 9
    plt.close(fig)


def test_show_heatmaps_blocks_of_eight_with_a_colorbar():
    x, h = torch.rand(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    fig = viz.show_heatmaps(x, {"LRP": h, "GxI": -h}, [f"image {i}" for i in range(16)])
    assert fig.get_size_inches()[0] <= viz.MAX_WIDTH + 1e-9
    maps = [ax for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == viz.HEATMAP_CMAP]
    assert len(maps) == 32
    assert all(ax.images[0].get_clim() == (-1, 1) for ax in maps)
    colorbars = [ax for ax in fig.axes if not ax.images and "relevance" in ax.get_ylabel()]
    assert len(colorbars) == 1
    assert min(t.get_fontsize() for t in _texts(fig)) >= 9
    plt.close(fig)
