"""Feature study: how well does each feature group generalise to sources a model never saw?

    .venv/bin/python -m bench.feature_study CORPUS FEATURES_DIR [FEATURES_DIR ...]

Each FEATURES_DIR is a `vidclass extract` output (train/val/test h5 files) of one pipeline. For
every feature group in it (backbone columns, content statistics, both), each clip becomes the mean
of its valid steps and a class-balanced L2 logistic regression is scored leave-one-source-out: for
each source family with evaluable clips, train on every other family and predict that one.
`stills_motion` clips are never scored and, as in `vidclass train`'s default data, are left out
of training too (`--with-stills` keeps them). This is how the shipped pipeline was chosen
(BENCHMARKS.md, "Feature study").
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vidclass.training.dataset import list_clips, source_family
from vidclass.features.store import FeatureStore


def clip_means(features_dir: Path):
    """(per-clip mean features [N, D], labels [N], names, groups, pipeline) over all splits."""
    xs, ys, names, groups, pipeline = [], [], [], [], None
    for path in sorted(features_dir.glob("*_features*.h5")):
        with FeatureStore(path) as store:
            data = store.read_all()
        pipeline = data["pipeline"]
        valid = np.arange(data["features"].shape[1])[None, :] < data["num_frames"][:, None]
        xs.append((data["features"] * valid[..., None]).sum(1) / valid.sum(1, keepdims=True))
        ys.append(data["labels"])
        names += data["video_names"]
        groups += data["groups"]
    return np.concatenate(xs), np.concatenate(ys), names, groups, pipeline


def fit_predict(x_train, y_train, x_test, l2: float, num_classes: int) -> np.ndarray:
    """Multinomial logistic regression (class-balanced, L2 on standardised inputs), by L-BFGS."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.as_tensor((x_train - mean) / std, dtype=torch.float64)
    yt = torch.as_tensor(y_train)
    counts = torch.bincount(yt, minlength=num_classes).clamp(min=1).double()
    weights = (counts.sum() / (num_classes * counts))[yt]
    w = torch.zeros(xt.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(xt @ w + b, yt, reduction="none") * weights).mean()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        xs = torch.as_tensor((x_test - mean) / std, dtype=torch.float64)
        return (xs @ w + b).argmax(1).numpy()


def leave_one_source_out(x, y, families, scored, trainable, l2: float) -> float:
    pred = np.full(len(y), -1)
    for family in sorted(set(families[scored])):
        test = scored & (families == family)
        train = trainable & (families != family)
        pred[test] = fit_predict(x[train], y[train], x[test], l2, int(y.max()) + 1)
    return float((pred[scored] == y[scored]).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", help="labelled corpus with MANIFEST.tsv (for origins)")
    ap.add_argument("features_dirs", nargs="+", type=Path)
    ap.add_argument("--l2", default="0.1,0.3,1", help="comma-separated L2 strengths")
    ap.add_argument("--with-stills", action="store_true", help="train on stills_motion clips too")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    origin = {c.name: c.origin for c in list_clips(args.corpus, Path(args.corpus) / "MANIFEST.tsv")}
    print("| pipeline | columns | dim | " + " | ".join(f"L2 {v}" for v in args.l2.split(",")) + " |")
    print("|---|---|---|" + "---|" * len(args.l2.split(",")))
    for features_dir in args.features_dirs:
        x, y, names, groups, pipeline = clip_means(features_dir)
        families = np.array([source_family(g) for g in groups])
        scored = np.array([origin.get(n, "") != "stills_motion" for n in names])
        trainable = scored | args.with_stills
        bd = pipeline.backbone_dim
        columns = {pipeline.backbone: slice(0, bd)}
        if pipeline.extras_dim:
            columns["+".join(pipeline.extras)] = slice(bd, None)
            columns["both"] = slice(0, None)
        for label, cols in columns.items():
            xc = x[:, cols]
            accs = [leave_one_source_out(xc, y, families, scored, trainable, float(v))
                    for v in args.l2.split(",")]
            print(f"| {features_dir.name} | {label} | {xc.shape[1]} | "
                  + " | ".join(f"{a:.1%}" for a in accs) + " |", flush=True)
    print(f"\n{int(scored.sum())} scored clips from {len(set(families[scored]))} source families")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
