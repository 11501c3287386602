#!/usr/bin/env bash
# Installs what EBCC needs on a fresh Debian 12 machine: Debian packages, then the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3 runs python stages in the sim sandbox (and sandbox tests); the rest: Redis, the sandbox, the
# supervisor, TLS test certificates, setpriv.
debian_packages=(redis-server bubblewrap tini openssl util-linux python3-minimal)
# isolated-vm (the isolate anchor executor) has no prebuilt binary for Node 20: npm ci builds it with node-gyp.
debian_packages+=(g++ make python3)
# The emulated OP-TEE board (scripts/optee/, test/optee-board.test.ts): QEMU, the aarch64 cross compiler for
# TF-A, the board agent and the TAs, dtc, and python3-cryptography for the TA dev kit's signing script.
debian_packages+=(qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross device-tree-compiler cpio xz-utils
  make gcc libc6-dev python3 python3-cryptography)
missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  echo "setup: installing Debian packages: ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
