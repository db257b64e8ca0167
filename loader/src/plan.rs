//! From files to a plan, and the plan's text and JSON forms (what `pvkexec plan` prints).

use crate::error::{LoadError, Reason};
use crate::kernel::{parse_kernel, Container, ParsedKernel};
use pvlayout::{InitrdPlacement, Mode, Plan, PlanRequest};
use serde_json::{json, Value};
use std::path::Path;

/// Reads a file, naming it in the error.
pub fn read_input(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path)
        .map_err(|e| LoadError::new(&path.display().to_string(), None, Reason::Io(e.to_string())))
}

/// An initrd as the builder of `mode` places it: Xen's dom0 builder takes the file as it is;
/// libxenguest gunzips a gzip'd module for a domU into `ISIZE + 16` bytes (falling back to the
/// raw file when that fails, as libxenguest does).
pub struct PlacedModule<'a> {
    pub bytes: std::borrow::Cow<'a, [u8]>,
    /// Bytes the builder allocates for it (`bytes` may be shorter; the rest is zero).
    pub len: u64,
}

/// Which libxenguest builds the domU: they differ in how they place a gzip'd initrd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DomuBuilder {
    /// Up to Xen 4.19: a gzip'd module is gunzipped (`ISIZE + 16` bytes placed).
    #[default]
    Xen417,
    /// Xen 4.20 and later (commit d17b7562d4 "Don't gunzip the guests initrd"): every module
    /// is placed as it is.
    Xen420,
}

/// [`placed_module_for`] with the default builder (Xen 4.17's).
pub fn placed_module(blob: &[u8], mode: Mode) -> PlacedModule<'_> {
    placed_module_for(blob, mode, DomuBuilder::default())
}

pub fn placed_module_for(blob: &[u8], mode: Mode, builder: DomuBuilder) -> PlacedModule<'_> {
    let raw = |len| PlacedModule {
        bytes: std::borrow::Cow::Borrowed(blob),
        len,
    };
    if mode == Mode::Dom0 || builder == DomuBuilder::Xen420 {
        return raw(blob.len() as u64);
    }
    let len = pvlayout::domu_module_len(blob);
    if len == blob.len() as u64 && !blob.starts_with(&[0x1f, 0x8b]) {
        return raw(len);
    }
    // Bounded by the allocation: more output than `len` fails, as libxenguest's gunzip does.
    let mut out = Vec::new();
    let gunzipped = std::io::Read::read_to_end(
        &mut std::io::Read::take(flate2::read::GzDecoder::new(blob), len + 1),
        &mut out,
    );
    match gunzipped {
        Ok(n) if n as u64 <= len => PlacedModule {
            bytes: std::borrow::Cow::Owned(out),
            len,
        },
        _ => raw(len),
    }
}

/// Plans `kernel` for a domain of `nr_pages` with an optional initrd length.
pub fn plan_kernel(
    input: &str,
    kernel: &ParsedKernel,
    initrd_len: Option<u64>,
    nr_pages: u64,
    mode: Mode,
    trampoline: Option<u64>,
) -> Result<Plan, LoadError> {
    if mode == Mode::Dom0 && !kernel.supports_dom0() {
        return Err(LoadError::new(
            input,
            None,
            Reason::Layout(
                "SUPPORTED_FEATURES lacks XENFEAT_dom0: Xen refuses it as the initial domain"
                    .into(),
            ),
        ));
    }
    let req = PlanRequest {
        kernel: kernel.layout_info(),
        initrd_len: initrd_len.filter(|&l| l > 0),
        nr_pages,
        mode,
        trampoline,
    };
    let plan = pvlayout::plan(&req).map_err(|e| LoadError::new(input, None, Reason::Plan(e)))?;
    if let Some(hp) = kernel.notes.hypercall_page {
        if hp < plan.region.start || hp >= plan.region.end {
            return Err(LoadError::new(
                input,
                None,
                Reason::Layout(format!(
                    "HYPERCALL_PAGE {hp:#x} lies outside the initial region"
                )),
            ));
        }
    }
    Ok(plan)
}

/// Parses the kernel file and plans it.
pub fn plan_files(
    kernel_path: &Path,
    initrd_path: Option<&Path>,
    mem_mib: u64,
    mode: Mode,
) -> Result<(ParsedKernel, Plan), LoadError> {
    plan_files_for(
        kernel_path,
        initrd_path,
        mem_mib,
        mode,
        DomuBuilder::default(),
    )
}

/// [`plan_files`] for a domU built by `builder`.
pub fn plan_files_for(
    kernel_path: &Path,
    initrd_path: Option<&Path>,
    mem_mib: u64,
    mode: Mode,
    builder: DomuBuilder,
) -> Result<(ParsedKernel, Plan), LoadError> {
    let name = kernel_path.display().to_string();
    let kernel = parse_kernel(&name, &read_input(kernel_path)?)?;
    let gunzips = mode == Mode::DomU && builder == DomuBuilder::Xen417;
    let initrd_len = match (initrd_path, gunzips) {
        (Some(p), false) => Some(
            std::fs::metadata(p)
                .map_err(|e| {
                    LoadError::new(&p.display().to_string(), None, Reason::Io(e.to_string()))
                })?
                .len(),
        ),
        // libxenguest sizes a gzip'd module by its trailer: the file is needed.
        (Some(p), true) => Some(pvlayout::domu_module_len(&read_input(p)?)),
        (None, _) => None,
    };
    let nr_pages = mem_mib.checked_mul(256).ok_or_else(|| {
        LoadError::new(
            "--mem-mib",
            None,
            Reason::Layout("memory size overflows".into()),
        )
    })?;
    let plan = plan_kernel(&name, &kernel, initrd_len, nr_pages, mode, None)?;
    Ok((kernel, plan))
}

fn container_name(c: Container) -> String {
    match c {
        Container::Elf => "elf".into(),
        Container::GzipElf => "gzip-elf".into(),
        Container::BzImage {
            version,
            compression,
        } => format!(
            "bzimage-{}.{:02}-{}",
            version >> 8,
            version & 0xFF,
            compression.name()
        ),
    }
}

/// Human-readable report: Xen's arrangement block, start_info fields, kernel notes.
pub fn render_text(kernel: &ParsedKernel, plan: &Plan) -> String {
    let mut s = plan.render_xen_arrangement();
    let si = &plan.start_info_fields;
    s.push_str("START INFO:\n");
    s.push_str(&format!(" magic:         {}\n", si.magic));
    s.push_str(&format!(" address (rsi): {:#018x}\n", si.address));
    s.push_str(&format!(" nr_pages:      {:#x}\n", si.nr_pages));
    s.push_str(&format!(" flags:         {:#x}\n", si.flags));
    s.push_str(&format!(" pt_base:       {:#018x}\n", si.pt_base));
    s.push_str(&format!(" nr_pt_frames:  {:#x}\n", si.nr_pt_frames));
    s.push_str(&format!(" mfn_list:      {:#018x}\n", si.mfn_list));
    s.push_str(&format!(" mod_start:     {:#x}\n", si.mod_start));
    s.push_str(&format!(" mod_len:       {:#x}\n", si.mod_len));
    s.push_str(&format!(" first_p2m_pfn: {:#x}\n", si.first_p2m_pfn));
    match si.nr_p2m_frames {
        Some(n) => s.push_str(&format!(" nr_p2m_frames: {n:#x}\n")),
        None => s.push_str(" nr_p2m_frames: decided by Xen at run time\n"),
    }
    s.push_str(&format!(" rsp:           {:#018x}\n", plan.rsp));
    s.push_str("KERNEL:\n");
    s.push_str(&format!(
        " container:     {}\n",
        container_name(kernel.container)
    ));
    s.push_str(&format!(" virt_base:     {:#018x}\n", kernel.virt_base));
    s.push_str(&format!(" paddr_offset:  {:#x}\n", kernel.paddr_offset));
    let n = &kernel.notes;
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v:#x}"));
    s.push_str(&format!(
        " notes:         {}\n",
        if n.legacy {
            "__xen_guest (legacy)"
        } else {
            "ELF notes"
        }
    ));
    s.push_str(&format!(
        " GUEST_OS:      {}\n",
        n.guest_os.as_deref().unwrap_or("-")
    ));
    s.push_str(&format!(
        " LOADER:        {}\n",
        n.loader.as_deref().unwrap_or("-")
    ));
    s.push_str(&format!(
        " XEN_VERSION:   {}\n",
        n.xen_version.as_deref().unwrap_or("-")
    ));
    s.push_str(&format!(
        " PAE_MODE:      {}\n",
        n.pae_mode.as_deref().unwrap_or("-")
    ));
    s.push_str(&format!(" HYPERCALL_PAGE:{}\n", opt(n.hypercall_page)));
    s.push_str(&format!(" INIT_P2M:      {}\n", opt(n.init_p2m)));
    s.push_str(&format!(" MOD_START_PFN: {}\n", opt(n.mod_start_pfn)));
    s.push_str(&format!(
        " SUPPORTED_FEATURES: {}\n",
        n.supported_features
            .map_or("-".into(), |v| format!("{v:#x}"))
    ));
    let feats: Vec<String> = n
        .features
        .iter()
        .map(|f| format!("{}{}", if f.required { "!" } else { "" }, f.name))
        .collect();
    s.push_str(&format!(" FEATURES:      {}\n", feats.join("|")));
    let types: Vec<String> = n.raw.iter().map(|(t, _)| t.to_string()).collect();
    s.push_str(&format!(" note types:    {}\n", types.join(",")));
    if !plan.builder_log.is_empty() {
        s.push_str("DOMAIN BUILDER (libxenguest's xl -vvv lines):\n");
        for l in &plan.builder_log {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

/// The same as one JSON object. Field names are stable (docs/plan-json.md).
pub fn render_json(kernel: &ParsedKernel, plan: &Plan) -> Value {
    let range = |r: pvlayout::Range| json!({"start": r.start, "end": r.end});
    let si = &plan.start_info_fields;
    let initrd = match plan.initrd {
        None => Value::Null,
        Some(InitrdPlacement::Mapped(r)) => json!({"mapped": true, "start": r.start, "end": r.end}),
        Some(InitrdPlacement::Unmapped { pfn }) => json!({"mapped": false, "pfn": pfn}),
    };
    let n = &kernel.notes;
    json!({
        "mode": match plan.mode { Mode::Dom0 => "dom0", Mode::DomU => "domu" },
        "region": range(plan.region),
        "kernel": range(plan.kernel),
        "initrd": initrd,
        "p2m": {"start": plan.p2m.start, "end": plan.p2m.end, "relocated": plan.p2m_relocated},
        "start_info_area": range(plan.start_info),
        "xenstore": plan.xenstore,
        "console": plan.console,
        "page_tables": range(plan.page_tables),
        "table_frames": plan.table_frames.iter().map(|f| json!({
            "level": f.level, "pfn": f.pfn, "covers": range(f.covers)
        })).collect::<Vec<_>>(),
        "stack": range(plan.stack),
        "builder_log": plan.builder_log,
        "registers": {"rip": plan.entry, "rsi": si.address, "rsp": plan.rsp},
        "start_info": {
            "address": si.address, "magic": si.magic, "nr_pages": si.nr_pages, "flags": si.flags,
            "pt_base": si.pt_base, "nr_pt_frames": si.nr_pt_frames, "mfn_list": si.mfn_list,
            "mod_start": si.mod_start, "mod_len": si.mod_len, "first_p2m_pfn": si.first_p2m_pfn,
            "nr_p2m_frames": si.nr_p2m_frames,
        },
        "notes": {
            "container": container_name(kernel.container),
            "virt_base": kernel.virt_base, "paddr_offset": kernel.paddr_offset,
            "virt_kstart": kernel.virt_kstart, "virt_kend": kernel.virt_kend, "entry": kernel.entry,
            "legacy": n.legacy, "guest_os": n.guest_os, "loader": n.loader,
            "xen_version": n.xen_version, "pae_mode": n.pae_mode,
            "hypercall_page": n.hypercall_page, "init_p2m": n.init_p2m,
            "mod_start_pfn": n.mod_start_pfn, "supported_features": n.supported_features,
            "features": n.features.iter().map(|f| json!({"name": f.name, "required": f.required})).collect::<Vec<_>>(),
            "types": n.raw.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        },
    })
}
