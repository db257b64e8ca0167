#!/bin/sh
# /init of the busybox initramfs for docs/linux-crash-kernel.md section 1 (p2mdbg.ko at /).
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs dev /dev
$B mkdir -p /tmp
say() { echo "PVKX $*"; }
$B insmod /p2mdbg.ko pfns=0x9000,0x10000; $B dmesg | $B grep p2mdbg | $B sed "s/^/PVKX /"
say "$($B grep MemTotal /proc/meminfo) cmdline=$($B cat /proc/cmdline)"
$B dmesg | $B grep -iE "e820|xen:|p2m|released|remap|identity|mem=|balloon" | $B sed 's/^/PVKX dmesg /'
$B cat /proc/iomem | $B sed 's/^/PVKX iomem /'
rd() { # pfn: first 16 bytes of the frame through /dev/mem
  $B dd if=/dev/mem bs=4096 skip=$(($1)) count=1 2>/tmp/err | $B od -A x -t x8 | $B head -3 | $B tr '\n' ' '
  echo " err=$($B cat /tmp/err | $B tr '\n' ' ')"
}
for p in 0x7000 0x9000 0x9001 0xf000 0x12000 0x20000; do say "read pfn $p: $(rd $p)"; done
for p in 0x9000 0x9001 0xf000; do
  printf "PVKX-ALIAS-$p" | $B dd of=/dev/mem bs=4096 seek=$(($p)) count=1 conv=notrunc 2>/tmp/err; say "write pfn $p rc=$? $($B cat /tmp/err | $B tr '\n' ' ')"
done
for p in 0x9000 0x9001 0xf000; do say "reread pfn $p: $($B dd if=/dev/mem bs=4096 skip=$(($p)) count=1 2>/dev/null | $B head -c 20)"; done
$B dmesg | $B tail -20 | $B sed 's/^/PVKX tail /'
echo "PVKEXEC-LINUX-DONE"
$B poweroff -f
