#!/bin/sh
# Install nsfwjs's MobileNetV2 model files (vidclass/features/drawing_net.py) from the npm registry, at
# install time only: `make venv` and the Dockerfile call this; nothing downloads at run time.
#
#   sh tools/fetch_nsfwjs.sh DEST VERSION INTEGRITY
#
# fetches nsfwjs@VERSION with `npm pack`, checks the tarball against INTEGRITY (the registry's
# dist.integrity, pinned in the Makefile, so a republished or tampered tarball is refused), and
# unpacks only dist/models/mobilenet_v2 (model.min.js + group1-shard1of1.min.js, ~3.6 MB) and the
# package's LICENSE (MIT) into DEST/mobilenet_v2 and DEST/LICENSE. Idempotent: DEST/.installed
# records what was installed and a second run with the same pin does nothing.
set -eu
dest=$1 version=$2 integrity=$3
stamp="$dest/.installed"

if [ -f "$stamp" ] && [ -f "$dest/mobilenet_v2/model.min.js" ] &&
   [ "$(cat "$stamp")" = "nsfwjs@$version $integrity" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "error: npm and node are needed once, at install time, to fetch the nsfwjs@$version model" >&2
  echo "  files (vidclass/features/drawing_net.py): install Node.js (Debian: apt-get install npm) and rerun" >&2
  echo "  'make venv', or copy dist/models/mobilenet_v2 of that npm package somewhere and set" >&2
  echo "  VIDCLASS_NSFWJS_DIR to it." >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching nsfwjs@$version from the npm registry (model files only are kept)"
(cd "$tmp" && npm pack --silent --ignore-scripts "nsfwjs@$version" >/dev/null)
tarball="$tmp/nsfwjs-$version.tgz"
# sha512 in npm's SRI form, with node so that no openssl is needed.
got=$(node -e 'const c=require("crypto"),f=require("fs");
  process.stdout.write("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tarball")
if [ "$got" != "$integrity" ]; then
  echo "error: nsfwjs-$version.tgz has integrity $got, expected $integrity; refusing it" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp" package/LICENSE package/dist/models/mobilenet_v2
mkdir -p "$dest"
rm -rf "$dest/mobilenet_v2"
cp -R "$tmp/package/dist/models/mobilenet_v2" "$dest/mobilenet_v2"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "nsfwjs@$version $integrity" > "$stamp"
echo "installed nsfwjs@$version MobileNetV2 in $dest/mobilenet_v2"
