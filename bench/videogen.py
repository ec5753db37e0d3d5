"""Test and benchmark videos concatenated from clips, with PyAV (no ffmpeg binary needed).

`concat_clips([(clip, seconds), ...], out)` writes one H.264 MP4 at a fixed size and frame rate:
each part plays its clip (looped as often as needed, at the output frame rate) for exactly
`seconds`, so the cuts are at the cumulative sums of the seconds. `remux_concat(parts, out)` joins
files made with the same settings by copying their packets (no re-encoding): a 2-hour file from a
few minutes of encoded chunks in seconds.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av


def _frames(clip: Path):
    """The clip's frames, front to back, forever (re-opened at each loop)."""
    while True:
        n = 0
        with av.open(str(clip)) as src:
            for frame in src.decode(video=0):
                n += 1
                yield frame
        if n == 0:
            raise ValueError(f"no frames in {clip}")


def concat_clips(parts, out, size=(640, 360), fps: int = 25, gop: int = 50, crf: int = 28,
                 preset: str = "ultrafast") -> list[float]:
    """Write parts [(clip path, seconds)] one after the other to `out`; returns the cut times."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    cuts, t = [], 0.0
    with av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"crf": str(crf), "preset": preset, "g": str(gop), "keyint_min": str(gop),
                          "sc_threshold": "0", "bf": "0"}
        pts = 0
        for k, (clip, seconds) in enumerate(parts):
            if k:
                cuts.append(t)
            count = int(round(seconds * fps))
            source = _frames(Path(clip))
            for _ in range(count):
                frame = next(source).reformat(width=width, height=height, format="yuv420p")
                frame.pts, frame.time_base = pts, Fraction(1, fps)
                pts += 1
                for packet in stream.encode(frame):
                    dst.mux(packet)
            source.close()
            t += count / fps
        for packet in stream.encode():
            dst.mux(packet)
    return cuts


def remux_concat(files, out) -> float:
    """Join MP4 files encoded with identical settings by copying packets; returns the duration (s)."""
    out = Path(out)
    with av.open(str(out), "w") as dst:
        first = av.open(str(files[0]))
        template = first.streams.video[0]
        stream = dst.add_stream_from_template(template)
        first.close()
        offset = 0
        tb = None
        for f in files:
            with av.open(str(f)) as src:
                s = src.streams.video[0]
                tb = s.time_base
                last = 0
                for packet in src.demux(s):
                    if packet.dts is None:
                        continue
                    dur = packet.duration or 0
                    last = max(last, packet.pts + dur)
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = stream
                    dst.mux(packet)
                offset += last
    return float(offset * tb)
