"""Per-segment timeline: what each part of a long or mixed video is.

video file -> frames every ~`spacing_s` over the whole video (at most `max_frames`, so the
spacing grows on long videos; the frames already sampled for the video label are reused where
they fall) -> shot boundaries from a cheap histogram + layout difference between neighbouring
frames, each refined by bisection (a few more seeks) until it is known to within `precision_s`
-> segments (too short ones merged into the neighbour across the weaker boundary, long ones split
at `max_segment_s`) -> every segment classified by the video's own pipeline and ensemble, all in
one batch (each segment's features are temporal_multiscale() of its own frames' per-frame
vectors, exactly as a whole video's) -> adjacent segments with the same label merged.

The video's result is the duration-weighted mean of the segments' probabilities (per member and
for subcategories too, so label, agreement and subcategory agree); `mixed` is true when no class
labels at least `mixed_share` of the duration.

Nothing here knows about Flask, Celery or the database: the worker and the CLI pass options in.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from vidclass.features.extract import temporal_multiscale
from vidclass.media.frames import probe, sample_times

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentOptions:
    min_segment_s: float = 2.0      # shorter segments are merged into a neighbour
    max_segment_s: float = 60.0     # longer ones are split (then merged back if they agree)
    spacing_s: float = 1.0          # frame spacing on short videos
    max_frames: int = 480           # frames per video at most (the spacing grows beyond)
    precision_s: float = 0.5        # boundaries are refined until bracketed this closely
    mixed_share: float = 0.8        # mixed: no class labels this share of the duration
    # A boundary: the frame-to-frame difference is at least `threshold` and `ratio` times the
    # median difference around it (fast-moving content has large differences everywhere).
    threshold: float = 0.3
    ratio: float = 3.0

    def with_(self, **changes) -> "SegmentOptions":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


MIXED = "mixed"      # the label of a video whose timeline has no dominant class


@dataclass
class Timeline:
    segments: list[dict]                  # merged: {start, end, label, confidence, probabilities}
    mixed: bool
    shares: dict[str, float]              # share of the duration labelled with each class
    result: dict                          # the duration-weighted result (EnsemblePrediction.result_dict)
    whole_video: dict | None              # the whole video's own result (its uniform frames)
    shots: list[dict]                     # segments before classification (start, end, frames)
    boundaries: list[float]               # shot boundaries found (before min/max length rules)
    thumbnails: list[np.ndarray] = field(default_factory=list)   # one RGB frame per segment
    timings: dict = field(default_factory=dict)
    duration_s: float = 0.0


# ------------------------------------------------------------------ frame signatures

HIST_LEVELS = 4        # per RGB channel: a 64-bin joint colour histogram
THUMB = (9, 16)        # grey layout thumbnail (rows, columns)


def frame_signatures(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour histograms [N, 64] summing to 1, grey thumbnails [N, 144] in 0..1) of RGB frames."""
    frames = np.asarray(frames)
    small = frames[:, ::4, ::4, :]
    q = (small.astype(np.uint16) * HIST_LEVELS) >> 8
    idx = (q[..., 0] * HIST_LEVELS + q[..., 1]) * HIST_LEVELS + q[..., 2]
    n = len(frames)
    bins = HIST_LEVELS ** 3
    flat = idx.reshape(n, -1) + (np.arange(n)[:, None] * bins)
    hists = np.bincount(flat.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float32)
    hists /= np.maximum(hists.sum(axis=1, keepdims=True), 1)
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    rows, cols = THUMB
    h, w = grey.shape[1] // rows * rows, grey.shape[2] // cols * cols
    thumbs = grey[:, :h, :w].reshape(n, rows, h // rows, cols, w // cols).mean(axis=(2, 4)) / 255.0
    return hists, thumbs.reshape(n, -1)


def signature_distance(a: tuple, b: tuple) -> np.ndarray:
    """Difference of frames in 0..1: the mean of the histogram's half-L1 distance and the layout
    thumbnail's mean absolute difference (x2, so a full change of layout counts like one of colour)."""
    hd = 0.5 * np.abs(a[0] - b[0]).sum(axis=-1)
    td = np.minimum(1.0, 2.0 * np.abs(a[1] - b[1]).mean(axis=-1))
    return 0.5 * (hd + td)


def detect_cuts(distances: np.ndarray, options: SegmentOptions, window: int = 5) -> np.ndarray:
    """Indices i where the step from frame i to i+1 is a shot boundary."""
    d = np.asarray(distances, dtype=np.float64)
    cuts = []
    for i, v in enumerate(d):
        if v < options.threshold:
            continue
        around = np.concatenate([d[max(0, i - window):i], d[i + 1:i + 1 + window]])
        local = float(np.median(around)) if len(around) else 0.0
        if v >= options.ratio * local:
            cuts.append(i)
    return np.asarray(cuts, dtype=int)


# ------------------------------------------------------------------ sampling and refinement

def _dense_times(start: float, end: float, options: SegmentOptions, reused: np.ndarray) -> tuple[np.ndarray, float]:
    """Target times every `spacing` over [start, end) (spacing grown to fit max_frames), minus those
    within half a spacing of a reused frame."""
    duration = max(end - start, 1e-6)
    budget = max(8, options.max_frames - len(reused))
    spacing = max(options.spacing_s, duration / budget)
    targets = np.arange(start + spacing / 2, end, spacing)
    if len(reused) and len(targets):
        nearest = np.min(np.abs(targets[:, None] - reused[None, :]), axis=1)
        targets = targets[nearest >= spacing / 2]
    return targets, spacing


def _refine(path, lows: list, highs: list, options: SegmentOptions, stats: dict) -> list[float]:
    """Bisect each bracket (time, signature) pair until its two frames are at most precision_s apart;
    all brackets advance together, one pass of seeks per round."""
    lows, highs = list(lows), list(highs)
    stuck: set[int] = set()           # no frame between the two: as close as the file allows
    for _ in range(12):
        open_ = [k for k in range(len(lows))
                 if highs[k][0] - lows[k][0] > options.precision_s and k not in stuck]
        if not open_:
            break
        mids = np.array([(lows[k][0] + highs[k][0]) / 2 for k in open_])
        gaps = np.array([highs[k][0] - lows[k][0] for k in open_])
        order = np.argsort(mids)
        got = sample_times(path, mids[order], exact=False, spacing=float(np.min(gaps)) / 2)
        stats["refine_frames"] = stats.get("refine_frames", 0) + len(mids)
        sig = frame_signatures(got.frames)
        for j, o in enumerate(order):
            k = open_[o]
            t = float(got.times[j])
            lo, hi = lows[k], highs[k]
            if not lo[0] < t < hi[0]:           # a keyframe outside the bracket: take the exact frame
                exact = sample_times(path, [mids[o]], exact=True)
                t = float(exact.times[0])
                s = tuple(x[0] for x in frame_signatures(exact.frames))
                if not lo[0] < t < hi[0]:
                    stuck.add(k)
                    continue
            else:
                s = (sig[0][j], sig[1][j])
            to_lo = float(signature_distance(lo[1], s))
            to_hi = float(signature_distance(s, hi[1]))
            if to_hi >= to_lo:
                lows[k] = (t, s)             # the cut is after t
            else:
                highs[k] = (t, s)
    return [(lo[0] + hi[0]) / 2 for lo, hi in zip(lows, highs)]


# ------------------------------------------------------------------ segments

def _shots(start: float, end: float, boundaries: list[float], strengths: list[float], times: np.ndarray,
           options: SegmentOptions) -> list[dict]:
    """Segments between boundaries; short or frameless ones merged across their weaker boundary;
    long ones split evenly."""
    edges = [start] + list(boundaries) + [end]
    strength = [math.inf] + list(strengths) + [math.inf]
    segs = [{"start": edges[i], "end": edges[i + 1]} for i in range(len(edges) - 1)]

    def frames_in(seg):
        return int(np.sum((times >= seg["start"]) & (times < seg["end"])))

    while len(segs) > 1:
        bad = [i for i, s in enumerate(segs)
               if s["end"] - s["start"] < options.min_segment_s or frames_in(s) == 0]
        if not bad:
            break
        i = min(bad, key=lambda i: segs[i]["end"] - segs[i]["start"])
        # boundary i is segs[i]'s start, boundary i+1 its end
        left, right = strength[i], strength[i + 1]
        j = i - 1 if (right == math.inf or (left <= right and left != math.inf)) else i
        segs[j] = {"start": segs[j]["start"], "end": segs[j + 1]["end"]}
        del segs[j + 1]
        del strength[j + 1]
    out = []
    for s in segs:
        parts = max(1, math.ceil((s["end"] - s["start"]) / options.max_segment_s - 1e-9))
        step = (s["end"] - s["start"]) / parts
        for p in range(parts):
            a = s["start"] + p * step
            b = s["end"] if p == parts - 1 else a + step
            if p and frames_in({"start": a, "end": b}) == 0:
                out[-1]["end"] = b            # a split part without a frame stays with the previous
                continue
            out.append({"start": a, "end": b})
    return out


def timecode(seconds: float) -> str:
    """HH:MM:SS.mmm, as video tools show a position."""
    ms = int(round(max(0.0, float(seconds)) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    return f"{h:02d}:{m:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def _position(start: float, end: float, video_start: float, fps: float | None) -> dict:
    """Timecodes of a segment (from the video's first frame) and, with a known frame rate, the
    numbers of its first and last frames (0-based)."""
    out = {"start_timecode": timecode(start - video_start), "end_timecode": timecode(end - video_start)}
    if fps:
        first = int(round((start - video_start) * fps))
        out.update(start_frame=first, end_frame=max(first, int(round((end - video_start) * fps)) - 1))
    return out


def _weighted_prediction(prediction, rows: np.ndarray, weights: np.ndarray):
    """An EnsemblePrediction of one row: the weighted mean of `rows`."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / max(w.sum(), 1e-12)
    mp = np.einsum("mnc,n->mc", prediction.member_probs[:, rows, :], w)[:, None, :]
    sub = None
    if prediction.subcategory_probs is not None:
        sub = (prediction.subcategory_probs[rows] * w[:, None]).sum(axis=0, keepdims=True)
    return replace(prediction, member_probs=mp.astype(np.float32), probs=mp.mean(axis=0).astype(np.float32),
                   subcategory_probs=sub)


def segment_video(path, extractor, ensemble, video=None, options: SegmentOptions | None = None,
                  progress=None) -> Timeline:
    """The timeline of a video file (see the module docstring).

    extractor: vidclass.features.extract.FeatureExtractor of the ensemble's pipeline; ensemble: Ensemble.
    video: the VideoFeatures extract_file() gave for the whole-video label, if any: its frames,
    per-frame vectors and times are reused, and it is classified in the same batch.
    progress: optional callable(stage, fraction).
    Raises vidclass.media.frames.VideoError for unusable files.
    """
    options = options or SegmentOptions()
    pipeline = ensemble.pipeline
    timings: dict = {}
    stats: dict = {}
    t0 = time.perf_counter()
    info = probe(path)
    start = float(info.start_s or 0.0)
    duration = float(info.duration_s or 0.0)
    end = start + duration

    reused_t = np.zeros(0)
    reused = None
    if video is not None and getattr(video, "times", None) is not None and video.per_frame is not None \
            and len(video.times) == len(video.per_frame) == len(video.frames):
        t_all = np.asarray(video.times, dtype=np.float64)
        _, first = np.unique(t_all, return_index=True)          # repeated samples count once
        first = np.sort(first)
        reused_t = t_all[first]
        reused = (video.frames[first], video.per_frame[first])

    # 1. frames over the whole video, in one pass of seeks
    targets, spacing = _dense_times(start, end, options, reused_t)
    if not len(targets) and not len(reused_t):
        targets = np.array([start + duration / 2])              # shorter than half a spacing
    if progress:
        progress("segments", 0.0)
    frames_parts, times_parts, vec_parts = [], [], []
    if len(targets):
        got = sample_times(path, targets, exact=False, with_next=extractor.use_stats, spacing=spacing)
        keep = np.ones(len(got.times), bool)
        keep[1:] = np.diff(got.times) > 1e-6                   # snapped onto the same keyframe
        if len(reused_t):
            keep &= np.min(np.abs(got.times[:, None] - reused_t[None, :]), axis=1) > 1e-6
        timings["sample_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        new_frames = got.frames[keep]
        nexts = got.next_frames[keep] if got.next_frames is not None else None

        def feat_progress(stage, fraction):
            if progress:
                progress("segments", 0.1 + 0.8 * fraction)
        vec_parts.append(extractor.per_frame(new_frames, progress=feat_progress, next_frames=nexts))
        timings["features_s"] = time.perf_counter() - t1
        frames_parts.append(new_frames)
        times_parts.append(got.times[keep])
    if reused is not None:
        frames_parts.append(reused[0])
        vec_parts.append(reused[1])
        times_parts.append(reused_t)
    times = np.concatenate(times_parts)
    order = np.argsort(times, kind="stable")
    times = times[order]
    frames = np.concatenate(frames_parts)[order]
    vecs = np.concatenate(vec_parts)[order]
    stats["frames"] = len(times)

    # 2. shot boundaries, refined
    t2 = time.perf_counter()
    sigs = frame_signatures(frames)
    dist = signature_distance((sigs[0][:-1], sigs[1][:-1]), (sigs[0][1:], sigs[1][1:]))
    cuts = detect_cuts(dist, options)
    lows = [(float(times[i]), (sigs[0][i], sigs[1][i])) for i in cuts]
    highs = [(float(times[i + 1]), (sigs[0][i + 1], sigs[1][i + 1])) for i in cuts]
    boundaries = _refine(path, lows, highs, options, stats) if len(cuts) else []
    strengths = [float(dist[i]) for i in cuts]
    timings["detect_s"] = time.perf_counter() - t2
    if progress:
        progress("segments", 0.92)

    # 3. segments, classified in one batch with the whole video
    shots = _shots(start, end, boundaries, strengths, times, options)
    rows, lengths = [], []
    for s in shots:
        idx = np.flatnonzero((times >= s["start"]) & (times < s["end"]))
        if len(idx) == 0:                                     # only possible for a 1-segment video
            idx = np.arange(len(times))
        if len(idx) > pipeline.num_frames:
            idx = idx[np.linspace(0, len(idx) - 1, pipeline.num_frames).round().astype(int)]
        s["frames"] = int(len(idx))
        feats, length = temporal_multiscale(vecs[idx], pipeline.scales)
        rows.append(feats)
        lengths.append(length)
        mid = (s["start"] + s["end"]) / 2
        s["_thumb"] = int(idx[np.argmin(np.abs(times[idx] - mid))])
    whole = None
    if video is not None:
        whole = (np.asarray(video.features), int(video.length))
    steps = max([pipeline.max_steps] + [len(r) for r in rows] + ([len(whole[0])] if whole else []))
    batch = np.zeros((len(rows) + (1 if whole else 0), steps, vecs.shape[1]), np.float32)
    if whole:
        batch[0, :len(whole[0])] = whole[0]
        lengths = [whole[1]] + lengths
    offset = 1 if whole else 0
    for k, r in enumerate(rows):
        batch[offset + k, :len(r)] = r
    t3 = time.perf_counter()
    prediction = ensemble.predict(batch, lengths)
    timings["classify_s"] = time.perf_counter() - t3

    names = list(prediction.class_names)
    labels = prediction.probs.argmax(axis=1)
    merged: list[dict] = []
    for k, s in enumerate(shots):
        row = offset + k
        label = names[int(labels[row])]
        if merged and merged[-1]["label"] == label:
            m = merged[-1]
            m["end"] = s["end"]
            m["_rows"].append(row)
            m["_thumbs"].append(s["_thumb"])
            m["_shots"].append(k)
        else:
            merged.append({"start": s["start"], "end": s["end"], "label": label, "_rows": [row],
                           "_thumbs": [s["_thumb"]], "_shots": [k]})
    segments, thumbs = [], []
    row_durations = np.zeros(len(batch))
    for k, s in enumerate(shots):
        row_durations[offset + k] = s["end"] - s["start"]
    for m in merged:
        r = np.asarray(m["_rows"])
        w = row_durations[r]
        p = (prediction.probs[r] * (w / max(w.sum(), 1e-12))[:, None]).sum(axis=0)
        part = _weighted_prediction(prediction, r, w).result_dict(0)
        segments.append({"start": round(m["start"], 3), "end": round(m["end"], 3), "label": m["label"],
                         "confidence": float(p[names.index(m["label"])]),
                         "probabilities": {n: float(v) for n, v in zip(names, p)},
                         "subcategory": part.get("subcategory"),
                         "subcategory_confidence": part.get("subcategory_confidence"),
                         **_position(m["start"], m["end"], start, info.fps),
                         # the shot boundaries inside the segment (its parts' starts, after the first)
                         "shots": [round(shots[k]["start"], 3) for k in m["_shots"][1:]]})
        # the thumbnail of the longest part, from its middle
        thumbs.append(np.ascontiguousarray(frames[m["_thumbs"][int(np.argmax(w))]]))
    for s in shots:
        s.pop("_thumb", None)
        s["start"], s["end"] = round(s["start"], 3), round(s["end"], 3)

    total = sum(s["end"] - s["start"] for s in segments) or 1.0
    shares = {n: 0.0 for n in names}
    for s in segments:
        shares[s["label"]] += (s["end"] - s["start"]) / total
    weighted = _weighted_prediction(prediction, np.arange(offset, len(batch)), row_durations[offset:])
    result = weighted.result_dict(0)
    whole_result = None
    if whole:
        w = prediction.result_dict(0)
        whole_result = {k: w[k] for k in ("label", "confidence", "uncertain", "probabilities", "subcategory",
                                          "subcategory_confidence", "agreement")}
    timings["segments_s"] = time.perf_counter() - t0
    if progress:
        progress("segments", 1.0)
    log.info("timeline of %s: %d frames (spacing %.2fs), %d boundaries, %d shots, %d segments in %.2fs",
             path, len(times), spacing, len(boundaries), len(shots), len(segments), timings["segments_s"])
    return Timeline(segments=segments, mixed=max(shares.values()) < options.mixed_share,
                    shares={n: round(v, 4) for n, v in shares.items()}, result=result,
                    whole_video=whole_result, shots=shots, boundaries=[round(b, 3) for b in boundaries],
                    thumbnails=thumbs, timings={k: round(v, 4) for k, v in timings.items()},
                    duration_s=duration)


def apply_timeline(result: dict, timeline: Timeline) -> dict:
    """The classification result dict with the timeline in it: label, confidence, uncertain,
    probabilities, members, agreement and subcategory become the duration-weighted ones; `whole_video` keeps the
    whole video's own answer; `segments`, `mixed` and `label_shares` are added. A mixed timeline's
    label is "mixed" (MIXED), without confidence or subcategory."""
    out = dict(result)
    for key in ("label", "confidence", "uncertain", "probabilities", "members", "agreement", "subcategory",
                "subcategory_confidence"):
        out[key] = timeline.result[key]
    out["whole_video"] = timeline.whole_video
    out["segments"] = timeline.segments
    out["mixed"] = timeline.mixed
    out["label_shares"] = timeline.shares
    if timeline.mixed:
        # No class covers enough of the video to be its answer: the answer is "mixed", with the
        # shares per class (label_shares); no single confidence or subcategory describes it.
        out.update(label=MIXED, confidence=None, uncertain=False, subcategory=None,
                   subcategory_confidence=None)
    timings = dict(out.get("timings") or {})
    for k, v in timeline.timings.items():
        timings[f"segments_{k}" if not k.startswith("segments") else k] = v
    out["timings"] = timings
    return out


def format_table(segments: list[dict]) -> str:
    """A readable table of segments (the CLI's --segments output)."""
    def clock(t):
        t = max(0.0, float(t))
        h, rest = divmod(t, 3600)
        m, s = divmod(rest, 60)
        return f"{int(h)}:{int(m):02d}:{s:04.1f}" if h else f"{int(m)}:{s:04.1f}"
    lines = [f"  {'start':>9} {'end':>9} {'length':>8}  {'label':<16}{'conf.':>7}"]
    for s in segments:
        lines.append(f"  {clock(s['start']):>9} {clock(s['end']):>9} {s['end'] - s['start']:>7.1f}s  "
                     f"{s['label']:<16}{s['confidence']:>7.1%}")
    return "\n".join(lines)
