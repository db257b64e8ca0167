//! The kernel side on Debian's unmodified 6.1: `pvkexec.ko` (kmod/, built against Debian's
//! headers for the rig's kernel) and the `pvkexec` CLI in a toolstack-built domU's initramfs.
//! One dom0 boot (Xen 4.17) runs one domU whose `/init` runs every step and prints, per step,
//! `PVKEXEC-KMOD begin NAME`, the command's output, `PVKEXEC-KMOD end NAME rc=N`; each test
//! below judges its steps from that one run.

use harness::domu::{self, DomuResult, DomuRig, DomuSpec, DomuVerdict, RigRun};
use harness::kmod::{self, DomuFiles, Headers};
use harness::provision::{self, DebianLinux};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 256;
const VCPUS: u32 = 2;
const MARK: &str = "PVKEXEC-KMOD ";

/// The domU's `/init`: each step's output between markers, then the module's kernel log.
const INIT: &str = r#"say() { echo "PVKEXEC-KMOD $*"; }
step() { n=$1; shift; say "begin $n"; "$@" 2>&1; rc=$?; say "end $n rc=$rc up=$(cut -d' ' -f1 /proc/uptime)"; }
say "init up=$(cut -d' ' -f1 /proc/uptime)"
step status-no-module pvkexec status
step insmod insmod /lib/modules/pvkexec.ko
step flags-idle cat /sys/kernel/kexec_loaded /sys/kernel/kexec_crash_loaded
step status pvkexec status
step load-probe pvkexec load --kernel /boot/probe --append "mem_mib=@MEM@"
step status-loaded pvkexec status
step unload pvkexec unload
step status-unloaded pvkexec status
step load-linux61 pvkexec load --kernel /boot/linux61 --append console=hvc0
step status-after-refusal pvkexec status
truncate -s 300M /tmp/huge
truncate -s 200M /tmp/big
step load-initrd-over-domain pvkexec load --kernel /boot/probe --initrd /tmp/huge
step load-out-of-memory pvkexec load --kernel /boot/probe --initrd /tmp/big
step status-after-oom pvkexec status
step load-image-bad pvkexec load --image /boot/bad.img
step status-after-bad pvkexec status
step load-image-good pvkexec load --image /boot/good.img
step unload-good pvkexec unload
step kexec-l kexec -l /boot/probe --append="mem_mib=@MEM@" -s
step status-kexec-l pvkexec status
step flags-kexec-l cat /sys/kernel/kexec_loaded /sys/kernel/kexec_crash_loaded
step kexec-p kexec -p /boot/probe --command-line="mem_mib=16"
step status-kexec-p pvkexec status
step flags-kexec-p cat /sys/kernel/kexec_loaded /sys/kernel/kexec_crash_loaded
step status-json pvkexec status -p --json
step kexec-p-u kexec -p -u

step kexec-u kexec -u
step status-end pvkexec status
step flags-end cat /sys/kernel/kexec_loaded /sys/kernel/kexec_crash_loaded
# An exec the module refuses before anything is shut down: a CPU is offline.
step load-for-exec pvkexec load --kernel /boot/probe --append mem_mib=@MEM@
echo 0 > /sys/devices/system/cpu/cpu1/online
step exec-cpu-offline pvkexec exec
echo 1 > /sys/devices/system/cpu/cpu1/online
step status-after-exec-refusal pvkexec status
step unload-after-exec-refusal pvkexec unload
# Loading is the memory-hungry step: bullseye's 5.10 (its image about half zero pages) in
# this 256 MiB domain, with the CLI's peak RSS sampled from /proc (VmHWM only grows; busybox's
# time applet reports ru_maxrss four times over) (--force: on stock Xen 5.10 must not be
# executed after a stock Linux, but it may be loaded).
step load-bullseye-256m sh -c 'pvkexec load --force --kernel /boot/linux510 --append console=hvc0 & p=$!; while kill -0 $p 2>/dev/null; do grep VmHWM /proc/$p/status > /tmp/hwm.new 2>/dev/null && mv /tmp/hwm.new /tmp/hwm; usleep 20000; done; wait $p; rc=$?; cat /tmp/hwm; exit $rc'
step unload-bullseye pvkexec unload
# Balloon a quarter out (Linux's balloon driver): the P2M gets holes; load plans for the rest.
echo $((@MEM@ * 1024 * 3 / 4)) > /sys/devices/system/xen_memory/xen_memory0/target_kb
n=0; until grep -q "^frames: $((@MEM@ * 256 * 3 / 4)) " /tmp/st 2>/dev/null || [ $n -gt 50 ]; do pvkexec status > /tmp/st 2>&1; usleep 100000; n=$((n+1)); done
step status-ballooned pvkexec status
step load-ballooned pvkexec load --kernel /boot/probe --append mem_mib=@MEM@
dmesg | grep pvkexec | sed 's/^/PVKEXEC-KMOD dmesg /'
say done
poweroff -f
"#;

/// An exec domU's `/init`: optionally read the disk through blkfront (its grants are then
/// mapped by blkback), load the probe and hand the domain over with `@EXEC@`.
const INIT_EXEC: &str = r#"echo "PVKEXEC-KMOD init up=$(cut -d' ' -f1 /proc/uptime)"
insmod /lib/modules/pvkexec.ko || echo "PVKEXEC-KMOD insmod failed"
if [ -e /lib/modules/xen-blkfront.ko ]; then
  insmod /lib/modules/xen-blkfront.ko
  n=0; while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
  echo "PVKEXEC-KMOD xvda=$(head -n 1 /dev/xvda)"
fi
# The module's exec lines (backends closed, unpinning) on the console.
echo 7 > /proc/sys/kernel/printk
echo "PVKEXEC-KMOD exec up=$(cut -d' ' -f1 /proc/uptime)"
@EXEC@
echo "PVKEXEC-KMOD exec returned rc=$?"
dmesg | grep pvkexec | sed 's/^/PVKEXEC-KMOD dmesg /'
poweroff -f
"#;

/// Frames a domU has after its balloon driver gave a quarter back.
const BALLOONED: u64 = MEM_MIB * 256 * 3 / 4;

const DISK_MARKER: &str = "PVKEXEC-DISK-MARKER-kmod";
/// The kexec-spelling domU's new initrd (a deterministic test file).
const INITRD_LEN: usize = (1 << 20) + 5;
/// The large-image domU: 2 GiB (the new kernel's P2M alone is 1024 frames, so its free pool
/// needs more than the 1024-frame block handoff v5 gave) and a 12 MiB initrd (an image of
/// more than one 4 MiB block): both need handoff v6's frame lists.
const BIG_MEM_MIB: u64 = 2048;
const BIG_INITRD_LEN: usize = (12 << 20) + 5;
/// QEMU's memory for the rig: dom0, the largest domU (they run one at a time) and Xen.
const HOST_MEM_MIB: u64 = 768 + BIG_MEM_MIB + 512;

/// An exec domU: its name, VCPUs, memory, whether it has a disk, the new kernel's initrd
/// length and the exec command line.
struct ExecDomu {
    name: &'static str,
    vcpus: u32,
    mem_mib: u64,
    disk: bool,
    initrd_len: usize,
    cmd: String,
}

fn exec_domus() -> Vec<ExecDomu> {
    let append = format!("mem_mib={MEM_MIB}");
    let d = |name, vcpus, disk, cmd| ExecDomu {
        name,
        vcpus,
        mem_mib: MEM_MIB,
        disk,
        initrd_len: INITRD_LEN,
        cmd,
    };
    vec![
        d(
            "kmod-exec",
            2,
            true,
            format!(
                "pvkexec load --kernel /boot/probe --append {append} 2>&1 && pvkexec exec 2>&1"
            ),
        ),
        d(
            "kmod-kexec",
            1,
            false,
            format!(
                "kexec -l /boot/probe --initrd=/boot/initrd --append=\"{append}\" -s 2>&1 && \
                 kexec -e 2>&1"
            ),
        ),
        // A 12 MiB initrd in a 2 GiB domU: the image lies in the module's pages as they are
        // and the pool is sized to the image (handoff v6's lists).
        ExecDomu {
            name: "kmod-big",
            vcpus: 1,
            mem_mib: BIG_MEM_MIB,
            disk: false,
            initrd_len: BIG_INITRD_LEN,
            cmd: format!(
                "pvkexec load --kernel /boot/probe --initrd /boot/initrd \
                 --append mem_mib={BIG_MEM_MIB} 2>&1 && pvkexec exec 2>&1"
            ),
        },
        // What systemd-shutdown does at the end of a reboot (the rig has no systemd): the
        // root file system read-only, then the hook with the verb: it execs the loaded image.
        d(
            "kmod-hook",
            1,
            false,
            format!(
                "pvkexec load --kernel /boot/probe --append {append} 2>&1\n\
                 mount -o remount,ro / 2>&1\n\
                 echo \"PVKEXEC-KMOD root $(grep '^rootfs / ' /proc/mounts)\"\n\
                 touch /written 2>&1 || echo 'PVKEXEC-KMOD root is read-only'\n\
                 sh /usr/lib/systemd/system-shutdown/pvkexec reboot 2>&1"
            ),
        ),
        // Linux's balloon driver gives a quarter back (P2M holes), then the probe is loaded
        // for the frames left and handed over.
        d(
            "kmod-balloon",
            1,
            false,
            format!(
                "echo {} > /sys/devices/system/xen_memory/xen_memory0/target_kb\n\
                 n=0; until grep -q '^frames: {BALLOONED} ' /tmp/st 2>/dev/null || [ $n -gt 50 ]; \
                 do pvkexec status > /tmp/st 2>&1; usleep 100000; n=$((n+1)); done\n\
                 pvkexec load --kernel /boot/probe --append mem_mib={} 2>&1 && pvkexec exec 2>&1",
                BALLOONED * 4,
                BALLOONED / 256
            ),
        ),
    ]
}

struct Shared {
    domu: Result<DomuResult, String>,
    exec: Vec<(String, Result<DomuResult, String>, Option<f64>)>,
    ko_bytes: u64,
}

/// Host seconds from the module's first exec line (the exec ioctl began; `pvkexec load` is
/// done) to the purgatory's first line and to the new kernel's first line (the serial log's
/// own times).
fn exec_times(run: &RigRun, name: &str) -> Option<(f64, f64)> {
    let tag = format!("[domu:{name}] ");
    let at = |needle: &str| {
        run.dom0
            .log
            .lines()
            .zip(&run.dom0.line_secs)
            .find(|(l, _)| l.contains(&tag) && l.contains(needle))
            .map(|(_, t)| *t)
    };
    let exec = at("pvkexec: exec: image ")?;
    Some((
        at("purgatory: entered")? - exec,
        at("PVKEXEC-INFO zeroed")? - exec,
    ))
}

/// `pvkexec build` on the host for the first domU (domU layout, 2 VCPUs that placed
/// vcpu_info), and a copy whose header's kernel entry is changed.
fn prebuilt_images() -> (std::path::PathBuf, std::path::PathBuf) {
    let pid = std::process::id();
    let good = harness::cache_dir().join(format!("kmod-good-{pid}.img"));
    let bad = harness::cache_dir().join(format!("kmod-bad-{pid}.img"));
    let mut b = harness::tools::PvkexecBuild::new(
        &harness::guest::binary("probe").unwrap(),
        MEM_MIB,
        harness::tools::BuildMode::Domu,
        &good,
    );
    b.old_vcpus = Some(VCPUS);
    b.old_vcpu_info = true;
    b.append = Some(format!("mem_mib={MEM_MIB}"));
    b.run().unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[40] ^= 0x10; // ImageHeader.kernel_entry
    std::fs::write(&bad, bytes).unwrap();
    (good, bad)
}

/// Builds the module, the initramfs images, and runs the domUs in one dom0 boot.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let start = Instant::now();
        let ko = kmod::build(Headers::Bookworm).expect("building pvkexec.ko");
        let ko_bytes = std::fs::metadata(&ko).unwrap().len();
        let linux = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
        let probe = harness::guest::binary("probe").unwrap();
        let cli = kmod::pvkexec_release().unwrap();
        let modules = harness::dom0::extract_modules(
            DebianLinux::Bookworm,
            &harness::cache_dir().join("dom0-4.17").join("modules"),
        )
        .unwrap();
        let base = vec![
            ("lib/modules/pvkexec.ko".to_string(), ko),
            ("boot/probe".to_string(), probe),
            (
                "usr/lib/systemd/system-shutdown/pvkexec".to_string(),
                harness::workspace_root().join("packaging/systemd/system-shutdown-pvkexec"),
            ),
        ];
        let pid = std::process::id();
        let mut images = Vec::new();
        let (good, bad) = prebuilt_images();
        let mut files = base.clone();
        files.push(("boot/linux61".into(), linux.clone()));
        files.push((
            "boot/linux510".into(),
            provision::ensure_linux(DebianLinux::Bullseye).unwrap(),
        ));
        files.push(("boot/good.img".into(), good.clone()));
        files.push(("boot/bad.img".into(), bad.clone()));
        let rd = harness::cache_dir().join(format!("kmod-domu-{pid}.cpio.gz"));
        let init = INIT.replace("@MEM@", &MEM_MIB.to_string());
        kmod::domu_initramfs(&init, &cli, &DomuFiles { files }, &rd).unwrap();
        images.push(rd.clone());
        let mut spec = DomuSpec::new("kmod", &linux);
        spec.ramdisk = Some(rd);
        spec.cmdline = "console=hvc0 loglevel=4".into();
        spec.mem_mib = MEM_MIB;
        spec.vcpus = VCPUS;
        spec.timeout = Duration::from_secs(240);
        let mut specs = vec![spec];
        for ExecDomu {
            name,
            vcpus,
            mem_mib,
            disk,
            initrd_len,
            cmd,
        } in exec_domus()
        {
            let mut files = base.clone();
            files.push((
                "boot/initrd".into(),
                harness::tools::test_file(initrd_len).unwrap(),
            ));
            if disk {
                files.push((
                    "lib/modules/xen-blkfront.ko".into(),
                    modules.join("xen-blkfront.ko"),
                ));
            }
            let rd = harness::cache_dir().join(format!("{name}-{pid}.cpio.gz"));
            let init = INIT_EXEC.replace("@EXEC@", &cmd);
            kmod::domu_initramfs(&init, &cli, &DomuFiles { files }, &rd).unwrap();
            images.push(rd.clone());
            let mut s = DomuSpec::new(name, &linux);
            s.ramdisk = Some(rd);
            s.cmdline = "console=hvc0 loglevel=4".into();
            s.mem_mib = mem_mib;
            s.vcpus = vcpus;
            s.disk = disk.then(|| domu::marker_disk(DISK_MARKER, 4).unwrap());
            s.timeout = Duration::from_secs(if mem_mib > MEM_MIB { 240 } else { 120 });
            specs.push(s);
        }
        eprintln!(
            "kmod: module, CLI and initramfs images ready in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let rig = DomuRig {
            tag: "kmod".into(),
            host_mem_mib: HOST_MEM_MIB,
            ..DomuRig::default()
        };
        let run = rig.run(&specs).map_err(|e| format!("{e:#}"));
        for i in images.iter().chain([&good, &bad]) {
            let _ = std::fs::remove_file(i);
        }
        for s in &specs {
            if let Some(d) = &s.disk {
                let _ = std::fs::remove_file(d);
            }
        }
        let exec = specs[1..]
            .iter()
            .enumerate()
            .map(|(i, s)| match &run {
                Ok(r) => {
                    let times = exec_times(r, &s.name);
                    eprintln!(
                        "kmod: {}: exec -> purgatory {:.2} s, -> new kernel's first line {:.2} s",
                        s.name,
                        times.map_or(f64::NAN, |t| t.0),
                        times.map_or(f64::NAN, |t| t.1)
                    );
                    (
                        s.name.clone(),
                        Ok(r.domus[i + 1].clone()),
                        times.map(|t| t.1),
                    )
                }
                Err(e) => (s.name.clone(), Err(e.clone()), None),
            })
            .collect();
        let domu = run.map(|r| {
            eprintln!(
                "kmod: toolstack ready {:.1} s after QEMU start, domUs {:?} s (dom0 clock), \
                 whole test {:.1} s",
                r.toolstack_ready_secs.unwrap_or(f64::NAN),
                r.domus
                    .iter()
                    .map(|d| d.wall_secs.unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
                start.elapsed().as_secs_f64()
            );
            r.domus[0].clone()
        });
        Shared {
            domu,
            exec,
            ko_bytes,
        }
    })
}

/// One step's output lines and exit code.
#[derive(Debug, Default, Clone)]
struct Step {
    lines: Vec<String>,
    rc: Option<i32>,
    up: Option<f64>,
}

impl Step {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

fn steps() -> (&'static DomuResult, BTreeMap<String, Step>) {
    let d = shared().domu.as_ref().expect("the domU rig failed");
    let mut out: BTreeMap<String, Step> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for l in &d.console {
        if let Some(rest) = l.split_once(MARK).map(|(_, r)| r) {
            if let Some(n) = rest.strip_prefix("begin ") {
                cur = Some(n.trim().to_string());
                out.insert(n.trim().to_string(), Step::default());
            } else if let Some(e) = rest.strip_prefix("end ") {
                let mut w = e.split_whitespace();
                let name = w.next().unwrap_or("").to_string();
                let s = out.entry(name).or_default();
                for kv in w {
                    if let Some(v) = kv.strip_prefix("rc=") {
                        s.rc = v.parse().ok();
                    } else if let Some(v) = kv.strip_prefix("up=") {
                        s.up = v.parse().ok();
                    }
                }
                cur = None;
            }
        } else if let Some(n) = &cur {
            out.get_mut(n).unwrap().lines.push(l.clone());
        }
    }
    (d, out)
}

fn step(name: &str) -> Step {
    let (d, s) = steps();
    s.get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no step {name} in the domU's output:\n{}", d.log()))
}

/// `/sys/kernel/kexec_loaded` (the module's while it is loaded: what systemctl kexec reads)
/// follows the kexec image; `kexec_crash_loaded` stays Linux's 0 (kdump-tools reloads, and so
/// unloads, whatever crash kernel that file says is loaded).
#[test]
fn sys_kernel_kexec_flags_follow_the_modules_images() {
    for (name, want) in [
        ("flags-idle", "0 0"),
        ("flags-kexec-l", "1 0"),
        ("flags-kexec-p", "1 0"),
        ("flags-end", "0 0"),
    ] {
        let l = step(name);
        assert_eq!(l.rc, Some(0), "{name}: {}", l.text());
        let got: Vec<&str> = l
            .lines
            .iter()
            .map(|x| x.trim())
            .filter(|x| *x == "0" || *x == "1")
            .collect();
        assert_eq!(got.join(" "), want, "{name}: {}", l.text());
    }
}

#[test]
fn domu_ran_every_step() {
    let (d, s) = steps();
    assert_eq!(d.verdict, DomuVerdict::PoweredOff, "{}", d.log());
    assert!(d.log().contains("PVKEXEC-KMOD done"), "{}", d.log());
    eprintln!(
        "kmod: pvkexec.ko {} bytes, {} lines of C",
        shared().ko_bytes,
        kmod::source_lines().unwrap()
    );
    for (name, st) in &s {
        eprintln!("kmod: step {name:22} rc={:?} at {:?} s", st.rc, st.up);
        for l in &st.lines {
            eprintln!("kmod:     {l}");
        }
    }
}

#[test]
fn missing_module_is_named() {
    let s = step("status-no-module");
    assert_eq!(s.rc, Some(1), "{}", s.text());
    assert!(
        s.text().contains("/dev/pvkexec: no such device")
            && s.text().contains("insmod pvkexec.ko or modprobe pvkexec"),
        "{}",
        s.text()
    );
}

#[test]
fn insmod_and_status_give_the_domains_facts() {
    let i = step("insmod");
    assert_eq!(i.rc, Some(0), "{}", i.text());
    let s = step("status");
    // Exit status 3: no image loaded (the facts are printed all the same).
    assert_eq!(s.rc, Some(3), "{}", s.text());
    let t = s.text();
    let frames = MEM_MIB * 256;
    for want in [
        "domain: domU".to_string(),
        // libxl's maxmem carries 1 MiB of slack (LIBXL_MAXMEM_CONSTANT): the maximum is more.
        format!(
            "frames: {frames} (maximum {}, start_info nr_pages {frames})",
            frames + 256
        ),
        format!("vcpus: {VCPUS} online, {VCPUS} up, {VCPUS} possible"),
        "vcpu_info: placed".into(),
        "grant table: v1".into(),
        "image: none loaded".into(),
        "for Linux 6.1.".into(),
    ] {
        assert!(t.contains(&want), "no {want:?} in:\n{t}");
    }
}

#[test]
fn bullseye_510_load_in_256_mib_never_meets_the_oom_killer() {
    let l = step("load-bullseye-256m");
    let t = l.text();
    let rss = t
        .lines()
        .find_map(|l| l.trim().strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS (VmHWM) in:\n{t}"));
    eprintln!(
        "pvkexec load of bullseye's 5.10 in {MEM_MIB} MiB: rc {:?}, peak RSS {rss} kB",
        l.rc
    );
    let (d, _) = steps();
    assert!(
        !d.log().contains("Out of memory") && !d.log().contains("oom-kill"),
        "the OOM killer ran:\n{}",
        d.log()
    );
    // The ELF's non-zero pages, xz's dictionary and the input: well under half the domain.
    assert!(rss < MEM_MIB * 1024 * 2 / 5, "peak RSS {rss} kB");
    // Loaded: the module keeps the image's 6,654 pages now and takes the free pool for its
    // zero pages at exec, so the load fits in half of MemAvailable.
    assert_eq!(l.rc, Some(0), "{t}");
    assert_eq!(step("unload-bullseye").rc, Some(0));
}

#[test]
fn probe_loads_and_unloads() {
    let l = step("load-probe");
    assert_eq!(l.rc, Some(0), "{}", l.text());
    assert!(
        l.text().contains("loaded /boot/probe: domU layout"),
        "{}",
        l.text()
    );
    let s = step("status-loaded");
    assert_eq!(s.rc, Some(0), "{}", s.text());
    assert!(s.text().contains("image: loaded, "), "{}", s.text());
    // What was loaded, from the CLI's record under /run/pvkexec.
    assert!(s.text().contains("  kernel: /boot/probe"), "{}", s.text());
    let u = step("unload");
    assert_eq!(u.rc, Some(0), "{}", u.text());
    assert!(u.text().contains("unloaded"), "{}", u.text());
    let s = step("status-unloaded");
    assert!(s.text().contains("image: none loaded"), "{}", s.text());
}

/// Debian 6.1 as the new kernel after Debian 6.1 (which placed vcpu_info): refused by name,
/// nothing loaded.
#[test]
fn linux_61_new_kernel_is_refused_naming_vcpu_info() {
    let l = step("load-linux61");
    assert_eq!(l.rc, Some(1), "{}", l.text());
    let t = l.text();
    for want in [
        "refused to load /boot/linux61",
        "placed vcpu_info",
        "Linux 6.1.",
        "5.16",
        "--force",
    ] {
        assert!(t.contains(want), "no {want:?} in:\n{t}");
    }
    let s = step("status-after-refusal");
    assert!(s.text().contains("image: none loaded"), "{}", s.text());
}

/// Inputs that cannot fit: an initrd larger than the domain (the loader's size rule, exit 3)
/// and one that fits the domain but not the memory it has available (refused before a byte is
/// read); nothing is loaded.
#[test]
fn too_large_and_out_of_memory_are_refused() {
    let l = step("load-initrd-over-domain");
    assert_eq!(l.rc, Some(3), "{}", l.text());
    assert!(
        l.text().contains("/tmp/huge")
            && l.text().contains("more than the domain's memory (256 MiB)"),
        "{}",
        l.text()
    );
    let l = step("load-out-of-memory");
    assert_eq!(l.rc, Some(1), "{}", l.text());
    assert!(l.text().contains("out of memory"), "{}", l.text());
    let s = step("status-after-oom");
    assert!(s.text().contains("image: none loaded"), "{}", s.text());
}

/// An exec the module cannot do safely (a CPU offline: it could not reach the purgatory) is
/// refused before anything is shut down; the domain runs on with the image still loaded.
#[test]
fn exec_with_a_cpu_offline_is_refused_before_teardown() {
    let e = step("exec-cpu-offline");
    assert_eq!(e.rc, Some(1), "{}", e.text());
    assert!(
        e.text().contains("1 of 2 CPUs online")
            && e.text()
                .contains("exec refused before anything was shut down"),
        "{}",
        e.text()
    );
    let s = step("status-after-exec-refusal");
    assert!(s.text().contains("image: loaded, "), "{}", s.text());
    assert!(
        s.text().contains("vcpus: 2 online"),
        "CPU 1 came back:\n{}",
        s.text()
    );
}

/// After the domU ballooned a quarter of its memory out, status shows the domain's actual
/// frames and load plans the new kernel for them (the old P2M has holes).
#[test]
fn ballooned_domain_loads_for_its_frames() {
    let s = step("status-ballooned");
    let frames = MEM_MIB * 256;
    let want = format!("frames: {BALLOONED} (");
    assert!(s.text().contains(&want), "no {want:?}:\n{}", s.text());
    let l = step("load-ballooned");
    assert_eq!(l.rc, Some(0), "{}", l.text());
    let want = format!(
        "ballooned domain: {BALLOONED} of the start-of-day P2M's {frames} frames are present"
    );
    assert!(
        l.text().contains(&format!("layout for {BALLOONED} frames")) && l.text().contains(&want),
        "{}",
        l.text()
    );
}

/// A prebuilt image loads; one whose header was changed is refused by the module's header
/// digest check, and nothing is loaded.
#[test]
fn prebuilt_image_loads_and_a_corrupted_one_is_refused() {
    let b = step("load-image-bad");
    assert_eq!(b.rc, Some(1), "{}", b.text());
    assert!(b.text().contains("do not match the digest"), "{}", b.text());
    let s = step("status-after-bad");
    assert!(s.text().contains("image: none loaded"), "{}", s.text());
    let g = step("load-image-good");
    assert_eq!(g.rc, Some(0), "{}", g.text());
    let u = step("unload-good");
    assert!(u.text().contains("unloaded"), "{}", u.text());
}

#[test]
fn kexec_spelling_loads_and_loads_a_crash_kernel() {
    let l = step("kexec-l");
    assert_eq!(l.rc, Some(0), "{}", l.text());
    let s = step("status-kexec-l");
    assert!(s.text().contains("image: loaded, "), "{}", s.text());
    // kdump-tools' spelling: a crash kernel beside the loaded image, then unloaded.
    let p = step("kexec-p");
    assert_eq!(p.rc, Some(0), "{}", p.text());
    assert!(
        p.text()
            .contains("set aside 20 MiB (5120 frames) for the crash kernel")
            && p.text().contains("pvkexec.crash=0x"),
        "{}",
        p.text()
    );
    let s = step("status-kexec-p");
    assert!(
        s.text().contains("crash kernel: loaded, 20 MiB set aside")
            && s.text().contains("image: loaded, "),
        "{}",
        s.text()
    );
    // The JSON names both images' files and the crash kernel's command line (substrings: a
    // kernel message may share the console).
    let j = step("status-json");
    assert_eq!(j.rc, Some(0), "{}", j.text());
    for want in [
        r#""record": "recorded""#,
        r#""kernel": "/boot/probe""#,
        r#""cmdline": "mem_mib=16 pvkexec.crash=0x"#,
        r#""reserved_mib": 20"#,
    ] {
        assert!(j.text().contains(want), "no {want} in:\n{}", j.text());
    }
    assert!(!j.text().contains(r#""record": "unknown""#), "{}", j.text());
    let pu = step("kexec-p-u");
    assert_eq!(pu.rc, Some(0), "{}", pu.text());
    assert!(pu.text().contains("20 MiB released"), "{}", pu.text());
    let u = step("kexec-u");
    assert_eq!(u.rc, Some(0), "{}", u.text());
    let s = step("status-end");
    assert!(
        s.text().contains("image: none loaded") && s.text().contains("crash kernel: none loaded"),
        "{}",
        s.text()
    );
}

fn exec_domu(name: &str) -> &'static DomuResult {
    let (_, r, _) = shared()
        .exec
        .iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no exec domU {name}"));
    r.as_ref().expect("the domU rig failed")
}

fn assert_probe_passes(d: &DomuResult) {
    assert_eq!(d.verdict, DomuVerdict::Pass, "{}", d.log());
    let passed = d.passed();
    for check in harness::probe_checks() {
        assert!(
            passed.iter().any(|p| p == check),
            "no PASS {check}:\n{}",
            d.log()
        );
    }
    assert!(d.log().contains(harness::PURGATORY_ENTERING), "{}", d.log());
}

/// Debian 6.1 with 2 VCPUs and a disk blkfront has read -> `pvkexec load` + `pvkexec exec`
/// -> probe: every probe check passes (grants-revoked: blkback let go of blkfront's grants,
/// because the module's exec shuts devices down and waits for the backend to close).
#[test]
fn exec_into_the_probe_2vcpus_after_blkfront() {
    let d = exec_domu("kmod-exec");
    let want = format!("PVKEXEC-KMOD xvda={DISK_MARKER}");
    assert!(d.log().contains(&want), "no {want:?}:\n{}", d.log());
    assert_probe_passes(d);
    assert!(d.passed().iter().any(|p| p == "ap-wake"), "{}", d.log());
    assert!(
        d.log().contains("backend /local/domain/0/backend/vbd/") && d.log().contains("closed"),
        "no closed backend line:\n{}",
        d.log()
    );
}

/// Debian 6.1 (1 VCPU) ballooned down by a quarter -> `pvkexec load` + `pvkexec exec` ->
/// probe: every check passes, and the probe's frames are the domain's actual ones: the frames
/// left after the balloon less the hidden one (1 VCPU: no park area, its vcpu_info frame),
/// each P2M entry of them mapping back through the M2P.
#[test]
fn exec_into_the_probe_after_ballooning_a_quarter_out() {
    let d = exec_domu("kmod-balloon");
    assert_probe_passes(d);
    let log = d.log();
    let hidden = 1;
    let nr_pages = BALLOONED - hidden;
    for want in [
        format!(
            "ballooned domain: {BALLOONED} of the start-of-day P2M's {} frames",
            MEM_MIB * 256
        ),
        format!(
            "PVKEXEC-INFO hidden-frames {hidden} (domain {BALLOONED} frames, nr_pages {nr_pages})"
        ),
        format!("PVKEXEC-INFO p2m-m2p frames={nr_pages}"),
    ] {
        assert!(log.contains(&want), "no {want:?}:\n{log}");
    }
    for l in log.lines().filter(|l| {
        [
            "ballooned domain",
            "frames renumbered",
            "hidden-frames",
            "p2m-m2p",
        ]
        .iter()
        .any(|k| l.contains(k))
    }) {
        eprintln!("kmod: balloon: {l}");
    }
}

/// The kexec-tools spelling, 1 VCPU: `kexec -l K --initrd=I --append=... -s && kexec -e`
/// -> probe, which finds the initrd where its plan says.
#[test]
fn kexec_l_then_e_into_the_probe_1vcpu() {
    let d = exec_domu("kmod-kexec");
    assert_probe_passes(d);
    let mod_len = format!("mod_len={:#x}", INITRD_LEN);
    assert!(d.log().contains(&mod_len), "no {mod_len}:\n{}", d.log());
}

/// The systemd-shutdown hook (packaging/systemd/system-shutdown-pvkexec), run as systemd-shutdown runs it
/// at the end of a reboot with the root file system read-only, execs the loaded image.
#[test]
fn the_systemd_shutdown_hook_execs_with_a_read_only_root() {
    let d = exec_domu("kmod-hook");
    assert!(
        d.log().contains("PVKEXEC-KMOD root is read-only"),
        "{}",
        d.log()
    );
    assert_probe_passes(d);
}

/// A number written just before `suffix` in `text` (`image 12800000 bytes` -> 12800000).
fn number_before(text: &str, suffix: &str) -> Option<u64> {
    let head = &text[..text.find(suffix)?];
    let digits = head.rsplit(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// Handoff v6: Debian 6.1 in a 2 GiB domU loads the probe with a 12 MiB initrd (an image of
/// more than one 4 MiB block, which the module of handoff v5 refused at exec: `needs more than
/// one 4 MiB block`) whose built PFNs need a free pool of more than 1024 frames (the CLI of
/// handoff v5 refused that at load: `the module gives 1024`), and execs: the module lists the
/// image's own pages and a pool of the size the CLI asked, and every probe check passes.
#[test]
fn exec_of_a_12mib_initrd_image_with_a_pool_over_1024_frames() {
    let d = exec_domu("kmod-big");
    let log = d.log();
    let loaded = log
        .lines()
        .find(|l| l.contains("loaded /boot/probe: domU layout"))
        .unwrap_or_else(|| panic!("no load line:\n{log}"));
    let image = number_before(loaded, " bytes, free pool").expect("image bytes");
    let pool = number_before(loaded, " frames; command line").expect("pool frames");
    eprintln!("kmod: big: {loaded}");
    assert!(image > 4 << 20, "a {image}-byte image fits one 4 MiB block");
    assert!(pool > 1024, "a {pool}-frame pool fits the v5 block");
    let listed = format!("free pool of {pool} frames listed");
    assert!(log.contains(&listed), "no {listed:?}:\n{log}");
    assert!(
        log.contains(&format!(
            "exec: image of {} pages listed",
            image.div_ceil(4096)
        )),
        "{log}"
    );
    assert_probe_passes(d);
    let mod_len = format!("mod_len={BIG_INITRD_LEN:#x}");
    assert!(log.contains(&mod_len), "no {mod_len}:\n{log}");
    for l in log.lines().filter(|l| {
        ["frames renumbered", "exec: image of", "p2m-m2p", "PASS"]
            .iter()
            .any(|k| l.contains(k))
    }) {
        eprintln!("kmod: big: {l}");
    }
}
