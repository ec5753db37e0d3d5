"""Retraining from users' corrections, and the evaluation that decides whether it may be promoted.

A correction is a finished job's stored clip vector (vidclass.features.extract.clip_vector: each
feature's mean and std over time) with the label a user says is right. The corpus ships the same
vectors (features_enhanced/corpus_pooled.npz, written by `vidclass train` and `vidclass
pool-corpus`), so a retrain needs neither the videos nor the frames.

The recipe is the shipped one (vidclass.training.recipes.POOLED) on pooled clip vectors only:
the sub-clip views it adds need a clip's frames, which a correction does not keep. Every
correction source group (one site, one batch, one day of single uploads) counts as one source,
like a corpus family (linear_fit.source_weights), so a flood of corrections from one place does
not outweigh the corpus.

The evaluation fits the active model's training data and the candidate's the same way, on the
same folds: the corpus's family folds (crossval: locked families left out, as `vidclass train`
does), and the corrections held out by source group. Both are re-fitted per fold with this
module's recipe, so the comparison is of the training data, not of how the active model was
made. `python -m vidclass.training.retrain` runs it all in a process of its own (workers run it
so that their own processes never import torch); progress goes to stdout as `progress N` lines.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidclass import CLASS_NAMES
from vidclass.training.crossval import (calibration, ensemble_probs, folds, locked_families, source_scores,
                                        uncertain_threshold)
from vidclass.training.recipes import POOLED

CORPUS_POOLED = "corpus_pooled.npz"
CORRECTION_FOLDS = 5


@dataclass
class PooledSet:
    """Clip vectors with what training and scoring need about each."""
    x: np.ndarray                # [N, 2D] float32 pooled [mean | std]
    labels: np.ndarray           # [N] class index
    families: list[str]          # [N] source family (corpus) or correction group
    evaluable: np.ndarray        # [N] bool: scored on the folds (not stills_motion)
    subcategories: np.ndarray    # [N] taxonomy index, -1 when unknown (every correction)
    ids: list[str]               # [N] clip name or job id

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx) -> "PooledSet":
        idx = np.asarray(idx, dtype=int)
        return PooledSet(self.x[idx], self.labels[idx], [self.families[i] for i in idx], self.evaluable[idx],
                         self.subcategories[idx], [self.ids[i] for i in idx])

    def plus(self, other: "PooledSet") -> "PooledSet":
        return PooledSet(np.concatenate([self.x, other.x]), np.concatenate([self.labels, other.labels]),
                         self.families + other.families, np.concatenate([self.evaluable, other.evaluable]),
                         np.concatenate([self.subcategories, other.subcategories]), self.ids + other.ids)

    def without_families(self, held: set[str]) -> "PooledSet":
        return self.take([i for i, f in enumerate(self.families) if f not in held])


@dataclass
class CorpusVectors:
    """features_enhanced/corpus_pooled.npz: the corpus as clip vectors."""
    data: PooledSet
    pipeline: dict
    blocks: list[tuple[str, int]]
    subcategory_names: list[str]


def write_corpus_pooled(features_dir: Path, out: Path | None = None) -> Path:
    """The corpus's clip vectors (float16, a few MB) from its features files."""
    from vidclass.training.train import load_corpus

    features_dir = Path(features_dir)
    corpus, pipeline, _, names, sub_names, _ = load_corpus(features_dir)
    out = Path(out or features_dir / CORPUS_POOLED)
    subs = np.asarray(corpus.subcategories if corpus.subcategories is not None else [-1] * len(names))
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, x=corpus.pooled.astype(np.float16), labels=np.asarray(corpus.labels, np.int64),
                        families=np.asarray(corpus.families), evaluable=np.asarray(corpus.evaluable),
                        subcategories=subs.astype(np.int64), names=np.asarray(names),
                        subcategory_names=np.asarray(sub_names or [], dtype=str),
                        pipeline=np.asarray(json.dumps(pipeline.to_dict())),
                        blocks=np.asarray(json.dumps(pipeline.blocks())))
    tmp.replace(out)
    return out


def load_corpus_pooled(path: Path) -> CorpusVectors:
    with np.load(path, allow_pickle=False) as z:
        data = PooledSet(z["x"].astype(np.float32), z["labels"].astype(int), [str(f) for f in z["families"]],
                         z["evaluable"].astype(bool), z["subcategories"].astype(int), [str(n) for n in z["names"]])
        return CorpusVectors(data, json.loads(str(z["pipeline"])),
                             [tuple(b) for b in json.loads(str(z["blocks"]))], [str(s) for s in z["subcategory_names"]])


def corrections_set(x, labels, groups, job_ids) -> PooledSet:
    n = len(labels)
    return PooledSet(np.asarray(x, np.float32).reshape(n, -1), np.asarray(labels, int), [f"corrections:{g}" for g in groups],
                     np.ones(n, bool), np.full(n, -1), list(job_ids))


def fit_members(data: PooledSet, blocks, seed: int, num_subcategories: int = 0) -> list:
    """The shipped recipe's members (POOLED: 4 members on 90% of the sources each) on clip vectors."""
    from vidclass.training.linear_fit import fit_ensemble

    subs = list(data.subcategories) if num_subcategories else None
    return fit_ensemble(data.x, data.labels, data.families, blocks, len(CLASS_NAMES), POOLED.l2, POOLED.members,
                        POOLED.member_sources, seed, subs, num_subcategories)


def member_logits(models, x: np.ndarray) -> np.ndarray:
    """[M, N, C] class logits of each member on clip vectors (the model's own standardisation)."""
    out = []
    for m in models:
        z = (x - m.pooled_mean.numpy()) * m.pooled_scale.numpy()
        out.append(z @ m.classifier.weight.detach().numpy().T + m.classifier.bias.detach().numpy())
    return np.stack(out) if out else np.zeros((0, len(x), len(CLASS_NAMES)))


def _scores(probs: np.ndarray, data: PooledSet) -> dict:
    if not len(data):
        return {"accuracy": None, "recall": {c: None for c in CLASS_NAMES}, "ece": None, "clips": 0, "sources": 0}
    s = source_scores(probs.argmax(1), data.labels, data.families, CLASS_NAMES)
    return {"accuracy": s["accuracy"], "recall": s["recall"], "clip_accuracy": s["clip_accuracy"],
            "ece": calibration(probs, data.labels)["ece"], "clips": s["num_clips"], "sources": s["num_sources"]}


def evaluate(corpus: CorpusVectors, active: PooledSet, candidate: PooledSet, k: int = 10, progress=None) -> dict:
    """Active and candidate training data side by side: corpus family folds and corrections held
    out by source group. `active`/`candidate` are the corpus plus each one's corrections."""
    progress = progress or (lambda _: None)
    c = corpus.data
    locked = locked_families(c.families, c.labels, c.evaluable)
    usable = [i for i, f in enumerate(c.families) if f not in locked]
    # The folds `vidclass train` makes: of the families with scored clips (crossval.folds).
    fold_list = folds([c.families[i] for i in usable], [c.evaluable[i] for i in usable], k)
    scored = [i for i, (f, e) in enumerate(zip(c.families, c.evaluable)) if e and f not in locked]
    probs = {"active": np.zeros((len(c), len(CLASS_NAMES))), "candidate": np.zeros((len(c), len(CLASS_NAMES)))}
    steps = len(fold_list) + CORRECTION_FOLDS
    for j, held in enumerate(fold_list):
        held = set(held) | locked
        te = [i for i in scored if c.families[i] in held]
        for name, data in (("active", active), ("candidate", candidate)):
            models = fit_members(data.without_families(held), corpus.blocks, seed=100 + j)
            probs[name][te] = ensemble_probs(member_logits(models, c.x[te]))
        progress((j + 1) / steps)
    on_corpus = c.take(scored)
    result = {"corpus": {name: _scores(p[scored], on_corpus) for name, p in probs.items()},
              "folds": len(fold_list), "locked_families_left_out": len(locked)}
    result["uncertain_below"] = uncertain_threshold(probs["candidate"][scored], on_corpus.labels)

    # Corrections held out by source group: each group predicted by fits that never saw it.
    corr = candidate.take([i for i, f in enumerate(candidate.families) if f.startswith("corrections:")])
    groups = sorted(set(corr.families))
    held_probs = {"active": np.zeros((len(corr), len(CLASS_NAMES))), "candidate": np.zeros((len(corr), len(CLASS_NAMES)))}
    group_folds = [groups[i::CORRECTION_FOLDS] for i in range(min(CORRECTION_FOLDS, len(groups)))]
    for j, held in enumerate(group_folds):
        held = set(held)
        te = [i for i, f in enumerate(corr.families) if f in held]
        for name, data in (("active", active), ("candidate", candidate)):
            models = fit_members(data.without_families(held), corpus.blocks, seed=200 + j)
            held_probs[name][te] = ensemble_probs(member_logits(models, corr.x[te]))
        progress((len(fold_list) + (j + 1) * CORRECTION_FOLDS / max(len(group_folds), 1)) / steps)
    result["corrections"] = {name: _scores(p, corr) for name, p in held_probs.items()}
    result["corrections"]["groups"] = len(groups)
    if len(groups) < 2:
        result["corrections"]["note"] = ("one source group: held out, the candidate is trained without any "
                                         "correction, so this check cannot show what they teach")
    flips = []
    for i in range(len(corr)):
        before, after = int(held_probs["active"][i].argmax()), int(held_probs["candidate"][i].argmax())
        truth = int(corr.labels[i])
        if (before == truth) != (after == truth):
            flips.append({"job_id": corr.ids[i], "true": CLASS_NAMES[truth], "active": CLASS_NAMES[before],
                          "candidate": CLASS_NAMES[after], "to": "right" if after == truth else "wrong"})
    result["flips"] = {"to_right": [f for f in flips if f["to"] == "right"],
                       "to_wrong": [f for f in flips if f["to"] == "wrong"]}
    return result


def save_model(models, out_dir: Path, corpus: CorpusVectors, thresholds: dict, summary: dict) -> dict:
    """Checkpoints, their numpy sidecars and the manifest: a models folder Ensemble.load reads."""
    from vidclass.features.pipeline import Pipeline
    from vidclass.model.checkpoint import load_checkpoint, save_checkpoint
    from vidclass.model.numpy_linear import write_sidecar

    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline.from_dict(corpus.pipeline)
    names = []
    for i, model in enumerate(models, 1):
        name = f"best_ensemble_model_{i}.pt"
        save_checkpoint(out_dir / name, model, model.config, pipeline, list(CLASS_NAMES),
                        subcategory_names=corpus.subcategory_names or None, metrics={"retrain": summary})
        write_sidecar(load_checkpoint(out_dir / name, trusted=True))
        names.append(name)
    manifest = {"members": names, "class_names": list(CLASS_NAMES), "subcategories": corpus.subcategory_names,
                "model_config": models[0].config, "pipeline": corpus.pipeline, "thresholds": thresholds,
                "recipe": "pooled clip vectors (retrain)", "training_data": summary,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def retrain(corpus_path: Path, corrections_path: Path, out_dir: Path, progress=None,
            subcategory_min_confidence: float = 0.5) -> dict:
    """Evaluate, then fit the candidate on everything and write it to `out_dir`. Returns
    {"training": summary, "evaluation": ..., "thresholds": ...}."""
    progress = progress or (lambda _: None)
    corpus = load_corpus_pooled(corpus_path)
    with np.load(corrections_path, allow_pickle=False) as z:
        corr = corrections_set(z["x"], z["labels"], [str(g) for g in z["groups"]], [str(j) for j in z["job_ids"]])
        in_active = z["in_active"].astype(bool)
    if corr.x.shape[1] != corpus.data.x.shape[1]:
        raise ValueError(f"corrections have {corr.x.shape[1]} features, the corpus {corpus.data.x.shape[1]}")
    active = corpus.data.plus(corr.take(np.where(in_active)[0]))
    candidate = corpus.data.plus(corr)
    evaluation = evaluate(corpus, active, candidate, progress=lambda f: progress(0.9 * f))
    summary = {"corpus_clips": len(corpus.data), "corpus_sources": len(set(corpus.data.families)),
               "corrections": len(corr), "correction_groups": len(set(corr.families)),
               "correction_classes": {c: int((corr.labels == i).sum()) for i, c in enumerate(CLASS_NAMES)}}
    thresholds = {"uncertain_below": evaluation["uncertain_below"],
                  "subcategory_min_confidence": subcategory_min_confidence}
    models = fit_members(candidate, corpus.blocks, seed=42, num_subcategories=len(corpus.subcategory_names))
    save_model(models, Path(out_dir), corpus, thresholds, summary)
    progress(1.0)
    return {"training": summary, "evaluation": evaluation, "thresholds": thresholds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fit and evaluate a candidate model from corrections "
                                                 "(run by the retrain task of the workers).")
    parser.add_argument("--corpus", type=Path, required=True, help=f"the corpus's {CORPUS_POOLED}")
    parser.add_argument("--corrections", type=Path, required=True,
                        help="npz: x [n, 2D], labels, groups, job_ids, in_active")
    parser.add_argument("--out", type=Path, required=True, help="the new model's folder")
    parser.add_argument("--result", type=Path, required=True, help="JSON: training summary and evaluation")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)

    def progress(fraction: float) -> None:
        print(f"progress {fraction:.3f}", flush=True)

    result = retrain(args.corpus, args.corrections, args.out, progress)
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
