#!/usr/bin/env bash
# Re-vendors the browser libraries under web/vendor/ from the npm registry, at the versions
# pinned below: `bash web/vendor.sh` (needs npm; nothing is installed outside a temp dir).
#
#   uplot            the dashboard's charts (depth, insurance fund)        MIT
#   swagger-ui-dist  /docs                                                 Apache-2.0
#   redoc            /redoc                                                MIT
#
# Each package is fetched with `npm pack` (which checks the registry's integrity hash), only
# the files the service serves are copied, with the package's licence files, and
# web/vendor/VERSIONS records name, version and integrity. One change is made: ReDoc's
# bundle shows a logo it loads from Redocly's CDN, which /redoc's CSP refuses (offline, and
# an error in the console); its URL is pointed at web/docs/redoc-logo.svg instead (noted in
# VERSIONS; the script fails if the bundle no longer has it). To move to a new version:
# change the pin here, run this script, look at /, /docs and /redoc, run tests/browser,
# commit.
set -euo pipefail

UPLOT=1.6.32
SWAGGER_UI=5.35.0
REDOC=2.5.4

web="$(cd "$(dirname "$0")" && pwd)"
vendor="$web/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# fetch NAME VERSION: unpack the registry's tarball into $tmp/NAME/package, note its integrity
fetch() {
  local name=$1 version=$2 json
  json="$(cd "$tmp" && npm pack --json --silent "$name@$version")"
  mkdir -p "$tmp/$name"
  tar xzf "$tmp/$name-$version.tgz" -C "$tmp/$name"
  node -e 'const [p] = JSON.parse(process.argv[1]); console.log(`${p.name} ${p.version} ${p.integrity}`)' \
    "$json" >>"$tmp/VERSIONS"
}

# put NAME DEST FILE...: copy FILEs (relative to the package root) into web/vendor/DEST
put() {
  local name=$1 dest=$2
  shift 2
  mkdir -p "$tmp/out/$dest"
  for f in "$@"; do
    cp "$tmp/$name/package/$f" "$tmp/out/$dest/$(basename "$f")"
  done
}

fetch uplot "$UPLOT"
fetch swagger-ui-dist "$SWAGGER_UI"
fetch redoc "$REDOC"

put uplot uplot LICENSE dist/uPlot.esm.js dist/uPlot.min.css
put swagger-ui-dist swagger-ui LICENSE NOTICE swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt \
  swagger-ui.css favicon-32x32.png
put redoc redoc LICENSE bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt

logo=https://cdn.redoc.ly/redoc/logo-mini.svg
if [ "$(grep -o "$logo" "$tmp/out/redoc/redoc.standalone.js" | wc -l)" != 1 ]; then
  echo "error: redoc $REDOC does not load $logo exactly once: look at what it loads now" >&2
  exit 1
fi
sed -i "s#$logo#/static/docs/redoc-logo.svg#" "$tmp/out/redoc/redoc.standalone.js"
echo "patched: redoc/redoc.standalone.js loads its logo from /static/docs/redoc-logo.svg, not $logo" >>"$tmp/VERSIONS"

cp "$tmp/VERSIONS" "$tmp/out/VERSIONS"
rm -rf "$vendor"
mv "$tmp/out" "$vendor"
echo "vendored into $vendor:"
cat "$vendor/VERSIONS"
