"""The loss figure logged beside every training run."""

from __future__ import annotations

from pathlib import Path


def plot_losses(history: list[dict], path: Path, title: str | None = None) -> str:
    """Training loss and, where the trainer evaluated (train.eval_steps), held-out loss against the step,
    as in the starcoderbase-1b scikit-learn FIM recipe's figure. The title says which curves there are, so
    a figure with no held-out curve says so rather than leaving the reader to look for it. Returns the
    title."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = []
    for name, label in (("loss", "training loss"), ("eval_loss", "held-out (eval) loss")):
        points = [(h["step"], h[name]) for h in history if name in h and "step" in h]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=label)
            drawn.append(name)
    if title is None:
        title = "Training and held-out loss" if "eval_loss" in drawn else "Training loss"
        if "eval_loss" not in drawn:
            title += "\n(no held-out loss: the trainer evaluates only with train.eval_steps)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss was logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return title
