"""Small JPEGs of a job's frames (and of its timeline segments) under THUMBNAIL_DIR/<job_id>/."""
from __future__ import annotations

from pathlib import Path

from db import settings


def pick_frames(frames):
    """THUMBNAILS_PER_JOB evenly spaced frames of the sampled ones (None if there are none)."""
    count = settings.get("THUMBNAILS_PER_JOB")
    if frames is None or count <= 0 or len(frames) == 0:
        return None
    import numpy as np

    picks = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    return np.ascontiguousarray(np.asarray(frames)[picks])


def _save_jpegs(job_id: str, frames, name: str, size: int, quality: int) -> list[Path]:
    """Frames as JPEGs under THUMBNAIL_DIR/<job_id>/, named name.format(n)."""
    import numpy as np
    from PIL import Image

    out_dir = Path(settings.get("THUMBNAIL_DIR")) / job_id
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, frame in enumerate(frames):
        image = Image.fromarray(np.asarray(frame, dtype=np.uint8))
        image.thumbnail((size, size))
        path = out_dir / name.format(n)
        image.save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def save_segment_thumbnails(job_id: str, frames) -> list[Path]:
    """One JPEG per timeline segment under THUMBNAIL_DIR/<job_id>/segment-<n>.jpg."""
    return _save_jpegs(job_id, frames, "segment-{}.jpg", 320, 80)


def save_thumbnails(job_id: str, frames) -> list[Path]:
    """The picked sampled frames as small JPEGs under THUMBNAIL_DIR/<job_id>/<n>.jpg."""
    if frames is None or len(frames) == 0:
        return []
    return _save_jpegs(job_id, frames, "{}.jpg", 192, 75)
