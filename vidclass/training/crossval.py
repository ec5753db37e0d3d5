"""Cross-validation by source: what the shipped recipe scores on sources it never saw.

Every source family (vidclass.training.dataset.source_family) with evaluable clips is held out in turn
(leave-one-source-out, or grouped k-fold), the recipe of vidclass.training.linear_fit is fitted on every other
family, and the held-out clips are predicted. `stills_motion` clips (synthetic motion over real
pictures) are trained on but never scored. Scores count every source equally: a source's
accuracy is the mean over its clips, and the headline accuracy and each class's recall are means
over sources, so a source with 20 clips weighs no more than one with 2. Clip-level numbers are
reported beside them.

The same out-of-fold predictions calibrate the shipped ensemble (one temperature for all
members, fitted by likelihood) and give its expected calibration error, measured on each fold
with a temperature fitted on the other folds only.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from vidclass.training.linear_fit import fit_ensemble, member_logits, member_subcategory_probs

TRAINING_ONLY = "stills_motion"
TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(10.0), 121))


def folds(families, evaluable, k: int = 0) -> list[list[str]]:
    """Held-out families per fold: one each (k=0, leave-one-source-out) or k groups in a fixed
    hash order (grouped k-fold)."""
    fams = sorted({f for f, e in zip(families, evaluable) if e})
    if k <= 0 or k >= len(fams):
        return [[f] for f in fams]
    order = sorted(fams, key=lambda f: hashlib.sha256(f.encode()).hexdigest())
    return [order[i::k] for i in range(k)]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def ensemble_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Mean over members [M, N, C] of each member's tempered softmax, as Ensemble.predict does."""
    return softmax(logits, temperature).mean(0)


def fit_temperature(logits: np.ndarray, labels) -> float:
    """The temperature minimising the ensemble's negative log-likelihood (grid over 0.2-10)."""
    labels = np.asarray(labels)
    nll = [-np.log(ensemble_probs(logits, t)[np.arange(len(labels)), labels] + 1e-12).mean()
           for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def calibration(probs: np.ndarray, labels, bins: int = 10) -> dict:
    """Expected calibration error of the top-class confidence, with the reliability table."""
    labels = np.asarray(labels)
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
            table.append({"from": round(float(lo), 2), "to": round(float(hi), 2), "clips": int(sel.sum()),
                          "confidence": float(conf[sel].mean()), "accuracy": float(correct[sel].mean())})
    return {"ece": float(ece), "bins": table}


def source_scores(pred, labels, families, class_names) -> dict:
    """Per-source accuracy, the source-weighted accuracy and recall per class, clip accuracy."""
    per = defaultdict(list)
    for p, y, f in zip(pred, labels, families):
        per[(int(y), f)].append(p == y)
    by_source = {f"{class_names[y]}/{f}": float(np.mean(v)) for (y, f), v in sorted(per.items())}
    recall = {}
    for c, name in enumerate(class_names):
        accs = [np.mean(v) for (y, _), v in per.items() if y == c]
        recall[name] = float(np.mean(accs)) if accs else None
    return {"accuracy": float(np.mean([np.mean(v) for v in per.values()])),
            "recall": recall,
            "clip_accuracy": float(np.mean(np.asarray(pred) == np.asarray(labels))),
            "num_clips": int(len(labels)), "num_sources": len(per),
            "per_source": by_source}


def training_rows(data, clips) -> tuple[np.ndarray, np.ndarray, list, list | None]:
    """(pooled, labels, families, subcategories) of the clips selected by the mask `clips`, then
    of their sub-clip views (data["views"], data["view_of"]: vidclass.training.linear_fit.subclip_views)."""
    idx = np.where(clips)[0]
    if data.get("views") is not None and len(data["views"]):
        view_rows = np.where(clips[data["view_of"]])[0]
        of = np.concatenate([idx, data["view_of"][view_rows]])
        x = np.concatenate([data["pooled"][idx], data["views"][view_rows]])
    else:
        of, x = idx, data["pooled"][idx]
    subs = data.get("subcategories")
    return (x, np.asarray(data["labels"])[of], [data["families"][i] for i in of],
            None if subs is None else [subs[i] for i in of])


def out_of_fold(data, blocks, cfg, k: int = 0, keep_sources=None, seed: int = 0) -> dict:
    """Out-of-fold member logits [M, N, C] (NaN where not scored), subcategory probs, fold ids.

    data: dict with pooled [N, 2D], labels, families, evaluable, subcategories (taxonomy index or
    -1), num_subcategories. keep_sources(train_families, rng) -> families to train on (learning
    curve); None keeps all."""
    pooled, labels, families = data["pooled"], np.asarray(data["labels"]), list(data["families"])
    evaluable = np.asarray(data["evaluable"], bool)
    n, m = len(labels), cfg.num_models
    logits = np.full((m, n, cfg.num_classes), np.nan)
    sub_probs = None
    fold_of = np.full(n, -1)
    rng = np.random.default_rng(seed)
    for j, held in enumerate(folds(families, evaluable, k)):
        held = set(held)
        train_fams = sorted({f for f in families if f not in held})
        if keep_sources is not None:
            train_fams = keep_sources(train_fams, rng)
        keep = set(train_fams)
        tr = np.array([f in keep for f in families])
        te = np.array([f in held for f in families]) & evaluable
        x, y, fams, subs = training_rows(data, tr)
        models = fit_ensemble(x, y, fams, blocks, cfg.num_classes, cfg.l2, m, cfg.member_sources,
                              cfg.seed + j, subs, data.get("num_subcategories", 0))
        logits[:, te] = member_logits(models, pooled[te])
        sp = member_subcategory_probs(models, pooled[te])
        if sp is not None:
            if sub_probs is None:
                sub_probs = np.full((n, sp.shape[1]), np.nan)
            sub_probs[te] = sp
        fold_of[te] = j
    return {"logits": logits, "subcategory_probs": sub_probs, "fold": fold_of}


def nested_calibrated_probs(logits, labels, fold) -> tuple[np.ndarray, list[float]]:
    """Probabilities of each fold's clips with a temperature fitted on the other folds only."""
    probs = np.zeros(logits.shape[1:])
    temps = []
    for j in np.unique(fold):
        mine, rest = fold == j, fold != j
        t = fit_temperature(logits[:, rest], labels[rest])
        temps.append(t)
        probs[mine] = ensemble_probs(logits[:, mine], t)
    return probs, temps


def learning_curve(data, blocks, cfg, fractions=(0.25, 0.5, 0.75, 1.0), repeats: int = 3,
                   k: int = 10, class_names=()) -> list[dict]:
    """Grouped k-fold accuracy when only a share of each fold's training sources is kept
    (a seeded random subset per fold and repeat), per class. k-fold rather than one source out
    to keep it affordable; the 1.0 point is the grouped k-fold score of the full recipe."""
    labels = np.asarray(data["labels"])
    data = {**data, "subcategories": None, "num_subcategories": 0}     # classes only: cheaper
    rows = []
    for frac in fractions:
        runs = []
        for r in range(repeats if frac < 1.0 else 1):
            def keep(fams, rng, frac=frac):
                return sorted(rng.choice(fams, max(2, round(frac * len(fams))), replace=False)) \
                    if frac < 1.0 else fams
            oof = out_of_fold(data, blocks, cfg, k=k, keep_sources=keep, seed=1000 * r + 7)
            scored = oof["fold"] >= 0
            pred = oof["logits"][:, scored].mean(0).argmax(1)
            s = source_scores(pred, labels[scored], [f for f, sc in zip(data["families"], scored) if sc],
                              class_names)
            folds_acc = [float(np.mean(pred[oof["fold"][scored] == j] == labels[scored][oof["fold"][scored] == j]))
                         for j in np.unique(oof["fold"][scored])]
            runs.append({"accuracy": s["accuracy"], "recall": s["recall"], "fold_accuracies": folds_acc})
        train_sources = round(frac * len({f for f in data["families"]}) * (k - 1) / k)
        rows.append({
            "fraction": frac, "train_sources": train_sources, "repeats": len(runs),
            "accuracy": float(np.mean([r["accuracy"] for r in runs])),
            "accuracy_spread": float(np.std([r["accuracy"] for r in runs])),
            "fold_accuracy_std": float(np.mean([np.std(r["fold_accuracies"]) for r in runs])),
            "recall": {c: float(np.mean([r["recall"][c] for r in runs])) for c in class_names},
        })
    return rows
