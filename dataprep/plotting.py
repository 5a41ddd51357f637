"""Training curves as pictures: one panel per kind of quantity (losses, errors, accuracy,
learning rate), every run's train and test lines on one shared x axis, the run's name
as the title and the legend outside the lines. ``train`` draws its loss plot with it;
so can any command that reads logs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

PANEL_ORDER = ["loss", "error (MAE)", "accuracy", "learning rate"]
LOG_DECADES = 2  # a panel whose positive values span more decades than this gets a log scale


@dataclass(frozen=True)
class Series:
    """One line: its legend label, its quantity (an output name such as ``loss_mae0``,
    or ``lr``), whether it is a train or test line, and its (x, y) points."""

    label: str
    quantity: str
    phase: str
    points: tuple[tuple[float, float], ...]


def panel_of(quantity: str) -> str:
    """The panel a quantity is drawn on: losses together, errors together, and so on."""
    name = quantity.lower()
    if "mae" in name or "error" in name:
        return "error (MAE)"
    if "loss" in name:
        return "loss"
    if "acc" in name:
        return "accuracy"
    if name in ("lr", "learning rate", "learning_rate"):
        return "learning rate"
    return quantity


def panels(series: list[Series]) -> dict[str, list[Series]]:
    """The series grouped by panel, panels in a fixed order (losses first)."""
    grouped: dict[str, list[Series]] = {}
    for line in series:
        if line.points:
            grouped.setdefault(panel_of(line.quantity), []).append(line)
    order = {name: k for k, name in enumerate(PANEL_ORDER)}
    return dict(sorted(grouped.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def spans_decades(values: list[float]) -> bool:
    """Whether positive ``values`` span more than ``LOG_DECADES`` decades (a log scale)."""
    values = [v for v in values if not math.isnan(v)]  # a resumed run's segment breaks
    positive = [v for v in values if v > 0]
    return bool(positive) and len(positive) == len(values) and max(positive) > min(positive) * 10**LOG_DECADES


def training_series(train: list[tuple[int, float]], tests: list[dict], run: str = "") -> list[Series]:
    """A run's train loss and every test output as series (``run`` prefixes the labels
    when several runs share a picture)."""
    prefix = f"{run}: " if run else ""
    out = [Series(f"{prefix}train loss", "loss", "train", tuple((float(i), float(v)) for i, v in train))]
    for name in sorted({k for t in tests for k in t if k != "iteration"}):
        points = tuple((float(t["iteration"]), float(t[name])) for t in tests if name in t)
        out.append(Series(f"{prefix}test {name}", name, "test", points))
    return out


def plot_panels(series: list[Series], path: Path, title: str, xlabel: str = "iteration") -> None:
    """Draw ``series`` into the PNG ``path``: one panel per kind, stacked on a shared x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = panels(series) or {"loss": []}
    fig, axes = plt.subplots(
        len(grouped), 1, sharex=True, squeeze=False, figsize=(8, 2.6 * len(grouped) + 0.6), dpi=100
    )
    for ax, (name, lines) in zip(axes[:, 0], grouped.items()):
        for line in lines:
            xs, ys = zip(*line.points)
            style = "-" if line.phase == "train" else "o-"
            ax.plot(xs, ys, style, markersize=3, label=line.label)
        if spans_decades([y for line in lines for _, y in line.points]):
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title)
    with warnings.catch_warnings():  # many panels: "tight layout not applied"; savefig's bbox fits them
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    with open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    plt.close(fig)
