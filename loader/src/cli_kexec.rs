//! The running-kernel commands of `pvkexec` for the kexec image (`load`, `load --image`,
//! `exec`, `unload`, `status`), talking to the pvkexec module through [`crate::device`]. The
//! module tells the facts of the running domain (domU or initial domain, frames, VCPUs,
//! vcpu_info placement), so the user passes no `--old-*` or `--mem-mib` flags: the image is built
//! the way `pvkexec build` builds it.

use crate::cli_common::{
    check_memory, check_pool_demand, checked_old_kernel, handoff_for, hidden_vcpu_pages,
    load_refused, mem_available, open, running_release, CliError, Inputs, LoadRequest,
};
use crate::device::{Info, LoadParams};
use crate::input::{open_checked, read_checked, Role};
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli_common::old_kernel;

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
