#!/usr/bin/env bash
# Refresh the dashboard's vendored chart library from the npm registry (no CDN at run time).
# Usage: api/vendor.sh [version]   (default: the version in api/app/static/vendor/uplot/VERSION)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="$here/app/static/vendor/uplot"
version="${1:-$(cat "$target/VERSION")}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "uplot@$version" --silent >/dev/null && tar xzf "uplot-$version.tgz")
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$target/"
echo "$version" > "$target/VERSION"
sha256sum "$target/uPlot.iife.min.js" "$target/uPlot.min.css" | sed "s|$target/||" > "$target/SHA256SUMS"
echo "vendored uplot $version into $target"
