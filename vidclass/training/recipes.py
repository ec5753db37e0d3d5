"""The recipes `vidclass train` can fit, and the labelled corpus they are fitted on.

A recipe turns a set of training clips into ensemble members and scores clips with them; the
protocol (vidclass.training.protocol) cross-validates every recipe the same way, by source family,
and gates the shipped one against the others:
- "baseline": the plain probe. One logistic regression on each clip's mean and std over time of
  the pooled EfficientNet-Lite0 features alone, standardised, class- and source-balanced, L2 fixed.
  A model ships only if it beats this.
- "pooled" (the shipped recipe, as in the previous release): every feature block pooled (mean and
  std), 4 sub-clip views per clip, 4 members on 90% of the families each.
- "frames" (a candidate that did not pass the gate: better on the family folds, worse on the
  locked families): every feature block, every frame a sample, the clip's answer the mean of its
  frames' log-probabilities; 4 members on 90% of the families each.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vidclass.training.linear_fit import (bag_families, clip_outputs, fit_ensemble, fit_frame_member,
                                          pool_clips, subclip_views)


@dataclass
class Corpus:
    """Every clip of the features files: frames, labels, families and what may be scored."""
    x: np.ndarray                  # [N, T, D] per-frame features
    lengths: np.ndarray            # [N] valid steps
    labels: np.ndarray             # [N] class index
    families: list[str]            # [N] source family (MANIFEST.tsv `family`)
    evaluable: np.ndarray          # [N] bool: scored (not stills_motion)
    blocks: list[tuple[str, int]]  # the pipeline's feature blocks
    subcategories: list[int] | None = None   # taxonomy index or -1
    num_subcategories: int = 0
    _pooled: np.ndarray | None = field(default=None, repr=False)
    _views: tuple | None = field(default=None, repr=False)

    @property
    def pooled(self) -> np.ndarray:
        if self._pooled is None:
            self._pooled = pool_clips(self.x, self.lengths)
        return self._pooled

    def views(self, count: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        if self._views is None or self._views[0] != (count, share, seed):
            self._views = ((count, share, seed), subclip_views(self.x, self.lengths, count, share, seed))
        return self._views[1]

    def subs(self, idx) -> list[int] | None:
        return None if self.subcategories is None else [self.subcategories[i] for i in idx]


@dataclass
class Recipe:
    """How members are fitted: pooled clip vectors or frames, which blocks, views, members."""
    name: str
    frames: bool = False
    blocks: tuple[str, ...] | None = None     # block names used; None = all
    views: int = 0
    view_share: float = 0.25
    members: int = 4
    member_sources: float = 0.9
    l2: float = 1e-3

    def fit(self, corpus: Corpus, idx: np.ndarray, seed: int, num_classes: int,
            subcategories: bool = True, temperature: float = 1.0) -> list:
        """Members fitted on the clips `idx` (and, for pooled recipes, their sub-clip views)."""
        idx = np.asarray(idx)
        fams = [corpus.families[i] for i in idx]
        nsub = corpus.num_subcategories if subcategories and corpus.subcategories is not None else 0
        subs = corpus.subs(idx) if nsub else None
        keep = set(self.blocks) if self.blocks else None
        if self.frames:
            if keep is not None:
                raise ValueError("the frames recipe uses every block")
            return [fit_frame_member(corpus.x[idx[b]], corpus.lengths[idx[b]], corpus.labels[idx[b]],
                                     [fams[i] for i in b], corpus.blocks, num_classes, self.l2,
                                     None if subs is None else [subs[i] for i in b], nsub, temperature)
                    for b in bag_families(fams, self.members, self.member_sources, seed)]
        x, y = corpus.pooled[idx], corpus.labels[idx]
        if self.views:
            views, view_of = corpus.views(self.views, self.view_share, seed=42)
            rows = np.where(np.isin(view_of, idx))[0]
            x = np.concatenate([x, views[rows]])
            y = np.concatenate([y, corpus.labels[view_of[rows]]])
            fams = fams + [corpus.families[view_of[r]] for r in rows]
            if subs is not None:
                subs = subs + [corpus.subcategories[view_of[r]] for r in rows]
        return fit_ensemble(x, y, fams, corpus.blocks, num_classes, self.l2, self.members,
                            self.member_sources, seed, subs, nsub, temperature, keep)

    @staticmethod
    def outputs(models, corpus: Corpus, idx) -> tuple[np.ndarray, np.ndarray | None]:
        """(class logits [M, n, C] before the temperature, subcategory probabilities or None)."""
        idx = np.asarray(idx)
        return clip_outputs(models, corpus.x[idx], corpus.lengths[idx])


BASELINE = Recipe("baseline", blocks=("lite0_pooled",), members=1, member_sources=1.0)
POOLED = Recipe("pooled", views=4, members=4, member_sources=0.9)
FRAMES = Recipe("frames", frames=True, members=4, member_sources=0.9)
RECIPES = {r.name: r for r in (BASELINE, POOLED, FRAMES)}
