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
# Experimental aliases of every old frame: pvkexec.aliases=<base pfn>+<count>
for w in $($B cat /proc/cmdline); do
  case "$w" in pvkexec.aliases=*)
    v=${w#pvkexec.aliases=}; base=$((${v%%+*})); n=$((${v#*+}))
    say "aliases: $n old PFNs at pfn $base"
    # The same kernel build: the old __log_buf is at this kernel's own __log_buf PFN.
    a=$($B grep " __log_buf$" /proc/kallsyms | $B cut -d' ' -f1)
    lp=$(( (0x$a - 0xffffffff80000000) / 4096 ))
    say "old __log_buf at old pfn $lp (alias pfn $((base + lp)))"
    $B dd if=/dev/mem bs=4096 skip=$((base + lp)) count=32 2>/dev/null | $B strings -n 8 | $B grep -E "sysrq|Kernel panic|pvkexec: crash" | $B head -6 | $B sed 's/^/PVKEXEC-LINUX aliases text: /'
    t0=$($B cut -d' ' -f1 /proc/uptime)
    $B dd if=/dev/mem of=/dev/null bs=4096 skip=$base count=$n conv=noerror 2>/tmp/err
    t1=$($B cut -d' ' -f1 /proc/uptime)
    say "aliases swept: $($B grep -c 'Bad address' /tmp/err) unreadable of $n, $($B tail -2 /tmp/err | $B tr '\n' ' ') ($t0 s -> $t1 s)"
    $B grep -B1 'Bad address' /tmp/err | $B head -4 | $B sed 's/^/PVKEXEC-LINUX aliases err: /'
    ;;
  esac
done
# The crashed kernel's vbd (still Connected): what the crash kernel's blkfront makes of it.
if [ -e /xen-blkfront.ko ]; then
  $B insmod /xen-blkfront.ko 2>&1 | $B sed 's/^/PVKEXEC-LINUX insmod: /'
  n=0; while [ ! -b /dev/xvda ] && [ $n -lt 50 ]; do $B usleep 100000; n=$((n+1)); done
  say "xvda after $n tries: $($B cat /sys/block/xvda/size 2>&1) sectors"
  say "xvda first bytes: $($B dd if=/dev/xvda bs=512 count=1 2>&1 | $B od -A x -t x1 | $B head -1)"
  $B dmesg | $B grep -iE "blkfront|vbd|xvda|xenbus" | $B tail -8 | $B sed 's/^/PVKEXEC-LINUX blk dmesg /'
fi
say "CRASH-DONE"
$B poweroff -f
