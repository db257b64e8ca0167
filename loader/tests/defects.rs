//! Regression tests for the loader defects of issue 14: decompression bombs (peak RSS of the
//! real `pvkexec` binary, measured with wait4), inputs of the wrong type or size, CLI values
//! that used to wrap, the image header digest, and the smaller ELF and message defects.

use loader::kernel::parse_kernel;
use loader::Reason;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{elf_with, note, VIRT_BASE};

/// The binary under test; `PVKEXEC_UNDER_TEST` names another (e.g. an older build, to see
/// these tests fail on it).
fn pvkexec() -> String {
    std::env::var("PVKEXEC_UNDER_TEST").unwrap_or(env!("CARGO_BIN_EXE_pvkexec").into())
}

/// A PV kernel: one PT_LOAD of `len` bytes at paddr `paddr`, notes with `paddr_offset`.
fn kernel_elf(paddr: u64, len: u64, paddr_offset: u64) -> Vec<u8> {
    let mut notes = Vec::new();
    note(&mut notes, 6, b"linux\0");
    note(&mut notes, 5, b"xen-3.0\0");
    note(&mut notes, 3, &VIRT_BASE.to_le_bytes());
    note(&mut notes, 4, &paddr_offset.to_le_bytes());
    let entry = VIRT_BASE + paddr - paddr_offset;
    note(&mut notes, 1, &entry.to_le_bytes());
    elf_with(&[(paddr, len, len)], &notes, entry)
}

fn small_kernel() -> Vec<u8> {
    kernel_elf(0, 0x3000, 0)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pvkexec-defects-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `pvkexec args` and returns its output and peak RSS in KiB (wait4's ru_maxrss).
fn run_measured(args: &[&str]) -> (Output, i64, Duration) {
    let start = Instant::now();
    let child = Command::new(pvkexec())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Our own outputs are small: read them after the child ended.
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid writes the status and one rusage into the zeroed
    // locals; the Child handle is not waited on again (its pipes are read below).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(pid, &mut status, 0, &mut usage), pid);
        usage
    };
    let took = start.elapsed();
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut v = Vec::new();
        if let Some(r) = r {
            r.read_to_end(&mut v).unwrap();
        }
        v
    };
    let mut child = child;
    let stdout = read(child.stdout.as_mut().map(|s| s as &mut dyn std::io::Read));
    let stderr = read(child.stderr.as_mut().map(|s| s as &mut dyn std::io::Read));
    use std::os::unix::process::ExitStatusExt;
    let out = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
    };
    (out, usage.ru_maxrss, took)
}

fn run(args: &[&str]) -> Output {
    run_measured(args).0
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn bzimage(payload: &[u8], declared: u32) -> Vec<u8> {
    let mut b = vec![0u8; 5 * 512];
    b[0x1F1] = 4;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    let mut p = payload.to_vec();
    p.extend_from_slice(&declared.to_le_bytes());
    b[0x248..0x24C].copy_from_slice(&0u32.to_le_bytes());
    b[0x24C..0x250].copy_from_slice(&(p.len() as u32).to_le_bytes());
    b.extend_from_slice(&p);
    b
}

/// A zstd frame: `head` as a raw block, then `zeros` bytes as 128 KiB RLE blocks (4 bytes
/// each: a bomb of ratio 32768).
fn zstd_bomb(head: &[u8], zeros: u64) -> Vec<u8> {
    let mut z = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x38]; // magic, FHD, 2^17-byte window
    let block = |z: &mut Vec<u8>, last: bool, ty: u32, size: u32| {
        let h = last as u32 | ty << 1 | size << 3;
        z.extend_from_slice(&h.to_le_bytes()[..3]);
    };
    block(&mut z, false, 0, head.len() as u32);
    z.extend_from_slice(head);
    let n = zeros / (128 << 10);
    for i in 0..n {
        block(&mut z, i + 1 == n, 1, 128 << 10);
        z.push(0);
    }
    z
}

/// LSB-first bit writer for a hand-made deflate stream.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u64, n: u32) {
        self.acc |= v << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// A Huffman code, most significant bit first.
    fn code(&mut self, code: u64, n: u32) {
        for i in (0..n).rev() {
            self.put(code >> i & 1, 1);
        }
    }
}

/// A gzip member: `head` as literals, a zero, then `zeros` more zero bytes (rounded down to
/// 258) as length-258 distance-1 matches in one fixed-Huffman block (13 bits per 258 bytes).
/// With `trailer`, the CRC and length are right (else zeros: never reached by a bomb).
fn gzip_bomb(head: &[u8], zeros: u64, trailer: bool) -> Vec<u8> {
    let mut b = Bits {
        out: vec![0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3],
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // final block
    b.put(1, 2); // fixed Huffman
    let lit = |b: &mut Bits, v: u8| match v {
        0..=143 => b.code(0x30 + v as u64, 8),
        _ => b.code(0x190 + (v as u64 - 144), 9),
    };
    for &v in head {
        lit(&mut b, v);
    }
    lit(&mut b, 0);
    for _ in 0..zeros / 258 {
        b.code(0xC5, 8); // length code 285: 258 bytes
        b.code(0, 5); // distance code 0: distance 1
    }
    b.code(0, 7); // end of block
    b.put(0, 7);
    let mut crc = flate2::Crc::new();
    if trailer {
        crc.update(head);
        let zeros = vec![0u8; (1 + zeros / 258 * 258) as usize];
        crc.update(&zeros);
    }
    b.out.extend_from_slice(&crc.sum().to_le_bytes());
    b.out.extend_from_slice(&crc.amount().to_le_bytes());
    b.out
}

const GIB: u64 = 1 << 30;
/// Peak RSS a refused bomb may cost: the binary, its libraries and the file (a few MiB).
const BOMB_RSS_KIB: i64 = 96 << 10;

#[test]
fn decompression_bombs_are_refused_in_bounded_memory() {
    let elf = small_kernel();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // An ELF followed by 1 GiB of zeros, declaring 500 MiB: past the declaration.
        (
            "zstd-bzimage",
            bzimage(&zstd_bomb(&elf, GIB), 500 << 20),
            "more than the size the bzImage declares",
        ),
        // The same declaring 4 GiB: refused without decompressing.
        (
            "zstd-bzimage-4g",
            bzimage(&zstd_bomb(&elf, GIB), u32::MAX),
            "more than a PV kernel can be",
        ),
        (
            "gzip-bzimage",
            bzimage(&gzip_bomb(&elf, GIB, false), 500 << 20),
            "more than the size the bzImage declares",
        ),
        // A gzip'd ELF has no declaration: the one bound applies.
        (
            "gzip-elf",
            gzip_bomb(&elf, GIB, false),
            "more than a PV kernel can be",
        ),
        // Not an ELF at all: refused at its first bytes.
        (
            "zstd-zeros",
            bzimage(&zstd_bomb(&[0; 64], GIB), 500 << 20),
            "not an ELF",
        ),
    ];
    for (name, bytes, why) in cases {
        let path = tmp(name);
        std::fs::write(&path, &bytes).unwrap();
        let out = tmp(&format!("{name}.elf"));
        let (o, rss_kib, took) = run_measured(&[
            "extract",
            "--kernel",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        eprintln!(
            "{name}: {} bytes, exit {:?}, peak RSS {} KiB, {:?}: {}",
            bytes.len(),
            o.status.code(),
            rss_kib,
            took,
            stderr(&o).trim()
        );
        assert!(
            rss_kib < BOMB_RSS_KIB,
            "{name}: peak RSS {rss_kib} KiB refusing a bomb"
        );
        assert_eq!(o.status.code(), Some(3), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{name}: {}", stderr(&o));
    }
}

#[test]
fn the_bomb_generators_make_valid_streams() {
    // The bombs above are refused for their size, not because they are malformed: small ones
    // decompress to the kernel and are accepted.
    let elf = small_kernel();
    let tail = 256 << 10;
    for (name, bytes) in [
        (
            "zstd",
            bzimage(&zstd_bomb(&elf, tail), (elf.len() as u64 + tail) as u32),
        ),
        (
            "gzip",
            bzimage(
                &gzip_bomb(&elf, tail, true),
                (elf.len() as u64 + 1 + tail / 258 * 258) as u32,
            ),
        ),
    ] {
        let k = parse_kernel(name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(k.elf, elf, "{name}: the ELF's own extent is kept");
        assert!(
            k.trailing > 0,
            "{name}: the zeros after it are counted, not kept"
        );
    }
}

#[test]
fn every_format_has_the_one_bound() {
    // A bzImage declaring more than a PV kernel can be is refused before decompressing, in
    // every compression format (the payload bytes are never looked at).
    for magic in [
        &[0x1F, 0x8B][..],
        b"BZh",
        &[0xFD, b'7', b'z', b'X', b'Z', 0x00],
        &[0x28, 0xB5, 0x2F, 0xFD],
        &[0x5D, 0x00],
        &[0x89, b'L', b'Z', b'O', 0x00],
        &[0x02, 0x21, 0x4C, 0x18],
    ] {
        let mut payload = magic.to_vec();
        payload.resize(64, 0);
        let err = parse_kernel("big", &bzimage(&payload, (512 << 20) + 1)).unwrap_err();
        assert!(
            err.to_string().contains("more than a PV kernel can be"),
            "{err}"
        );
    }
}

#[test]
fn inputs_are_checked_for_type_and_size_before_reading() {
    let kernel = tmp("k.elf");
    std::fs::write(&kernel, small_kernel()).unwrap();
    let k = kernel.to_str().unwrap();
    let out = tmp("out.img");
    let o = out.to_str().unwrap();
    // A device: refused from its metadata (it used to be read until memory ran out).
    let (r, rss, took) = run_measured(&["inspect", "/dev/zero"]);
    assert_eq!(r.status.code(), Some(3));
    assert!(
        stderr(&r).contains("/dev/zero: is a device"),
        "{}",
        stderr(&r)
    );
    assert!(rss < BOMB_RSS_KIB && took < Duration::from_secs(5));
    let (r, ..) = run_measured(&["extract", "--kernel", "/dev/zero", "-o", o]);
    assert!(
        stderr(&r).contains("/dev/zero: is a device"),
        "{}",
        stderr(&r)
    );
    // A directory as the initrd, for plan and build.
    let dir = std::env::temp_dir();
    let d = dir.to_str().unwrap();
    for cmd in ["plan", "build"] {
        let mut args = vec![cmd, "--kernel", k, "--initrd", d, "--mem-mib", "64"];
        args.extend(["--mode", "dom0"]);
        if cmd == "build" {
            args.extend(["-o", o]);
        }
        let r = run(&args);
        assert_eq!(r.status.code(), Some(3), "{cmd}: {}", stderr(&r));
        assert!(
            stderr(&r).contains("is a directory, not a regular file"),
            "{cmd}: {}",
            stderr(&r)
        );
    }
    // An 8 GiB sparse initrd for a 256 MiB domain: refused by size, at once.
    let sparse = tmp("sparse.initrd");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(8 * GIB)
        .unwrap();
    let s = sparse.to_str().unwrap();
    let args = [
        "build",
        "--kernel",
        k,
        "--initrd",
        s,
        "--mem-mib",
        "256",
        "--mode",
        "dom0",
        "-o",
        o,
    ];
    let (r, rss, took) = run_measured(&args);
    std::fs::remove_file(&sparse).unwrap();
    assert_eq!(r.status.code(), Some(3), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("8589934592 bytes: more than the domain's memory (256 MiB)"),
        "{}",
        stderr(&r)
    );
    assert!(rss < BOMB_RSS_KIB, "peak RSS {rss} KiB");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn cli_values_that_do_not_fit_are_refused() {
    let kernel = tmp("k2.elf");
    std::fs::write(&kernel, small_kernel()).unwrap();
    let k = kernel.to_str().unwrap();
    let out = tmp("out2.img");
    let o = out.to_str().unwrap();
    let build = |extra: &[&str]| {
        let mut a = vec!["build", "--kernel", k, "--mode", "dom0", "-o", o];
        a.extend_from_slice(extra);
        let _ = std::fs::remove_file(&out);
        run(&a)
    };
    // Used to wrap to a 64 MiB domain and write an image with exit 0.
    let r = build(&["--mem-mib", "72057594037928000"]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("is more than a PV domain can have"),
        "{}",
        stderr(&r)
    );
    assert!(!out.exists());
    // Used to wrap to 0 hidden frames.
    let r = build(&[
        "--mem-mib",
        "64",
        "--grant-reserve",
        "18446744073709551611",
        "--old-vcpus",
        "2",
    ]);
    assert_eq!(r.status.code(), Some(3), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("--grant-reserve: 5 frames for the old kernel's VCPUs and a grant reserve of 18446744073709551611 frames leave nothing of a 16384-frame domain"),
        "{}",
        stderr(&r)
    );
    assert!(!out.exists());
    for (vcpus, why) in [
        ("0", "the old kernel runs at least one VCPU"),
        ("10000", "10000 VCPUs: the purgatory parks at most 8"),
    ] {
        let r = build(&["--mem-mib", "64", "--old-vcpus", vcpus]);
        assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
        assert!(stderr(&r).contains(why), "{}", stderr(&r));
    }
    let r = build(&["--mem-mib", "64"]);
    assert!(r.status.success(), "{}", stderr(&r));
    // A write failure names the output and says so.
    let bad = "/proc/version/not-a-dir/out.img";
    let r = run(&[
        "build",
        "--kernel",
        k,
        "--mem-mib",
        "64",
        "--mode",
        "dom0",
        "-o",
        bad,
    ]);
    assert_eq!(r.status.code(), Some(3));
    assert!(
        stderr(&r).contains(&format!("{bad}: cannot write:")),
        "{}",
        stderr(&r)
    );
}

fn build_lib(k: &[u8]) -> Result<Vec<u8>, loader::LoadError> {
    let k = parse_kernel("k", k)?;
    loader::image::build_image(
        "k",
        &k,
        None,
        "",
        16384,
        Default::default(),
        pvlayout::Mode::Dom0,
    )
    .map(|b| b.bytes)
}

fn inspect_ok(bytes: &[u8]) -> bool {
    matches!(loader::image::inspect("img", bytes), Ok((_, true)))
}

#[test]
fn header_and_descriptor_fields_are_under_the_digest() {
    let image = build_lib(&small_kernel()).unwrap();
    assert!(inspect_ok(&image));
    let desc = |i: usize, field: usize| 64 + 64 * i + field;
    // dest_pfn, nr_pages, kind, flags of the kernel descriptor; header entry points, bases.
    for (what, at) in [
        ("dest_pfn", desc(0, 8)),
        ("nr_pages", desc(0, 16)),
        ("kind", desc(1, 0)),
        ("flags", desc(2, 4)),
        ("kernel_entry", 40),
        ("purgatory_entry", 32),
        ("purgatory_base", 24),
        ("params_offset", 20),
    ] {
        let mut bad = image.clone();
        bad[at] ^= 1;
        assert!(!inspect_ok(&bad), "a changed {what} passed inspect");
    }
    // The recorded digest itself.
    let mut bad = image.clone();
    let text = loader::image::inspect("img", &image).unwrap().0;
    assert!(
        text.contains("header and descriptor table: sha256 ok"),
        "{text}"
    );
    let nr = u32::from_le_bytes(image[16..20].try_into().unwrap()) as usize;
    bad[16..20].copy_from_slice(&0u32.to_le_bytes());
    let err = loader::image::inspect("img", &bad).unwrap_err();
    assert!(err.to_string().contains("0 segments"), "{err}");
    // Fewer segments than sealed: the digest covers a longer table.
    bad[16..20].copy_from_slice(&((nr - 1) as u32).to_le_bytes());
    assert!(!inspect_ok(&bad));
}

#[test]
fn purgatory_side_check_refuses_changed_fields() {
    use pvhandoff::image::{check_header_digest, HeaderDigestError, ImageParams};
    let image = build_lib(&small_kernel()).unwrap();
    let off = loader::inspect::params_offset().unwrap();
    // The block as the purgatory finds it in its own pages.
    let view = pvhandoff::image::ImageView::parse(&image).unwrap();
    let purg = view
        .segments()
        .position(|s| s.kind == pvhandoff::SegmentKind::Purgatory as u32)
        .unwrap();
    let data = view.data(purg).unwrap();
    let params = ImageParams::read(&data[off as usize..]).unwrap();
    assert_eq!(check_header_digest(&image, &params), Ok(()));
    let mut bad = image.clone();
    bad[64 + 8] ^= 0x10;
    assert!(matches!(
        check_header_digest(&bad, &params),
        Err(HeaderDigestError::Mismatch(_))
    ));
    assert_eq!(
        check_header_digest(&image, &ImageParams::EMPTY),
        Err(HeaderDigestError::NotSealed)
    );
}

#[test]
fn elf_defects_are_refused_by_name() {
    // An unaligned kernel start (PADDR_OFFSET): build refuses it instead of placing the bytes
    // a page boundary early.
    let k = kernel_elf(0x1001, 0x3000, 0x1000);
    let err = build_lib(&k).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("not on a page boundary"), "{err}");
    // e_phentsize other than 56.
    let mut k = small_kernel();
    k[0x36] = 48;
    let err = parse_kernel("k", &k).unwrap_err().to_string();
    assert!(err.contains("e_phentsize is 48"), "{err}");
    // A PT_LOAD whose end overflows: the message says what does not fit.
    let mut k = small_kernel();
    let memsz = 64 + 0x28;
    k[memsz..memsz + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    k[64 + 0x18] = 1; // paddr 1: paddr + memsz does not fit in 64 bits
    let err = parse_kernel("k", &k).unwrap_err();
    assert!(matches!(err.reason, Reason::Elf(_)), "{err}");
    assert!(!err.to_string().contains("overflow"), "{err}");
}

#[test]
fn extract_names_the_dropped_relocation_bytes() {
    let elf = small_kernel();
    let tail = 128 << 10;
    let path = tmp("with-tail");
    std::fs::write(
        &path,
        bzimage(&zstd_bomb(&elf, tail), (elf.len() as u64 + tail) as u32),
    )
    .unwrap();
    let out = tmp("with-tail.elf");
    let r = run(&[
        "extract",
        "--kernel",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(String::from_utf8_lossy(&r.stdout).contains("131072 bytes after the ELF"));
    assert_eq!(std::fs::read(&out).unwrap(), elf);
}
