#!/usr/bin/env bash
# Boots the emulated OP-TEE board: QEMU virt (Cortex-A, GICv3, secure=on, TCG) with TF-A (BL1/BL2/BL31),
# OP-TEE OS 4.5 as BL32 and Debian's 6.12 arm64 kernel as BL33, from an initramfs holding busybox,
# tee-supplicant, the tee/optee modules, the EBCC attestation TA and the EBCC board agent.
#
# Usage: boot.sh RUNDIR
#   RUNDIR/agent.sock     the agent's virtio-serial port (QEMU listens; the EBCC host connects)
#   RUNDIR/secure.log     the secure world's console (OP-TEE)
#   RUNDIR/console.sock   the normal world's console (a root shell once booted); `poweroff -f` ends the board
#   RUNDIR/console.log    everything the console printed; "ebcc-optee-agent: ready" says the agent is up
# The firmware, packages and builds come from the cache of fetch.sh/build.sh, so only the first run on a
# machine is slow.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=$(realpath -m "${1:?usage: boot.sh RUNDIR}")
mkdir -p "$RUN"
C=$(bash "$ROOT/scripts/optee/fetch.sh" | tail -1)
B=$(bash "$ROOT/scripts/optee/build.sh" | tail -1)
QM=(-machine virt,secure=on,gic-version=3,acpi=off,virtualization=off -cpu max,pauth-impdef=on -smp 2 -m 1057 -nic none)

# The base root file system (packages only) is packed once per cache.
if [ ! -e "$C/stamps/base-rootfs" ]; then
  R=$C/rootfs && rm -rf "$R" && mkdir -p "$R"
  cp -a "$C/x/usr" "$R/"
  [ -d "$C/x/etc" ] && cp -a "$C/x/etc" "$R/"
  ln -sfn usr/lib "$R/lib"; ln -sfn usr/bin "$R/bin"; ln -sfn usr/sbin "$R/sbin"
  mkdir -p "$R"/{proc,sys,dev,tmp,modules,data/tee,usr/lib/optee_armtz}
  K=$(ls -d "$C"/x/usr/lib/modules/*/kernel/drivers/tee)
  xz -dc "$K/tee.ko.xz" >"$R/modules/tee.ko"
  xz -dc "$K/optee/optee.ko.xz" >"$R/modules/optee.ko"
  rm -rf "$R/usr/lib/modules" "$R/usr/share" "$R/usr/lib/optee-os-dev" "$R/usr/lib/optee" "$R/usr/include"
  (cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$C/fw/base-rootfs.cpio.gz")
  rm -rf "$R"
  (cd "$C/fw" && qemu-system-aarch64 "${QM[@]}" -nographic -machine dumpdtb=virt.dtb >/dev/null 2>&1 &&
    dtc -q -I dtb -O dts -o virt.dts virt.dtb)
  touch "$C/stamps/base-rootfs"
fi

# This boot's own layer: the init script, the agent and the attestation TA.
L=$RUN/layer && rm -rf "$L" && mkdir -p "$L/usr/bin" "$L/usr/lib/optee_armtz"
cp "$B/ebcc-optee-agent" "$L/usr/bin/"
cp "$B/5f1a0c3e-7b2d-4e8a-9c61-0e2b8d4a7f10.ta" "$L/usr/lib/optee_armtz/" # stage TAs are installed at deploy
cat >"$L/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
insmod /modules/tee.ko && insmod /modules/optee.ko
dmesg | grep -i 'optee:'
tee-supplicant -d
# The agent is restarted if it dies; its log goes to the console.
(while true; do ebcc-optee-agent; echo "ebcc-optee-agent exited ($?)"; sleep 1; done) &
echo EBCC-BOARD-READY
# A plain command loop on the console (no line editing), for the operator and the tests.
exec setsid cttyhack sh -c 'while read -r line; do eval "$line"; done'
INIT
chmod +x "$L/init"
(cd "$L" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$RUN/layer.cpio.gz")
cat "$C/fw/base-rootfs.cpio.gz" "$RUN/layer.cpio.gz" >"$RUN/rootfs.cpio.gz"
SZ=$(stat -c %s "$RUN/rootfs.cpio.gz")
sed "0,/\tchosen {/s//\tchosen {\n\t\tbootargs = \"console=ttyAMA0 rdinit=\/init quiet\";\n\t\tlinux,initrd-start = <0x0 0x48000000>;\n\t\tlinux,initrd-end = <0x0 $(printf '0x%x' $((0x48000000 + SZ)))>;/" \
  "$C/fw/virt.dts" >"$RUN/boot.dts"
dtc -q -I dts -O dtb -o "$RUN/boot.dtb" "$RUN/boot.dts"
for f in bl1 bl2 bl31 bl32 bl32_extra1 bl32_extra2 bl33; do ln -sfn "$C/fw/$f.bin" "$RUN/$f.bin"; done
rm -f "$RUN/agent.sock" "$RUN/console.sock" "$RUN/console.log"
cd "$RUN" # BL1 loads bl2/bl31/bl32*/bl33 from the current directory via semihosting
exec qemu-system-aarch64 "${QM[@]}" -nographic -bios bl1.bin -semihosting-config enable=on,target=native \
  -dtb boot.dtb -device loader,file=rootfs.cpio.gz,addr=0x48000000,force-raw=on \
  -chardev socket,id=con,path=console.sock,server=on,wait=off,logfile=console.log \
  -serial chardev:con -serial file:secure.log -monitor none \
  -device virtio-serial-pci -chardev socket,id=agent,path=agent.sock,server=on,wait=off \
  -device virtserialport,chardev=agent,name=org.ebcc.agent
