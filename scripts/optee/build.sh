#!/usr/bin/env bash
# Builds the board side of the OP-TEE backend with the cached toolchain inputs from fetch.sh:
#   * the board agent (adapters/optee/board/agent), static aarch64, raw /dev/tee0 ioctls;
#   * the EBCC TAs (adapters/optee/board/ta: attestation, order-signer, fault), with the TA dev kit of
#     trixie's optee-os-dev, signed with the dev kit's key (keys/default.pem, which is public).
# Output: $CACHE/build/<source digest>/{ebcc-optee-agent,<uuid>.ta}; rebuilt only when a source changes.
# Prints the output directory as its last line.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
C=$(bash "$ROOT/scripts/optee/fetch.sh" | tail -1)
SRC=$ROOT/adapters/optee/board
DEVKIT=$C/x/usr/lib/optee-os-dev/vexpress-qemu_armv8a
DIGEST=$( (cd "$SRC" && find . -type f | LC_ALL=C sort | xargs sha256sum; aarch64-linux-gnu-gcc --version | head -1) |
  sha256sum | cut -c1-16)
OUT=$C/build/$DIGEST
log() { echo "optee-build: $*" >&2; }
if [ ! -e "$OUT/.done" ]; then
  rm -rf "$OUT" && mkdir -p "$OUT"
  log "agent"
  aarch64-linux-gnu-gcc -O2 -Wall -Wextra -Werror -static -o "$OUT/ebcc-optee-agent" "$SRC/agent/agent.c"
  aarch64-linux-gnu-strip "$OUT/ebcc-optee-agent"
  declare -A TAS=([attest]=5f1a0c3e-7b2d-4e8a-9c61-0e2b8d4a7f10 [order-signer]=8d0c5a4e-3f61-4b2a-a7c9-1e5f2b6d9c30
    [fault]=2c7e9b14-6a3d-4f85-b0e2-9d4c1a8f5e60)
  for ta in "${!TAS[@]}"; do
    uuid=${TAS[$ta]}
    log "TA $ta ($uuid) with the dev kit in $DEVKIT"
    work=$OUT/work-$ta && mkdir -p "$work"
    # The dev kit's sign_encrypt.py needs python3-cryptography: use Debian's python3, not a pyenv shim.
    if ! make -C "$SRC/ta/$ta" -f ../Makefile.ta BINARY="$uuid" TA_DEV_KIT_DIR="$DEVKIT" O="$work" \
      CROSS_COMPILE=aarch64-linux-gnu- PYTHON3=/usr/bin/python3 >"$work/build.log" 2>&1; then
      tail -30 "$work/build.log" >&2
      log "building TA $ta failed; full log: $work/build.log"
      exit 1
    fi
    cp "$work/$uuid.ta" "$OUT/"
  done
  touch "$OUT/.done"
  # Only the newest build is kept.
  find "$C/build" -mindepth 1 -maxdepth 1 ! -name "$DIGEST" -exec rm -rf {} +
fi
echo "$OUT"
