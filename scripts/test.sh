#!/usr/bin/env bash
# Hearth's test command (the one in the README; .ci/run calls it).
# Sets up what the tests need on a fresh machine, then runs every test:
# - the wasm targets (rust-toolchain.toml names them; rustup does not add them
#   to a toolchain that is already installed);
# - Debian's Chromium and Node.js for the browser test (needs root or
#   passwordless sudo; without them the browser test is skipped, and says so);
# - playwright-core, pinned by tests/browser/package-lock.json (it drives the
#   installed Chromium; it never downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
  rustup target add wasm32-unknown-unknown wasm32-wasip2 >/dev/null
fi

chromium="${HEARTH_CHROMIUM:-/usr/bin/chromium}"
missing=()
[ -x "$chromium" ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
  fi
  if [ "$sudo" = none ] || ! command -v apt-get >/dev/null; then
    echo "warning: cannot install ${missing[*]} here (needs apt and root); the browser test will be skipped" >&2
  else
    echo "== installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

if [ -x "$chromium" ] && command -v npm >/dev/null; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
  # From here on a missing browser is a failure, not a skip.
  export HEARTH_BROWSER_TESTS=1
fi

cargo test --release --workspace
