"""Figures of the experiments: learning curves per task and arm, task × expert routing heatmaps.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state),
so they work on headless machines and inside tests. Every function returns what it drew (the
number of curves, or the heatmap array), so tests can check a figure's content, not only that
a PNG exists. matplotlib comes with the ``plots`` extra (``pip install 'multimodel[plots]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from multimodel.errors import MissingExtraError
from multimodel.experiments.grid import Plan, RunSpec, read_log, schedule

#: One curve: x values (steps on the task) and y values.
Curve = tuple[np.ndarray, np.ndarray]


def require_matplotlib() -> None:
    """Raise :class:`~multimodel.errors.MissingExtraError` unless matplotlib (the ``plots``
    extra) is installed; called before an experiment's runs, so they are not lost to it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise MissingExtraError("drawing the experiments' figures", "plots", err) from None


def _figure(width: float, height: float):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def task_step_axis(spec: RunSpec) -> dict[str, np.ndarray]:
    """Task → array ``c`` with ``c[s]`` = steps the task received among the run's first ``s`` steps."""
    order = schedule(spec.probabilities, spec.cfg.data.seed, spec.cfg.train.steps)
    return {t: np.concatenate([[0], np.cumsum([o == t for o in order])]) for t in spec.cfg.data.tasks}


def run_curves(spec: RunSpec, run_dir: Path) -> dict[str, dict[str, Curve]]:
    """Task → {"loss", "accuracy"} → (steps on that task, training value) from ``log.jsonl``."""
    axis = task_step_axis(spec)
    records = read_log(run_dir)
    out: dict[str, dict[str, Curve]] = {}
    for task in spec.cfg.data.tasks:
        for key in ("loss", "accuracy"):
            pts = [(axis[task][min(r["step"], len(axis[task]) - 1)], r[f"{key}/{task}"])
                   for r in records if f"{key}/{task}" in r]
            if pts:
                x, y = np.asarray(pts, dtype=np.float64).T
                out.setdefault(task, {})[key] = (x, y)
    return out


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """Average of curves over seeds, interpolated onto their shared x range."""
    if len(curves) == 1:
        return curves[0]
    lo = max(float(x[0]) for x, _ in curves)
    hi = min(float(x[-1]) for x, _ in curves)
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if grid.size == 0:
        grid = curves[0][0]
    return grid, np.mean([np.interp(grid, x, y) for x, y in curves], axis=0)


def plot_panels(panels: Sequence[tuple[str, str, dict[str, Curve]]], path: Path, *,
                ncols: int | None = None, xlabel: str = "steps on this task") -> int:
    """Panels of labelled curves, one colour per label across panels; returns the curve count.

    Args:
        panels: (title, y label, {label: (x, y)}) per panel.
        path: PNG to write.
        ncols: panels per row (default: all in one row).
    """
    n = len(panels)
    ncols = ncols or max(1, n)
    nrows = max(1, -(-n // ncols))
    fig = _figure(3.4 * ncols, 2.8 * nrows)
    labels: list[str] = []
    for _, _, curves in panels:
        labels += [k for k in curves if k not in labels]
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    count = 0
    for i, (title, ylabel, curves) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for label, (x, y) in curves.items():
            ax.plot(x, y, label=label, color=colours[label], marker="." if len(x) < 12 else None)
        count += len(ax.get_lines())
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return count


def plot_learning_curves(plan: Plan, out: Path, path: Path) -> int:
    """Training loss and per-token accuracy per task (columns of panels), one curve per arm.

    The x axis counts steps *on that task*, so arms with matched per-task compute end at the
    same x. Curves are averaged over seeds. Returns the number of curves drawn.
    """
    gathered: dict[str, dict[str, dict[str, list[Curve]]]] = {}  # task → key → column → curves
    for spec in plan.specs:
        run_dir = out / "runs" / spec.name
        for task, by_key in run_curves(spec, run_dir).items():
            for key, curve in by_key.items():
                gathered.setdefault(task, {}).setdefault(key, {}).setdefault(spec.arm.column, []).append(curve)
    panels = []
    for key, ylabel in (("loss", "training loss"), ("accuracy", "training per-token acc %")):
        for task in plan.tasks:
            by_col = gathered.get(task, {}).get(key, {})
            curves = {}
            for col in plan.columns:
                if by_col.get(col):
                    x, y = mean_curve(by_col[col])
                    curves[col] = (x, y * 100 if key == "accuracy" else y)
            panels.append((task, ylabel, curves))
    return plot_panels(panels, path, ncols=len(plan.tasks))


def plot_routing_heatmap(matrix: np.ndarray, tasks: Sequence[str], path: Path, *, title: str) -> np.ndarray:
    """Heatmap of a (tasks × experts) matrix of routing fractions; returns the array drawn."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n_tasks, n_experts = matrix.shape
    longest = max((len(t) for t in tasks), default=4)
    fig = _figure(max(5.5, 2.2 + 0.07 * longest + 0.42 * n_experts), max(2.6, 1.5 + 0.42 * n_tasks))
    ax = fig.add_subplot(1, 1, 1)
    top = max(float(matrix.max()), 1e-9)
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
    ax.set_yticks(range(n_tasks))
    ax.set_yticklabels(tasks, fontsize=8)
    step = max(1, n_experts // 16)
    ax.set_xticks(range(0, n_experts, step))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("expert", fontsize=8)
    ax.set_title(title, fontsize=9)
    if n_experts <= 16 and n_tasks <= 12:  # small enough to print each share
        for i in range(n_tasks):
            for e in range(n_experts):
                ax.text(e, i, f"{100 * matrix[i, e]:.0f}", ha="center", va="center", fontsize=6,
                        color="black" if matrix[i, e] > 0.6 * top else "white")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("share of the task's token-slots", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return np.asarray(image.get_array())


#: One row of a difference plot: label, mean, interval low, interval high, established.
DifferenceRow = tuple[str, float, float, float, bool]


def plot_differences(rows: Sequence[DifferenceRow], path: Path, *, title: str, xlabel: str) -> int:
    """Paired differences with their intervals, one row each (a forest plot); returns the rows drawn.

    Established differences (interval excludes 0) are filled, the others hollow; a row without
    an interval (one seed) shows its point alone. Rows whose mean is not finite are skipped.
    """
    rows = [r for r in rows if np.isfinite(r[1])]
    fig = _figure(6.4, max(1.8, 0.9 + 0.28 * len(rows)))
    ax = fig.add_subplot(1, 1, 1)
    for y, (label, mean, low, high, established) in enumerate(reversed(rows)):
        colour = "C0" if established else "0.45"
        if np.isfinite(low) and np.isfinite(high):
            ax.plot([low, high], [y, y], color=colour, linewidth=1.6)
        ax.plot([mean], [y], marker="o", markersize=5, color=colour,
                markerfacecolor=colour if established else "white")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in reversed(rows)], fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return len(rows)
