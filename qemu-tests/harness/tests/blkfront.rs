//! The kernels' polled blkfront (kernelrt/src/blkfront.rs, the capture kernel's) against Linux's
//! blkback in a toolstack-built domU, with a host-backed disk (`DomuSpec::host_disk`): the
//! `diskcheck` kernel writes a pattern, reads it back, connects again over a backend still
//! connected to its first ring (the reset a crash kernel needs), writes and reads again; the
//! host then checks that the disk file holds exactly that pattern.

use harness::domu::{DomuRig, DomuSpec, DomuVerdict};
use harness::guest;
use std::path::PathBuf;
use std::time::Duration;

/// MiB written by the first connection, then by the second (after the reset).
const MIB: u64 = 4;
const RESET_MIB: u64 = 1;
/// The disk: the pattern, then zeroes the domU must leave alone.
const DISK_MIB: u64 = 8;
const SEED: u64 = 0x5eed_d15c;
const PAGE: usize = 4096;

/// diskcheck's pattern: word `j` of page `i` is splitmix64(seed ^ (i << 9 | j)).
fn word(seed: u64, page: u64, j: u64) -> u64 {
    let mut z = (seed ^ (page << 9 | j)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn expected_page(seed: u64, page: u64) -> Vec<u8> {
    (0..(PAGE / 8) as u64)
        .flat_map(|j| word(seed, page, j).to_le_bytes())
        .collect()
}

/// The first page of `disk` that differs from the pattern (pages `0..pattern_pages`) or from
/// zero (the rest), with what it should be.
fn first_difference(disk: &[u8], seed: u64, pattern_pages: u64) -> Option<(u64, &'static str)> {
    let zero = vec![0u8; PAGE];
    disk.chunks(PAGE).enumerate().find_map(|(i, page)| {
        let i = i as u64;
        if i < pattern_pages {
            (page != expected_page(seed, i).as_slice()).then_some((i, "the pattern"))
        } else {
            (page != zero.as_slice()).then_some((i, "zeroes"))
        }
    })
}

fn host_disk() -> PathBuf {
    let dir = harness::cache_dir().join("domu-disks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("blkfront-host-{}.img", std::process::id()));
    std::fs::write(&path, vec![0u8; (DISK_MIB << 20) as usize]).unwrap();
    path
}

#[test]
fn blkfront_writes_reach_the_host_disk_and_reset_reconnects() {
    let kernel = guest::binary("diskcheck").expect("building the guest kernels");
    let disk = host_disk();
    let mut spec = DomuSpec::new("diskcheck", &kernel);
    spec.mem_mib = 64;
    spec.cmdline = format!("mib={MIB} reset_mib={RESET_MIB} seed={SEED}");
    spec.host_disk = Some(disk.clone());
    spec.timeout = Duration::from_secs(60);
    let rig = DomuRig {
        tag: "blkfront".into(),
        ..DomuRig::default()
    };
    let run = rig.run_for_tests(std::slice::from_ref(&spec));
    let bytes = std::fs::read(&disk);
    let _ = std::fs::remove_file(&disk);
    let run = run.expect("the domU rig failed");
    let r = &run.domus[0];
    for line in r.lines_with("PVKEXEC-INFO diskcheck") {
        eprintln!("{line}");
    }
    assert_eq!(r.verdict, DomuVerdict::Pass, "{}", r.log());
    let mut passed = r.passed();
    passed.sort();
    assert_eq!(
        passed,
        [
            "busy-grant-kept",
            "connect",
            "range-refused",
            "readback",
            "readback-after-reset",
            "reset-connect",
            "write",
            "write-after-reset"
        ],
        "{}",
        r.log()
    );
    let bytes = bytes.expect("reading the host disk back");
    assert_eq!(
        bytes.len() as u64,
        DISK_MIB << 20,
        "the host disk changed size"
    );
    let pattern_pages = (MIB + RESET_MIB) << 8;
    if let Some((page, want)) = first_difference(&bytes, SEED, pattern_pages) {
        panic!(
            "host disk page {page} (of {} written) is not {want}",
            pattern_pages
        );
    }
}

#[test]
fn a_wrong_pattern_is_seen() {
    // The host check itself: a disk written with another seed, or one page off, differs.
    let pages = 4u64;
    let mut disk: Vec<u8> = (0..pages).flat_map(|i| expected_page(7, i)).collect();
    disk.extend(vec![0u8; 2 * PAGE]);
    assert_eq!(first_difference(&disk, 7, pages), None);
    assert_eq!(first_difference(&disk, 8, pages), Some((0, "the pattern")));
    disk[2 * PAGE + 100] ^= 1;
    assert_eq!(first_difference(&disk, 7, pages), Some((2, "the pattern")));
    disk[2 * PAGE + 100] ^= 1;
    disk[5 * PAGE] = 1;
    assert_eq!(first_difference(&disk, 7, pages), Some((5, "zeroes")));
}
