"""The timeline pass of a job: whether a job gets one, and adding its segments to the result."""
from __future__ import annotations

import time
from pathlib import Path

from db import settings
from worker.thumbnails import save_segment_thumbnails


def segment_options(options: dict | None, path: Path):
    """vidclass.model.timeline.SegmentOptions for a job, or None when it gets no timeline: the job's
    `segments` option, else on for videos longer than SEGMENT_MIN_VIDEO_S."""
    from vidclass.media.frames import VideoError, probe
    from vidclass.model.timeline import SegmentOptions

    options = options or {}
    wanted = options.get("segments")
    if wanted is None:
        try:
            duration = probe(path).duration_s or 0.0
        except VideoError:
            return None
        wanted = duration > settings.get("SEGMENT_MIN_VIDEO_S")
    if not wanted:
        return None
    return SegmentOptions(min_segment_s=options.get("min_segment_s") or settings.get("SEGMENT_MIN_S"),
                          max_segment_s=settings.get("SEGMENT_MAX_S"),
                          max_frames=settings.get("SEGMENT_MAX_FRAMES"),
                          mixed_share=settings.get("SEGMENT_MIXED_SHARE"))


def add_timeline(run, classifier, path: Path, video, result: dict) -> dict:
    """The result with the video's timeline applied (vidclass.model.timeline), its segments'
    thumbnails saved; `video`, when freshly extracted, lends its frames and per-frame vectors."""
    from vidclass.model.timeline import apply_timeline

    options = segment_options(run.job.get("options"), path)
    if options is None:
        return result
    run.stage("classifying", 92, force=True)
    t = time.perf_counter()
    timeline = classifier.timeline(path, video=video, options=options)
    result = apply_timeline(result, timeline)
    run.timings["segments_s"] = round(time.perf_counter() - t, 4)
    result["segments"] = [dict(seg, thumbnail_path=str(p)) for seg, p in
                          zip(result["segments"], save_segment_thumbnails(run.id, timeline.thumbnails))]
    return result
