"""Labelled video folders -> source-disjoint train/val/test splits -> features files.

A labelled data directory holds `{Category}/{subcategory}/*` videos. When a `MANIFEST.tsv` (columns
path, category, subcategory, source, group, origin, license, ...) is present it supplies each clip's
group (the game, program or package it came from); otherwise the subcategory folder is the group.
Splits are by group so the test split measures generalisation to sources the model never saw.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vidclass import CLASS_NAMES
from vidclass.features.pipeline import Pipeline

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv"}
SPLITS = ("train", "val", "test")
# Clips whose motion is synthetic (pan/zoom over stills) teach appearance but would flatter an
# evaluation: they only ever go to the training split.
TRAINING_ONLY_ORIGINS = {"stills_motion"}


@dataclass(frozen=True)
class Clip:
    path: Path            # absolute path of the video file
    name: str             # the clip's stable name: its file name (relative path if not unique)
    category: str
    subcategory: str
    group: str
    origin: str = ""
    license: str = ""
    family: str = ""      # MANIFEST.tsv `family` (groups sharing a program, author, engine, package)

    @property
    def source_family(self) -> str:
        return family_of(self.family, self.group)

    @property
    def evaluable(self) -> bool:
        return self.origin not in TRAINING_ONLY_ORIGINS


def source_family(group: str) -> str:
    """Fold package-name variants of one source together: `debian_supertuxkart-data`,
    `supertuxkart` and `debian_opencv-doc:box` name the same sources as `supertuxkart` and
    `opencv`, so they must land in the same split."""
    g = group.lower().split(":")[0]
    g = re.sub(r"^(debian|pypi|npm|rendered_from_debian)_", "", g)
    g = re.sub(r"^(python3?|node|lib)-?", "", g)
    g = re.sub(r"-(data|common|doc|docs|examples|help)$", "", g)
    return g


def family_of(family: str, group: str) -> str:
    """The family to split and fold by: the manifest's, else one guessed from the group."""
    return family or source_family(group)


def list_clips(data_dir: str | Path, manifest: str | Path | None = None) -> list[Clip]:
    """Clips named by file name, as the original test set named its videos; a file name that
    occurs twice keeps its relative path so names stay unique."""
    clips = _list_clips(Path(data_dir), manifest)
    seen = Counter(Path(c.name).name for c in clips)
    return [replace(c, name=Path(c.name).name) if seen[Path(c.name).name] == 1 else c for c in clips]


def _list_clips(data_dir: Path, manifest: str | Path | None) -> list[Clip]:
    manifest = Path(manifest) if manifest else data_dir / "MANIFEST.tsv"
    if manifest.exists():
        return _clips_from_manifest(data_dir, manifest)
    clips = []
    for category in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        if category.name not in CLASS_NAMES:
            log.warning("skipping folder %s: not one of %s", category, ", ".join(CLASS_NAMES))
            continue
        for sub in sorted(p for p in category.iterdir() if p.is_dir()):
            for f in sorted(sub.iterdir()):
                if f.suffix.lower() in VIDEO_EXTENSIONS:
                    clips.append(Clip(f.resolve(), str(f.relative_to(data_dir)), category.name,
                                      sub.name, group=f"{category.name}/{sub.name}"))
    if not clips:
        raise ValueError(f"no videos found under {data_dir} (expected {{Category}}/{{subcategory}}/*)")
    return clips


def _clips_from_manifest(data_dir: Path, manifest: Path) -> list[Clip]:
    clips = []
    with open(manifest, newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            path = (data_dir / row["path"]).resolve()
            if not path.exists():
                log.warning("manifest lists %s but the file is missing; skipped", row["path"])
                continue
            if row["category"] not in CLASS_NAMES:
                raise ValueError(f"{manifest}: unknown category {row['category']!r} for {row['path']}")
            clips.append(Clip(path, row["path"], row["category"], row["subcategory"],
                              row.get("group") or row["subcategory"], row.get("origin", ""),
                              row.get("license", ""), row.get("family") or ""))
    return clips


def _rank(family: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{family}".encode()).hexdigest()


def split_clips(clips: list[Clip], test_fraction: float = 0.3, val_fraction: float = 0.15,
                seed: int = 0) -> dict[str, list[Clip]]:
    """Assign whole source families to splits, per category, in a seeded pseudo-random order,
    until each category's test (then val) share of evaluable clips reaches its target.

    Training-only clips (stills_motion) always go to the train split, whatever their family's
    split: the shipped recipe trains on every split and measures by cross-validation over
    families (which keeps them with their family). A model trained on the train split alone and
    scored on val/test has then seen stills of those sources: score it by cross-validation."""
    by_family: dict[str, list[Clip]] = defaultdict(list)
    for c in clips:
        by_family[c.source_family].append(c)

    evaluable_total = Counter(c.category for c in clips if c.evaluable)
    targets = {
        "test": {k: round(v * test_fraction) for k, v in evaluable_total.items()},
        "val": {k: round(v * val_fraction) for k, v in evaluable_total.items()},
    }
    filled = {"test": Counter(), "val": Counter()}
    family_split: dict[str, str] = {}
    for family in sorted(by_family, key=lambda f: _rank(f, seed)):
        counts = Counter(c.category for c in by_family[family] if c.evaluable)
        family_split[family] = "train"
        if not counts:
            continue
        main_category = counts.most_common(1)[0][0]
        for split in ("test", "val"):
            want, have = targets[split][main_category], filled[split][main_category]
            # Take the family if it fits, or if the split still has none of this category and
            # the family is not so large that it would starve the training split.
            n = counts[main_category]
            if have + n <= want or (have == 0 and 0 < want and n <= 1.5 * want):
                family_split[family] = split
                filled[split].update(counts)
                break

    splits: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    for family, members in by_family.items():
        split = family_split[family]
        for c in members:
            splits[split if c.evaluable else "train"].append(c)
    for s in SPLITS:
        splits[s].sort(key=lambda c: (CLASS_NAMES.index(c.category), c.subcategory, c.name))
    return splits


def split_summary(splits: dict[str, list[Clip]]) -> dict:
    return {
        s: {"clips": len(cs), "by_category": dict(Counter(c.category for c in cs)),
            "groups": sorted({c.group for c in cs})}
        for s, cs in splits.items()
    }


def features_filename(split: str, pipeline: Pipeline) -> str:
    """The original project's names: `{split}_features_multiscale.h5` (or `_features.h5`)."""
    return f"{split}_features{'_multiscale' if pipeline.scales else ''}.h5"


def extract_dataset(data_dir, out_dir, pipeline: Pipeline | None = None, manifest=None,
                    test_fraction: float = 0.3, val_fraction: float = 0.15, seed: int = 0,
                    runtime: str = "auto", show_progress: bool = True) -> dict:
    """Extract features of every clip into train/val/test files in `out_dir`.

    Resumable: each finished video is flushed to its file at once, and a rerun skips the names
    already there, so a crash half-way loses no finished work."""
    from tqdm import tqdm

    from vidclass.features.backbone import default_pipeline
    from vidclass.features.store import FeatureStoreWriter
    from vidclass.features.extract import FeatureExtractor
    from vidclass.media.frames import VideoError

    pipeline = pipeline or default_pipeline()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = list_clips(data_dir, manifest)
    splits = split_clips(clips, test_fraction, val_fraction, seed)
    summary = {"data_dir": str(Path(data_dir).resolve()), "seed": seed,
               "test_fraction": test_fraction, "val_fraction": val_fraction,
               "pipeline": pipeline.to_dict(), "splits": split_summary(splits),
               "clips": {s: [asdict(c) | {"path": str(c.path)} for c in cs] for s, cs in splits.items()}}
    (out_dir / "splits.json").write_text(json.dumps(summary, indent=1))

    extractor = FeatureExtractor(pipeline, runtime=runtime)
    category_mapping = {name: i for i, name in enumerate(CLASS_NAMES)}
    failures = []
    total = sum(len(cs) for cs in splits.values())
    with tqdm(total=total, desc="extract", unit="video", disable=not show_progress) as bar:
        for split in SPLITS:
            path = out_dir / features_filename(split, pipeline)
            writer = FeatureStoreWriter(path, pipeline, pipeline.max_steps, category_mapping)
            try:
                done = set(writer.names())
                # Files written before families were recorded get them from the manifest.
                writer.fill_families({c.name: c.source_family for c in splits[split]})
                for clip in splits[split]:
                    bar.set_postfix_str(f"{split}: {clip.name[-40:]}")
                    if clip.name not in done:
                        try:
                            vf = extractor.extract_file(clip.path)
                        except VideoError as exc:
                            log.error("skipping %s: %s", clip.name, exc)
                            failures.append({"name": clip.name, "error": str(exc)})
                        else:
                            writer.add(clip.name, vf.features, vf.length,
                                       category_mapping[clip.category],
                                       subcategory=clip.subcategory, group=clip.group,
                                       origin=clip.origin, family=clip.source_family)
                    bar.update(1)
            finally:
                writer.close()
    summary["failures"] = failures
    return summary
