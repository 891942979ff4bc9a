#!/usr/bin/env bash
# Hearth's test command (the one in the README; .ci/run calls it).
# Sets up what the tests need on a fresh machine, then runs every test:
# - the wasm targets (rust-toolchain.toml names them; rustup does not add them
#   to a toolchain that is already installed);
# - Debian's Chromium and Node.js for the browser test (needs root or
#   passwordless sudo; without them the browser test is skipped, and says so);
# - playwright-core, pinned by tests/browser/package-lock.json (it drives the
#   installed Chromium; it never downloads a browser);
# - Debian's aarch64 cross compiler and qemu-user, then the aarch64
#   hearth-host, which tests/tests/aarch64.rs runs under qemu.
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
# The Raspberry Pi (aarch64) host, cross-built and run under qemu-user.
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
# The emulated household (hearth-lab): namespaces and qdiscs.
{ command -v ip >/dev/null && command -v tc >/dev/null; } || missing+=(iproute2)
# The lab's quotas: this machine's sysbench score against the Pis' public ones.
command -v sysbench >/dev/null || missing+=(sysbench)
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
  fi
  if [ "$sudo" = none ] || ! command -v apt-get >/dev/null; then
    echo "warning: cannot install ${missing[*]} here (needs apt and root); the browser, aarch64 and lab tests will be skipped" >&2
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

if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null; then
  echo "== the aarch64 host (cross build)"
  ./scripts/build-pi.sh
  # The test runs the artefact a Pi would get: the stripped one.
  export HEARTH_AARCH64_HOST="${CARGO_TARGET_DIR:-$PWD/target}/hearth-host-aarch64"
  export HEARTH_QEMU="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
  # From here on a missing aarch64 build is a failure, not a skip.
  export HEARTH_AARCH64_TESTS=1
else
  echo "warning: no aarch64 cross compiler or qemu here; the aarch64 test will be skipped" >&2
fi

# The emulated household (hearth-lab) needs root: namespaces, tc, cgroups.
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v tc >/dev/null \
  && command -v sysbench >/dev/null && [ -d /sys/fs/cgroup/cpu ]; then
  export HEARTH_LAB_TESTS=1
else
  echo "warning: not root, or no ip/tc/sysbench/cgroup v1 cpu controller; the lab test will be skipped" >&2
fi

cargo test --release --workspace
