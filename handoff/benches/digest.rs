//! Throughput of the purgatory's digest verification on the host, built as the purgatory is:
//! the workspace's bench profile gives `pvhandoff` the guest's size-optimised settings and the
//! hashing crates the speed-optimised ones the guest profile gives them (`guest/Cargo.toml`).
//! Beside it, the `sha2` crate alone on the same bytes: the ceiling the verification should
//! stay within 5 % of. `sha2` uses SHA-NI when the CPU has it; `cargo xtask bench` also runs
//! this with `--cfg sha2_backend="soft"` for the software path (the one QEMU TCG guests get).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pvhandoff::digest::sha256;
use pvhandoff::{verify_segment, SegmentDesc, SegmentKind};
use sha2::{Digest, Sha256};

fn bench(c: &mut Criterion) {
    let bytes: Vec<u8> = (0..16u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    let desc = SegmentDesc {
        kind: SegmentKind::Kernel as u32,
        flags: 0,
        dest_pfn: 0,
        nr_pages: bytes.len() as u64 / 4096,
        len: bytes.len() as u64,
        sha256: sha256(&bytes),
    };
    let backend = if cfg!(sha2_backend = "soft") {
        "soft"
    } else {
        "auto (SHA-NI when present)"
    };
    let mut group = c.benchmark_group(format!("verify-segment 16MiB, backend {backend}"));
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.sample_size(10);
    group.bench_function("purgatory verify_segment, 4KiB pages", |b| {
        b.iter(|| verify_segment(0, &desc, bytes.chunks(4096)).unwrap())
    });
    group.bench_function("sha2 crate alone, one call", |b| {
        b.iter(|| Sha256::digest(&bytes))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
