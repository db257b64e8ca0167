//! Xen ELF notes (`xen/include/public/elfnote.h`) and the legacy `__xen_guest` string, read as
//! Xen 4.17's libelf reads them (`libelf-dominfo.c`).

use crate::error::Reason;
use xenpv::consts::elfnote as n;

/// A `FEATURES` entry: a known XENFEAT bit, optional or required (`!name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: String,
    pub bit: u32,
    pub required: bool,
}

/// Everything the notes say, with libelf's defaults applied later by the kernel reader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XenNotes {
    /// Notes seen: `(type, payload bytes)`, in file order (unknown types included).
    pub raw: Vec<(u32, Vec<u8>)>,
    pub entry: Option<u64>,
    pub hypercall_page: Option<u64>,
    pub virt_base: Option<u64>,
    pub paddr_offset: Option<u64>,
    pub xen_version: Option<String>,
    pub guest_os: Option<String>,
    pub guest_version: Option<String>,
    pub loader: Option<String>,
    pub pae_mode: Option<String>,
    pub features: Vec<Feature>,
    pub supported_features: Option<u32>,
    pub bsd_symtab: bool,
    pub hv_start_low: Option<u64>,
    pub l1_mfn_valid: Option<Vec<u8>>,
    pub suspend_cancel: Option<u64>,
    pub init_p2m: Option<u64>,
    pub mod_start_pfn: Option<u64>,
    pub phys32_entry: Option<u64>,
    pub phys32_reloc: bool,
    /// Whether the notes came from the legacy `__xen_guest` section.
    pub legacy: bool,
    /// From a `PVKEXEC` note of type [`PVKEXEC_NOTE_PLAN_SLOT`]: the virtual address of a
    /// 128-byte, file-backed slot into which `pvkexec build` writes the `PlanRecord`, so a
    /// kernel can check what it was handed against the plan (the test probe does).
    pub plan_slot: Option<u64>,
}

/// Note name of pvkexec's own notes.
pub const PVKEXEC_NOTE_NAME: &[u8] = b"PVKEXEC";
/// `PVKEXEC` note type whose payload is the plan slot's address (8 bytes).
pub const PVKEXEC_NOTE_PLAN_SLOT: u32 = 1;

/// XENFEAT names `FEATURES` may use (libelf's `elf_xen_feature_names`).
const FEATURE_NAMES: [(&str, u32); 7] = [
    ("writable_page_tables", 0),
    ("writable_descriptor_tables", 1),
    ("auto_translated_physmap", 2),
    ("supervisor_mode_kernel", 3),
    ("pae_pgdir_above_4gb", 4),
    ("hvm_callback_vector", 8),
    ("dom0", 11),
];

/// Features a 64-bit PV domain cannot be given: requiring one makes the kernel unbootable.
pub const UNPROVIDABLE_FEATURES: [u32; 3] = [2, 3, 8];

fn number(ty: u32, desc: &[u8]) -> Result<u64, Reason> {
    Ok(match desc.len() {
        1 => desc[0] as u64,
        2 => u16::from_le_bytes([desc[0], desc[1]]) as u64,
        4 => u32::from_le_bytes(desc.try_into().expect("length checked")) as u64,
        8 => u64::from_le_bytes(desc.try_into().expect("length checked")),
        len => {
            return Err(Reason::Note(format!(
                "note type {ty}: numeric payload of {len} bytes (1, 2, 4 or 8 expected)"
            )))
        }
    })
}

/// A string payload ends at its first NUL or, as Linux's FEATURES note does, at the end of
/// the payload.
fn string(ty: u32, desc: &[u8]) -> Result<String, Reason> {
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    String::from_utf8(desc[..end].to_vec())
        .map_err(|_| Reason::Note(format!("note type {ty}: string payload is not UTF-8")))
}

/// Parses a `FEATURES` string: names separated by `|`, `!` marks a required one. An unknown
/// required name is an error; an unknown optional name is ignored, as libelf does.
pub fn parse_features(text: &str) -> Result<Vec<Feature>, Reason> {
    let mut out = Vec::new();
    for word in text.split('|').filter(|w| !w.is_empty()) {
        let (required, name) = match word.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        match FEATURE_NAMES.iter().find(|(n, _)| *n == name) {
            Some(&(n, bit)) => out.push(Feature {
                name: n.to_string(),
                bit,
                required,
            }),
            None if required => {
                return Err(Reason::Note(format!(
                    "FEATURES requires unknown feature {name:?}"
                )))
            }
            None => {}
        }
    }
    Ok(out)
}

impl XenNotes {
    /// Records one note of name "Xen".
    pub fn add(&mut self, ty: u32, desc: &[u8]) -> Result<(), Reason> {
        self.raw.push((ty, desc.to_vec()));
        match ty {
            n::ENTRY => self.entry = Some(number(ty, desc)?),
            n::HYPERCALL_PAGE => self.hypercall_page = Some(number(ty, desc)?),
            n::VIRT_BASE => self.virt_base = Some(number(ty, desc)?),
            n::PADDR_OFFSET => self.paddr_offset = Some(number(ty, desc)?),
            n::XEN_VERSION => self.xen_version = Some(string(ty, desc)?),
            n::GUEST_OS => self.guest_os = Some(string(ty, desc)?),
            n::GUEST_VERSION => self.guest_version = Some(string(ty, desc)?),
            n::LOADER => self.loader = Some(string(ty, desc)?),
            n::PAE_MODE => self.pae_mode = Some(string(ty, desc)?),
            n::FEATURES => self.features = parse_features(&string(ty, desc)?)?,
            n::SUPPORTED_FEATURES => {
                let mut bits = 0u32;
                if desc.is_empty() || !desc.len().is_multiple_of(4) {
                    return Err(Reason::Note(format!(
                        "SUPPORTED_FEATURES payload of {} bytes (u32 words expected)",
                        desc.len()
                    )));
                }
                // Only the first word is meaningful to 4.17 (32 feature bits).
                bits |= u32::from_le_bytes(desc[..4].try_into().expect("length checked"));
                self.supported_features = Some(self.supported_features.unwrap_or(0) | bits);
            }
            n::BSD_SYMTAB => self.bsd_symtab = string(ty, desc)?.eq_ignore_ascii_case("yes"),
            n::HV_START_LOW => self.hv_start_low = Some(number(ty, desc)?),
            n::L1_MFN_VALID => self.l1_mfn_valid = Some(desc.to_vec()),
            n::SUSPEND_CANCEL => self.suspend_cancel = Some(number(ty, desc)?),
            n::INIT_P2M => self.init_p2m = Some(number(ty, desc)?),
            n::MOD_START_PFN => self.mod_start_pfn = Some(number(ty, desc)?),
            n::PHYS32_ENTRY => self.phys32_entry = Some(number(ty, desc)?),
            n::PHYS32_RELOC => self.phys32_reloc = true,
            _ => {} // INFO and types newer than this loader: recorded in `raw` only.
        }
        Ok(())
    }

    /// Parses the legacy `__xen_guest` string: comma-separated `NAME=VALUE` pairs.
    pub fn from_legacy(text: &str) -> Result<Self, Reason> {
        let mut notes = XenNotes {
            legacy: true,
            ..Default::default()
        };
        let num = |name: &str, v: &str| {
            parse_c_number(v)
                .ok_or_else(|| Reason::Note(format!("__xen_guest: {name}={v:?} is not a number")))
        };
        let mut hypercall_page_number = None;
        for item in text
            .trim_end_matches('\0')
            .split(',')
            .filter(|s| !s.is_empty())
        {
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            if name.len() >= 32 || value.len() >= 128 {
                return Err(Reason::Note(format!(
                    "__xen_guest: entry {item:?} is too long"
                )));
            }
            match name {
                "GUEST_OS" => notes.guest_os = Some(value.into()),
                "GUEST_VER" => notes.guest_version = Some(value.into()),
                "XEN_VER" => notes.xen_version = Some(value.into()),
                "LOADER" => notes.loader = Some(value.into()),
                "VIRT_BASE" => notes.virt_base = Some(num(name, value)?),
                "VIRT_ENTRY" => notes.entry = Some(num(name, value)?),
                "ELF_PADDR_OFFSET" => notes.paddr_offset = Some(num(name, value)?),
                "HYPERCALL_PAGE" => hypercall_page_number = Some(num(name, value)?),
                "PAE" => notes.pae_mode = Some(value.into()),
                "BSD_SYMTAB" => notes.bsd_symtab = true,
                "FEATURES" => notes.features = parse_features(value)?,
                _ => {}
            }
        }
        // Legacy PADDR_OFFSET defaults to VIRT_BASE; HYPERCALL_PAGE is a page number.
        if notes.paddr_offset.is_none() {
            notes.paddr_offset = notes.virt_base;
        }
        if let Some(page) = hypercall_page_number {
            let va = page
                .checked_mul(4096)
                .and_then(|o| o.checked_add(notes.virt_base.unwrap_or(0)))
                .ok_or_else(|| Reason::Note("__xen_guest: HYPERCALL_PAGE overflows".into()))?;
            notes.hypercall_page = Some(va);
        }
        Ok(notes)
    }
}

/// `strtoull(s, NULL, 0)`: `0x` hex, leading `0` octal, else decimal.
fn parse_c_number(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}
