//! What the running-kernel commands share (`pvkexec load`, `load -p`, `exec`, `unload`,
//! `status`, `vmcore` and the kexec-tools spelling): the error and exit codes, the module's
//! device and facts, the load request and its inputs, and the checks made before anything is
//! loaded.

use crate::device::{Device, DeviceError, Info, ABI_VERSION};
use crate::input::{open_checked, read_checked, Role, MAX_KERNEL_BYTES};
use crate::linux::OldKernel;
use std::path::PathBuf;

/// How a command failed: the message for the user and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

/// Refused or failed (nothing changed).
pub const EXIT_REFUSED: u8 = 1;
/// A usage error (as clap's).
pub const EXIT_USAGE: u8 = 2;
/// A bad input file (kernel, initrd, image, dump disk).
pub const EXIT_BAD_INPUT: u8 = 3;
/// `pvkexec status`: no image of the kind asked about is loaded (LSB's "not running").
pub const EXIT_NOT_LOADED: u8 = 3;
/// `pvkexec vmcore`: the disk holds no dump (no ELF core file at sector 0); not an error.
pub const EXIT_NO_DUMP: u8 = 4;

/// What a command printed and its exit code when it did what was asked; a command whose
/// answer is a state (`status`) may end with a code other than 0 without failing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub text: String,
    pub code: u8,
}

impl From<String> for Output {
    fn from(text: String) -> Self {
        Output { text, code: 0 }
    }
}

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

/// Where the new kernel's command line comes from, as kexec-tools builds it: the running
/// kernel's (`--reuse-cmdline`), then the given text (`--append`/`--command-line`), joined by a
/// space; either alone; or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// Start from `/proc/cmdline` (less `BOOT_IMAGE=`, and `crashkernel=` for a crash kernel).
    pub reuse: bool,
    pub append: Option<String>,
}

impl Cmdline {
    /// Only the given text.
    pub fn given(text: impl Into<String>) -> Self {
        Cmdline {
            reuse: false,
            append: Some(text.into()),
        }
    }

    /// The command line, `running` being the running kernel's (read only when reused).
    pub fn resolve(
        &self,
        running: impl FnOnce() -> Result<String, CliError>,
        crash: bool,
    ) -> Result<String, CliError> {
        let base = match self.reuse {
            true => reused_cmdline(&running()?, crash),
            false => String::new(),
        };
        Ok(join_cmdline(&base, self.append.as_deref().unwrap_or("")))
    }
}

/// Two command-line parts joined by one space (kexec-tools' `concat_cmdline`); an empty part
/// adds nothing.
pub fn join_cmdline(base: &str, extra: &str) -> String {
    match (base.is_empty(), extra.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => extra.to_string(),
        (false, false) => format!("{base} {extra}"),
    }
}

/// The words of a kernel command line as Linux splits it (`next_arg`): on white space outside
/// double quotes; each word as written, quotes kept.
pub fn cmdline_words(cmdline: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in cmdline.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                start.get_or_insert(i);
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(s) = start.take() {
                    words.push(&cmdline[s..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        words.push(&cmdline[s..]);
    }
    words
}

/// The running kernel's command line as `--reuse-cmdline` passes it on: without the boot
/// loader's `BOOT_IMAGE=` and, for a crash kernel, without `crashkernel=` (it would set memory
/// aside inside the memory set aside), as kexec-tools' `get_command_line` strips them.
pub fn reused_cmdline(running: &str, crash: bool) -> String {
    let key = |w: &str| {
        w.split('=')
            .next()
            .unwrap_or(w)
            .trim_matches('"')
            .to_string()
    };
    cmdline_words(running)
        .into_iter()
        .filter(|w| {
            let k = key(w);
            k != "BOOT_IMAGE" && !(crash && k == "crashkernel")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `pvkexec load` / `kexec -l` / `kexec -p`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadRequest {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: Cmdline,
    /// Load even what the vcpu_info rule says cannot boot.
    pub force: bool,
    /// Also print the layout and the image's segments (`-d`/`--debug`).
    pub debug: bool,
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
pub(crate) fn running_release() -> String {
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

/// The running kernel's command line, for `--reuse-cmdline`.
pub(crate) fn proc_cmdline() -> Result<String, CliError> {
    std::fs::read_to_string("/proc/cmdline")
        .map(|s| s.trim().to_string())
        .map_err(|e| CliError::refused(format!("/proc/cmdline: cannot read: {e}")))
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
    /// The files as given (for the load record).
    pub kernel_path: PathBuf,
    pub initrd_path: Option<PathBuf>,
    kernel: crate::ParsedKernel,
    initrd: Option<Vec<u8>>,
    /// The command line after the loader's adjustments.
    pub cmdline: String,
    old: OldKernel,
    /// Notes and warnings for the user.
    pub notes: String,
    /// Kernel and initrd bytes.
    pub bytes: u64,
    debug: bool,
    /// A Linux crash kernel: the crashed kernel's frames the purgatory aliases past its RAM,
    /// and its ELF core header area (docs/kdump.md).
    pub aliases: Option<pvhandoff::image::CrashAliases>,
}

/// An image built from [`Inputs`].
pub(crate) struct Built {
    pub image: crate::image::BuiltImage,
    /// Frames of the purgatory's free pool it needs.
    pub pool_pages: u64,
    /// The command line in the image.
    pub cmdline: String,
}

impl Inputs {
    /// Reads kernel and initrd (bounded, memory checked first) and applies the vcpu_info
    /// rule: refused unless `req.force`. `crash`: for a crash kernel (what `--reuse-cmdline`
    /// strips).
    pub(crate) fn read(
        req: &LoadRequest,
        old: OldKernel,
        domain_pages: u64,
        crash: bool,
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
        let cmdline = req.cmdline.resolve(proc_cmdline, crash)?;
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
            kernel_path: req.kernel.clone(),
            initrd_path: req.initrd.clone(),
            kernel: k,
            initrd,
            cmdline: adjusted.cmdline,
            old,
            notes,
            bytes: kernel_len + initrd_len,
            debug: req.debug,
            aliases: None,
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
    ) -> Result<Built, CliError> {
        let cmdline = join_cmdline(&self.cmdline, extra);
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
                aliases: self.aliases,
            },
            mode,
            // Linux unpacks a compressed initramfs itself: placed as it is (as Xen 4.20's
            // libxenguest does), Debian's 36 MB initrd stays 36 MB in the image instead of
            // the 120 MB it gunzips to. Other kernels get what Xen 4.17's builder places.
            builder: match self.is_linux() {
                true => crate::plan::DomuBuilder::Xen420,
                false => crate::plan::DomuBuilder::default(),
            },
        })
        .map_err(|e| too_large_or_input(e, domain_pages))
        .and_then(|image| {
            let pool_pages =
                check_pool_demand(&image.bytes, u64::from(self.old.vcpus), domain_pages)?;
            Ok(Built {
                image,
                pool_pages,
                cmdline,
            })
        })
    }

    /// Whether the kernel is Linux (`crate::linux::is_linux`).
    pub(crate) fn is_linux(&self) -> bool {
        crate::linux::is_linux(&self.kernel)
    }

    /// Drops the kernel's ELF and the initrd once they are in a built image, so that only the
    /// image stays in memory beside the module's copy of it.
    pub(crate) fn release_files(&mut self) {
        self.kernel.elf = Vec::new();
        self.initrd = None;
    }

    /// With `-d`/`--debug`: the layout in the shape of Xen's "VIRTUAL MEMORY ARRANGEMENT" and
    /// the image's segments with their digests checked (what `pvkexec build` prints).
    pub(crate) fn debug_report(&self, built: &Built) -> String {
        if !self.debug {
            return String::new();
        }
        let segments = match crate::inspect::inspect(&self.name, &built.image.bytes) {
            Ok((text, _)) => text,
            Err(e) => format!("segments: {e}\n"),
        };
        format!("{}{segments}", built.image.plan.render_xen_arrangement())
    }
}

/// The free pool the image needs (its holes, park area and grant reserve:
/// `pvhandoff::renumber::pool_demand`), which the module allocates at exec (handoff v6: any
/// frames, listed). Refused before anything is loaded when that cannot fit beside the old
/// kernel: more than half the domain's frames (the module also refuses at load an image that
/// does not fit in half of MemAvailable).
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
pub(crate) fn mem_available() -> Option<u64> {
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

/// A layout that does not fit is "too large for the domain"; the rest is bad input.
pub(crate) fn too_large_or_input(e: crate::LoadError, domain_pages: u64) -> CliError {
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
            "out of memory: the module cannot keep the {len}-byte image (the image must fit in \
             half of MemAvailable, and with what exec takes in half of the domain's RAM; the \
             kernel log gives the figures)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_words_split_as_linux_splits_them() {
        assert_eq!(
            cmdline_words("  root=/dev/xvda1  ro quiet "),
            ["root=/dev/xvda1", "ro", "quiet"]
        );
        assert_eq!(
            cmdline_words(r#"a dyndbg="file x.c +p" "b c"=d e"#),
            ["a", r#"dyndbg="file x.c +p""#, r#""b c"=d"#, "e"]
        );
        assert!(cmdline_words("").is_empty());
    }

    #[test]
    fn reuse_strips_boot_image_and_for_a_crash_kernel_crashkernel() {
        let running = "BOOT_IMAGE=/vmlinuz-6.1.0-57-amd64 root=UUID=1 ro crashkernel=256M \
                       crashkernel=64M,low console=hvc0 dyndbg=\"a b\"";
        assert_eq!(
            reused_cmdline(running, false),
            "root=UUID=1 ro crashkernel=256M crashkernel=64M,low console=hvc0 dyndbg=\"a b\""
        );
        assert_eq!(
            reused_cmdline(running, true),
            "root=UUID=1 ro console=hvc0 dyndbg=\"a b\""
        );
        // Only the whole key: a word that merely starts alike stays.
        assert_eq!(
            reused_cmdline("crashkernelx=1 BOOT_IMAGEy=2", true),
            "crashkernelx=1 BOOT_IMAGEy=2"
        );
    }

    #[test]
    fn reused_and_appended_text_join_as_kexec_tools_joins_them() {
        let running = || Ok("BOOT_IMAGE=/k root=/dev/xvda1 crashkernel=128M".to_string());
        let never =
            || -> Result<String, CliError> { panic!("/proc/cmdline read without --reuse-cmdline") };
        let c = |reuse, append: Option<&str>| Cmdline {
            reuse,
            append: append.map(str::to_string),
        };
        assert_eq!(
            c(true, Some("console=hvc0"))
                .resolve(running, false)
                .unwrap(),
            "root=/dev/xvda1 crashkernel=128M console=hvc0"
        );
        assert_eq!(
            c(true, Some("nr_cpus=1")).resolve(running, true).unwrap(),
            "root=/dev/xvda1 nr_cpus=1"
        );
        assert_eq!(
            c(true, None).resolve(running, false).unwrap(),
            "root=/dev/xvda1 crashkernel=128M"
        );
        assert_eq!(c(false, Some("x=1")).resolve(never, false).unwrap(), "x=1");
        assert_eq!(c(false, None).resolve(never, false).unwrap(), "");
        let unreadable = || Err(CliError::refused("/proc/cmdline: cannot read: gone"));
        assert!(c(true, None).resolve(unreadable, false).is_err());
        assert_eq!(join_cmdline("a", "b"), "a b");
        assert_eq!(join_cmdline("", "b"), "b");
        assert_eq!(join_cmdline("a", ""), "a");
        assert_eq!(join_cmdline("", ""), "");
    }

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
                    aliases: None,
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
    fn memory_check_refuses_before_reading() {
        assert!(check_memory(100 << 20, Some(256 << 20)).is_ok());
        let e = check_memory(200 << 20, Some(256 << 20)).unwrap_err();
        assert!(e.message.starts_with("out of memory"), "{}", e.message);
        assert_eq!(e.code, EXIT_REFUSED);
        assert!(check_memory(u64::MAX, None).is_ok());
    }
}
