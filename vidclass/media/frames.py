"""Sample frames from a video file by seeking, never by decoding the whole file.

`sample_frames(path, n)` returns n RGB frames (uint8 [n, H, W, 3]) at uniform times over the whole
duration. The original project decoded every frame with OpenCV and then picked n of them; on a
10-minute file that is ~18,000 decodes for 64 useful frames. Here each sample costs one seek plus
the decodes from the keyframe the seek lands on:

- ``exact=False`` (default, pipeline.sampling == "keyframe"): a sample may be snapped to a keyframe
  within half a sample spacing of its target time, so it costs a single decode. When no keyframe is
  that close (long GOPs, or short clips with one keyframe, like the whole training corpus) we decode
  on from the keyframe to the target, so samples never collapse onto one keyframe.
- ``exact=True``: every sample is the frame nearest its target time.

Whether to seek or to keep decoding forward is decided with the container's keyframe index
(PyAV `index_entries`, free for MP4/MKV): we only seek when a keyframe lies between the current
decode position and the target, so a short single-GOP clip is decoded once, front to back.

Frames are downscaled while converting to RGB (swscale, in the same pass) so the shorter side is at
most `max_side` (256 by default): the backbone resizes to 224 anyway and content statistics are
computed on the same downscaled frames for training and inference.

Videos with fewer frames than requested give all their frames, then the last frame repeated.
Truncated files give the frames of the decodable part (decoding stops at the first error); a file
with no decodable frame at all raises VideoError.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

import av
import numpy as np

DEFAULT_MAX_SIDE = 256


# Fewer distinct decoded frames than this is a still image (a JPEG renamed .mp4, a 1-frame
# video), not a video: its classification would be confident and meaningless.
MIN_DISTINCT_FRAMES = 3


class VideoError(ValueError):
    """The file is not a usable video: not a video, no video stream, nothing decodable.

    Messages name the file, never its directory (they reach users of the service); the
    decoder's own text is in `detail`, for logs.
    """

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class NotAVideo(VideoError):
    """The file decodes, but to fewer than MIN_DISTINCT_FRAMES frames: a still image."""


class TooLong(VideoError):
    """The video is longer than the caller's limit (MAX_VIDEO_SECONDS in the service)."""


def check_duration(path: str | os.PathLike, max_seconds: float) -> float | None:
    """Raise TooLong if the container says the video lasts more than max_seconds; returns the
    duration (None when unknown). Files that do not open are left to sample_frames."""
    try:
        info = probe(path)
    except VideoError:
        return None
    if info.duration_s and info.duration_s > max_seconds:
        raise TooLong(f"The video is {info.duration_s:.0f} s long, more than the {max_seconds:.0f} s "
                      f"limit (MAX_VIDEO_SECONDS).")
    return info.duration_s


class _BrokenTimestamps(Exception):
    """Frame times are missing or do not increase: seeking by time cannot work on this file."""


@dataclass
class VideoInfo:
    """What the container says about the video stream (None where it says nothing)."""
    duration_s: float | None
    start_s: float
    fps: float | None
    frame_count: int | None
    keyframe_times: list[float]   # approximate presentation times, sorted; [] when unknown
    width: int
    height: int


def _open(path: str | os.PathLike):
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise VideoError(f"no such file: {name}")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoError(f"{name} is not a video file, or is truncated beyond repair",
                         detail=f"{path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"no video stream in {name}")
    return container


def _probe(container) -> VideoInfo:
    stream = container.streams.video[0]
    tb = float(stream.time_base) if stream.time_base else None
    start = float(stream.start_time * tb) if (stream.start_time is not None and tb) else 0.0
    duration = None
    if stream.duration and tb:
        duration = float(stream.duration * tb)
    elif container.duration:                     # container-level, in microseconds
        duration = container.duration / 1e6
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else None
    frame_count = stream.frames or None
    if frame_count is None and duration and fps:
        frame_count = max(1, int(round(duration * fps)))
    keyframes: list[float] = []
    try:
        entries = stream.index_entries
        if tb and len(entries):
            # Index timestamps are decode timestamps; shift so the first keyframe sits at start.
            first = entries[0].timestamp
            shift = (stream.start_time or 0) - first if entries[0].is_keyframe else 0
            keyframes = sorted((e.timestamp + shift) * tb for e in entries if e.is_keyframe)
    except (AttributeError, av.error.FFmpegError):
        keyframes = []
    cc = stream.codec_context
    return VideoInfo(duration, start, fps, frame_count, keyframes, cc.width, cc.height)


def _output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Downscale (never upscale) so the shorter side is at most max_side; keep even sizes."""
    short = min(width, height)
    if not max_side or short <= max_side:
        return width, height
    scale = max_side / short
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


class _Cursor:
    """A forward decoder that can seek; keeps one frame of lookahead so nothing is lost."""

    def __init__(self, container, size: tuple[int, int], path=None):
        self.path = path
        self.container = container
        self.stream = container.streams.video[0]
        self.size = size
        self.frames = None          # decode iterator, None before the first seek/read
        self.pending = None         # a decoded frame not consumed yet
        self.last_time = None       # time of the last frame handed out by next()
        self.decoded = 0            # frames decoded (for benchmarks/tests)
        self.failed = False         # decoding hit an error (truncated/corrupt data)
        self.eof = False

    def seek(self, t: float) -> None:
        tb = self.stream.time_base
        pts = int(t / float(tb)) if tb else int(t * av.time_base)
        try:
            if tb:
                self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
            else:
                self.container.seek(pts, backward=True, any_frame=False)
        except av.error.FFmpegError:
            self.failed = True
            return
        self.frames = self.container.decode(self.stream)
        self.pending = None
        self.eof = False

    def rewind(self) -> None:
        """Back to the first frame by reopening the file: the one 'seek' every format gets right."""
        self.container.close()
        self.container = _open(self.path)
        self.stream = self.container.streams.video[0]
        self.frames = None
        self.pending = None
        self.eof = False

    def next(self):
        """The next decoded frame, or None at the end (or at the first decoding error)."""
        if self.pending is not None:
            frame, self.pending = self.pending, None
            return frame
        if self.eof:
            return None
        if self.frames is None:
            self.frames = self.container.decode(self.stream)
        try:
            frame = next(self.frames)
        except StopIteration:
            self.eof = True
            return None
        except (av.error.FFmpegError, ValueError):
            self.eof = self.failed = True
            return None
        self.decoded += 1
        return frame

    def push_back(self, frame) -> None:
        self.pending = frame

    def to_rgb(self, frame) -> np.ndarray:
        w, h = self.size
        return frame.to_ndarray(format="rgb24", width=w, height=h)


def _targets(info: VideoInfo, n: int) -> np.ndarray:
    """Uniform target times over [first frame, last frame] (linspace, both ends included)."""
    frame_dur = 1.0 / info.fps if info.fps else 0.0
    span = max(0.0, (info.duration_s or 0.0) - frame_dur)
    return info.start_s + np.linspace(0.0, span, n)


def sample_frames(path: str | os.PathLike, num_frames: int, exact: bool = False,
                  max_side: int | None = DEFAULT_MAX_SIDE, with_next: bool = False,
                  stats: dict | None = None, progress=None):
    """Sample `num_frames` RGB frames at uniform times over the video.

    Returns uint8 [num_frames, H, W, 3]; with ``with_next=True`` returns (frames, next_frames) where
    next_frames[i] is the frame decoded right after frames[i] (itself at the end of the video), for
    short-term motion statistics. `stats`, when given, receives decode counters; `progress`, when
    given, is called with the fraction of samples taken (seek-based path) as sampling goes.
    Raises VideoError for files that are not videos or have no decodable frame.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    container = _open(path)
    cursor = None
    try:
        info = _probe(container)
        size = _output_size(info.width, info.height, max_side)
        cursor = _Cursor(container, size, path)
        times: list | None = [] if stats is not None else None   # frame times (seek path only)
        if info.duration_s is None or not info.fps or (
                info.frame_count is not None and info.frame_count <= num_frames):
            # Short or odd file: one forward pass (all frames of a short clip, or a thinned
            # reservoir when we cannot tell the duration).
            picked, nexts = _forward_pass(cursor, num_frames, with_next)
            times = None
        else:
            try:
                picked, nexts = _seek_pass(cursor, info, num_frames, exact, with_next, progress,
                                           times=times)
            except _BrokenTimestamps:
                times = None
                # Timestamps we cannot seek by: start over with one forward pass.
                cursor.rewind()
                picked, nexts = _forward_pass(cursor, num_frames, with_next)
        if not picked:
            why = "truncated or corrupt" if cursor.failed else "no decodable frame"
            raise VideoError(f"{why}: no frame could be decoded from {os.path.basename(path)}",
                             detail=str(path))
        # Repeats (a past-the-end or cached sample) are the same array object: count objects.
        distinct = len({id(f) for f in picked})
        if distinct < min(MIN_DISTINCT_FRAMES, num_frames):
            raise NotAVideo(f"{os.path.basename(path)} is a still image, not a video ({distinct} "
                            f"distinct frame{'s' if distinct != 1 else ''}; at least "
                            f"{MIN_DISTINCT_FRAMES} are needed)", detail=str(path))
        if stats is not None:
            stats.update(decoded=cursor.decoded, failed=cursor.failed, size=size)
            # Presentation time of each sample (None after a forward pass, which keeps no times).
            stats["times"] = (times[:num_frames] + [times[-1]] * max(0, num_frames - len(times))
                              if times else None)
    finally:
        container.close()
        if cursor is not None:
            cursor.container.close()

    frames = _stack(picked, num_frames)
    if with_next:
        return frames, _stack(nexts, num_frames)
    return frames


def _stack(arrays: list[np.ndarray], n: int) -> np.ndarray:
    """Stack, repeating the last array until there are n rows."""
    rows = list(arrays[:n]) + [arrays[-1]] * max(0, n - len(arrays))
    return np.stack(rows)


def _forward_pass(cursor: _Cursor, n: int, with_next: bool):
    """Decode front to back once, keeping an evenly thinned set of at most 2n frames.

    Used when the clip has no more than n frames (all are kept) or when its duration is unknown.
    Thinning doubles the stride whenever 2n frames are held, so memory stays bounded on any file.
    """
    kept: list[tuple[np.ndarray, np.ndarray | None]] = []
    stride, index = 1, 0
    want_next = False
    while True:
        frame = cursor.next()
        if frame is None:
            break
        rgb = None
        if want_next:                        # the frame right after the last kept one
            rgb = cursor.to_rgb(frame)
            kept[-1] = (kept[-1][0], rgb)
            want_next = False
        if index % stride == 0:
            kept.append((rgb if rgb is not None else cursor.to_rgb(frame), None))
            want_next = with_next
            if len(kept) >= 2 * n:
                kept = kept[::2]
                stride *= 2
        index += 1
    if not kept:
        return [], []
    if len(kept) > n:
        idx = np.linspace(0, len(kept) - 1, n).round().astype(int)
        kept = [kept[i] for i in idx]
    frames = [f for f, _ in kept]
    nexts = [nx if nx is not None else f for f, nx in kept]
    return frames, nexts


def _seek_pass(cursor: _Cursor, info: VideoInfo, n: int, exact: bool, with_next: bool,
               progress=None, targets=None, spacing: float | None = None, times: list | None = None):
    """Frames at `targets` (default: n uniform times). `times`, when given, receives the
    presentation time of each frame taken (the snapped keyframe's time in keyframe mode)."""
    if targets is None:
        targets = _targets(info, n)
    n = len(targets)
    if spacing is None:
        spacing = float(targets[1] - targets[0]) if n > 1 else (info.duration_s or 0.0)
    frame_dur = 1.0 / info.fps
    eps = frame_dur / 2
    keyframes = info.keyframe_times
    frames: list[np.ndarray] = []
    nexts: list[np.ndarray] = []
    pos: float | None = None            # time of the last frame decoded (cursor position)
    last_sample: float | None = None    # time of the last sample taken
    cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    cache_times: dict[float, float] = {}

    def keyframe_between(a: float, b: float) -> bool:
        """Is there a keyframe in (a, b]? Unknown index: seek when the gap is over 2 s."""
        if not keyframes:
            return b - a > 2.0
        i = bisect.bisect_right(keyframes, a + eps)
        return i < len(keyframes) and keyframes[i] <= b + eps

    def seek_to(goal: float, slack: float) -> float | None:
        """Seek so the next frame is at or before goal + slack; returns its time (None: nothing).

        Some demuxers (MPEG-TS, files without an index) land after the target or past the only
        keyframe; then step back further (1, 2, 4 ... s), and finally reopen at the start.
        """
        back = 0.0
        while True:
            at = goal - back
            if at <= info.start_s + eps:
                cursor.rewind()
            else:
                cursor.seek(at)
            frame = cursor.next()
            if frame is not None:
                cursor.push_back(frame)
                if frame.time is None or frame.time <= goal + slack or at <= info.start_s + eps:
                    return frame.time
            elif at <= info.start_s + eps:
                return None
            back = max(1.0, back * 2)

    for k, t in enumerate(targets):
        if progress is not None and k % 8 == 0 and k:
            progress(k / n)
        t = float(t)
        # Nearest keyframe within half a spacing of the target: the cheap sample.
        snap = None
        if not exact and keyframes:
            i = bisect.bisect_left(keyframes, t)
            near = [k for k in keyframes[max(0, i - 1):i + 1] if abs(k - t) <= spacing / 2]
            if near:
                k = min(near, key=lambda k: abs(k - t))
                if last_sample is None or k > last_sample + eps:
                    snap = k
        goal = snap if snap is not None else t
        if goal in cache:
            f, nx = cache[goal]
            frames.append(f)
            nexts.append(nx)
            if times is not None:
                times.append(cache_times[goal])
            continue
        if goal < (pos if pos is not None else info.start_s) - eps or \
                keyframe_between(pos if pos is not None else info.start_s, goal):
            # Keyframe mode may take a frame up to half a spacing after the target (demuxers
            # without an index, like MPEG-TS, land on the next keyframe); exact mode may not.
            loose = snap is None and not exact
            first = seek_to(goal, spacing / 2 if loose else eps)
            pos = None
            if loose and first is not None and abs(first - t) <= spacing / 2 \
                    and (last_sample is None or first > last_sample + eps):
                goal = first          # no keyframe index: the frame the seek landed on will do
        # Decode forward to the first frame at or past the goal (nearest frame).
        frame = None
        while True:
            cand = cursor.next()
            if cand is None:
                break
            frame = cand
            ft = cand.time
            if ft is None or (pos is not None and ft <= pos):
                raise _BrokenTimestamps()      # times must increase while decoding forward
            pos = ft
            if ft >= goal - eps:
                break
        if frame is None:
            # Past the decodable end: repeat the last sample (truncated file or short duration).
            if frames:
                frames.append(frames[-1])
                nexts.append(nexts[-1])
                if times is not None:
                    times.append(times[-1])
                continue
            break
        rgb = cursor.to_rgb(frame)
        nx = rgb
        if with_next:
            after = cursor.next()
            if after is not None:
                nx = cursor.to_rgb(after)
                cursor.push_back(after)
        frames.append(rgb)
        nexts.append(nx)
        if times is not None:
            times.append(float(pos) if pos is not None else goal)
        last_sample = pos
        cache[goal] = (rgb, nx)
        cache_times[goal] = float(pos) if pos is not None else goal
    return frames, nexts


@dataclass
class TimedFrames:
    """Frames taken at requested times, with the time each one really shows."""
    frames: np.ndarray            # uint8 [N, H, W, 3] RGB
    next_frames: np.ndarray | None  # the frame decoded after each one (with_next=True)
    times: np.ndarray             # float64 [N] presentation times (s)
    info: VideoInfo


def sample_times(path: str | os.PathLike, targets, exact: bool = False,
                 max_side: int | None = DEFAULT_MAX_SIDE, with_next: bool = False,
                 spacing: float | None = None, stats: dict | None = None) -> TimedFrames:
    """Frames nearest the given times (seconds, sorted), by the same seeks as sample_frames.

    In keyframe mode (exact=False) a frame may be a keyframe up to spacing/2 from its target
    (spacing: the typical gap between targets; default their median gap); `times` says which
    frame each one is. Targets past the decodable end repeat the last frame. Raises VideoError
    like sample_frames, and for files whose duration or frame rate is unknown (nothing to seek by).
    """
    targets = np.sort(np.asarray(targets, dtype=np.float64))
    if len(targets) == 0:
        raise ValueError("no target times")
    container = _open(path)
    cursor = None
    try:
        info = _probe(container)
        if info.duration_s is None or not info.fps:
            raise VideoError(f"{os.path.basename(path)} has no duration or frame rate to seek by",
                             detail=str(path))
        size = _output_size(info.width, info.height, max_side)
        cursor = _Cursor(container, size, path)
        if spacing is None:
            spacing = float(np.median(np.diff(targets))) if len(targets) > 1 else float(info.duration_s)
        times: list[float] = []
        try:
            picked, nexts = _seek_pass(cursor, info, len(targets), exact, with_next,
                                       targets=targets, spacing=spacing, times=times)
        except _BrokenTimestamps:
            raise VideoError(f"{os.path.basename(path)} has timestamps that cannot be seeked by",
                             detail=str(path)) from None
        if not picked:
            raise VideoError(f"no frame could be decoded from {os.path.basename(path)}", detail=str(path))
        if stats is not None:
            stats.update(decoded=cursor.decoded, failed=cursor.failed, size=size)
    finally:
        container.close()
        if cursor is not None:
            cursor.container.close()
    n = len(targets)
    times = times[:n] + [times[-1]] * max(0, n - len(times))
    return TimedFrames(frames=_stack(picked, n), next_frames=_stack(nexts, n) if with_next else None,
                       times=np.asarray(times, dtype=np.float64), info=info)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Container metadata of a video file (raises VideoError like sample_frames)."""
    container = _open(path)
    try:
        return _probe(container)
    finally:
        container.close()
