#!/bin/sh
# /init of the crash kernel's busybox initramfs (docs/linux-crash-kernel.md, section 2).
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs dev /dev
$B mkdir -p /tmp
say() { echo "PVKEXEC-LINUX $*"; }
say "CRASH-INIT reached"
say "uname-r=$($B uname -r) nproc=$($B nproc) $($B grep MemTotal /proc/meminfo)"
say "cmdline=$($B cat /proc/cmdline)"
say "vmcore=$($B ls -l /proc/vmcore 2>&1)"
$B dmesg | $B grep -iE "xen|evtchn|event|balloon|vcpu|error|fail|warn|e820|Released|Remapped|p2m" | $B sed 's/^/PVKEXEC-LINUX dmesg /'
$B ls /sys/bus/xen/devices/ 2>&1 | $B sed 's/^/PVKEXEC-LINUX xenbus /'
$B cat /proc/interrupts | $B grep -i xen | $B sed 's/^/PVKEXEC-LINUX irq /'
# Experimental alias probe: pvkexec.alias_probe=<first pfn>:<old pfn>+<count>
for w in $($B cat /proc/cmdline); do
  case "$w" in pvkexec.alias_probe=*)
    v=${w#pvkexec.alias_probe=}; first=$((${v%%:*})); rest=${v#*:}; old=$((${rest%%+*})); n=$((${rest#*+}))
    say "alias probe: $n old frames from old pfn $old at pfn $first"
    $B dd if=/dev/mem bs=4096 skip=$first count=$n 2>/tmp/err > /tmp/alias
    say "alias read: $($B tr '\n' ' ' < /tmp/err) $($B wc -c < /tmp/alias) bytes"
    $B strings -n 8 /tmp/alias | $B grep -E "sysrq|Kernel panic|pvkexec|Linux version|PVKEXEC" | $B head -12 | $B sed 's/^/PVKEXEC-LINUX alias text: /'
    $B dd if=/dev/mem bs=4096 skip=$first count=1 2>/dev/null | $B od -A x -t x8 | $B head -4 | $B sed 's/^/PVKEXEC-LINUX alias od: /'
    ;;
  esac
done
say "CRASH-DONE"
$B poweroff -f
