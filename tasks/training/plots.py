"""The loss figure logged beside every training run."""

from __future__ import annotations

from pathlib import Path


def plot_losses(history: list[dict], path: Path) -> None:
    """Train and eval loss against the step, as in the starcoderbase-1b scikit-learn FIM recipe's figure."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, label in (("loss", "train"), ("eval_loss", "eval")):
        points = [(h["step"], h[name]) for h in history if name in h]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
