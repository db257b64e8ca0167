//! The build path: kernel bytes and the build options (domain size, initrd length, command
//! line, old VCPUs, grant reserve, layout) give an image or an error, never a panic; every
//! image built passes `pvkexec inspect` with all digests, the header digest and the plan
//! record ok, and the purgatory's `ImageView` (zero-run table included).
//!
//! Input: 12 bytes of options, then the command line (length in the options), then the kernel.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((opts, rest)) = data.split_first_chunk::<12>() else {
        return;
    };
    let mem_mib = u16::from_le_bytes([opts[0], opts[1]]) as u64 % 2048 + 1;
    let mode = if opts[2] & 1 == 0 {
        pvlayout::Mode::Dom0
    } else {
        pvlayout::Mode::DomU
    };
    let old = loader::linux::OldKernel {
        vcpus: opts[3] as u32 % 9,
        vcpu_info_registered: opts[2] & 2 != 0,
        xen_resets_vcpus: opts[2] & 4 != 0,
    };
    let grant_reserve = u16::from_le_bytes([opts[4], opts[5]]) as u64;
    let initrd_len = u32::from_le_bytes([opts[6], opts[7], opts[8], 0]) as usize % (4 << 20);
    let cmd_len = (opts[9] as usize).min(rest.len());
    let (cmdline, kernel) = rest.split_at(cmd_len);
    let cmdline = String::from_utf8_lossy(cmdline);
    let Ok(k) = loader::parse_kernel("fuzz", kernel) else {
        return;
    };
    let initrd = vec![opts[10]; initrd_len];
    let adjusted = loader::linux::adjust(&k, &cmdline, old);
    let hidden = loader::image::Hidden {
        vcpu_pages: old.hidden_pages(),
        grant_reserve,
        vcpu_reset: old.xen_resets_vcpus,
        aliases: None,
    };
    let Ok(built) = loader::image::build_image(
        "fuzz",
        &k,
        (initrd_len > 0).then_some(&initrd[..]),
        &adjusted.cmdline,
        mem_mib * 256,
        hidden,
        mode,
    ) else {
        return;
    };
    let (report, ok) = loader::image::inspect("fuzz", &built.bytes).expect("a built image reads");
    assert!(ok, "a built image fails its own checks:\n{report}");
    // The purgatory's reader takes it too (zero-run table included), and the kernel side's
    // pool for it is computable.
    let view = pvhandoff::image::ImageView::parse(&built.bytes).expect("a built image parses");
    pvhandoff::renumber::pool_demand(&view, old.vcpus.max(1) as u64).expect("a pool demand");
});
