"""The per-segment timeline (vidclass/model/timeline.py): shot rules on synthetic input, and a video
concatenated from corpus clips of four classes segmented and classified with the shipped model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidclass.model.timeline import SegmentOptions, _shots, detect_cuts, format_table

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("VIDCLASS_CORPUS", REPO.parent / "shared" / "corpus"))

# (clip, seconds, class): 20 s slides, 15 s gameplay, 20 s camera footage, 10 s cartoon. Clips are
# ~10 s, so each long part is two clips of one source; every join is a cut the detector may find,
# and every change of class is one it must find.
PARTS = [("Flat_Content/slides/slides_impress_edit_ci.mp4", 10, "Flat_Content"),
         ("Flat_Content/slides/slides_impress_edit_os.mp4", 10, "Flat_Content"),
         ("Gaming/racing/supertuxkart_3.mp4", 10, "Gaming"),
         ("Gaming/racing/supertuxkart_4.mp4", 5, "Gaming"),
         ("Natural_Content/camera_footage/debian_opencv-doc__tree_0.mp4", 10, "Natural_Content"),
         ("Natural_Content/camera_footage/debian_opencv-doc__box_0.mp4", 10, "Natural_Content"),
         ("Animation/cartoon_2d/cartoon_penguins_snow.mp4", 10, "Animation")]


def test_detect_cuts_needs_an_absolute_and_a_relative_jump():
    d = np.array([0.02, 0.03, 0.9, 0.02, 0.01, 0.4, 0.45, 0.5, 0.42, 0.9, 0.44, 0.41])
    cuts = detect_cuts(d, SegmentOptions(threshold=0.3, ratio=1.5))
    assert 2 in cuts and 9 in cuts
    assert 6 not in cuts and 7 not in cuts       # busy content: large, but like its neighbours


def test_short_segments_merge_across_the_weaker_boundary_and_long_ones_split():
    times = np.arange(0.5, 100, 1.0)
    opts = SegmentOptions(min_segment_s=2.0, max_segment_s=30.0)
    # a 1 s shot between a strong cut (0.9) and a weak one (0.35): it joins the right neighbour
    shots = _shots(0.0, 100.0, [10.0, 11.0, 40.0], [0.9, 0.35, 0.8], times, opts)
    edges = [(s["start"], s["end"]) for s in shots]
    assert edges == [(0.0, 10.0), (10.0, 40.0), (40.0, 70.0), (70.0, 100.0)]   # 40..100 split in two


def test_format_table_lists_every_segment():
    segs = [{"start": 0.0, "end": 20.0, "label": "Flat_Content", "confidence": 0.9},
            {"start": 20.0, "end": 3725.5, "label": "Gaming", "confidence": 0.61}]
    table = format_table(segs)
    assert "Flat_Content" in table and "1:02:05.5" in table and "61.0%" in table
    assert len(table.splitlines()) == 3


@pytest.fixture(scope="module")
def mixed_video(tmp_path_factory):
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"no corpus at {CORPUS}")
    from bench.videogen import concat_clips

    out = tmp_path_factory.mktemp("timeline") / "mixed.mp4"
    joins = concat_clips([(CORPUS / clip, seconds) for clip, seconds, _ in PARTS], out)
    class_cuts = [t for t, (a, b) in zip(joins, zip(PARTS, PARTS[1:])) if a[2] != b[2]]
    spans, t = [], 0.0
    for clip, seconds, label in PARTS:
        if spans and spans[-1][2] == label:
            spans[-1] = (spans[-1][0], t + seconds, label)
        else:
            spans.append((t, t + seconds, label))
        t += seconds
    return out, joins, class_cuts, spans


@pytest.fixture(scope="module")
def classifier():
    import torch

    from vidclass.model.classify import Classifier

    torch.set_num_threads(2)
    return Classifier(device="cpu")


def test_boundaries_fall_within_a_second_of_the_cuts(mixed_video, classifier):
    """Model-independent: the shot detector's boundaries, before any classification."""
    path, joins, class_cuts, _ = mixed_video
    timeline = classifier.timeline(path)
    found = timeline.boundaries
    for cut in class_cuts:
        assert min(abs(b - cut) for b in found) <= 1.0, (cut, found)
    for b in found:       # nothing where the picture does not change (clean clips)
        assert min(abs(b - j) for j in joins) <= 1.0, (b, joins)
    # the segments start and end where shots do, cover the video, and do not overlap
    segs = timeline.segments
    assert segs[0]["start"] == pytest.approx(0.0, abs=0.05)
    assert segs[-1]["end"] == pytest.approx(sum(p[1] for p in PARTS), abs=0.2)
    assert all(a["end"] == b["start"] for a, b in zip(segs, segs[1:]))
    assert all(a["label"] != b["label"] for a, b in zip(segs, segs[1:]))   # merged
    inner = [s["start"] for s in segs[1:]]
    assert all(min(abs(b - j) for j in joins) <= 1.0 for b in inner), (inner, joins)


def test_most_parts_get_their_clips_class_with_the_shipped_model(mixed_video, classifier):
    path, _, class_cuts, spans = mixed_video
    result = classifier.classify_file(path, segments=True)
    segs = result["segments"]
    assert {"start", "end", "label", "confidence", "probabilities", "subcategory", "shots",
            "start_timecode", "end_timecode", "start_frame", "end_frame"} <= set(segs[0])
    assert all(abs(sum(s["probabilities"].values()) - 1) < 1e-3 for s in segs)
    from vidclass.media.frames import probe
    fps = probe(path).fps
    for s in segs:      # timecodes and frame numbers say the same as the seconds
        h, m, sec = s["start_timecode"].split(":")
        assert abs(int(h) * 3600 + int(m) * 60 + float(sec) - s["start"]) < 2e-3
        assert s["start_frame"] == round(s["start"] * fps) and s["end_frame"] == round(s["end"] * fps) - 1
        assert all(s["start"] < t < s["end"] for t in s["shots"])
    assert segs[0]["start_timecode"] == "00:00:00.000" and segs[-1]["end_frame"] >= segs[-1]["start_frame"]

    def label_over(a, b):
        cover = {}
        for s in segs:
            overlap = min(b, s["end"]) - max(a, s["start"])
            if overlap > 0:
                cover[s["label"]] = cover.get(s["label"], 0) + overlap
        return max(cover, key=cover.get)

    right = [label_over(a, b) == label for a, b, label in spans]
    assert sum(right) > len(spans) / 2, (spans, segs)
    # four classes, none over 80 % of the duration: the answer is "mixed", with the shares per
    # class and no single confidence or subcategory; the whole video's own answer is kept beside
    assert result["mixed"] is True
    assert result["label"] == "mixed" and result["confidence"] is None
    assert result["subcategory"] is None and result["uncertain"] is False
    assert result["whole_video"]["label"] in result["probabilities"]
    assert abs(sum(result["label_shares"].values()) - 1) < 1e-3


def test_cli_prints_a_table_and_json(mixed_video, tmp_path):
    path = mixed_video[0]
    env = dict(os.environ, VIDCLASS_TORCH_THREADS="2")
    cli = [sys.executable, "-m", "vidclass.cli", "classify", "--segments", "--json", str(path)]
    out = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout)          # --json: one array, an object per target
    assert len(results) == 1
    result = results[0]
    assert result["segments"] and "mixed" in result
    out = subprocess.run(cli[:-2] + ["--min-segment", "5", str(path)], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "timeline" in out.stdout and "start" in out.stdout
    assert sum(1 for line in out.stdout.splitlines() if "%" in line and ":" in line.split()[0]) >= 2


def test_job_options_decide_the_timeline(monkeypatch):
    from worker.segment_pass import segment_options

    clip = REPO / "tests" / "fixtures" / "gaming_supertux_4.mp4"     # a few seconds long
    assert segment_options({}, clip) is None                         # auto: shorter than 60 s
    monkeypatch.setenv("SEGMENT_MIN_VIDEO_S", "1")
    assert segment_options({}, clip) is not None                     # auto: longer than 1 s
    assert segment_options({"segments": False}, clip) is None
    monkeypatch.setenv("SEGMENT_MIN_VIDEO_S", "600")
    opts = segment_options({"segments": True, "min_segment_s": 7.5}, clip)
    assert opts.min_segment_s == 7.5


def test_api_options_are_checked_and_stored_segments_are_shown_with_urls():
    from flask import Flask

    from api.errors import ApiError
    from api.submit import job_options
    from db.models import Job

    with Flask(__name__).app_context():
        assert job_options({}) == {}
        assert job_options({"segments": "auto"}) == {}
        assert job_options({"segments": True, "min_segment_s": 3}) == {"segments": True, "min_segment_s": 3.0}
        # Form fields are words and decimals; JSON takes JSON types only.
        assert job_options({"segments": "true", "min_segment_s": "3"}, form=True) == \
            {"segments": True, "min_segment_s": 3.0}
        assert job_options({"segments": "off", "min_segment_s": ""}, form=True) == {"segments": False}
        for bad in ({"segments": "maybe"}, {"segments": 1}, {"segments": "true"}, {"min_segment_s": 0},
                    {"min_segment_s": "x"}, {"min_segment_s": "3"}, {"min_segment_s": True}):
            with pytest.raises(ApiError):
                job_options(bad)
        for bad in ({"segments": "TRUE"}, {"min_segment_s": "x"}, {"min_segment_s": "0"}):
            with pytest.raises(ApiError):
                job_options(bad, form=True)
    job = Job(id="j1", source_kind="url", source="x", status="done", segments=[
        {"start": 0, "end": 30, "label": "Gaming", "confidence": 0.9, "probabilities": {}, "thumbnail_path": "/t/0.jpg"},
        {"start": 30, "end": 40, "label": "Flat_Content", "confidence": 0.8, "probabilities": {}}])
    d = job.to_dict()
    assert d["segments"][0]["thumbnail"] == "/api/jobs/j1/segments/0.jpg" and "thumbnail_path" not in d["segments"][0]
    assert d["segments"][1]["thumbnail"] is None
    assert d["mixed"] is True and d["label_shares"] == {"Gaming": 0.75, "Flat_Content": 0.25}
