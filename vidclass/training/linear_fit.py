"""Fitting the linear models (PooledLinearModel) on a labelled corpus.

Two ways (vidclass.training.recipes names the recipes built from them):
- frames (pooling "frames", `fit_frame_member`): every frame is a sample, weighted so each clip's
  frames together weigh what the clip does; the clip's answer is the mean of its frames'
  log-probabilities;
- pooled clips (pooling "mean_std", `fit_member`), described next.

The pooled-clip recipe:
- each clip is the mean and standard deviation over time of its per-frame features;
- each feature is standardised, then each block of features (the backbone's, the content
  statistics', the drawing net's; mean and std parts apart) is scaled to an equal share of the
  variance, so a small block is not drowned by a wide one;
- a multinomial logistic regression with an L2 penalty, fitted by L-BFGS on the whole set at once;
- every source counts equally: a clip's weight is 1 / (clips of its source) / (sources of its
  class), so a source with 20 clips does not outweigh one with 2, and every class weighs the same.
A member's subcategory head is a second logistic regression on the same pooled vector.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from vidclass.model.pooled_linear import PooledLinearModel


def source_weights(labels, families) -> np.ndarray:
    """Per-clip weights: every (class, source) pair sums to 1 / (sources of that class), then the
    weights are rescaled to a mean of 1 (so the L2 strength does not depend on the set's size)."""
    labels = np.asarray(labels)
    members = defaultdict(list)
    for i, (y, fam) in enumerate(zip(labels, families)):
        members[(int(y), fam)].append(i)
    sources_per_class = defaultdict(int)
    for y, _ in members:
        sources_per_class[y] += 1
    w = np.zeros(len(labels))
    for (y, _), idx in members.items():
        w[idx] = 1.0 / len(idx) / sources_per_class[y]
    return w * len(w) / w.sum()


def block_slices(blocks: list[tuple[str, int]]) -> list[slice]:
    """Column ranges of the pooled [mean | std] vector, one per (block, part)."""
    d = sum(dim for _, dim in blocks)
    out, start = [], 0
    for _, dim in blocks:
        out += [slice(start, start + dim), slice(d + start, d + start + dim)]
        start += dim
    return out


def pooled_standardiser(pooled: np.ndarray, blocks: list[tuple[str, int]], weights=None, keep=None,
                        slices=None):
    """(mean, scale): standardise each column with the (weighted) training moments, then scale
    each block part by 1/sqrt(its width) so every part has the same total variance. Blocks not
    in `keep` (a set of block names; None keeps all) get scale 0: the model ignores them.
    `slices` (default: block_slices, the mean and std parts of a pooled vector) say where each
    block's columns are; per-frame vectors pass frame_block_slices."""
    w = np.ones(len(pooled)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mean = (pooled * w[:, None]).sum(0)
    std = np.sqrt(((pooled - mean) ** 2 * w[:, None]).sum(0)) + 1e-6
    scale = 1.0 / std
    slices = slices or block_slices(blocks)
    names = [name for name, _ in blocks for _ in range(len(slices) // len(blocks))]
    for name, sl in zip(names, slices):
        scale[sl] *= (keep is None or name in keep) / np.sqrt(sl.stop - sl.start)
    return mean.astype(np.float32), scale.astype(np.float32)


def frame_block_slices(blocks: list[tuple[str, int]]) -> list[slice]:
    """Column ranges of a per-frame vector, one per block."""
    out, start = [], 0
    for _, dim in blocks:
        out.append(slice(start, start + dim))
        start += dim
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, num_classes: int, l2: float,
                 max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logistic regression, L2 on the weights (not the bias), by L-BFGS.
    Returns (W [C, D], b [C]) in float32. Deterministic: the problem is convex, the start zero.

    With fewer clips than features (the usual case: ~400 clips, ~6,000 pooled features) the
    optimum has W = A @ x (representer theorem), so it is found over A [C, N] with the Gram matrix
    x @ x.T: the same solution at a fraction of the cost per iteration."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    wt = torch.as_tensor(weights, dtype=torch.float64)
    n, d = xt.shape
    dual = n < d
    gram = xt @ xt.T if dual else None
    A = torch.zeros(num_classes, n if dual else d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    # 100 iterations: the weights' L1 norm is within 1% of 200 iterations' on the corpus, at a
    # fifth of the time (cross-validation fits hundreds of these).
    opt = torch.optim.LBFGS([A, b], max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        if dual:
            logits = gram @ A.T + b
            penalty = (A * (A @ gram)).sum()          # ||W||^2 with W = A x
        else:
            logits = xt @ A.T + b
            penalty = (A * A).sum()
        loss = (F.cross_entropy(logits, yt, reduction="none") * wt).sum() / wt.sum() + 0.5 * l2 * penalty
        loss.backward()
        return loss

    opt.step(closure)
    W = (A @ xt) if dual else A
    return W.detach().float().numpy(), b.detach().float().numpy()


@torch.inference_mode()
def pool_clips(x: np.ndarray, lengths: np.ndarray, batch: int = 256) -> np.ndarray:
    """[mean | std] over the valid steps of each clip, computed by the model's own pooling (so
    training and inference pool identically)."""
    d = x.shape[2]
    raw = PooledLinearModel({"feature_dim": d, "pooling": "mean_std", "num_classes": 1}).eval()
    out = [raw.pool(torch.as_tensor(x[s:s + batch]), torch.as_tensor(lengths[s:s + batch])).numpy()
           for s in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 2 * d), np.float32)


def subclip_views(x: np.ndarray, lengths: np.ndarray, views: int, share: float, seed: int = 0):
    """`views` extra training rows per clip: the pooled vector of a seeded random `share` of its
    frames. A source's clips are few and long; shorter glimpses of them vary the way clips of
    unseen sources do (another scene, less motion), which raised cross-validated accuracy
    (README, model card). Returns (pooled views [N * views, 2D], index of each view's clip)."""
    rng = np.random.default_rng(seed)
    rows, of = [], []
    for i, n in enumerate(np.asarray(lengths)):
        k = max(2, round(int(n) * share))
        for _ in range(views):
            frames = np.sort(rng.choice(int(n), min(k, int(n)), replace=False))
            rows.append(x[i, frames])
            of.append(i)
    if not rows:
        return np.zeros((0, 2 * x.shape[2]), np.float32), np.zeros(0, dtype=int)
    k = len(rows[0])
    same = all(len(r) == k for r in rows)
    pooled = (pool_clips(np.stack(rows), np.full(len(rows), k)) if same else
              np.concatenate([pool_clips(r[None], np.array([len(r)])) for r in rows]))
    return pooled, np.asarray(of, dtype=int)


def fit_member(pooled: np.ndarray, labels, families, blocks: list[tuple[str, int]], num_classes: int,
               l2: float, subcategories: list[int] | None = None, num_subcategories: int = 0,
               temperature: float = 1.0, keep=None) -> PooledLinearModel:
    """One ensemble member fitted on pooled clip vectors (pool_clips) of a training set; only the
    blocks named in `keep` (None: all) count."""
    weights = source_weights(labels, families)
    mean, scale = pooled_standardiser(pooled, blocks, weights, keep)
    z = (pooled - mean) * scale
    W, b = fit_logistic(z, labels, weights, num_classes, l2)
    model = PooledLinearModel({"feature_dim": pooled.shape[1] // 2, "pooling": "mean_std",
                               "num_classes": num_classes, "num_subcategories": num_subcategories,
                               "dropout": 0.0, "temperature": temperature})
    with torch.no_grad():
        model.pooled_mean.copy_(torch.as_tensor(mean))
        model.pooled_scale.copy_(torch.as_tensor(scale))
        model.classifier.weight.copy_(torch.as_tensor(W))
        model.classifier.bias.copy_(torch.as_tensor(b))
        if num_subcategories:
            known = np.asarray(subcategories) >= 0
            sw = source_weights(np.asarray(subcategories)[known], [f for f, k in zip(families, known) if k])
            Ws, bs = fit_logistic(z[known], np.asarray(subcategories)[known], sw, num_subcategories, l2)
            model.subcategory_head.weight.copy_(torch.as_tensor(Ws))
            model.subcategory_head.bias.copy_(torch.as_tensor(bs))
    return model.eval()


def bag_families(families, num_members: int, member_sources: float, seed: int) -> list[np.ndarray]:
    """Row indices for each member: a seeded random `member_sources` share of the source families
    (all of them when 1.0). Members then disagree where the answer depends on which sources were
    seen, which makes the ensemble's agreement worth reporting."""
    families = list(families)
    unique = sorted(set(families))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_members):
        if member_sources < 1.0 and len(unique) > 1:
            kept = set(rng.choice(unique, max(1, round(member_sources * len(unique))), replace=False))
        else:
            kept = set(unique)
        out.append(np.array([i for i, f in enumerate(families) if f in kept]))
    return out


def fit_ensemble(pooled, labels, families, blocks, num_classes: int, l2: float, num_members: int,
                 member_sources: float, seed: int, subcategories=None, num_subcategories: int = 0,
                 temperature: float = 1.0, keep=None) -> list[PooledLinearModel]:
    """`num_members` pooled-clip members, each on its bag of source families (bag_families)."""
    families = list(families)
    models = []
    for idx in bag_families(families, num_members, member_sources, seed):
        subs = None if subcategories is None else [subcategories[i] for i in idx]
        models.append(fit_member(pooled[idx], np.asarray(labels)[idx], [families[i] for i in idx],
                                 blocks, num_classes, l2, subs, num_subcategories, temperature, keep))
    return models


def frame_rows(x: np.ndarray, lengths, clip_weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames [sum of lengths, D], the clip of each frame, each frame's weight: its clip's weight
    shared among the clip's frames)."""
    lengths = np.asarray(lengths, int)
    rows = np.concatenate([x[i, :n] for i, n in enumerate(lengths)]) if len(lengths) else \
        np.zeros((0, x.shape[2]), np.float32)
    of = np.repeat(np.arange(len(lengths)), lengths)
    return rows, of, (np.asarray(clip_weights, float) / lengths)[of]


def fit_frame_member(x: np.ndarray, lengths, labels, families, blocks: list[tuple[str, int]],
                     num_classes: int, l2: float, subcategories: list[int] | None = None,
                     num_subcategories: int = 0, temperature: float = 1.0) -> PooledLinearModel:
    """One member of the frames recipe (pooling "frames") fitted on the frames of a training set
    (x [N, T, D] with `lengths` valid steps): each frame a sample, a clip's frames together
    weighing what source_weights gives the clip."""
    labels = np.asarray(labels)
    rows, of, w = frame_rows(x, lengths, source_weights(labels, families))
    w = w * (len(w) / w.sum())
    mean, scale = pooled_standardiser(rows, blocks, w, slices=frame_block_slices(blocks))
    z = (rows - mean) * scale
    W, b = fit_logistic(z, labels[of], w, num_classes, l2)
    model = PooledLinearModel({"feature_dim": x.shape[2], "pooling": "frames", "num_classes": num_classes,
                               "num_subcategories": num_subcategories, "dropout": 0.0,
                               "temperature": temperature})
    with torch.no_grad():
        model.frame_mean.copy_(torch.as_tensor(mean))
        model.frame_scale.copy_(torch.as_tensor(scale))
        model.classifier.weight.copy_(torch.as_tensor(W))
        model.classifier.bias.copy_(torch.as_tensor(b))
        if num_subcategories:
            subs = np.asarray(subcategories)
            known = np.where(subs >= 0)[0]
            sw = source_weights(subs[known], [families[i] for i in known])
            sel = np.isin(of, known)
            clip_w = np.zeros(len(labels))
            clip_w[known] = sw
            fw = (clip_w / np.asarray(lengths, float))[of[sel]]
            Ws, bs = fit_logistic(z[sel], subs[of[sel]], fw * (len(fw) / fw.sum()), num_subcategories, l2)
            model.subcategory_head.weight.copy_(torch.as_tensor(Ws))
            model.subcategory_head.bias.copy_(torch.as_tensor(bs))
    return model.eval()


@torch.inference_mode()
def clip_outputs(models, x: np.ndarray, lengths, batch: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """(class logits [M, N, C] before the temperature, mean subcategory probabilities [N, S] or
    None) of each member on clips x [N, T, D]: the model's own forward, whatever its pooling."""
    logits, subs = [], []
    for m in models:
        t = m.config.get("temperature", 1.0)
        parts = [m.forward_all(torch.as_tensor(x[s:s + batch]), torch.as_tensor(np.asarray(lengths)[s:s + batch]))
                 for s in range(0, len(x), batch)]
        logits.append(np.concatenate([p[0].numpy() for p in parts]) * t)
        if parts and parts[0][1] is not None:
            subs.append(np.concatenate([torch.softmax(p[1], -1).numpy() for p in parts]))
    return np.stack(logits), (np.mean(subs, axis=0) if subs else None)
