"""Evaluate an ensemble on a features file: ensemble vs each member, with and without
test-time augmentation (TTA), class and subcategory metrics, confusion-matrix PNG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vidclass.model.ensemble import Ensemble, pick_subcategory
from vidclass.features.store import FeatureStore
from vidclass.model.metrics import accuracy, classification_report
from vidclass.features.pipeline import check_compatible
from vidclass.model.taxonomy import qualified_subcategories
from vidclass.training.reports import plot_confusion


def tta_views(x: np.ndarray, lengths: np.ndarray):
    """Deterministic temporal views of each sequence: as is, even steps, odd steps, reversed.
    Content type does not depend on direction or frame rate, so their mean is a fairer vote."""
    yield x, lengths
    for start in (0, 1):
        views = np.zeros_like(x)
        new_len = np.maximum((lengths - start + 1) // 2, 1)
        for i, n in enumerate(lengths):
            seq = x[i, start:n:2]
            views[i, :len(seq)] = seq
        yield views, new_len
    rev = np.zeros_like(x)
    for i, n in enumerate(lengths):
        rev[i, :n] = x[i, :n][::-1]
    yield rev, lengths


def predict_with_tta(ensemble: Ensemble, x, lengths, tta: bool):
    """Returns (member probs [M,N,C], ensemble probs [N,C], subcategory probs or None)."""
    views = list(tta_views(x, lengths)) if tta else [(x, lengths)]
    preds = [ensemble.predict(vx, vl) for vx, vl in views]
    members = np.mean([p.member_probs for p in preds], axis=0)
    subs = [p.subcategory_probs for p in preds if p.subcategory_probs is not None]
    return members, members.mean(0), (np.mean(subs, axis=0) if subs else None)


def evaluate(ensemble: Ensemble, features_path: str | Path, out_dir: str | Path | None = None) -> dict:
    store = FeatureStore(features_path)
    check_compatible(store.pipeline, ensemble.pipeline, str(features_path), "the ensemble")
    data = store.read_all()
    x, lengths, labels = data["features"], data["num_frames"], data["labels"]
    class_names = list(ensemble.class_names)
    result = {"features": str(features_path), "model_version": ensemble.version,
              "pipeline": ensemble.pipeline.to_dict(), "num_videos": int(len(labels))}
    for tta in (False, True):
        members, probs, sub_probs = predict_with_tta(ensemble, x, lengths, tta)
        pred = probs.argmax(1)
        section = classification_report(labels, pred, class_names)
        section["members"] = [
            {"member": i + 1, "accuracy": accuracy(labels, m.argmax(1)),
             "weighted_f1": classification_report(labels, m.argmax(1), class_names)["weighted_f1"]}
            for i, m in enumerate(members)]
        subs = data.get("subcategories")
        if sub_probs is not None and subs is not None and ensemble.subcategory_names:
            # Subcategory accuracy counts only when the class is right too.
            subs = qualified_subcategories(labels, subs)
            sub_pred = [f"{class_names[pred[i]]}/" + pick_subcategory(
                ensemble.subcategory_names, sub_probs[i], class_names[pred[i]])[0] for i in range(len(pred))]
            section["subcategory_accuracy"] = float(np.mean([p == t for p, t in zip(sub_pred, subs)]))
            known = [i for i, t in enumerate(subs) if t in ensemble.subcategory_names]
            section["subcategory_accuracy_seen"] = (
                float(np.mean([sub_pred[i] == subs[i] for i in known])) if known else None)
            section["subcategory_num_seen"] = len(known)
        names = data.get("video_names")
        if names is not None:
            section["errors"] = [
                {"video": names[i], "true": class_names[labels[i]], "predicted": class_names[pred[i]],
                 "confidence": float(probs[i, pred[i]])}
                for i in np.flatnonzero(pred != labels)]
        result["tta" if tta else "plain"] = section
    if out_dir:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
        plot_confusion(result["plain"]["confusion_matrix"], class_names, out_dir / "confusion_matrix.png",
                       title=f"accuracy {result['plain']['accuracy']:.1%} ({result['num_videos']} videos)")
    return result
