//! Building and inspecting kexec image files (format: `pvhandoff::image`).

use crate::error::{LoadError, Reason};
use crate::kernel::ParsedKernel;
use crate::plan::plan_kernel;
use crate::purgatory::{place, PURGATORY_ELF};
use pvhandoff::digest::sha256;
use pvhandoff::image::{
    ImageHeader, ImageView, IMAGE_MAGIC, IMAGE_VERSION, SEG_FLAG_PURGATORY_MAPPING,
};
use pvhandoff::{SegmentDesc, SegmentKind};
use pvlayout::{InitrdPlacement, Mode, Plan};

/// Where the purgatory (and the trampoline page at its start) is mapped: a lower-half address
/// outside any kernel's region, identical in the old and the new page tables.
pub const PURGATORY_BASE: u64 = 0x0000_0000_4000_0000;

/// A built image and the plan it carries out.
pub struct BuiltImage {
    pub bytes: Vec<u8>,
    pub plan: Plan,
    pub purgatory_relocations: usize,
}

fn pages(len: u64) -> u64 {
    len.div_ceil(4096)
}

/// The kernel's loaded bytes from `virt_kstart` to its last file byte (gaps zero-filled).
fn kernel_bytes(k: &ParsedKernel) -> Vec<u8> {
    let end = k
        .segments
        .iter()
        .map(|s| s.dest - k.virt_kstart + s.filesz)
        .max()
        .unwrap_or(0);
    let mut out = vec![0u8; end as usize];
    for s in &k.segments {
        let at = (s.dest - k.virt_kstart) as usize;
        let src = &k.elf[s.offset as usize..(s.offset + s.filesz) as usize];
        out[at..at + src.len()].copy_from_slice(src);
    }
    out
}

/// Builds the image for `kernel` (and `initrd`) in a domain of `nr_pages`.
pub fn build_image(
    input: &str,
    kernel: &ParsedKernel,
    initrd: Option<&[u8]>,
    nr_pages: u64,
    mode: Mode,
) -> Result<BuiltImage, LoadError> {
    let plan = plan_kernel(
        input,
        kernel,
        initrd.map(|i| i.len() as u64),
        nr_pages,
        mode,
        Some(PURGATORY_BASE),
    )?;
    let purgatory = place(PURGATORY_ELF, PURGATORY_BASE)
        .map_err(|e| LoadError::new("embedded purgatory", None, Reason::Elf(e.to_string())))?;
    let kbytes = kernel_bytes(kernel);
    let mut segs: Vec<(SegmentDesc, &[u8])> = Vec::new();
    let desc = |kind: SegmentKind, flags: u32, dest_pfn: u64, nr: u64, data: &[u8]| SegmentDesc {
        kind: kind as u32,
        flags,
        dest_pfn,
        nr_pages: nr,
        len: data.len() as u64,
        sha256: sha256(data),
    };
    segs.push((
        desc(
            SegmentKind::Kernel,
            0,
            (kernel.virt_kstart - plan.virt_base) / 4096,
            pages(kernel.virt_kend - kernel.virt_kstart),
            &kbytes,
        ),
        &kbytes,
    ));
    if let Some(data) = initrd {
        let pfn = match plan.initrd {
            Some(InitrdPlacement::Mapped(r)) => (r.start - plan.virt_base) / 4096,
            Some(InitrdPlacement::Unmapped { pfn }) => pfn,
            None => unreachable!("an initrd was planned"),
        };
        segs.push((
            desc(SegmentKind::Initrd, 0, pfn, pages(data.len() as u64), data),
            data,
        ));
    }
    segs.push((
        desc(
            SegmentKind::Purgatory,
            SEG_FLAG_PURGATORY_MAPPING,
            PURGATORY_BASE / 4096,
            pages(purgatory.image.len() as u64),
            &purgatory.image,
        ),
        &purgatory.image,
    ));

    let data_offset = (64 + 64 * segs.len() as u64).next_multiple_of(4096);
    let mut bytes = vec![0u8; data_offset as usize];
    for (_, data) in &segs {
        bytes.extend_from_slice(data);
        bytes.resize(bytes.len().next_multiple_of(4096), 0);
    }
    let header = ImageHeader {
        magic: IMAGE_MAGIC,
        version: IMAGE_VERSION,
        header_size: 64,
        nr_segments: segs.len() as u32,
        _pad: 0,
        purgatory_base: PURGATORY_BASE,
        purgatory_entry: purgatory.entry,
        kernel_entry: plan.entry,
        data_offset,
        total_size: bytes.len() as u64,
    };
    // SAFETY: both are plain-old-data #[repr(C)] structs without padding bytes that matter;
    // viewing them as bytes to serialise them is sound.
    let as_bytes = |p: *const u8, n: usize| unsafe { std::slice::from_raw_parts(p, n) }.to_vec();
    bytes[..64].copy_from_slice(&as_bytes(&header as *const _ as *const u8, 64));
    for (i, (d, _)) in segs.iter().enumerate() {
        let at = 64 + 64 * i;
        bytes[at..at + 64].copy_from_slice(&as_bytes(d as *const _ as *const u8, 64));
    }
    Ok(BuiltImage {
        bytes,
        plan,
        purgatory_relocations: purgatory.relocations,
    })
}

/// Reads an image and checks every digest; returns the report and whether all matched.
pub fn inspect(input: &str, bytes: &[u8]) -> Result<(String, bool), LoadError> {
    let view = ImageView::parse(bytes)
        .map_err(|e| LoadError::new(input, None, Reason::Elf(format!("kexec image: {e:?}"))))?;
    let h = view.header;
    let mut out = format!(
        "kexec image v{}: {} segments, {} bytes\n purgatory at {:#x}, entry {:#x}\n kernel entry {:#x}\n",
        h.version, h.nr_segments, h.total_size, h.purgatory_base, h.purgatory_entry, h.kernel_entry
    );
    let mut all_ok = true;
    for (i, s) in view.segments().enumerate() {
        let data = view
            .data(i)
            .map_err(|e| LoadError::new(input, None, Reason::Elf(format!("kexec image: {e:?}"))))?;
        let ok = sha256(data) == s.sha256;
        all_ok &= ok;
        let hex: String = s.sha256.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!(
            " segment {i} {:<10} pfn {:#8x} pages {:#6x} len {:#9x} sha256 {hex} {}\n",
            s.kind_name(),
            s.dest_pfn,
            s.nr_pages,
            s.len,
            if ok { "ok" } else { "MISMATCH" }
        ));
        if s.kind == SegmentKind::Purgatory as u32 {
            out.push_str(&format!(
                "   purgatory loaded size {} bytes ({} pages)\n",
                s.len, s.nr_pages
            ));
        }
    }
    Ok((out, all_ok))
}
