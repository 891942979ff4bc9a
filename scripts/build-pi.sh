#!/usr/bin/env bash
# Cross-builds hearth-host for 64-bit Raspberry Pi OS / Debian arm64
# (aarch64-unknown-linux-gnu) and writes the stripped artefact to copy to a
# Pi: TARGET_DIR/hearth-host-aarch64. Prints its path and size.
# Needs Debian's gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (scripts/test.sh
# installs them); adds the rustup target itself.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
  rustup target add aarch64-unknown-linux-gnu >/dev/null
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  cargo build --release --target aarch64-unknown-linux-gnu -p hearth-host
built="$target_dir/aarch64-unknown-linux-gnu/release/hearth-host"
artefact="$target_dir/hearth-host-aarch64"
aarch64-linux-gnu-strip -o "$artefact" "$built"
echo "built $artefact: $(stat -c %s "$artefact") bytes stripped ($(stat -c %s "$built") with line tables)"
