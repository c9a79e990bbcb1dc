#!/usr/bin/env bash
# The slow plots test renders `dvc plots show`'s page in headless Chromium, as a user opens it. The page loads
# Vega from a CDN; offline machines (CI) cannot, so the exact files it names (vega 5.20.2, vega-lite 5.2.0,
# vega-embed 6.18.2, what DVC's page asks for) are fetched from the npm registry once into the cache below,
# and the test points the page at them. Debian/Ubuntu, as root, for Chromium.
set -euo pipefail
cache="${INSTDIV_VEGA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/instdiv/vega}"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Chromium (for the plots test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is not installed and this user cannot apt-get it: the plots test will fail" >&2
  fi
fi
if [ ! -f "$cache/vega-embed.min.js" ]; then
  command -v npm >/dev/null || { echo "npm is needed once to fetch Vega into $cache" >&2; exit 1; }
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 >/dev/null)
  for pkg in vega vega-lite vega-embed; do
    tar -xzf "$tmp"/$pkg-[0-9]*.tgz -C "$tmp" "package/build/$pkg.min.js"
    mv "$tmp/package/build/$pkg.min.js" "$cache/"
  done
  rm -rf "$tmp"
fi
