//! The running-kernel commands of `pvkexec` for the kexec image (`load`, `load --image`,
//! `exec`, `unload`), talking to the pvkexec module through [`crate::device`]. The
//! module tells the facts of the running domain (domU or initial domain, frames, VCPUs,
//! vcpu_info placement), so the user passes no `--old-*` or `--mem-mib` flags: the image is built
//! the way `pvkexec build` builds it.

use crate::cli_common::{
    check_memory, check_pool_demand, checked_old_kernel, handoff_for, hidden_vcpu_pages,
    load_refused, mem_available, open, CliError, Inputs, LoadRequest,
};
use crate::cli_state::{self, Kind, Record};
use crate::cli_system;
use crate::device::{Info, LoadParams};
use crate::input::{open_checked, read_checked, Role};
use std::path::Path;

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
    let mut inputs = Inputs::read(req, old, domain_pages, false)?;
    let mut out = inputs.notes.clone();
    let built = inputs.build(mode, domain_pages, old_p2m_len, "")?;
    let pool_pages = built.pool_pages;
    let bytes = &built.image.bytes;
    // Kernel and initrd are in the image now: only it stays beside the module's copy.
    inputs.release_files();
    let params = LoadParams {
        handoff_version,
        work_pages,
        pool_pages,
    };
    dev.load(bytes, params)
        .map_err(|e| load_refused(e, bytes.len()))?;
    out += &inputs.debug_report(&built);
    out += &format!(
        "loaded {}: {} layout for {domain_pages} frames ({} hidden for the old VCPUs), image \
         {} bytes, free pool {pool_pages} frames; command line: {:?}\n",
        inputs.name,
        match mode {
            pvlayout::Mode::Dom0 => "initial-domain",
            _ => "domU",
        },
        hidden_vcpu_pages(old),
        bytes.len(),
        built.cmdline
    );
    out += &cli_state::record(
        Kind::Kexec,
        Record {
            kernel: Some(cli_state::recorded_path(&inputs.kernel_path)),
            initrd: inputs.initrd_path.as_deref().map(cli_state::recorded_path),
            cmdline: Some(built.cmdline.clone()),
            image_bytes: bytes.len() as u64,
            ..Record::default()
        },
    );
    if old_p2m_len != 0 {
        out += &format!(
            "note: ballooned domain: {domain_pages} of the start-of-day P2M's {old_p2m_len} \
             frames are present; the new kernel gets those\n"
        );
    }
    Ok(out)
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
    let note = cli_state::record(
        Kind::Kexec,
        Record {
            image: Some(cli_state::recorded_path(path)),
            image_bytes: bytes.len() as u64,
            ..Record::default()
        },
    );
    Ok(format!(
        "loaded {}: {} bytes\n{note}",
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

/// `pvkexec unload`: frees the loaded image (nothing loaded is not an error).
pub fn unload() -> Result<String, CliError> {
    let (dev, _) = open()?;
    match dev.unload() {
        Ok(()) => Ok(format!("unloaded\n{}", cli_state::forget(Kind::Kexec))),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(format!(
            "no image was loaded\n{}",
            cli_state::forget(Kind::Kexec)
        )),
        Err(e) => Err(e.into()),
    }
}

/// What `pvkexec exec` / `kexec -e` does before the handover, as kexec-tools does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecSteps {
    /// sync(2) first (kexec-tools: unless `-y`/`--no-sync`).
    pub sync: bool,
    /// Bring the network interfaces down (`kexec -e` and `-f` unless `-x`/`--no-ifdown`;
    /// `pvkexec exec` leaves them to the device shutdown).
    pub ifdown: bool,
}

/// `pvkexec exec`: hands the domain to the loaded image, after the steps asked for.
pub fn exec(steps: ExecSteps) -> Result<String, CliError> {
    let (dev, info) = open()?;
    if !info.image_loaded() {
        return Err(CliError::refused(
            "no image loaded: pvkexec load (or kexec -l) first",
        ));
    }
    if steps.sync {
        cli_system::sync();
    }
    if steps.ifdown {
        // Printed now: a successful exec never returns to print anything.
        for w in cli_system::ifdown() {
            eprintln!("pvkexec: warning: {w}");
        }
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
