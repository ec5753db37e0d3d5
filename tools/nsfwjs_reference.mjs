// Reference outputs of nsfwjs's MobileNetV2 computed by nsfwjs itself on TF.js's pure-JS CPU
// backend, for tests/test_drawing_net.py. Not run by the tests: tools/make_nsfwjs_reference.py
// runs it and writes tests/fixtures/nsfwjs_reference.json.
//
// Needs a scratch npm folder outside the repository (the pure-JS packages only, no tfjs-node):
//   mkdir /tmp/nsfwref && cd /tmp/nsfwref && npm init -y &&
//   npm install --ignore-scripts nsfwjs@4.3.0 @tensorflow/tfjs@4.22.0
// Usage (from that folder, so that its node_modules resolve):
//   node /path/to/tools/nsfwjs_reference.mjs MODEL_DIR REQUEST.json OUT.json
// MODEL_DIR holds model.min.js and group1-shard1of1.min.js (what `make venv` installs, the same
// files as node_modules/nsfwjs/dist/models/mobilenet_v2). REQUEST.json:
//   {"frames": [{"name": ..., "height": H, "width": W, "rgb": "path of H*W*3 raw RGB bytes"}]}
// OUT.json: per frame dense_2 (128) and the 5 class probabilities, plus versions.
import { createRequire } from "node:module";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const [modelDir, requestPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node nsfwjs_reference.mjs MODEL_DIR REQUEST.json OUT.json");
  process.exit(2);
}
const req = createRequire(path.join(process.cwd(), "index.js"));
const tf = req("@tensorflow/tfjs");
const nsfwjs = req("nsfwjs");

// Evaluate a browserify/UMD bundle as CommonJS whatever package.json lies above it.
function loadBundle(file) {
  const module = { exports: {} };
  new Function("module", "exports", "require", fs.readFileSync(file, "utf8"))(
    module, module.exports, () => { throw new Error("bundle wants require"); });
  return module.exports;
}

const sha256 = (file) => crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
const files = ["model.min.js", "group1-shard1of1.min.js"].map((f) => path.join(modelDir, f));

await tf.setBackend("cpu");
const definition = {
  name: "MobileNetV2",
  numOfWeightBundles: 1,
  modelJson: async () => ({ default: loadBundle(files[0]) }),
  weightBundles: [async () => ({ default: loadBundle(files[1]) })],
};
const model = await nsfwjs.load("MobileNetV2", { modelDefinitions: [definition] });

const request = JSON.parse(fs.readFileSync(requestPath, "utf8"));
const frames = [];
for (const f of request.frames) {
  const rgb = fs.readFileSync(f.rgb);
  if (rgb.length !== f.height * f.width * 3) throw new Error(`${f.rgb}: wrong size`);
  // An int32 [H, W, 3] tensor is what tf.browser.fromPixels gives; infer() does /255 + resize.
  const img = tf.tensor3d(Int32Array.from(rgb), [f.height, f.width, 3], "int32");
  const dense2 = model.infer(img, "dense_2");
  const probs = model.infer(img);
  frames.push({ name: f.name, dense_2: Array.from(await dense2.data()),
                probabilities: Array.from(await probs.data()) });
  tf.dispose([img, dense2, probs]);
}

const out = {
  generated_by: "tools/nsfwjs_reference.mjs",
  nsfwjs: JSON.parse(fs.readFileSync(path.join(process.cwd(), "node_modules/nsfwjs/package.json"))).version,
  tfjs: tf.version.tfjs,
  backend: tf.getBackend(),
  model_files_sha256: Object.fromEntries(files.map((f) => [path.basename(f), sha256(f)])),
  classes: ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"],
  frames,
};
fs.writeFileSync(outPath, JSON.stringify(out, null, 1) + "\n");
