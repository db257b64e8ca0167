//! PV domUs built by Xen's own toolstack (xl, xenstored, xenconsoled) in a Debian dom0 under
//! QEMU: the rig of `harness::domu`. Tests share a dom0 boot where they can.

use harness::domu::{DomuRig, DomuSpec, DomuVerdict};
use harness::initramfs;
use harness::provision::{self, DebianLinux};
use std::time::Duration;

/// Debian 6.1 as a domU with a disk: reaches init, loads xen-blkfront, reads the marker the
/// harness wrote into the disk image.
#[test]
fn linux_domu_reads_its_disk() {
    let kernel = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
    let initrd = initramfs::ensure_initramfs_blkfront().unwrap();
    let marker = format!("PVKEXEC-DISK-MARKER-{}", std::process::id());
    let disk = harness::domu::marker_disk(&marker, 4).unwrap();
    let mut spec = DomuSpec::new("linux", &kernel);
    spec.ramdisk = Some(initrd);
    spec.cmdline = "console=hvc0".into();
    spec.disk = Some(disk.clone());
    spec.timeout = Duration::from_secs(90);
    let rig = DomuRig {
        tag: "linux-domu".into(),
        ..DomuRig::default()
    };
    let run = rig.run(&[spec]).unwrap();
    let _ = std::fs::remove_file(&disk);
    let r = &run.domus[0];
    eprintln!(
        "linux-domu: toolstack ready {:?} s, create {:?} s, domU {:?} s, whole {:.1} s",
        run.toolstack_ready_secs,
        r.create_secs,
        r.wall_secs,
        run.dom0.wall.as_secs_f64()
    );
    assert_eq!(r.verdict, DomuVerdict::PoweredOff, "{:#?}", r.xl);
    assert!(r.log().contains(initramfs::INIT_MARKER));
    assert!(r.log().contains("PVKEXEC-LINUX blkfront=loaded"));
    let want = format!("{}{marker}", initramfs::DISK_MARKER_PREFIX);
    assert!(r.lines_with(&want).next().is_some(), "no {want:?} line");
    assert!(r.log().contains(initramfs::DONE_MARKER));
}
