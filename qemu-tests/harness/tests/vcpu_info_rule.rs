//! Why `pvkexec load` refuses a Linux new kernel after a stock Linux (docs/smp.md, "vcpu_info";
//! docs/kdump.md, "Why not a Linux crash kernel"): Xen allows `VCPUOP_register_vcpu_info`
//! once per VCPU, every stock Linux places vcpu_info, and the new kernel's own registration
//! then fails. In a toolstack-built domU (Xen 4.17) Debian's unmodified 6.1 with the module
//! loads Debian bullseye's 5.10 (the newest Linux without a panic on that failure): refused
//! by name, then loaded with `--force` and executed: 5.10 logs the failed registration and
//! never reaches its init (its clock, read from a vcpu_info slot Xen no longer updates, stands
//! still), until the rig destroys the domain.

use harness::domu::{DomuRig, DomuSpec, DomuVerdict};
use harness::kmod::{self, DomuFiles, Headers};
use harness::provision::{self, DebianLinux};
use std::time::Duration;

const INIT: &str = r#"say() { echo "PVKEXEC-RULE $*"; }
insmod /lib/modules/pvkexec.ko || say "insmod failed"
pvkexec load --kernel /boot/new --initrd /boot/new-initrd --append console=hvc0 2>&1
say "load rc=$?"
pvkexec load --force --kernel /boot/new --initrd /boot/new-initrd --append console=hvc0 2>&1
say "forced load rc=$?"
say "exec"
pvkexec exec 2>&1
say "exec returned rc=$?"
poweroff -f
"#;

#[test]
fn a_stock_linux_new_kernel_after_a_stock_linux_cannot_keep_time() {
    let old = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
    let new = provision::ensure_linux(DebianLinux::Bullseye).unwrap();
    let files = DomuFiles {
        files: vec![
            (
                "lib/modules/pvkexec.ko".into(),
                kmod::build(Headers::Bookworm).unwrap(),
            ),
            ("boot/new".into(), new),
            (
                "boot/new-initrd".into(),
                harness::initramfs::ensure_initramfs().unwrap(),
            ),
        ],
    };
    let rd = harness::cache_dir().join(format!("vcpu-info-rule-{}.cpio.gz", std::process::id()));
    kmod::domu_initramfs(INIT, &kmod::pvkexec_release().unwrap(), &files, &rd).unwrap();
    let mut spec = DomuSpec::new("vcpu-info-rule", &old);
    spec.ramdisk = Some(rd.clone());
    spec.cmdline = "console=hvc0 loglevel=4".into();
    // pvkexec load holds the 59 MB image it builds for this 7 MB bzImage (the kernel segment
    // carries the loaded kernel's zero-filled tail) and the module keeps a copy: 256 MiB is
    // too little.
    spec.mem_mib = 768;
    spec.timeout = Duration::from_secs(90);
    let rig = DomuRig {
        tag: "vcpu-info".into(),
        ..DomuRig::default()
    };
    let run = rig.run_for_tests(&[spec]);
    let _ = std::fs::remove_file(&rd);
    let d = &run.unwrap().domus[0];
    let log = d.log();
    // Refused by name, with the versions, nothing loaded.
    assert!(
        log.contains(
            "refused to load /boot/new: the running kernel (Linux 6.1.0-57-amd64) placed vcpu_info"
        ) && log.contains("PVKEXEC-RULE load rc=1"),
        "{log}"
    );
    assert!(log.contains("PVKEXEC-RULE forced load rc=0"), "{log}");
    // The handover itself works: the purgatory enters 5.10.
    assert!(log.contains(harness::PURGATORY_ENTERING), "{log}");
    // 5.10's registration fails: Xen keeps the old kernel's placement.
    assert!(
        log.contains("register_vcpu_info failed: cpu=0 err=-22"),
        "{log}"
    );
    // And it never reaches init.
    assert!(!log.contains("PVKEXEC-LINUX-INIT reached"), "{log}");
    assert_eq!(d.verdict, DomuVerdict::Timeout, "{log}");
}
