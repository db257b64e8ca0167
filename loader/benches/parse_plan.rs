//! Time to read Debian's bzImage (xz payload: decompress, ELF, notes) and plan its dom0 layout.
//! `cargo xtask bench` provisions the kernel and names it in PVKEXEC_DEBIAN_KERNEL.
use criterion::{criterion_group, criterion_main, Criterion};
use loader::parse_kernel;
use loader::plan::plan_kernel;
use pvlayout::Mode;

fn bench(c: &mut Criterion) {
    let path = std::env::var("PVKEXEC_DEBIAN_KERNEL")
        .expect("PVKEXEC_DEBIAN_KERNEL: the kernel to parse (cargo xtask bench sets it)");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run `cargo xtask bench`, which provisions it)"));
    let mut group = c.benchmark_group("debian-6.1-bzimage");
    group.sample_size(10);
    group.bench_function("parse (xz payload) + plan dom0 256 MiB", |b| {
        b.iter(|| {
            let k = parse_kernel("vmlinuz", &bytes).unwrap();
            plan_kernel("vmlinuz", &k, None, 65536, Mode::Dom0, None).unwrap()
        })
    });
    let k = parse_kernel("vmlinuz", &bytes).unwrap();
    group.bench_function("plan only", |b| {
        b.iter(|| plan_kernel("vmlinuz", &k, None, 65536, Mode::Dom0, None).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
