//! What the loader must know about a Linux new kernel, given what the old kernel left in the
//! domain: Linux's version (from its `linux_banner`), and the command-line words and warnings
//! that follow from the old kernel's VCPUs.

use crate::kernel::ParsedKernel;

/// What the old kernel did with the domain's VCPUs (the `pvkexec build` options say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OldKernel {
    /// VCPUs the old kernel initialised (1: only the boot VCPU).
    pub vcpus: u32,
    /// Whether it registered `vcpu_info` placement (`VCPUOP_register_vcpu_info`).
    pub vcpu_info_registered: bool,
    /// The hypervisor resets VCPUs that are down and undoes vcpu_info registrations
    /// (pvkexec's Xen patches, `XENFEAT_vcpu_reset` and `XENFEAT_vcpu_info_reregister`): the
    /// purgatory resets the other VCPUs and moves VCPU 0's vcpu_info back to shared_info, so
    /// the new kernel finds what Xen's domain builder leaves (docs/smp.md).
    pub xen_resets_vcpus: bool,
}

impl OldKernel {
    /// Frames kept from the new kernel for the old kernel's VCPUs (docs/smp.md): the park
    /// area when it ran several and a frame per VCPU whose vcpu_info it placed; none when the
    /// hypervisor resets VCPUs.
    pub fn hidden_pages(self) -> u64 {
        if self.xen_resets_vcpus {
            return 0;
        }
        let vcpus = u64::from(self.vcpus.max(1));
        let vcpu_info_frames = if self.vcpu_info_registered { vcpus } else { 0 };
        pvhandoff::renumber::park_pages(vcpus) + vcpu_info_frames
    }
}

/// The command line and notes for a new kernel after `old`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjusted {
    pub cmdline: String,
    /// Lines for the user: what was appended and why.
    pub notes: Vec<String>,
    /// Lines for the user: what will likely go wrong and why.
    pub warnings: Vec<String>,
}

/// Whether the kernel says it is Linux (GUEST_OS note).
pub fn is_linux(k: &ParsedKernel) -> bool {
    k.notes
        .guest_os
        .as_deref()
        .is_some_and(|g| g.eq_ignore_ascii_case("linux"))
}

/// Linux's version from the `Linux version X.Y.Z` banner in its image, if present.
pub fn linux_version(k: &ParsedKernel) -> Option<(u32, u32, u32)> {
    const BANNER: &[u8] = b"Linux version ";
    let at = k.elf.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let text: Vec<u8> = k.elf[at..]
        .iter()
        .take(32)
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .copied()
        .collect();
    let text = std::str::from_utf8(&text).ok()?;
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Adjusts `cmdline` for a Linux new kernel after `old`: Linux BUG()s when
/// `VCPUOP_initialise` returns -EEXIST for a VCPU it brings up, so with VCPUs the old kernel
/// initialised it gets `nr_cpus=1` (unless the line already limits CPUs). Xen refuses a second
/// `vcpu_info` registration for a VCPU whose `vcpu_info` the old kernel placed: Linux 5.16 and
/// later panic, earlier ones fall back to a slot Xen no longer updates. Both get a warning.
/// A hypervisor that resets VCPUs (`old.xen_resets_vcpus`) leaves neither: Linux keeps its
/// CPUs and registers vcpu_info as on a fresh domain.
pub fn adjust(k: &ParsedKernel, cmdline: &str, old: OldKernel) -> Adjusted {
    let mut out = Adjusted {
        cmdline: cmdline.to_string(),
        notes: Vec::new(),
        warnings: Vec::new(),
    };
    if !is_linux(k) || old.xen_resets_vcpus {
        return out;
    }
    let limited = cmdline
        .split_whitespace()
        .any(|w| w.starts_with("nr_cpus=") || w.starts_with("maxcpus=") || w == "nosmp");
    if old.vcpus > 1 && !limited {
        if !out.cmdline.is_empty() {
            out.cmdline.push(' ');
        }
        out.cmdline.push_str("nr_cpus=1");
        out.notes.push(format!(
            "appended nr_cpus=1: the old kernel initialised {} VCPUs, and Linux BUG()s when \
             VCPUOP_initialise returns -EEXIST for a VCPU it brings up",
            old.vcpus
        ));
    }
    if old.vcpu_info_registered {
        match linux_version(k) {
            Some(v) if v >= (5, 16, 0) => out.warnings.push(format!(
                "Linux {}.{}.{} panics when VCPUOP_register_vcpu_info fails, and Xen refuses it \
                 for the VCPUs whose vcpu_info the old kernel placed: expect this kernel to stop \
                 early (use an old kernel that does not register vcpu_info, or Linux before 5.16)",
                v.0, v.1, v.2
            )),
            Some(v) => out.warnings.push(format!(
                "Linux {}.{}.{} falls back to shared_info's vcpu_info slot when \
                 VCPUOP_register_vcpu_info fails, but Xen keeps updating the area the old kernel \
                 registered: this kernel's clock stands still (measured: Linux 5.10 stops in a soft lockup)",
                v.0, v.1, v.2
            )),
            None => out.warnings.push(
                "the old kernel registered vcpu_info and this Linux's version is unknown: Linux \
                 5.16 and later panic when that registration fails"
                    .to_string(),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Container;

    fn kernel(guest_os: &str, banner: &[u8]) -> ParsedKernel {
        let notes = crate::notes::XenNotes {
            guest_os: Some(guest_os.into()),
            ..Default::default()
        };
        ParsedKernel {
            container: Container::Elf,
            elf: [b"\0junk".as_slice(), banner, b"\0more"].concat(),
            notes,
            virt_base: 0,
            paddr_offset: 0,
            virt_kstart: 0,
            virt_kend: 0,
            entry: 0,
            segments: Vec::new(),
            trailing: 0,
        }
    }

    #[test]
    fn version_from_the_banner() {
        let k = kernel("linux", b"Linux version 6.12.117+deb13-amd64 (x)");
        assert_eq!(linux_version(&k), Some((6, 12, 117)));
        assert_eq!(
            linux_version(&kernel("linux", b"Linux version 5.16 (x)")),
            Some((5, 16, 0))
        );
        assert_eq!(linux_version(&kernel("linux", b"no banner")), None);
    }

    #[test]
    fn nr_cpus_only_for_linux_after_several_vcpus() {
        let k = kernel("linux", b"Linux version 6.1.0 (x)");
        let two = OldKernel {
            vcpus: 2,
            vcpu_info_registered: false,
            xen_resets_vcpus: false,
        };
        let a = adjust(&k, "console=hvc0", two);
        assert_eq!(a.cmdline, "console=hvc0 nr_cpus=1");
        assert_eq!(a.notes.len(), 1);
        assert!(a.warnings.is_empty());
        assert_eq!(adjust(&k, "maxcpus=2", two).cmdline, "maxcpus=2");
        let one = OldKernel {
            vcpus: 1,
            vcpu_info_registered: false,
            xen_resets_vcpus: false,
        };
        assert_eq!(adjust(&k, "x", one).cmdline, "x");
        let other = kernel("pvkexec-test", b"");
        assert_eq!(adjust(&other, "x", two).cmdline, "x");
    }

    #[test]
    fn vcpu_info_warning_for_every_linux_version() {
        let reg = OldKernel {
            vcpus: 1,
            vcpu_info_registered: true,
            xen_resets_vcpus: false,
        };
        let new = kernel("linux", b"Linux version 5.16.0 (x)");
        assert_eq!(adjust(&new, "", reg).warnings.len(), 1);
        let old = kernel("linux", b"Linux version 5.15.9 (x)");
        let w = adjust(&old, "", reg).warnings;
        assert!(w.len() == 1 && w[0].contains("falls back"), "{w:?}");
        let unregistered = OldKernel {
            vcpus: 1,
            vcpu_info_registered: false,
            xen_resets_vcpus: false,
        };
        assert!(adjust(&new, "", unregistered).warnings.is_empty());
        let unknown = kernel("linux", b"");
        assert_eq!(adjust(&unknown, "", reg).warnings.len(), 1);
    }

    #[test]
    fn a_hypervisor_that_resets_vcpus_takes_every_linux_with_its_cpus() {
        let stock = OldKernel {
            vcpus: 4,
            vcpu_info_registered: true,
            xen_resets_vcpus: false,
        };
        let patched = OldKernel {
            xen_resets_vcpus: true,
            ..stock
        };
        for banner in [
            b"Linux version 6.1.0 (x)".as_slice(),
            b"Linux version 5.10.0 (x)",
            b"",
        ] {
            let k = kernel("linux", banner);
            let a = adjust(&k, "console=hvc0", patched);
            assert_eq!(a.cmdline, "console=hvc0");
            assert!(a.notes.is_empty() && a.warnings.is_empty(), "{a:?}");
            // Stock Xen: as before, nr_cpus=1 and the vcpu_info warning.
            let a = adjust(&k, "console=hvc0", stock);
            assert_eq!(a.cmdline, "console=hvc0 nr_cpus=1");
            assert_eq!(a.warnings.len(), 1);
        }
        assert_eq!(patched.hidden_pages(), 0);
        assert_eq!(stock.hidden_pages(), pvhandoff::image::PARK_PAGES + 4);
        let one = OldKernel { vcpus: 1, ..stock };
        assert_eq!(one.hidden_pages(), 1);
    }
}
