"""Per-epoch records -> ``log.csv``, ``log.json`` and ``curves.png`` (all rewritten atomically each epoch)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lumbarseg.io.atomic import atomic_path, write_text


def write_logs(run_dir: Path, history: List[Dict[str, Any]], classes: Sequence[str],
               best_epoch: Optional[int], worlds: Sequence[Dict[str, Any]] = ()) -> None:
    """The CSV (one row per epoch, one Dice column per class, the number of processes that trained it), the JSON
    (with the run's ``worlds``: launcher, hosts, devices and batch per rank of each stretch of epochs) and the
    curves."""
    foreground = list(classes[1:])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", "lr", "train_loss", "mean_dice"] + [f"dice_{c}" for c in foreground]
                    + ["seconds", "world_size"])
    for record in history:
        writer.writerow([record["epoch"], f"{record['lr']:.6g}", f"{record['train_loss']:.6f}",
                         f"{record['mean_dice']:.6f}"] + [f"{record['dice'][c]:.6f}" for c in foreground]
                        + [f"{record['seconds']:.1f}", record.get("world_size", "")])  # "": a run before worlds
    write_text(run_dir / "log.csv", buffer.getvalue())
    write_text(run_dir / "log.json", json.dumps({"classes": list(classes), "best_epoch": best_epoch,
                                                 "worlds": list(worlds), "epochs": history},
                                                indent=1, sort_keys=True) + "\n")
    plot_curves(run_dir / "curves.png", history, foreground, best_epoch)


def plot_curves(path: Path, history: List[Dict[str, Any]], foreground: Sequence[str],
                best_epoch: Optional[int]) -> None:
    """Training loss and validation Dice per class against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o", color="black")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    for name in foreground:
        ax_dice.plot(epochs, [r["dice"][name] for r in history], marker=".", label=name)
    ax_dice.plot(epochs, [r["mean_dice"] for r in history], marker="o", color="black", label="mean (foreground)")
    if best_epoch is not None:
        ax_dice.axvline(best_epoch, color="grey", linestyle="--", label=f"best (epoch {best_epoch})")
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    ax_dice.legend(loc="lower right", fontsize="small")
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=100, format="png")
    plt.close(fig)
