"""PNG figures for a run folder: the ELBO curve, and grids of samples and reconstructions.

Figures are built with ``matplotlib.figure.Figure`` directly, so nothing touches pyplot's global state
or needs a display.
"""

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

__all__ = ["plot_elbo_curve", "plot_examples", "plot_density_and_samples"]


def plot_elbo_curve(
    train_elbo: Sequence[tuple[int, float]], validation_elbo: Sequence[tuple[int, float]], path: str | Path
) -> None:
    """ELBO per example (nats) against the training step, for the training batches and validation data."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for points, label, style in ((train_elbo, "train (running)", "-"), (validation_elbo, "validation", "o-")):
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, style, label=label, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel("ELBO per example (nats)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120)


def plot_examples(
    panels: Sequence[tuple[str, torch.Tensor] | tuple[str, torch.Tensor, Sequence[str]]],
    event_shape: tuple[int, ...],
    path: str | Path,
    columns: int | None = None,
) -> Figure:
    """Side-by-side panels of examples, each given as (title, x [n, D]) or (title, x [n, D], a label per row of
    the grid, e.g. "reconstruction" or "class 3"); returns the figure written.

    Images (a 2-D event shape) are tiled in grids of ``columns`` columns (default: as square as possible);
    2-D points are drawn as a scatter plot; other vectors are tiled as 1 x D strips.
    """
    figure = Figure(figsize=(4.5 * len(panels), 4.8), layout="constrained")
    for index, (title, examples, *row_labels) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        examples = examples.detach().float().cpu()
        if event_shape == (2,):
            axes.scatter(examples[:, 0].numpy(), examples[:, 1].numpy(), s=2, alpha=0.5)
            axes.set_aspect("equal")
        else:
            shape = event_shape if len(event_shape) == 2 else (1, math.prod(event_shape))
            canvas = _tile(examples.reshape(-1, *shape), columns).numpy()
            axes.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0)
            _label_rows(axes, row_labels[0] if row_labels else None, shape[0])
        axes.set_title(title)
    figure.savefig(path, dpi=120)
    return figure


@torch.no_grad()
def plot_density_and_samples(
    density: Callable[[torch.Tensor], torch.Tensor],
    samples: torch.Tensor,
    path: str | Path,
    *,
    limit: float = 4.0,
    grid: int = 200,
    titles: tuple[str, str] = ("density", "samples"),
) -> Figure:
    """A 2-D model side by side: ``density(points [G*G, 2]) -> [G*G]`` on a G x G grid over [-limit, limit]^2, and a
    scatter of its ``samples`` [n, 2]; returns the figure written to ``path``."""
    axis = torch.linspace(-limit, limit, grid)
    values = density(torch.cartesian_prod(axis, axis)).reshape(grid, grid).T
    figure = Figure(figsize=(9, 4.5), layout="constrained")
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    left.imshow(values.cpu().numpy(), origin="lower", extent=(-limit, limit, -limit, limit), cmap="viridis")
    samples = samples.detach().cpu()
    right.scatter(samples[:, 0].numpy(), samples[:, 1].numpy(), s=2, alpha=0.5)
    right.set_xlim(-limit, limit)
    right.set_ylim(-limit, limit)
    for axes, title in zip((left, right), titles):
        axes.set_title(title)
    figure.savefig(path, dpi=110)
    return figure


def _label_rows(axes, labels: Sequence[str] | None, height: int, padding: int = 1) -> None:
    """Label the rows of a ``_tile`` canvas of images ``height`` pixels high at the left (no labels: no axes)."""
    if labels is None:
        axes.axis("off")
        return
    axes.set_xticks([])
    axes.set_yticks([padding + row * (height + padding) + (height - 1) / 2 for row in range(len(labels))], labels)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)


def _tile(images: torch.Tensor, columns: int | None = None, padding: int = 1) -> torch.Tensor:
    """[n, H, W] images -> one [rows * (H + p), columns * (W + p)] canvas."""
    count, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = torch.ones(rows * (height + padding) + padding, columns * (width + padding) + padding)
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        canvas[top : top + height, left : left + width] = images[index].clamp(0.0, 1.0)
    return canvas
