"""Classifier: the one facade the CLI and the Celery workers use.

It loads the ensemble once (lazily, on first use), then classifies a test-set video by name
(features from the test-set h5), a local video file or a URL (features extracted with the
ensemble's own pipeline, so features and model always match). Results are plain dicts, see
docs/ARCHITECTURE.md "Classification result".
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vidclass.model.ensemble import Ensemble
from vidclass.model.name_index import TestSet, UnknownVideo
from vidclass.features.pipeline import check_compatible


def is_url(target) -> bool:
    return isinstance(target, str) and target.lower().startswith(("http://", "https://"))


class Classifier:
    def __init__(self, models_dir=None, features_dir=None, processed_dir=None, device=None):
        self.models_dir = models_dir
        self.features_dir = features_dir
        self.processed_dir = processed_dir
        self.device = device
        self._ensemble: Ensemble | None = None
        self._test_set: TestSet | None = None
        self._extractors: dict[str, object] = {}
        self._backbone = None        # use_backbone(): e.g. a GPU backbone for every extractor
        # Worker threads may share one Classifier; load each heavy object only once.
        self._lock = threading.Lock()

    @property
    def ensemble(self) -> Ensemble:
        with self._lock:
            if self._ensemble is None:
                self._ensemble = Ensemble.load(self.models_dir, device=self.device)
            return self._ensemble

    def set_ensemble(self, ensemble: Ensemble) -> None:
        """Classify with another ensemble from now on (a promoted model version). Extractors made for
        another feature pipeline are dropped and made again for the new one."""
        with self._lock:
            if self._ensemble is not None and self._ensemble.pipeline != ensemble.pipeline:
                self._extractors.clear()
            self._ensemble = ensemble

    @property
    def test_set(self) -> TestSet:
        with self._lock:
            if self._test_set is None:
                self._test_set = TestSet(self.features_dir, self.processed_dir)
            return self._test_set

    @property
    def extractor(self):
        """FeatureExtractor for the ensemble's own pipeline (loaded once)."""
        return self.extractor_for(exact=False)

    def extractor_for(self, exact: bool = False):
        """exact=True samples at exact timestamps (same feature space, slower seeking); it shares
        the backbone with the default extractor."""
        pipeline = self.ensemble.pipeline
        sampling = "exact" if exact else pipeline.sampling
        with self._lock:
            if sampling not in self._extractors:
                # Imported here: features pulls in the backbone, which name-only use does not need.
                from vidclass.features.extract import FeatureExtractor
                shared = next(iter(self._extractors.values()), None)
                self._extractors[sampling] = FeatureExtractor(
                    pipeline.with_(sampling=sampling),
                    backbone=shared.backbone if shared is not None else self._backbone)
            return self._extractors[sampling]

    def use_backbone(self, backbone) -> None:
        """Extract features with this backbone (same pipeline), e.g. one on a GPU."""
        with self._lock:
            self._backbone = backbone
            self._extractors.clear()

    def _check_test_set(self) -> TestSet:
        test_set, ensemble = self.test_set, self.ensemble
        check_compatible(test_set.store.pipeline, ensemble.pipeline,
                         a_name=f"features file {test_set.features_path}",
                         b_name=f"models in {ensemble.models_dir}")
        return test_set

    def classify_features(self, target: str, features, length: int, started: float | None = None,
                          timings: dict | None = None) -> dict:
        """The result dict for one video's features [T, D] (its first `length` steps real).
        Callers that extract features themselves (the worker, with its cache) end here too."""
        t = time.perf_counter()
        started = t if started is None else started
        timings = timings or {}
        prediction = self.ensemble.predict(np.asarray(features)[None], [length])
        result = {"target": target, **prediction.result_dict(0)}
        result["elapsed_s"] = round(time.perf_counter() - started, 4)
        result["timings"] = {**{k: round(v, 4) for k, v in timings.items()},
                             "classify_s": round(time.perf_counter() - t, 4)}
        return result

    def classify_name(self, name: str) -> dict:
        """Classify a test-set video by name; UnknownVideo (KeyError) if it is not in the test set,
        PipelineMismatch if the test-set features were not made with the models' pipeline."""
        started = time.perf_counter()
        test_set = self._check_test_set()
        row = test_set.resolve(name)
        t = time.perf_counter()
        features, length, label = test_set.store.row(row)
        read_s = time.perf_counter() - t
        result = self.classify_features(test_set.entries[row].name, features, length, started, {"read_s": read_s})
        names = test_set.store.class_names or list(self.ensemble.class_names)
        result["true_label"] = names[label] if 0 <= label < len(names) else None
        return result

    def timeline(self, path, video=None, options=None, progress=None):
        """vidclass.model.timeline.segment_video with this classifier's extractor and ensemble."""
        from vidclass.model.timeline import segment_video

        return segment_video(path, self.extractor, self.ensemble, video=video, options=options,
                             progress=progress)

    def classify_file(self, path: str | os.PathLike, progress=None, exact: bool = False,
                      target: str | None = None, segments: bool = False,
                      segment_options=None) -> dict:
        """Classify a local video file; vidclass.media.frames.VideoError for unreadable videos.

        progress: optional callable(stage, fraction) for the sampling/features/classify stages.
        segments=True adds the per-segment timeline (vidclass.model.timeline.apply_timeline: the label
        becomes the duration-weighted one, `segments` and `mixed` are added).
        """
        started = time.perf_counter()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"video file not found: {path}")
        video = self.extractor_for(exact).extract_file(path, progress=progress)
        if progress:
            progress("classify", 0.0)
        result = self.classify_features(target or str(path), video.features, video.length, started,
                              dict(video.timings))
        if segments:
            from vidclass.model.timeline import apply_timeline

            result = apply_timeline(result, self.timeline(path, video, segment_options, progress))
            result["elapsed_s"] = round(time.perf_counter() - started, 4)
        if progress:
            progress("classify", 1.0)
        return result

    def classify_url(self, url: str, progress=None, exact: bool = False, segments: bool = False,
                     segment_options=None, **fetch_caps) -> dict:
        """Download to a temporary folder (vidclass.media.download.fetch; DownloadError) and classify."""
        from vidclass.media.download import fetch

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="vidclass-url-") as tmp:
            cb = (lambda frac: progress("download", frac)) if progress else None
            path = fetch(url, tmp, progress=cb, **fetch_caps)
            download_s = time.perf_counter() - started
            result = self.classify_file(path, progress=progress, exact=exact, target=url,
                                        segments=segments, segment_options=segment_options)
        result["timings"]["download_s"] = round(download_s, 4)
        result["elapsed_s"] = round(time.perf_counter() - started, 4)
        return result

    def classify_target(self, target, exact: bool = False, progress=None, segments: bool = False,
                        segment_options=None) -> dict:
        """A URL is downloaded, an existing file path is read, anything else is a test-set name
        (test-set names have features only: no timeline)."""
        target = str(target)
        seg = dict(segments=segments, segment_options=segment_options)
        if is_url(target):
            return self.classify_url(target, progress=progress, exact=exact, **seg)
        if os.path.isfile(target):
            return self.classify_file(target, progress=progress, exact=exact, **seg)
        try:
            return self.classify_name(target)
        except UnknownVideo:
            # A name with a folder in it was meant as a file: say that, not "unknown test-set video".
            if os.sep in target or os.path.exists(target):
                raise FileNotFoundError(f"no such video file: {target}") from None
            raise

    def classify_path_or_name(self, target, progress=None) -> dict:
        return self.classify_target(target, progress=progress)

    def test_accuracy(self) -> dict:
        """Batch accuracy over the whole test set (the original CLI's test mode)."""
        from vidclass.model.metrics import accuracy, classification_report

        test_set = self._check_test_set()
        ensemble = self.ensemble
        data = test_set.store.read_all()
        class_names = list(ensemble.class_names)
        # Labels follow the file's category_mapping; express them in the ensemble's class order.
        file_names = test_set.store.class_names or class_names
        missing = sorted(set(file_names) - set(class_names))
        if missing:
            raise ValueError(f"{test_set.features_path} has categories {missing} the models do not know")
        labels = np.array([class_names.index(file_names[i]) for i in data["labels"]], dtype=np.int64)
        started = time.perf_counter()
        prediction = ensemble.predict(data["features"], data["num_frames"])
        report = classification_report(labels, prediction.labels, class_names)
        report["members"] = [
            {"member": i + 1, "file": m.path.name if m.path else None,
             "accuracy": accuracy(labels, prediction.member_probs[i].argmax(1))}
            for i, m in enumerate(ensemble.members)]
        report["model_version"] = ensemble.version
        report["pipeline"] = ensemble.pipeline.to_dict()
        report["elapsed_s"] = round(time.perf_counter() - started, 4)
        return report
