#!/usr/bin/env bash
# Fetches and builds everything the emulated OP-TEE board needs, into a cache that later runs reuse:
#   * trixie arm64 packages (downloaded and extracted with dpkg-deb, never installed): OP-TEE OS 4.5 images,
#     the TA dev kit (optee-os-dev), tee-supplicant + its libraries, a 6.12 arm64 kernel and its modules,
#     busybox-static;
#   * TF-A 2.12 built from Debian's arm-trusted-firmware source package for PLAT=qemu SPD=opteed (GICv3).
# Cache: ${EBCC_OPTEE_CACHE:-${EBCC_CACHE:-$HOME/.cache/ebcc}/optee}. Each step leaves a stamp; a step whose stamp
# exists is skipped, so a second run costs nothing and a fresh machine rebuilds everything from the Debian mirror.
# Prints the cache directory on stdout as its last line.
set -euo pipefail
C=$(realpath -m "${EBCC_OPTEE_CACHE:-${EBCC_CACHE:-$HOME/.cache/ebcc}/optee}")
mkdir -p "$C"/{apt/lists/partial,apt/cache/archives/partial,debs,src,fw,stamps}
cd "$C"
log() { echo "optee-fetch: $*" >&2; }

# Host tools (bookworm). scripts/setup.sh installs them too; this keeps the script usable on its own.
need=()
for t in qemu-system-aarch64:qemu-system-arm aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu dtc:device-tree-compiler \
  cpio:cpio xz:xz-utils make:make; do
  command -v "${t%%:*}" >/dev/null || need+=("${t##*:}")
done
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || need+=(python3-cryptography)
if ((${#need[@]})); then
  log "installing host packages: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The machine's own Debian mirror, read from its apt configuration.
URI=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
URI=${URI:-http://deb.debian.org/debian}
O=(-o "Dir::Etc::SourceList=$C/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$C/apt/lists"
  -o "Dir::Cache=$C/apt/cache" -o APT::Architectures::=arm64 -o Debug::NoLocking=1)

PKGS=(busybox-static tee-supplicant libteec2 libc6 optee-os optee-os-dev)
if [ ! -e stamps/debs ]; then
  printf 'deb [arch=arm64] %s trixie main\ndeb-src %s trixie main\n' "$URI" "$URI" >apt/sources.list
  log "apt-get update (trixie arm64)"
  apt-get "${O[@]}" update -qq >/dev/null
  KPKG=$(apt-cache "${O[@]}" search '^linux-image-6\.[0-9.]+\+deb13-arm64$' | cut -d' ' -f1 | sort -V | tail -1)
  [ -n "$KPKG" ] || { log "no trixie arm64 kernel package found"; exit 1; }
  rm -f debs/*.deb
  log "downloading $KPKG ${PKGS[*]}"
  (cd debs && apt-get "${O[@]}" download -q "$KPKG:arm64" "${PKGS[@]/%/:arm64}" 2>&1 | grep -v '^W:' >&2 || true)
  for p in "$KPKG" "${PKGS[@]}"; do ls debs/"${p}"_*.deb >/dev/null 2>&1 || { log "missing package $p"; exit 1; }; done
  log "downloading arm-trusted-firmware source"
  rm -rf src/*
  (cd src && apt-get "${O[@]}" source -q --download-only arm-trusted-firmware 2>&1 | grep -v '^W:' >&2 || true)
  ls src/arm-trusted-firmware_*.orig.tar.* >/dev/null || { log "arm-trusted-firmware source missing"; exit 1; }
  touch stamps/debs
  rm -f stamps/extract stamps/tfa
fi

if [ ! -e stamps/extract ]; then
  log "extracting packages"
  rm -rf x && mkdir x
  for d in debs/*.deb; do dpkg-deb -x "$d" x; done
  cp x/usr/lib/optee/vexpress-qemu_armv8a/tee-header_v2.bin fw/bl32.bin
  cp x/usr/lib/optee/vexpress-qemu_armv8a/tee-pager_v2.bin fw/bl32_extra1.bin
  cp x/usr/lib/optee/vexpress-qemu_armv8a/tee-pageable_v2.bin fw/bl32_extra2.bin
  cp x/boot/vmlinuz-* fw/bl33.bin # Debian's arm64 vmlinuz is an uncompressed Image
  touch stamps/extract
fi

if [ ! -e stamps/tfa ]; then
  log "building TF-A (PLAT=qemu SPD=opteed GICv3); log in $C/tfa-build.log"
  rm -rf src/tfa && mkdir src/tfa
  tar -C src/tfa --strip-components=1 -xf src/arm-trusted-firmware_*.orig.tar.*
  make -C src/tfa -j"$(nproc)" CROSS_COMPILE=aarch64-linux-gnu- PLAT=qemu SPD=opteed BL32_RAM_LOCATION=tdram \
    ARM_LINUX_KERNEL_AS_BL33=1 QEMU_USE_GIC_DRIVER=QEMU_GICV3 all >tfa-build.log 2>&1 ||
    { tail -20 tfa-build.log >&2; exit 1; }
  cp src/tfa/build/qemu/release/bl1.bin src/tfa/build/qemu/release/bl2.bin src/tfa/build/qemu/release/bl31.bin fw/
  rm -rf src/tfa
  touch stamps/tfa
fi
echo "$C"
