"""Cross-validation by source family: what a recipe scores on sources it never saw.

A family (MANIFEST.tsv `family`: groups that share a program, author, engine or package) is the
unit: about a fifth of the evaluable families, stratified by class, are locked away
(`locked_families`) and scored once per recipe as the final check; the rest are cross-validated
in k folds of whole families (a recipe of vidclass.training.recipes fitted on the other folds,
the held-out clips predicted). `stills_motion` clips (synthetic motion over real
pictures) are trained on but never scored. Scores count every source equally: a source's
accuracy is the mean over its clips, and the headline accuracy and each class's recall are means
over families, so a family with 20 clips weighs no more than one with 2. Clip-level numbers are
reported beside them.

The same out-of-fold predictions calibrate the shipped ensemble (one temperature for all
members, fitted by likelihood) and give its expected calibration error, measured on each fold
with a temperature fitted on the other folds only.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import replace

import numpy as np

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


def locked_families(families, labels, evaluable, share: float = 0.2, salt: str = "locked-v1") -> set[str]:
    """About `share` of the evaluable families of each class (a family counts for the class most
    of its scored clips have), in a fixed hash order: the final check that no choice sees. Fixed
    before looking at any score; changing `salt` draws another set."""
    main: dict[str, int] = {}
    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for f, y, e in zip(families, labels, evaluable):
        if e:
            counts[f][int(y)] += 1
    for f, c in counts.items():
        main[f] = max(sorted(c), key=lambda k: c[k])
    locked = set()
    for cls in sorted(set(main.values())):
        fams = sorted((f for f, k in main.items() if k == cls),
                      key=lambda f: hashlib.sha256(f"{salt}:{f}".encode()).hexdigest())
        locked.update(fams[:round(share * len(fams))])
    return locked


def out_of_fold(recipe, corpus, usable, k: int = 10, keep_sources=None, seed: int = 0,
                num_classes: int = 4, subcategories: bool = True) -> dict:
    """Out-of-fold member logits [M, N, C] (NaN where not scored), subcategory probs, fold ids.

    Folds are over the families of the clips in `usable` (a mask; locked families left out);
    each fold's held-out evaluable clips are predicted by the recipe fitted on the other usable
    clips. keep_sources(train_families, rng) -> families to train on (learning curve)."""
    families = list(corpus.families)
    n = len(families)
    logits = np.full((recipe.members, n, num_classes), np.nan)
    sub_probs = None
    fold_of = np.full(n, -1)
    rng = np.random.default_rng(seed)
    in_use = [f for f, u in zip(families, usable) if u]
    for j, held in enumerate(folds(in_use, [e for e, u in zip(corpus.evaluable, usable) if u], k)):
        held = set(held)
        train_fams = sorted({f for f in in_use if f not in held})
        if keep_sources is not None:
            train_fams = keep_sources(train_fams, rng)
        keep = set(train_fams)
        tr = np.where([u and f in keep for f, u in zip(families, usable)])[0]
        te = np.where([u and f in held and e for f, u, e in zip(families, usable, corpus.evaluable)])[0]
        models = recipe.fit(corpus, tr, seed + j, num_classes, subcategories)
        fold_logits, sp = recipe.outputs(models, corpus, te)
        logits[:, te] = fold_logits
        if sp is not None:
            if sub_probs is None:
                sub_probs = np.full((n, sp.shape[1]), np.nan)
            sub_probs[te] = sp
        fold_of[te] = j
    return {"logits": logits, "subcategory_probs": sub_probs, "fold": fold_of}


def uncertain_threshold(probs: np.ndarray, labels, target: float = 0.9,
                        grid=np.round(np.arange(0.30, 0.96, 0.01), 2)) -> float:
    """The lowest confidence threshold at which the clips answered (confidence >= it) are right
    at least `target` of the time; the highest of the grid when none is."""
    labels = np.asarray(labels)
    conf, right = probs.max(1), probs.argmax(1) == labels
    for t in grid:
        answered = conf >= t
        if answered.any() and right[answered].mean() >= target:
            return float(t)
    return float(grid[-1])


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


def learning_curve(recipe, corpus, usable, fractions=(0.25, 0.5, 0.75, 1.0), repeats: int = 1,
                   k: int = 10, class_names=()) -> list[dict]:
    """Family-fold accuracy when only a share of each fold's training families is kept (a seeded
    random subset per fold and repeat), per class; one member per fit and no subcategory heads to
    keep it affordable. The 1.0 point is the recipe's family-fold score with one member."""
    one = replace(recipe, members=1, member_sources=1.0)
    labels = np.asarray(corpus.labels)
    rows = []
    for frac in fractions:
        runs = []
        for r in range(repeats if frac < 1.0 else 1):
            def keep(fams, rng, frac=frac):
                return sorted(rng.choice(fams, max(2, round(frac * len(fams))), replace=False)) \
                    if frac < 1.0 else fams
            oof = out_of_fold(one, corpus, usable, k=k, keep_sources=keep, seed=1000 * r + 7,
                              subcategories=False)
            scored = oof["fold"] >= 0
            pred = oof["logits"][:, scored].mean(0).argmax(1)
            s = source_scores(pred, labels[scored], [f for f, sc in zip(corpus.families, scored) if sc],
                              class_names)
            folds_acc = [float(np.mean(pred[oof["fold"][scored] == j] == labels[scored][oof["fold"][scored] == j]))
                         for j in np.unique(oof["fold"][scored])]
            runs.append({"accuracy": s["accuracy"], "recall": s["recall"], "fold_accuracies": folds_acc})
        families = {f for f, u in zip(corpus.families, usable) if u}
        rows.append({
            "fraction": frac, "train_families": round(frac * len(families) * (k - 1) / k), "repeats": len(runs),
            "accuracy": float(np.mean([r["accuracy"] for r in runs])),
            "accuracy_spread": float(np.std([r["accuracy"] for r in runs])),
            "fold_accuracy_std": float(np.mean([np.std(r["fold_accuracies"]) for r in runs])),
            "recall": {c: float(np.mean([r["recall"][c] for r in runs])) for c in class_names},
        })
    return rows
