//! Throughput of the purgatory's digest verification on the host. `sha2` uses SHA-NI when the
//! CPU has it; `cargo xtask bench` also runs this with `--cfg sha2_backend="soft"` for the
//! software path (the one QEMU TCG guests get).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pvhandoff::digest::sha256;
use pvhandoff::{verify_segment, SegmentDesc, SegmentKind};

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
    group.bench_function("4KiB pages", |b| {
        b.iter(|| verify_segment(0, &desc, bytes.chunks(4096)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
