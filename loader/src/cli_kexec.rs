//! The running-kernel commands of `pvkexec` (`load`, `exec`, `unload`, `status`) and the
//! kexec-tools spelling (`kexec -l K --initrd=I --append=S`, `kexec -e`, `kexec -u`), talking
//! to the pvkexec module through [`crate::device`]. The module tells the facts of the running
//! domain (domU or initial domain, frames, VCPUs, vcpu_info placement), so the user passes no
//! `--old-*` or `--mem-mib` flags: the image is built the way `pvkexec build` builds it.

use crate::device::{Device, DeviceError, Info, LoadParams, ABI_VERSION};
use crate::input::{open_checked, read_checked, Role, MAX_KERNEL_BYTES};
use crate::linux::OldKernel;
use std::path::{Path, PathBuf};

/// How a command failed: the message for the user and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

/// Exit codes: 1 refused or failed (nothing changed), 2 usage, 3 bad input file.
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_BAD_INPUT: u8 = 3;

impl CliError {
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_REFUSED,
        }
    }
}

impl From<DeviceError> for CliError {
    fn from(e: DeviceError) -> Self {
        CliError::refused(e.to_string())
    }
}

impl From<crate::LoadError> for CliError {
    fn from(e: crate::LoadError) -> Self {
        CliError {
            message: e.to_string(),
            code: EXIT_BAD_INPUT,
        }
    }
}

/// Where the new kernel's command line comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmdline {
    Given(String),
    /// The running kernel's `/proc/cmdline`.
    Reuse,
}

/// `pvkexec load` / `kexec -l`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadRequest {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: Cmdline,
    /// Load even what the vcpu_info rule says cannot boot.
    pub force: bool,
}

/// Opens the module's device and reads its facts (abi checked).
pub(crate) fn open() -> Result<(Device, Info), CliError> {
    let dev = Device::open(&Device::path())?;
    let info = dev.info()?;
    if info.abi_version != ABI_VERSION {
        return Err(CliError::refused(format!(
            "the loaded pvkexec module speaks ABI {}, this pvkexec {ABI_VERSION}: use the module \
             and CLI of one release",
            info.abi_version
        )));
    }
    Ok((dev, info))
}

/// The running kernel's release (`uname -r`), for messages.
fn running_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What the old (running) kernel left, as the loader's rules take it.
pub fn old_kernel(info: &Info) -> OldKernel {
    OldKernel {
        vcpus: info.online_cpus.max(info.vcpus_up).max(1),
        vcpu_info_registered: info.vcpu_info_placed(),
        xen_resets_vcpus: info.xen_resets_vcpus(),
    }
}

/// Frames kept from the new kernel for the old kernel's VCPUs (as `pvkexec build`: the park
/// area when it ran several, a frame per placed vcpu_info, none when Xen resets VCPUs;
/// docs/smp.md).
pub fn hidden_vcpu_pages(old: OldKernel) -> u64 {
    old.hidden_pages()
}

/// `pvkexec status`: the module's facts and the loaded image.
pub fn status() -> Result<String, CliError> {
    let (_, info) = open()?;
    Ok(render_status(&info, &running_release()))
}

pub fn render_status(info: &Info, release: &str) -> String {
    let (a, b, c) = info.linux_version();
    let mut s = format!(
        "module: pvkexec ABI {} for Linux {a}.{b}.{c}, running {release}\n",
        info.abi_version
    );
    s += &format!(
        "domain: {}\n",
        if info.initial_domain() {
            "initial domain (dom0)"
        } else {
            "domU"
        }
    );
    s += &format!(
        "frames: {} (maximum {}, start_info nr_pages {})\n",
        info.current_pages, info.maximum_pages, info.start_info_pages
    );
    s += &format!(
        "vcpus: {} online, {} up, {} possible\n",
        info.online_cpus, info.vcpus_up, info.possible_cpus
    );
    s += &format!(
        "vcpu_info: {}\n",
        if info.vcpu_info_placed() {
            "placed on every CPU brought up (stock Linux registers it on each; Xen never \
             unregisters it)"
        } else {
            "in shared_info"
        }
    );
    s += &format!(
        "hypervisor: {}\n",
        if info.xen_resets_vcpus() {
            "resets VCPUs and undoes vcpu_info registrations (XENFEAT_vcpu_reset, \
             XENFEAT_vcpu_info_reregister): the other VCPUs are reset, not parked, and a Linux \
             new kernel keeps its CPUs"
        } else {
            "stock (no XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister): the other VCPUs \
             are parked"
        }
    );
    s += &format!(
        "grant table: {}\n",
        match info.gnttab_version {
            0 => "version unknown".to_string(),
            v => format!("v{v}"),
        }
    );
    if info.image_loaded() {
        s += &format!(
            "image: loaded, {} bytes in {} pages, {} segments\n",
            info.image_bytes, info.image_pages, info.image_segments
        );
    } else {
        s += "image: none loaded\n";
    }
    s += &match (info.crash_reserved(), info.crash_loaded()) {
        (_, true) => format!(
            "crash kernel: loaded, {} MiB set aside, the crash kernel gets {} frames; record at \
             mfn {:#x}\n",
            info.crash_pages / 256,
            info.crash_present,
            info.crash_record_mfn
        ),
        (true, false) => format!(
            "crash kernel: {} MiB set aside, no image loaded\n",
            info.crash_pages / 256
        ),
        _ => "crash kernel: none loaded\n".to_string(),
    };
    s += &format!(
        "exec: {}\n",
        if info.exec_supported() {
            "supported"
        } else {
            "not supported by this module yet"
        }
    );
    s
}

/// Reads the kernel's command line for `--reuse-cmdline`.
fn reuse_cmdline() -> Result<String, CliError> {
    std::fs::read_to_string("/proc/cmdline")
        .map(|s| s.trim().to_string())
        .map_err(|e| CliError::refused(format!("/proc/cmdline: cannot read: {e}")))
}

/// `pvkexec load`: builds the image for the running domain and hands it to the module.
/// Refusals change nothing (the module keeps what it had).
pub fn load(req: &LoadRequest) -> Result<String, CliError> {
    let (dev, info) = open()?;
    let mode = if info.initial_domain() {
        pvlayout::Mode::Dom0
    } else {
        pvlayout::Mode::DomU
    };
    let old = checked_old_kernel(&info)?;
    // A ballooned domain: the new kernel gets the frames it has; the old P2M's holes are
    // skipped by the purgatory. Frames ballooned in past the start have no old P2M entry.
    if info.current_pages > info.start_info_pages {
        return Err(CliError::refused(format!(
            "this domain has {} frames but started with {}: frames ballooned in past the \
             start-of-day P2M are not handed over. Nothing was loaded",
            info.current_pages, info.start_info_pages
        )));
    }
    let domain_pages = info.current_pages;
    let old_p2m_len = match domain_pages == info.start_info_pages {
        true => 0,
        false => info.start_info_pages,
    };
    let (handoff_version, work_pages) = handoff_for(info.start_info_pages)?;
    let inputs = Inputs::read(req, old, domain_pages)?;
    let mut out = inputs.notes.clone();
    let (built, pool_pages) = inputs.build(mode, domain_pages, old_p2m_len, "")?;
    let params = LoadParams {
        handoff_version,
        work_pages,
        pool_pages,
    };
    dev.load(&built.bytes, params)
        .map_err(|e| load_refused(e, built.bytes.len()))?;
    out += &format!(
        "loaded {}: {} layout for {domain_pages} frames ({} hidden for the old VCPUs), image \
         {} bytes, free pool {pool_pages} frames; command line: {:?}\n",
        inputs.name,
        match mode {
            pvlayout::Mode::Dom0 => "initial-domain",
            _ => "domU",
        },
        hidden_vcpu_pages(old),
        built.bytes.len(),
        inputs.cmdline
    );
    if old_p2m_len != 0 {
        out += &format!(
            "note: ballooned domain: {domain_pages} of the start-of-day P2M's {old_p2m_len} \
             frames are present; the new kernel gets those\n"
        );
    }
    Ok(out)
}

/// The running kernel's VCPUs as the loader's rules take them, refused past what the
/// purgatory parks.
pub(crate) fn checked_old_kernel(info: &Info) -> Result<OldKernel, CliError> {
    let old = old_kernel(info);
    let max_vcpus = pvhandoff::handoff::MAX_VCPUS;
    if u64::from(old.vcpus) > max_vcpus {
        return Err(CliError::refused(format!(
            "this domain has {} VCPUs up; the purgatory parks at most {max_vcpus}",
            old.vcpus
        )));
    }
    Ok(old)
}

/// A load's inputs, read and checked against the running kernel's rules.
pub(crate) struct Inputs {
    pub name: String,
    kernel: crate::ParsedKernel,
    initrd: Option<Vec<u8>>,
    /// The command line after the loader's adjustments.
    pub cmdline: String,
    old: OldKernel,
    /// Notes and warnings for the user.
    pub notes: String,
    /// Kernel and initrd bytes.
    pub bytes: u64,
}

impl Inputs {
    /// Reads kernel and initrd (bounded, memory checked first) and applies the vcpu_info
    /// rule: refused unless `req.force`.
    pub(crate) fn read(
        req: &LoadRequest,
        old: OldKernel,
        domain_pages: u64,
    ) -> Result<Inputs, CliError> {
        let name = req.kernel.display().to_string();
        let kernel_role = Role::Kernel {
            max: MAX_KERNEL_BYTES,
        };
        let initrd_role = Role::Initrd {
            domain_bytes: domain_pages.saturating_mul(4096),
        };
        let (_, kernel_len) = open_checked(&req.kernel, kernel_role)?;
        let initrd_len = match &req.initrd {
            Some(i) => open_checked(i, initrd_role)?.1,
            None => 0,
        };
        check_memory(kernel_len + initrd_len, mem_available())?;
        let cmdline = match &req.cmdline {
            Cmdline::Given(s) => s.clone(),
            Cmdline::Reuse => reuse_cmdline()?,
        };
        let k = crate::parse_kernel(&name, &read_checked(&req.kernel, kernel_role)?)?;
        let adjusted = crate::linux::adjust(&k, &cmdline, old);
        let mut notes = String::new();
        for n in &adjusted.notes {
            notes += &format!("note: {name}: {n}\n");
        }
        if !adjusted.warnings.is_empty() {
            let why = adjusted.warnings.join("; ");
            if !req.force {
                return Err(CliError::refused(format!(
                    "refused to load {name}: the running kernel (Linux {}) placed vcpu_info on \
                     its {} VCPU(s), and Xen allows that registration once per VCPU: {why}. \
                     Nothing was loaded; --force loads it anyway",
                    running_release(),
                    old.vcpus
                )));
            }
            notes += &format!("warning: {name}: loading anyway (--force): {why}\n");
        }
        let initrd = match &req.initrd {
            Some(i) => Some(read_checked(i, initrd_role)?),
            None => None,
        };
        Ok(Inputs {
            name,
            kernel: k,
            initrd,
            cmdline: adjusted.cmdline,
            old,
            notes,
            bytes: kernel_len + initrd_len,
        })
    }

    /// Builds the image for a domain of `domain_pages` present frames (`old_p2m_len`: the old
    /// P2M's length when it has holes, else 0), `extra` appended to the command line.
    pub(crate) fn build(
        &self,
        mode: pvlayout::Mode,
        domain_pages: u64,
        old_p2m_len: u64,
        extra: &str,
    ) -> Result<(crate::image::BuiltImage, u64), CliError> {
        let cmdline = match (self.cmdline.is_empty(), extra.is_empty()) {
            (_, true) => self.cmdline.clone(),
            (true, false) => extra.to_string(),
            (false, false) => format!("{} {extra}", self.cmdline),
        };
        crate::image::build_image_for(&crate::image::BuildRequest {
            input: &self.name,
            kernel: &self.kernel,
            initrd: self.initrd.as_deref(),
            cmdline: &cmdline,
            domain_pages,
            old_p2m_len,
            hidden: crate::image::Hidden {
                vcpu_pages: hidden_vcpu_pages(self.old),
                grant_reserve: 0,
                vcpu_reset: self.old.xen_resets_vcpus,
            },
            mode,
            builder: crate::plan::DomuBuilder::default(),
        })
        .map_err(|e| too_large_or_input(e, domain_pages))
        .and_then(|b| {
            let pool = check_pool_demand(&b.bytes, u64::from(self.old.vcpus), domain_pages)?;
            Ok((b, pool))
        })
    }
}

/// The free pool the image needs (its holes, park area and grant reserve:
/// `pvhandoff::renumber::pool_demand`), which the module allocates at exec (handoff v6: any
/// frames, listed). Refused before anything is loaded when that cannot fit beside the old
/// kernel: more than half the domain's frames (the module also refuses at load what does not
/// fit in half of MemAvailable).
pub(crate) fn check_pool_demand(
    image: &[u8],
    vcpus: u64,
    domain_pages: u64,
) -> Result<u64, CliError> {
    let view = pvhandoff::image::ImageView::parse(image)
        .map_err(|e| CliError::refused(format!("the built image does not parse: {e:?}")))?;
    let demand = pvhandoff::renumber::pool_demand(&view, vcpus).map_err(CliError::refused)?;
    if demand > domain_pages / 2 {
        return Err(CliError::refused(format!(
            "image too large for this domain of {domain_pages} frames: its layout needs {demand} \
             frames of the purgatory's free pool (the new kernel's P2M, page tables and other \
             built pages no segment fills, the park area, the grant reserve), more than half \
             the domain, which the old kernel cannot set aside. Nothing was loaded"
        )));
    }
    Ok(demand)
}

/// The handoff block version the embedded purgatory reads, and the working memory it needs
/// for a domain of `start_info_pages` frames (from version 5: `pvhandoff::handoff::work_pages`).
pub(crate) fn handoff_for(start_info_pages: u64) -> Result<(u32, u64), CliError> {
    use pvhandoff::handoff::{work_pages, HANDOFF_VERSION};
    match (HANDOFF_VERSION, work_pages(start_info_pages)) {
        (6, Some(pages)) => Ok((6, pages)),
        (v, _) => Err(CliError::refused(format!(
            "this pvkexec's purgatory reads handoff version {v}, which the CLI does not prepare \
             for a domain of {start_info_pages} frames"
        ))),
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes (`None`: unknown).
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The module keeps the image (about the size of kernel and initrd) in at most half of
/// MemAvailable, and this process holds the inputs and the image while building: refuse
/// before reading anything when that cannot fit.
pub fn check_memory(inputs: u64, available: Option<u64>) -> Result<(), CliError> {
    let Some(avail) = available else {
        return Ok(());
    };
    if inputs > avail / 2 {
        return Err(CliError::refused(format!(
            "out of memory: kernel and initrd take {} MiB, and the image must fit in half of the \
             {} MiB this domain has available (MemAvailable). Nothing was loaded",
            inputs >> 20,
            avail >> 20
        )));
    }
    Ok(())
}

/// `pvkexec load --image FILE`: a prebuilt image, handed to the module as it is (the module
/// checks its header digest; the purgatory checks the rest against the domain).
pub fn load_image(path: &Path) -> Result<String, CliError> {
    let (dev, info) = open()?;
    let (handoff_version, work_pages) = handoff_for(info.start_info_pages)?;
    let max = info.current_pages.saturating_mul(4096);
    let (_, len) = open_checked(path, Role::Image { max })?;
    check_memory(len, mem_available())?;
    let bytes = read_checked(path, Role::Image { max })?;
    check_vcpu_reset(&bytes, &info)?;
    let vcpus = u64::from(info.online_cpus.max(1));
    let pool_pages = check_pool_demand(&bytes, vcpus, info.current_pages)?;
    let params = LoadParams {
        handoff_version,
        work_pages,
        pool_pages,
    };
    dev.load(&bytes, params)
        .map_err(|e| load_refused(e, bytes.len()))?;
    Ok(format!(
        "loaded {}: {} bytes\n",
        path.display(),
        bytes.len()
    ))
}

/// A prebuilt image made for a hypervisor that resets VCPUs (`pvkexec build --xen-vcpu-reset`)
/// hides nothing for the old kernel's VCPUs: where the module does not report Xen's VCPU reset
/// the purgatory would refuse it only after the old kernel shut down, so it is refused now.
pub(crate) fn check_vcpu_reset(image: &[u8], info: &Info) -> Result<(), CliError> {
    let resets = pvhandoff::image::ImageView::parse(image)
        .ok()
        .and_then(|v| v.plan_record())
        .is_some_and(|p| p.resets_vcpus());
    if resets && !info.xen_resets_vcpus() {
        return Err(CliError::refused(
            "the image was built for a hypervisor that resets VCPUs (pvkexec build \
             --xen-vcpu-reset), and this one does not offer XENFEAT_vcpu_reset and \
             XENFEAT_vcpu_info_reregister (pvkexec status): the purgatory would refuse it. \
             Nothing was loaded",
        ));
    }
    Ok(())
}

/// A layout that does not fit is "too large for the domain"; the rest is bad input.
fn too_large_or_input(e: crate::LoadError, domain_pages: u64) -> CliError {
    if matches!(e.reason, crate::Reason::Layout(_) | crate::Reason::Plan(_)) {
        return CliError::refused(format!(
            "image too large for this domain of {domain_pages} frames: {e}. Nothing was loaded"
        ));
    }
    e.into()
}

pub(crate) fn load_refused(e: DeviceError, len: usize) -> CliError {
    let why = match e.errno() {
        Some(libc::ENOMEM) => format!(
            "out of memory: the module cannot keep the {len}-byte image (it takes at most half \
             of MemAvailable; see the kernel log)"
        ),
        Some(libc::EPERM) => "permission denied: loading needs CAP_SYS_BOOT (root)".into(),
        Some(libc::EBADMSG) => format!(
            "the module refused the {len}-byte image: its header and descriptor table do not \
             match the digest in its purgatory (a corrupted image; the kernel log says more)"
        ),
        Some(libc::EINVAL) | Some(libc::EFBIG) => {
            format!("the module refused the {len}-byte image (the kernel log says why): {e}")
        }
        _ => e.to_string(),
    };
    CliError::refused(format!(
        "{why}. The previously loaded image, if any, is kept"
    ))
}

/// `pvkexec unload`: frees the loaded image (nothing loaded is not an error).
pub fn unload() -> Result<String, CliError> {
    let (dev, _) = open()?;
    match dev.unload() {
        Ok(()) => Ok("unloaded\n".into()),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok("no image was loaded\n".into()),
        Err(e) => Err(e.into()),
    }
}

/// `pvkexec exec`: hands the domain to the loaded image.
pub fn exec() -> Result<String, CliError> {
    let (dev, info) = open()?;
    if !info.image_loaded() {
        return Err(CliError::refused(
            "no image loaded: pvkexec load (or kexec -l) first",
        ));
    }
    // On success the domain is gone: the module hands it over inside kernel_restart().
    match dev.exec() {
        Ok(()) => Ok("exec returned\n".into()),
        Err(e) => Err(CliError::refused(format!(
            "exec refused before anything was shut down (the kernel log says why): {e}; the \
             image stays loaded"
        ))),
    }
}

/// What `kexec ...` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KexecAction {
    Load(LoadRequest),
    /// `kexec KERNEL` with no action: load, then exec.
    LoadExec(LoadRequest),
    Exec,
    Unload,
    /// `kexec -p KERNEL ...`: a crash kernel for panics.
    LoadCrash(crate::cli_kdump::CrashLoadRequest),
    /// `kexec -p -u`.
    UnloadCrash,
    Help,
}

pub const KEXEC_USAGE: &str =
    "usage: kexec -l KERNEL [--initrd=FILE] [--append=S | --command-line=S | --reuse-cmdline] [-s]
       kexec -e | kexec -u | kexec KERNEL [options]  (load, then exec)
       kexec -p KERNEL [--initrd=FILE] [--command-line=S]  (a crash kernel for panics)
       kexec -p -u
pvkexec's kexec-tools spelling for Xen PV guests (needs the pvkexec module).";

fn usage(msg: String) -> CliError {
    CliError {
        message: format!("{msg}\n{KEXEC_USAGE}"),
        code: EXIT_USAGE,
    }
}

/// Parses kexec-tools' options (after argv[0]).
pub fn parse_kexec(args: &[String]) -> Result<KexecAction, CliError> {
    #[derive(PartialEq)]
    enum Act {
        None,
        Load,
        Exec,
        Unload,
    }
    let mut act = Act::None;
    let mut kernel: Option<PathBuf> = None;
    let mut initrd = None;
    let mut cmdline: Option<Cmdline> = None;
    let mut panic = false;
    let mut it = args.iter();
    let set = |act: &mut Act, new: Act, flag: &str| -> Result<(), CliError> {
        if *act != Act::None && *act != new {
            return Err(usage(format!(
                "{flag}: only one of -l, -e and -u at a time"
            )));
        }
        *act = new;
        Ok(())
    };
    let mut set_cmdline = |c: Cmdline, flag: &str| -> Result<(), CliError> {
        if cmdline.replace(c).is_some() {
            return Err(usage(format!(
                "{flag}: give one of --append, --command-line and --reuse-cmdline"
            )));
        }
        Ok(())
    };
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, CliError> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(usage(format!("{flag} needs {what}"))),
            }
        };
        match flag {
            "-l" | "--load" => set(&mut act, Act::Load, flag)?,
            "-e" | "--exec" => set(&mut act, Act::Exec, flag)?,
            "-u" | "--unload" => set(&mut act, Act::Unload, flag)?,
            "-p" | "--load-panic" => panic = true,
            "-s" | "--kexec-file-syscall" => {}
            "-h" | "--help" => return Ok(KexecAction::Help),
            "--initrd" | "--ramdisk" => initrd = Some(PathBuf::from(value("a file")?)),
            "--append" | "--command-line" => set_cmdline(Cmdline::Given(value("a string")?), flag)?,
            "--reuse-cmdline" => set_cmdline(Cmdline::Reuse, flag)?,
            f if f.starts_with('-') => {
                return Err(usage(format!("{f}: not an option pvkexec's kexec takes")))
            }
            k => {
                if kernel.replace(PathBuf::from(k)).is_some() {
                    return Err(usage(format!("{k}: a second kernel")));
                }
            }
        }
    }
    let req = |kernel: Option<PathBuf>| -> Result<LoadRequest, CliError> {
        Ok(LoadRequest {
            kernel: kernel.ok_or_else(|| usage("no kernel given".into()))?,
            initrd: initrd.clone(),
            cmdline: cmdline.clone().unwrap_or(Cmdline::Given(String::new())),
            force: false,
        })
    };
    if panic {
        let crash = |kernel| -> Result<KexecAction, CliError> {
            Ok(KexecAction::LoadCrash(crate::cli_kdump::CrashLoadRequest {
                load: req(kernel)?,
                crash_mib: None,
            }))
        };
        return match act {
            Act::Unload if kernel.is_none() && initrd.is_none() && cmdline.is_none() => {
                Ok(KexecAction::UnloadCrash)
            }
            Act::Unload => Err(usage(
                "-p -u takes no kernel, initrd or command line".into(),
            )),
            Act::Exec => Err(usage(
                "-p -e: a crash kernel runs on a panic, not on request".into(),
            )),
            Act::Load | Act::None => crash(kernel),
        };
    }
    match act {
        Act::Load => Ok(KexecAction::Load(req(kernel)?)),
        Act::None if kernel.is_some() => Ok(KexecAction::LoadExec(req(kernel)?)),
        Act::None => Err(usage("nothing to do".into())),
        Act::Exec | Act::Unload if kernel.is_some() || initrd.is_some() || cmdline.is_some() => {
            Err(usage(
                "-e and -u take no kernel, initrd or command line".into(),
            ))
        }
        Act::Exec => Ok(KexecAction::Exec),
        Act::Unload => Ok(KexecAction::Unload),
    }
}

/// Whether the program was started under the name `kexec` (a symlink to pvkexec).
pub fn invoked_as_kexec(argv0: &str) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "kexec")
}

/// `kexec ...`: runs the parsed action; returns the text to print.
pub fn run_kexec(args: &[String]) -> Result<String, CliError> {
    match parse_kexec(args)? {
        KexecAction::Help => Ok(format!("{KEXEC_USAGE}\n")),
        KexecAction::Load(r) => load(&r),
        KexecAction::LoadExec(r) => {
            let mut out = load(&r)?;
            out += &exec()?;
            Ok(out)
        }
        KexecAction::Exec => exec(),
        KexecAction::Unload => unload(),
        KexecAction::LoadCrash(r) => crate::cli_kdump::load_crash(&r),
        KexecAction::UnloadCrash => crate::cli_kdump::unload_crash(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planner_refusal_stays_typed_and_reads_as_too_large() {
        let e = crate::LoadError::new(
            "k",
            None,
            crate::Reason::Plan(pvlayout::PlanError::TooSmall {
                needed: 2048,
                nr_pages: 1024,
            }),
        );
        let text = e.to_string();
        assert!(text.starts_with("k: layout: "), "{text}");
        let cli = too_large_or_input(e, 1024);
        assert!(
            cli.message
                .starts_with("image too large for this domain of 1024 frames: k: layout: "),
            "{}",
            cli.message
        );
    }

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_pool_demand_is_checked_before_loading() {
        let probe =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest/release/probe");
        let Ok(bytes) = std::fs::read(&probe) else {
            eprintln!("skipped: {} not built (cargo xtask build)", probe.display());
            return;
        };
        let k = crate::parse_kernel("probe", &bytes).unwrap();
        let build = |pages: u64| {
            crate::image::build_image_for(&crate::image::BuildRequest {
                input: "probe",
                kernel: &k,
                initrd: None,
                cmdline: "",
                domain_pages: pages,
                old_p2m_len: 0,
                hidden: crate::image::Hidden {
                    vcpu_pages: 0,
                    grant_reserve: 0,
                    vcpu_reset: false,
                },
                mode: pvlayout::Mode::DomU,
                builder: crate::plan::DomuBuilder::default(),
            })
            .unwrap()
            .bytes
        };
        // 256 MiB: the P2M (128 pages) and tables.
        let small = check_pool_demand(&build(65536), 1, 65536).unwrap();
        assert!(small > 128 && small < 1024, "{small}");
        // 8 GiB: the P2M alone is 4096 pages, more than the 1024-frame block the module gave
        // before handoff v6; now the pool is sized to it.
        let big = build(1 << 21);
        let demand = check_pool_demand(&big, 1, 1 << 21).unwrap();
        assert!(demand > 4096 && demand < 2 * 4096, "{demand}");
        // Two VCPUs add the park area.
        let parked = check_pool_demand(&big, 2, 1 << 21).unwrap();
        assert_eq!(parked, demand + pvhandoff::image::PARK_PAGES);
        // A pool of more than half the domain cannot be set aside.
        let e = check_pool_demand(&big, 1, 2 * demand - 2).unwrap_err();
        assert!(
            e.message.contains("frames of the purgatory's free pool"),
            "{}",
            e.message
        );
        assert!(e.message.contains("more than half"), "{}", e.message);
    }

    #[test]
    fn kexec_tools_spelling() {
        let a = parse_kexec(&args(&[
            "-l",
            "/boot/vmlinuz",
            "--initrd=/boot/initrd",
            "--append=console=hvc0 quiet",
            "-s",
        ]))
        .unwrap();
        assert_eq!(
            a,
            KexecAction::Load(LoadRequest {
                kernel: "/boot/vmlinuz".into(),
                initrd: Some("/boot/initrd".into()),
                cmdline: Cmdline::Given("console=hvc0 quiet".into()),
                force: false,
            })
        );
        let a = parse_kexec(&args(&[
            "-l",
            "k",
            "--command-line",
            "x=1",
            "--ramdisk",
            "i",
        ]))
        .unwrap();
        match a {
            KexecAction::Load(r) => {
                assert_eq!(r.cmdline, Cmdline::Given("x=1".into()));
                assert_eq!(r.initrd, Some("i".into()));
            }
            o => panic!("{o:?}"),
        }
        match parse_kexec(&args(&["-l", "k", "--reuse-cmdline"])).unwrap() {
            KexecAction::Load(r) => assert_eq!(r.cmdline, Cmdline::Reuse),
            o => panic!("{o:?}"),
        }
        assert_eq!(parse_kexec(&args(&["-e"])).unwrap(), KexecAction::Exec);
        assert_eq!(parse_kexec(&args(&["-u"])).unwrap(), KexecAction::Unload);
        assert!(matches!(
            parse_kexec(&args(&["k"])).unwrap(),
            KexecAction::LoadExec(_)
        ));
    }

    #[test]
    fn kdump_tools_spelling() {
        // kdump-config's `kexec -p --command-line="..." --initrd=I K`.
        match parse_kexec(&args(&[
            "-p",
            "--command-line=console=hvc0 nr_cpus=1",
            "--initrd=/boot/i",
            "/boot/k",
        ]))
        .unwrap()
        {
            KexecAction::LoadCrash(r) => {
                assert_eq!(r.load.kernel, PathBuf::from("/boot/k"));
                assert_eq!(r.load.initrd, Some("/boot/i".into()));
                assert_eq!(
                    r.load.cmdline,
                    Cmdline::Given("console=hvc0 nr_cpus=1".into())
                );
                assert_eq!(r.crash_mib, None);
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            parse_kexec(&args(&["-l", "-p", "k"])).unwrap(),
            KexecAction::LoadCrash(_)
        ));
        assert_eq!(
            parse_kexec(&args(&["-p", "-u"])).unwrap(),
            KexecAction::UnloadCrash
        );
    }

    #[test]
    fn kexec_refusals() {
        for bad in [
            &["-p", "-e"][..],
            &["-p", "-u", "k"],
            &["-p"],
            &["-l"][..],
            &["-l", "-e", "k"],
            &["-e", "k"],
            &["--bogus"],
            &[],
            &["-l", "k", "--append=a", "--reuse-cmdline"],
            &["-l", "k", "--initrd"],
        ] {
            let e = parse_kexec(&args(bad)).unwrap_err();
            assert_eq!(e.code, EXIT_USAGE, "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn argv0() {
        assert!(invoked_as_kexec("kexec"));
        assert!(invoked_as_kexec("/sbin/kexec"));
        assert!(!invoked_as_kexec("/usr/bin/pvkexec"));
    }

    #[test]
    fn old_kernel_from_the_module() {
        let info = Info {
            online_cpus: 2,
            vcpus_up: 2,
            flags: crate::device::INFO_VCPU_INFO_PLACED,
            ..Info::default()
        };
        let old = old_kernel(&info);
        assert_eq!(old.vcpus, 2);
        assert!(old.vcpu_info_registered);
        assert_eq!(hidden_vcpu_pages(old), pvhandoff::image::PARK_PAGES + 2);
        let one = old_kernel(&Info {
            online_cpus: 1,
            vcpus_up: 1,
            flags: crate::device::INFO_VCPU_INFO_PLACED,
            ..Info::default()
        });
        assert_eq!(hidden_vcpu_pages(one), 1);
    }

    #[test]
    fn xen_vcpu_reset_from_the_module() {
        use crate::device::{INFO_XEN_VCPU_INFO_REREGISTER, INFO_XEN_VCPU_RESET};
        let stock = Info {
            online_cpus: 2,
            vcpus_up: 2,
            flags: crate::device::INFO_VCPU_INFO_PLACED,
            ..Info::default()
        };
        assert!(!old_kernel(&stock).xen_resets_vcpus);
        // Both features, or it is stock Xen's path.
        for (extra, resets) in [
            (INFO_XEN_VCPU_RESET, false),
            (INFO_XEN_VCPU_INFO_REREGISTER, false),
            (INFO_XEN_VCPU_RESET | INFO_XEN_VCPU_INFO_REREGISTER, true),
        ] {
            let info = Info {
                flags: stock.flags | extra,
                ..stock
            };
            let old = old_kernel(&info);
            assert_eq!(old.xen_resets_vcpus, resets);
            let hidden = if resets {
                0
            } else {
                pvhandoff::image::PARK_PAGES + 2
            };
            assert_eq!(hidden_vcpu_pages(old), hidden);
            let status = render_status(&info, "6.1.0-57-amd64");
            assert_eq!(
                status.contains("hypervisor: resets VCPUs"),
                resets,
                "{status}"
            );
        }
    }

    #[test]
    fn memory_check_refuses_before_reading() {
        assert!(check_memory(100 << 20, Some(256 << 20)).is_ok());
        let e = check_memory(200 << 20, Some(256 << 20)).unwrap_err();
        assert!(e.message.starts_with("out of memory"), "{}", e.message);
        assert_eq!(e.code, EXIT_REFUSED);
        assert!(check_memory(u64::MAX, None).is_ok());
    }

    #[test]
    fn status_names_the_facts() {
        let info = Info {
            abi_version: 3,
            flags: crate::device::INFO_PV | crate::device::INFO_VCPU_INFO_PLACED,
            current_pages: 65536,
            maximum_pages: 65536,
            start_info_pages: 65536,
            possible_cpus: 2,
            online_cpus: 2,
            vcpus_up: 2,
            gnttab_version: 1,
            linux_version: (6 << 16) | (1 << 8) | 192,
            ..Info::default()
        };
        let s = render_status(&info, "6.1.0-57-amd64");
        for want in [
            "domain: domU",
            "frames: 65536",
            "vcpus: 2 online, 2 up, 2 possible",
            "vcpu_info: placed",
            "grant table: v1",
            "image: none loaded",
        ] {
            assert!(s.contains(want), "{want}: {s}");
        }
    }
}
