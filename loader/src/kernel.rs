//! Reading a new kernel: ELF64 vmlinux, gzip-compressed ELF, or bzImage (boot protocol 2.08
//! or later) with any payload compression Linux uses; then its Xen notes and the addresses
//! libelf derives (`elf_parse_binary`, `elf_xen_addr_calc_check`).

use crate::decompress::{decompress_elf, Compression};
use crate::error::{LoadError, Reason};
use crate::input::MAX_KERNEL_BYTES;
use crate::notes::{XenNotes, PVKEXEC_NOTE_NAME, PVKEXEC_NOTE_PLAN_SLOT, UNPROVIDABLE_FEATURES};
use goblin::elf::{program_header, section_header, Elf};

/// What the decompression bound is, for errors.
const KERNEL_BOUND: &str = "a PV kernel can be (512 MiB)";

/// The container the kernel came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Elf,
    GzipElf,
    /// bzImage with its boot protocol version and payload compression.
    BzImage {
        version: u16,
        compression: Compression,
    },
}

/// One PT_LOAD to copy: `file` bytes at `dest` (a virtual address in the new kernel's region),
/// zero-filled up to `memsz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub dest: u64,
    pub paddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A parsed PV kernel.
#[derive(Clone, Debug)]
pub struct ParsedKernel {
    pub container: Container,
    /// The ELF image (decompressed).
    pub elf: Vec<u8>,
    pub notes: XenNotes,
    pub virt_base: u64,
    pub paddr_offset: u64,
    pub virt_kstart: u64,
    pub virt_kend: u64,
    pub entry: u64,
    pub segments: Vec<LoadSegment>,
    /// Bytes of the decompressed payload after the ELF's last referenced byte (Linux appends
    /// its relocation table there): counted, not kept.
    pub trailing: u64,
}

impl ParsedKernel {
    /// The numbers the layout planner needs.
    pub fn layout_info(&self) -> pvlayout::KernelInfo {
        pvlayout::KernelInfo {
            virt_base: self.virt_base,
            virt_kstart: self.virt_kstart,
            virt_kend: self.virt_kend,
            entry: self.entry,
            hypercall_page: self.notes.hypercall_page,
            init_p2m: self.notes.init_p2m,
            mod_start_pfn: self.notes.mod_start_pfn.is_some_and(|v| v != 0),
            pae_mode_yes: self
                .notes
                .pae_mode
                .as_deref()
                .is_some_and(|m| m.starts_with("yes")),
        }
    }

    /// Whether Xen's dom0 builder accepts this kernel as the initial domain (4.17 refuses a
    /// kernel whose SUPPORTED_FEATURES note lacks XENFEAT_dom0).
    pub fn supports_dom0(&self) -> bool {
        self.notes
            .supported_features
            .is_none_or(|bits| bits & (1 << xenpv::xenfeat::DOM0) != 0)
    }
}

/// Reads a kernel from `bytes`; `input` names it in errors.
pub fn parse_kernel(input: &str, bytes: &[u8]) -> Result<ParsedKernel, LoadError> {
    let err = |offset: Option<u64>, reason: Reason| LoadError::new(input, offset, reason);
    let (container, elf, trailing) = if bytes.starts_with(b"\x7fELF") {
        if bytes.len() as u64 > MAX_KERNEL_BYTES {
            return Err(err(
                None,
                Reason::Input(format!("{} bytes: more than {KERNEL_BOUND}", bytes.len())),
            ));
        }
        // Copied without touching its zero pages (a kernel's bss in the file).
        (
            Container::Elf,
            crate::decompress::SparseBuf::copy_of(bytes),
            0,
        )
    } else if bytes.starts_with(&[0x1F, 0x8B]) {
        let d = decompress_elf(Compression::Gzip, bytes, MAX_KERNEL_BYTES, KERNEL_BOUND)
            .map_err(|r| err(Some(0), r))?;
        let trailing = d.stream_len - d.elf.len() as u64;
        (Container::GzipElf, d.elf, trailing)
    } else if bytes.get(0x202..0x206) == Some(b"HdrS") {
        let (version, compression, d) = bzimage_payload(bytes).map_err(|(o, r)| err(o, r))?;
        let trailing = d.stream_len - d.elf.len() as u64;
        (
            Container::BzImage {
                version,
                compression,
            },
            d.elf,
            trailing,
        )
    } else if bytes.len() < 4 {
        return Err(err(
            None,
            Reason::Truncated(format!("only {} bytes", bytes.len())),
        ));
    } else {
        return Err(err(Some(0), Reason::UnknownFormat));
    };
    let what = match container {
        Container::Elf => input.to_string(),
        _ => format!("{input} (decompressed ELF)"),
    };
    parse_elf(&elf, &what).map(|p| ParsedKernel {
        container,
        elf,
        trailing,
        ..p
    })
}

type PayloadError = (Option<u64>, Reason);

/// Extracts and decompresses a bzImage's payload (boot protocol >= 2.08).
fn bzimage_payload(
    b: &[u8],
) -> Result<(u16, Compression, crate::decompress::Decompressed), PayloadError> {
    let bz = |off: u64, why: String| (Some(off), Reason::BzImage(why));
    if b.len() < 0x250 {
        return Err((
            None,
            Reason::Truncated(format!(
                "bzImage setup header needs 0x250 bytes, file has {:#x}",
                b.len()
            )),
        ));
    }
    let version = u16::from_le_bytes([b[0x206], b[0x207]]);
    if version < 0x0208 {
        return Err(bz(
            0x206,
            format!(
                "boot protocol {}.{:02} has no payload fields (2.08 needed)",
                version >> 8,
                version & 0xFF
            ),
        ));
    }
    let setup_sects = match b[0x1F1] {
        0 => 4,
        n => n as u64,
    };
    let payload_offset = u32::from_le_bytes(b[0x248..0x24C].try_into().expect("len")) as u64;
    let payload_length = u32::from_le_bytes(b[0x24C..0x250].try_into().expect("len")) as u64;
    let start = (setup_sects + 1) * 512 + payload_offset;
    let end = start + payload_length;
    if payload_length < 8 || end > b.len() as u64 {
        return Err(bz(
            0x248,
            format!(
                "payload {start:#x}+{payload_length:#x} lies outside the {:#x}-byte file",
                b.len()
            ),
        ));
    }
    let payload = &b[start as usize..end as usize];
    let compression = Compression::detect(payload)
        .ok_or_else(|| bz(start, "unknown payload compression format".into()))?;
    // Linux appends the decompressed size as a little-endian u32 after the stream.
    let declared = u32::from_le_bytes(payload[payload.len() - 4..].try_into().expect("len")) as u64;
    let (stream, limit, what) = match compression {
        Compression::None => (payload, MAX_KERNEL_BYTES, KERNEL_BOUND),
        _ if declared > MAX_KERNEL_BYTES => {
            return Err(bz(
                end - 4,
                format!(
                    "declares a {} payload of {declared} bytes: more than {KERNEL_BOUND}",
                    compression.name()
                ),
            ))
        }
        _ => (
            &payload[..payload.len() - 4],
            declared,
            "the size the bzImage declares",
        ),
    };
    let d = decompress_elf(compression, stream, limit, what).map_err(|r| (Some(start), r))?;
    if compression != Compression::None && d.stream_len != declared {
        return Err(bz(
            end - 4,
            format!(
                "{} payload gave {} bytes, the bzImage declares {declared}",
                compression.name(),
                d.stream_len
            ),
        ));
    }
    Ok((version, compression, d))
}

/// Reads an ELF64 x86-64 PV kernel image.
pub fn parse_elf(bytes: &[u8], input: &str) -> Result<ParsedKernel, LoadError> {
    let err = |offset: Option<u64>, reason: Reason| LoadError::new(input, offset, reason);
    if bytes.len() < 64 {
        return Err(err(
            None,
            Reason::Truncated(format!("ELF header needs 64 bytes, have {}", bytes.len())),
        ));
    }
    if bytes.get(4) != Some(&2) {
        return Err(err(
            Some(4),
            Reason::NotPv("32-bit ELF (only 64-bit PV kernels are supported)".into()),
        ));
    }
    check_entry_sizes(bytes).map_err(|(o, r)| err(Some(o), r))?;
    let elf = Elf::parse(bytes).map_err(|e| err(None, Reason::Elf(e.to_string())))?;
    if elf.header.e_machine != goblin::elf::header::EM_X86_64 {
        return Err(err(
            Some(0x12),
            Reason::NotPv(format!("machine {} is not x86-64", elf.header.e_machine)),
        ));
    }

    let mut notes = XenNotes::default();
    let mut found = false;
    for ph in elf.program_headers.iter() {
        if ph.p_type != program_header::PT_NOTE || ph.p_offset == 0 {
            continue;
        }
        found |= read_notes(bytes, ph.p_offset, ph.p_filesz, &mut notes)
            .map_err(|(o, r)| err(Some(o), r))?;
    }
    if !found {
        for sh in elf.section_headers.iter() {
            if sh.sh_type == section_header::SHT_NOTE {
                found |= read_notes(bytes, sh.sh_offset, sh.sh_size, &mut notes)
                    .map_err(|(o, r)| err(Some(o), r))?;
            }
        }
    }
    if !found {
        let legacy = elf
            .section_headers
            .iter()
            .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some("__xen_guest"));
        match legacy {
            Some(sh) => {
                let text = slice(bytes, sh.sh_offset, sh.sh_size).ok_or_else(|| {
                    err(
                        Some(sh.sh_offset),
                        Reason::Truncated("__xen_guest section past the end".into()),
                    )
                })?;
                notes = XenNotes::from_legacy(&String::from_utf8_lossy(text))
                    .map_err(|r| err(Some(sh.sh_offset), r))?;
            }
            None if notes.phys32_entry.is_some() => {
                return Err(err(
                    None,
                    Reason::NotPv("PVH-only kernel (PHYS32_ENTRY but no PV notes)".into()),
                ))
            }
            None => {
                return Err(err(
                    None,
                    Reason::NotPv("no Xen ELF notes and no __xen_guest section".into()),
                ))
            }
        }
    }
    check_pv(&notes).map_err(|r| err(None, r))?;

    // PT_LOADs that libelf loads: any of R/W/X set. They must be in order and not overlap.
    let mut segments = Vec::new();
    let mut last_end = 0u64;
    for (i, ph) in elf.program_headers.iter().enumerate() {
        if ph.p_type != program_header::PT_LOAD || ph.p_flags & 7 == 0 {
            continue;
        }
        let ph_off = elf.header.e_phoff + i as u64 * elf.header.e_phentsize as u64;
        let end = ph.p_paddr.checked_add(ph.p_memsz).ok_or_else(|| {
            err(
                Some(ph_off),
                Reason::Elf(format!(
                    "PT_LOAD {i}: paddr {:#x} + memsz {:#x} runs past the end of the address space",
                    ph.p_paddr, ph.p_memsz
                )),
            )
        })?;
        if ph.p_filesz > ph.p_memsz || slice(bytes, ph.p_offset, ph.p_filesz).is_none() {
            return Err(err(
                Some(ph_off),
                Reason::Elf(format!(
                    "PT_LOAD {i}: file bytes {:#x}+{:#x} (memsz {:#x}) outside the file",
                    ph.p_offset, ph.p_filesz, ph.p_memsz
                )),
            ));
        }
        if !segments.is_empty() && ph.p_paddr < last_end {
            return Err(err(Some(ph_off), Reason::Elf(format!(
                "PT_LOAD {i} at paddr {:#x} overlaps or precedes the previous one (ending {last_end:#x})", ph.p_paddr
            ))));
        }
        last_end = end;
        segments.push(LoadSegment {
            dest: 0,
            paddr: ph.p_paddr,
            offset: ph.p_offset,
            filesz: ph.p_filesz,
            memsz: ph.p_memsz,
        });
    }
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return Err(err(None, Reason::Elf("no loadable PT_LOAD segment".into())));
    };
    let pstart = first.paddr;
    let pend = last.paddr + last.memsz;

    let virt_base = notes.virt_base.unwrap_or(0);
    if !virt_base.is_multiple_of(4096) {
        return Err(err(
            None,
            Reason::Note(format!(
                "VIRT_BASE {virt_base:#x} is not page aligned: the initial region starts on a page"
            )),
        ));
    }
    let paddr_offset = notes.paddr_offset.unwrap_or(0);
    let virt_offset = virt_base.wrapping_sub(paddr_offset);
    let virt_kstart = pstart.wrapping_add(virt_offset);
    let virt_kend = pend.wrapping_add(virt_offset);
    let entry = notes.entry.unwrap_or(elf.header.e_entry);
    if !(virt_base <= virt_kstart && virt_kstart <= entry && entry <= virt_kend) {
        return Err(err(None, Reason::Note(format!(
            "addresses fail libelf's check virt_base {virt_base:#x} <= kernel start {virt_kstart:#x} \
             <= entry {entry:#x} <= kernel end {virt_kend:#x}"
        ))));
    }
    if let Some(p2m) = notes.init_p2m {
        if p2m >= virt_kstart && p2m < virt_kend {
            return Err(err(
                None,
                Reason::Note(format!(
                    "INIT_P2M {p2m:#x} lies inside the kernel [{virt_kstart:#x}, {virt_kend:#x})"
                )),
            ));
        }
    }
    for s in &mut segments {
        s.dest = virt_kstart + (s.paddr - pstart);
    }
    Ok(ParsedKernel {
        container: Container::Elf,
        elf: Vec::new(),
        trailing: 0,
        notes,
        virt_base,
        paddr_offset,
        virt_kstart,
        virt_kend,
        entry,
        segments,
    })
}

/// An ELF64 program header is 56 bytes and a section header 64: other entry sizes would make
/// the tables be read at the wrong offsets (when there are entries at all).
fn check_entry_sizes(b: &[u8]) -> Result<(), (u64, Reason)> {
    let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    if phnum > 0 && phentsize != 56 {
        return Err((
            0x36,
            Reason::Elf(format!(
                "e_phentsize is {phentsize}: an ELF64 program header is 56 bytes"
            )),
        ));
    }
    let (shentsize, shnum) = (u16_at(0x3A), u16_at(0x3C));
    if shnum > 0 && shentsize != 64 {
        return Err((
            0x3A,
            Reason::Elf(format!(
                "e_shentsize is {shentsize}: an ELF64 section header is 64 bytes"
            )),
        ));
    }
    Ok(())
}

fn slice(bytes: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let end = off.checked_add(len)?;
    bytes.get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)
}

/// Reads the notes in `[off, off+len)`; returns whether any was named "Xen".
fn read_notes(
    bytes: &[u8],
    off: u64,
    len: u64,
    notes: &mut XenNotes,
) -> Result<bool, (u64, Reason)> {
    let area = slice(bytes, off, len).ok_or_else(|| {
        (
            off,
            Reason::Truncated(format!("note area {off:#x}+{len:#x} past the end")),
        )
    })?;
    let mut at = 0usize;
    let mut found = false;
    let u32_at = |a: usize| {
        area.get(a..a + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("len")))
    };
    while at < area.len() {
        let here = off + at as u64;
        let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8))
        else {
            return Err((here, Reason::Note("note header truncated".into())));
        };
        let name_start = at + 12;
        let desc_start = name_start.checked_add((namesz as usize).div_ceil(4) * 4);
        let next = desc_start.and_then(|d| d.checked_add((descsz as usize).div_ceil(4) * 4));
        let (Some(desc_start), Some(next)) = (desc_start, next) else {
            return Err((
                here,
                Reason::Note(format!(
                    "note type {ty}: name {namesz} + payload {descsz} bytes run past the note area"
                )),
            ));
        };
        if desc_start + descsz as usize > area.len() {
            return Err((
                here,
                Reason::Note(format!(
                    "note type {ty}: name {namesz} + payload {descsz} bytes run past the note area"
                )),
            ));
        }
        let name = &area[name_start..name_start + namesz as usize];
        if name.strip_suffix(b"\0").unwrap_or(name) == b"Xen" {
            found = true;
            notes
                .add(ty, &area[desc_start..desc_start + descsz as usize])
                .map_err(|r| (here, r))?;
        } else if name.strip_suffix(b"\0").unwrap_or(name) == PVKEXEC_NOTE_NAME
            && ty == PVKEXEC_NOTE_PLAN_SLOT
        {
            let desc = &area[desc_start..desc_start + descsz as usize];
            let slot: [u8; 8] = desc.try_into().map_err(|_| {
                (
                    here,
                    Reason::Note(format!("PVKEXEC plan-slot note has {descsz} bytes, want 8")),
                )
            })?;
            notes.plan_slot = Some(u64::from_le_bytes(slot));
        }
        at = next;
    }
    Ok(found)
}

/// libelf's acceptance rules for a PV guest, plus what a PV domain can be given.
fn check_pv(notes: &XenNotes) -> Result<(), Reason> {
    match notes.xen_version.as_deref() {
        Some(v) if v.starts_with("xen-3.0") => {}
        Some(v) => {
            return Err(Reason::NotPv(format!(
                "XEN_VERSION {v:?} does not start with \"xen-3.0\""
            )))
        }
        None if notes.phys32_entry.is_some() => {
            return Err(Reason::NotPv(
                "PVH-only kernel (PHYS32_ENTRY without XEN_VERSION)".into(),
            ))
        }
        None => return Err(Reason::NotPv("no XEN_VERSION note".into())),
    }
    let linux = notes
        .guest_os
        .as_deref()
        .is_some_and(|g| g.starts_with("linux"));
    let generic = notes
        .loader
        .as_deref()
        .is_some_and(|l| l.starts_with("generic"));
    if !linux && !generic {
        return Err(Reason::NotPv(format!(
            "GUEST_OS {:?} is not linux and LOADER {:?} is not generic",
            notes.guest_os, notes.loader
        )));
    }
    if let Some(f) = notes
        .features
        .iter()
        .find(|f| f.required && UNPROVIDABLE_FEATURES.contains(&f.bit))
    {
        return Err(Reason::NotPv(format!(
            "requires feature {} that a PV domain cannot have",
            f.name
        )));
    }
    if notes.bsd_symtab {
        return Err(Reason::Note(
            "BSD_SYMTAB (symbols loaded after the image) is not supported".into(),
        ));
    }
    Ok(())
}
