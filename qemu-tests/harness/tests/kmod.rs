//! The kernel side on Debian's unmodified 6.1: `pvkexec.ko` (kmod/, built against Debian's
//! headers for the rig's kernel) and the `pvkexec` CLI in a toolstack-built domU's initramfs.
//! One dom0 boot (Xen 4.17) runs one domU whose `/init` runs every step and prints, per step,
//! `PVKEXEC-KMOD begin NAME`, the command's output, `PVKEXEC-KMOD end NAME rc=N`; each test
//! below judges its steps from that one run.

use harness::domu::{DomuResult, DomuRig, DomuSpec, DomuVerdict};
use harness::kmod::{self, DomuFiles, Headers};
use harness::provision::{self, DebianLinux};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 256;
const VCPUS: u32 = 2;
const MARK: &str = "PVKEXEC-KMOD ";

/// The domU's `/init`: each step's output between markers, then the module's kernel log.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "PVKEXEC-KMOD $*"; }
step() { n=$1; shift; say "begin $n"; "$@" 2>&1; rc=$?; say "end $n rc=$rc up=$(cut -d' ' -f1 /proc/uptime)"; }
say "init up=$(cut -d' ' -f1 /proc/uptime)"
step status-no-module pvkexec status
step insmod insmod /lib/modules/pvkexec.ko
step status pvkexec status
step load-probe pvkexec load --kernel /boot/probe --append "mem_mib=@MEM@"
step status-loaded pvkexec status
step unload pvkexec unload
step status-unloaded pvkexec status
step load-linux61 pvkexec load --kernel /boot/linux61 --append console=hvc0
step status-after-refusal pvkexec status
step kexec-l kexec -l /boot/probe --append="mem_mib=@MEM@" -s
step status-kexec-l pvkexec status
step kexec-p kexec -p /boot/probe

step kexec-u kexec -u
step status-end pvkexec status
dmesg | grep pvkexec | sed 's/^/PVKEXEC-KMOD dmesg /'
say done
poweroff -f
"#;

/// The exec domU's `/init`: load the probe and hand the domain over.
const INIT_EXEC: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "PVKEXEC-KMOD init up=$(cut -d' ' -f1 /proc/uptime)"
insmod /lib/modules/pvkexec.ko || echo "PVKEXEC-KMOD insmod failed"
pvkexec load --kernel /boot/probe --append "mem_mib=@MEM@" 2>&1
echo "PVKEXEC-KMOD exec up=$(cut -d' ' -f1 /proc/uptime)"
pvkexec exec 2>&1
echo "PVKEXEC-KMOD exec returned rc=$?"
dmesg | grep pvkexec | sed 's/^/PVKEXEC-KMOD dmesg /'
poweroff -f
"#;

const EXEC_VCPUS: u32 = 2;

struct Shared {
    domu: Result<DomuResult, String>,
    exec: Result<DomuResult, String>,
    ko_bytes: u64,
}

/// Builds the module, the initramfs, and runs the domU once.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let start = Instant::now();
        let ko = kmod::build(Headers::Bookworm).expect("building pvkexec.ko");
        let ko_bytes = std::fs::metadata(&ko).unwrap().len();
        let linux = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
        let probe = harness::guest::binary("probe").unwrap();
        let cli = kmod::pvkexec_release().unwrap();
        let files = DomuFiles {
            files: vec![
                ("lib/modules/pvkexec.ko".into(), ko),
                ("boot/probe".into(), probe),
                ("boot/linux61".into(), linux.clone()),
            ],
        };
        let rd = harness::cache_dir().join(format!("kmod-domu-{}.cpio.gz", std::process::id()));
        let init = INIT.replace("@MEM@", &MEM_MIB.to_string());
        kmod::domu_initramfs(&init, &cli, &files, &rd).unwrap();
        let rd_exec =
            harness::cache_dir().join(format!("kmod-exec-{}.cpio.gz", std::process::id()));
        let init = INIT_EXEC.replace("@MEM@", &MEM_MIB.to_string());
        let exec_files = DomuFiles {
            files: files.files[..2].to_vec(),
        };
        kmod::domu_initramfs(&init, &cli, &exec_files, &rd_exec).unwrap();
        eprintln!(
            "kmod: module, CLI and initramfs ready in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let mut spec = DomuSpec::new("kmod", &linux);
        spec.ramdisk = Some(rd.clone());
        spec.cmdline = "console=hvc0 loglevel=4".into();
        spec.mem_mib = MEM_MIB;
        spec.vcpus = VCPUS;
        spec.timeout = Duration::from_secs(240);
        let mut exec = DomuSpec::new("kmod-exec", &linux);
        exec.ramdisk = Some(rd_exec.clone());
        exec.cmdline = "console=hvc0 loglevel=4".into();
        exec.mem_mib = MEM_MIB;
        exec.vcpus = EXEC_VCPUS;
        exec.timeout = Duration::from_secs(120);
        let rig = DomuRig {
            tag: "kmod".into(),
            ..DomuRig::default()
        };
        let run = rig.run(&[spec, exec]).map_err(|e| format!("{e:#}"));
        let _ = std::fs::remove_file(&rd);
        let _ = std::fs::remove_file(&rd_exec);
        let exec = run
            .as_ref()
            .map(|r| r.domus[1].clone())
            .map_err(Clone::clone);
        let domu = run.map(|r| {
            eprintln!(
                "kmod: toolstack ready {:.1} s after QEMU start, domU {:.1} s (dom0 clock), \
                 whole test {:.1} s",
                r.toolstack_ready_secs.unwrap_or(f64::NAN),
                r.domus[0].wall_secs.unwrap_or(f64::NAN),
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
    assert_eq!(s.rc, Some(0), "{}", s.text());
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
fn probe_loads_and_unloads() {
    let l = step("load-probe");
    assert_eq!(l.rc, Some(0), "{}", l.text());
    assert!(
        l.text().contains("loaded /boot/probe: domU layout"),
        "{}",
        l.text()
    );
    let s = step("status-loaded");
    assert!(s.text().contains("image: loaded, "), "{}", s.text());
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

#[test]
fn kexec_spelling_loads_and_refuses_kdump() {
    let l = step("kexec-l");
    assert_eq!(l.rc, Some(0), "{}", l.text());
    let s = step("status-kexec-l");
    assert!(s.text().contains("image: loaded, "), "{}", s.text());
    let p = step("kexec-p");
    assert_eq!(p.rc, Some(1), "{}", p.text());
    assert!(p.text().contains("not yet: kdump"), "{}", p.text());
    let u = step("kexec-u");
    assert_eq!(u.rc, Some(0), "{}", u.text());
    let s = step("status-end");
    assert!(s.text().contains("image: none loaded"), "{}", s.text());
}

/// Debian 6.1 -> probe through pvkexec.ko: every probe check passes.
#[test]
fn exec_into_the_probe() {
    let d = shared().exec.as_ref().expect("the domU rig failed");
    eprintln!("{}", d.log());
    assert_eq!(d.verdict, DomuVerdict::Pass, "{}", d.log());
    let passed = d.passed();
    for check in harness::probe_checks() {
        assert!(
            passed.iter().any(|p| p == check),
            "no PASS {check}:\n{}",
            d.log()
        );
    }
}
