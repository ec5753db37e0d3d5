"""The cross-validation report `vidclass train` writes to reports/: crossval.json, the confusion
matrix, the reliability diagram and the learning curve (the README's model card shows them)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vidclass import CLASS_NAMES


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(cm, class_names, path, title=""):
    plt = _pyplot()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5.5, 4.8), dpi=110)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(calibration: dict, path: Path, title: str = "") -> None:
    plt = _pyplot()
    bins = calibration["bins"]
    fig, ax = plt.subplots(figsize=(4.8, 4.6), dpi=110)
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="perfect calibration")
    centres = [(b["from"] + b["to"]) / 2 for b in bins]
    ax.bar(centres, [b["accuracy"] for b in bins], width=0.09, color="#4c78a8", alpha=0.8,
           label="accuracy in bin")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#e45756",
            label="mean confidence")
    for c, b in zip(centres, bins):
        ax.text(c, 0.02, str(b["clips"]), ha="center", fontsize=7, color="white")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-class confidence")
    ax.set_ylabel("accuracy (clips per bin at the bottom)")
    ax.set_title(title or f"ECE {calibration['ece']:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_learning_curve(rows: list[dict], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=110)
    x = [r["train_families"] for r in rows]
    ax.errorbar(x, [r["accuracy"] for r in rows], yerr=[r["accuracy_spread"] for r in rows],
                color="black", lw=2, marker="o", capsize=3, label="all classes")
    for name in CLASS_NAMES:
        ax.plot(x, [r["recall"][name] for r in rows], marker=".", lw=1, label=f"{name} recall")
    ax.axhline(0.9, color="#999", lw=1, ls=":")
    ax.set_xlabel("training source families per fold")
    ax.set_ylabel("accuracy on unseen sources (mean over sources)")
    ax.set_ylim(0.3, 1.0)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("learning curve (grouped 10-fold)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_crossval_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "crossval.json").write_text(json.dumps(report, indent=1))
    plot_confusion(report["confusion_matrix"], list(CLASS_NAMES), out_dir / "confusion_matrix.png",
                   title=f"cross-validated: {report['clip_accuracy']:.1%} of {report['num_clips']} clips")
    plot_reliability(report["calibration"], out_dir / "reliability.png",
                     title=f"family folds: reliability, ECE {report['calibration']['ece']:.3f}")
    if report.get("calibration_locked"):
        plot_reliability(report["calibration_locked"], out_dir / "reliability_locked.png",
                         title=f"locked families: reliability, ECE {report['calibration_locked']['ece']:.3f}")
    if report.get("learning_curve"):
        plot_learning_curve(report["learning_curve"], out_dir / "learning_curve.png")
