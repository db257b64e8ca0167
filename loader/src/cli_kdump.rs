//! `pvkexec load -p` / `kexec -p`: a crash kernel for panics (docs/kdump.md). The module sets
//! frames aside and builds the crash view (the real P2M with every other frame a hole); the
//! image is built for that view, its command line names the crash record
//! (`pvkexec.crash=0x<mfn>`), and the module arms its panic path. Any refusal after the
//! reservation releases it: nothing is left half-done.

use crate::cli_common::{
    checked_old_kernel, handoff_for, hidden_vcpu_pages, load_refused, open, Built, CliError,
    Inputs, LoadRequest,
};
use crate::cli_state::{self, Kind, Record};
use crate::device::{CrashReserve, Device, DeviceError, LoadParams, RESERVE_LINUX};
use crate::linux::OldKernel;
use pvhandoff::crash::CRASH_CMDLINE_KEY;
use pvhandoff::image::{elfcore_pages, CrashAliases};

/// Frames of the module's two fixed blocks: the purgatory's free pool and the image block.
pub const FIXED_BLOCK_PAGES: u64 = 2 * 1024;
/// The crash image lives in one 4 MiB block.
pub const MAX_CRASH_IMAGE_BYTES: u64 = 4 << 20;
/// The crash image's free pool is the reservation's other 4 MiB block (listed in the handoff).
pub const CRASH_POOL_PAGES: u64 = 1024;
/// The reservation is made of 4 MiB blocks.
const RESERVE_UNIT_PAGES: u64 = 1024;

/// `pvkexec load -p`: what to load and, optionally, how much to set aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashLoadRequest {
    pub load: LoadRequest,
    /// MiB to set aside (a multiple of 4); default: [`default_crash_pages`] (a Linux crash
    /// kernel: `crashkernel=` of the running kernel's command line, else
    /// [`LINUX_CRASH_DEFAULT_PAGES`]).
    pub crash_mib: Option<u64>,
}

/// The reservation for a Linux crash kernel where the running kernel's command line has no
/// `crashkernel=`: 192 MiB, room for the image (a decompressed Debian kernel is about 32 MB,
/// kdump-tools' initramfs about 20 MB), its free pool, and a Linux that boots its root file
/// system to run makedumpfile.
pub const LINUX_CRASH_DEFAULT_PAGES: u64 = 192 * 256;

/// The default reservation: the two fixed blocks, the purgatory's working memory, and room
/// for the crash kernel of twice its inputs (at least 8 MiB), in 4 MiB blocks.
pub fn default_crash_pages(inputs_bytes: u64, work_pages: u64) -> u64 {
    let ram = (2 * inputs_bytes).max(8 << 20).div_ceil(4096);
    (FIXED_BLOCK_PAGES + work_pages + ram).div_ceil(RESERVE_UNIT_PAGES) * RESERVE_UNIT_PAGES
}

/// Checks a requested reservation against the domain: 4 MiB blocks, room for the fixed
/// blocks and the working memory, at most half the domain.
pub fn check_crash_pages(pages: u64, work_pages: u64, domain_pages: u64) -> Result<(), String> {
    if pages == 0 || !pages.is_multiple_of(RESERVE_UNIT_PAGES) {
        return Err(format!(
            "--crash-mib {}: give a multiple of 4 MiB",
            pages as f64 / 256.0
        ));
    }
    if pages <= FIXED_BLOCK_PAGES + work_pages {
        return Err(format!(
            "--crash-mib {}: at least {} MiB: 8 MiB for the purgatory's pool and the image, {} \
             frames of its working memory, and room for the crash kernel",
            pages / 256,
            (FIXED_BLOCK_PAGES + work_pages).div_ceil(RESERVE_UNIT_PAGES) * 4 + 4,
            work_pages
        ));
    }
    if pages > domain_pages / 2 {
        return Err(format!(
            "--crash-mib {}: more than half of this domain's {} MiB",
            pages / 256,
            domain_pages / 256
        ));
    }
    Ok(())
}

/// `pvkexec load -p`: sets frames aside, builds the crash image for them and loads it. A
/// crash image already loaded is replaced.
pub fn load_crash(req: &CrashLoadRequest) -> Result<String, CliError> {
    let (dev, info) = open()?;
    if info.initial_domain() {
        return Err(CliError::refused(
            "kdump in the initial domain is not supported (the purgatory does not handle \
             dom0's E820 remapping). Nothing was loaded",
        ));
    }
    // pvkexec's capture kernel parks the other VCPUs even where Xen could reset them: the
    // crash view's vcpu_info frames are the old kernel's memory (per-CPU data the dump keeps)
    // and must stay hidden from it, not become its RAM. A Linux crash kernel, where Xen resets
    // VCPUs, gets them reset instead (a Linux registers vcpu_info and brings up its CPUs as on
    // a fresh domain); its view leaves the vcpu_info frames out (`RESERVE_LINUX`).
    let resets = info.xen_resets_vcpus();
    let base = checked_old_kernel(&info)?;
    let (handoff_version, work_pages) = handoff_for(info.start_info_pages)?;
    // The vcpu_info rule is the crash kernel's own refusal below: read with it waived.
    let waived = LoadRequest {
        force: true,
        ..req.load.clone()
    };
    let read = |xen_resets_vcpus| {
        let old = OldKernel {
            xen_resets_vcpus,
            ..base
        };
        Inputs::read(&waived, old, info.current_pages, true).map(|i| (i, old))
    };
    let (mut inputs, mut old) = read(resets)?;
    if resets && !inputs.is_linux() {
        (inputs, old) = read(false)?;
    }
    let linux_crash = resets && inputs.is_linux();
    if inputs.is_linux() && !resets && !req.load.force {
        return Err(CliError::refused(linux_crash_kernel_refused(&inputs.name)));
    }
    crate::dump_disk::check_zero_option(&inputs.cmdline)
        .map_err(|e| CliError::refused(format!("{e}. Nothing was loaded")))?;
    if let Some(given) = crate::dump_disk::named_in(&inputs.cmdline) {
        // The balloon may give the domain back up to its maximum before a crash.
        let pages = info.maximum_pages.max(info.current_pages);
        check_dump_disk(given, pages, req.load.force)?;
    }
    let from_crashkernel = match (req.crash_mib, linux_crash) {
        (None, true) => crashkernel_pages(&proc_cmdline_text(), info.current_pages)
            .map_err(|why| CliError::refused(format!("{why}. Nothing was loaded")))?,
        _ => None,
    };
    let pages = match (req.crash_mib, from_crashkernel) {
        (Some(mib), _) => mib.saturating_mul(256),
        (None, Some(p)) => p,
        (None, None) if linux_crash => LINUX_CRASH_DEFAULT_PAGES,
        (None, None) => default_crash_pages(inputs.bytes, work_pages),
    };
    check_crash_pages(pages, work_pages, info.current_pages).map_err(
        |why| match from_crashkernel {
            Some(_) => CliError::refused(format!(
                "{why}: the size crashkernel= on this kernel's command line asks for \
                 (--crash-mib overrides it)"
            )),
            None => CliError::refused(why),
        },
    )?;
    if info.online_cpus != info.possible_cpus {
        // The panic path stops every other CPU by NMI and the purgatory takes VCPUs 0..n-1:
        // with one offline, the module refuses (pvkexec-kdump's udev rule arms again once
        // it is back).
        return Err(CliError::refused(format!(
            "{} of {} CPUs are online: a crash kernel is loaded only with every CPU online \
             (echo 1 > /sys/devices/system/cpu/cpuN/online). Nothing was loaded",
            info.online_cpus, info.possible_cpus
        )));
    }
    let mut out = inputs.notes.clone();
    if info.crash_reserved() {
        dev.crash_unload()?;
        out += "note: the crash kernel loaded before was unloaded\n";
        out += &cli_state::forget(Kind::Crash);
    }
    let flags = if linux_crash { RESERVE_LINUX } else { 0 };
    let view = dev
        .crash_reserve(pages, flags)
        .map_err(|e| reserve_refused(e, pages))?;
    // Every old PFN of the view's P2M past the crash kernel's own, and its ELF core header.
    if linux_crash {
        inputs.aliases = Some(CrashAliases {
            count: view.p2m_len,
            header_pages: elfcore_pages(view.p2m_len),
        });
    }
    let limits = match linux_crash {
        // The image and the pool past its block share the frames past the two blocks with
        // the working memory; the module checks the sum again.
        true => Limits {
            image_bytes: (pages - FIXED_BLOCK_PAGES - work_pages) * 4096,
            pool_pages: pages - FIXED_BLOCK_PAGES - work_pages + CRASH_POOL_PAGES,
            shared: Some(pages - FIXED_BLOCK_PAGES - work_pages),
        },
        false => Limits {
            image_bytes: MAX_CRASH_IMAGE_BYTES,
            pool_pages: CRASH_POOL_PAGES,
            shared: None,
        },
    };
    match build_and_load(&dev, &inputs, &view, handoff_version, work_pages, limits) {
        Ok(built) => {
            out += &inputs.debug_report(&built);
            let len = built.image.bytes.len();
            out += &format!(
                "set aside {} MiB ({pages} frames) for the crash kernel; it gets {} frames \
                 ({} hidden for the old VCPUs); crash record at mfn {:#x}\n\
                 loaded {} as the crash kernel: image {len} bytes; command line: {:?}\n",
                pages / 256,
                view.present,
                hidden_vcpu_pages(old),
                view.record_mfn,
                inputs.name,
                built.cmdline,
            );
            out += &cli_state::record(
                Kind::Crash,
                Record {
                    kernel: Some(cli_state::recorded_path(&inputs.kernel_path)),
                    initrd: inputs.initrd_path.as_deref().map(cli_state::recorded_path),
                    cmdline: Some(built.cmdline),
                    image_bytes: len as u64,
                    crash_record_mfn: Some(view.record_mfn),
                    crash_pages: Some(pages),
                    ..Record::default()
                },
            );
            Ok(out)
        }
        Err(e) => {
            // Release what was set aside: a refused load leaves nothing behind.
            let released = match dev.crash_unload() {
                Ok(()) => "the frames set aside were released".to_string(),
                Err(u) => format!("releasing the frames set aside failed too: {u}"),
            };
            Err(CliError {
                message: format!("{}; {released}", e.message),
                code: e.code,
            })
        }
    }
}

/// Why a Linux crash kernel is refused on a Xen that does not reset VCPUs: no Linux boots
/// after a Linux there (vcpu_info is registered once per VCPU). The capture kernel is the
/// crash kernel on such a Xen.
pub fn linux_crash_kernel_refused(name: &str) -> String {
    format!(
        "refused to load {name} as the crash kernel: it is Linux, and on this Xen no Linux \
         boots after a Linux in the same domain: Xen lets each VCPU register vcpu_info once, \
         and does not offer XENFEAT_vcpu_reset (pvkexec's Xen patches add it; pvkexec status \
         shows what Xen offers). pvkexec's capture kernel /usr/lib/pvkexec/capture is the \
         crash kernel here (pvkexec-kdump.service arms it; docs/kdump.md). Nothing was loaded"
    )
}

/// The running kernel's command line (empty where /proc/cmdline cannot be read).
fn proc_cmdline_text() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

/// Frames `crashkernel=` on `cmdline` asks for in a domain of `domain_pages` (Linux's
/// syntax: `SIZE[@OFFSET]`, or `RANGE:SIZE[,RANGE:SIZE...]` with `START-[END]` ranges of
/// the domain's memory; a `,high`/`,low` suffix is ignored), rounded up to 4 MiB. `None`
/// without one.
pub fn crashkernel_pages(cmdline: &str, domain_pages: u64) -> Result<Option<u64>, String> {
    let Some(value) = cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("crashkernel="))
        .next_back()
    else {
        return Ok(None);
    };
    let bad = || format!("crashkernel={value}: not a size Linux's syntax gives");
    let value = value
        .strip_suffix(",high")
        .or_else(|| value.strip_suffix(",low"))
        .unwrap_or(value);
    let bytes = if value.contains(':') {
        let mem = domain_pages.saturating_mul(4096);
        let mut chosen = None;
        for part in value.split(',') {
            let (range, size) = part.split_once(':').ok_or_else(bad)?;
            let (start, end) = range.split_once('-').ok_or_else(bad)?;
            let start = parse_size(start).ok_or_else(bad)?;
            let end = match end {
                "" => u64::MAX,
                e => parse_size(e).ok_or_else(bad)?,
            };
            let size = parse_size(size).ok_or_else(bad)?;
            if chosen.is_none() && mem >= start && mem < end {
                chosen = Some(size);
            }
        }
        match chosen {
            Some(s) => s,
            None => return Ok(None),
        }
    } else {
        let size = value.split('@').next().unwrap_or(value);
        parse_size(size).ok_or_else(bad)?
    };
    let unit = RESERVE_UNIT_PAGES * 4096;
    Ok(Some(bytes.div_ceil(unit) * RESERVE_UNIT_PAGES))
}

/// A size as Linux's `memparse()` reads it: digits and an optional K, M, G or T.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The dump disk `pvkexec.dump=` names must take a dump of a domain of `pages` pages: refused
/// by name otherwise, before anything is set aside (`loader::dump_disk`).
fn check_dump_disk(given: &str, pages: u64, force: bool) -> Result<(), CliError> {
    use crate::dump_disk;
    let refuse = |e: dump_disk::Unfit| CliError::refused(format!("{e}. Nothing was loaded"));
    let name = dump_disk::device_name(given).map_err(refuse)?;
    let facts = dump_disk::inspect(&name).map_err(|e| {
        CliError::refused(format!(
            "dump disk {name}: cannot inspect /dev/{name}: {e}. Nothing was loaded"
        ))
    })?;
    dump_disk::judge(&name, &facts, dump_disk::dump_bytes(pages), force).map_err(refuse)
}

fn crash_word(record_mfn: u64) -> String {
    format!("{CRASH_CMDLINE_KEY}={record_mfn:#x}")
}

/// The words a Linux crash kernel's command line gets besides the record's: `mem=` ending
/// its RAM before the ELF core header area, `nopat` (a PV domU's PAT turns a WB mapping of
/// non-RAM into UC-, which Xen refuses, so `/proc/vmcore` would map nothing) and
/// `elfcorehdr=`.
fn linux_crash_words(aliases: Option<CrashAliases>, nr_pages: u64) -> String {
    match aliases {
        None => String::new(),
        Some(a) => format!(
            " mem={}K nopat elfcorehdr={:#x}",
            a.first_pfn(nr_pages) * 4,
            a.ehdr_pfn(nr_pages) << 12
        ),
    }
}

/// What the module holds of a crash image: its bytes, its free pool, and (a Linux crash
/// kernel) the frames the image's pages and the pool past its block share.
#[derive(Clone, Copy)]
struct Limits {
    image_bytes: u64,
    pool_pages: u64,
    shared: Option<u64>,
}

/// Builds the image for the crash view and loads it.
fn build_and_load(
    dev: &Device,
    inputs: &Inputs,
    view: &CrashReserve,
    handoff_version: u32,
    work_pages: u64,
    limits: Limits,
) -> Result<Built, CliError> {
    let extra = crash_word(view.record_mfn) + &linux_crash_words(inputs.aliases, view.present);
    let built = inputs.build(pvlayout::Mode::DomU, view.present, view.p2m_len, &extra)?;
    let (len, pool_pages) = (built.image.bytes.len(), built.pool_pages);
    if len as u64 > limits.image_bytes {
        return Err(CliError::refused(format!(
            "the crash image of {} is {len} bytes; the module keeps it in {} bytes (a smaller \
             crash kernel or initrd{})",
            inputs.name,
            limits.image_bytes,
            if limits.shared.is_some() {
                ", or more --crash-mib"
            } else {
                ""
            }
        )));
    }
    if pool_pages > limits.pool_pages {
        return Err(CliError::refused(format!(
            "the crash image of {} needs {pool_pages} frames of the purgatory's free pool (its \
             P2M, page tables and other built pages no segment fills); the reservation has {}",
            inputs.name, limits.pool_pages
        )));
    }
    if let Some(shared) = limits.shared {
        let need = (len as u64).div_ceil(4096) + pool_pages.saturating_sub(CRASH_POOL_PAGES);
        if need > shared {
            return Err(CliError::refused(format!(
                "the crash image of {} ({} pages) and its free pool past the pool block ({} \
                 frames) need {need} set-aside frames; {shared} are left past the two blocks \
                 and the working memory (more --crash-mib)",
                inputs.name,
                (len as u64).div_ceil(4096),
                pool_pages.saturating_sub(CRASH_POOL_PAGES)
            )));
        }
    }
    let params = LoadParams {
        handoff_version,
        work_pages,
        pool_pages,
    };
    dev.load_crash(&built.image.bytes, params)
        .map_err(|e| load_refused(e, len))?;
    Ok(built)
}

fn reserve_refused(e: DeviceError, pages: u64) -> CliError {
    let why = match e.errno() {
        Some(libc::ENOMEM) => format!(
            "out of memory: the module could not set aside {} MiB of frames",
            pages / 256
        ),
        Some(libc::EBUSY) => "the module is busy: a crash kernel already set up (pvkexec \
                              unload -p) or a CPU offline (the kernel log says which)"
            .into(),
        _ => format!(
            "setting {} MiB aside was refused (the kernel log says why): {e}",
            pages / 256
        ),
    };
    CliError::refused(format!("{why}. Nothing was loaded"))
}

/// `pvkexec unload -p`: disarms the panic path and releases the frames set aside.
pub fn unload_crash() -> Result<String, CliError> {
    let (dev, info) = open()?;
    if !info.crash_reserved() && !info.crash_loaded() {
        return Ok(format!(
            "no crash kernel was loaded\n{}",
            cli_state::forget(Kind::Crash)
        ));
    }
    dev.crash_unload()?;
    Ok(format!(
        "crash kernel unloaded; {} MiB released\n{}",
        info.crash_pages / 256,
        cli_state::forget(Kind::Crash)
    ))
}

/// `pvkexec test-fault corrupt-crash|park-cpu1`: a fault for the QEMU tests, injected by a
/// module loaded with `fault_injection=1` (refused otherwise).
pub fn test_fault(name: &str) -> Result<String, CliError> {
    use crate::device::TestFault;
    let fault = match name {
        "corrupt-crash" => TestFault::CorruptCrash,
        "park-cpu1" => TestFault::ParkCpu1,
        other => {
            return Err(CliError::refused(format!(
                "test-fault {other:?}: corrupt-crash or park-cpu1"
            )))
        }
    };
    let (dev, _) = open()?;
    dev.test_fault(fault).map_err(|e| {
        CliError::refused(match e.errno() {
            Some(libc::ENOTTY) => {
                format!("test-fault {name}: the module was not loaded with fault_injection=1 ({e})")
            }
            _ => format!("test-fault {name}: {e}"),
        })
    })?;
    Ok(format!("test fault {name} injected\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linux_crash_kernel_is_refused_on_a_xen_that_does_not_reset_vcpus() {
        let m = linux_crash_kernel_refused("/var/lib/kdump/vmlinuz");
        assert!(m.contains("/var/lib/kdump/vmlinuz"), "{m}");
        assert!(m.contains("it is Linux"), "{m}");
        assert!(m.contains("/usr/lib/pvkexec/capture"), "{m}");
        assert!(m.ends_with("Nothing was loaded"), "{m}");
        assert!(m.contains("vcpu_info") && m.contains("XENFEAT_vcpu_reset"));
    }

    #[test]
    fn crashkernel_sizes_as_linux_reads_them() {
        let mib = |m: u64| Ok(Some(m * 256));
        let dom = 512 * 256; // 512 MiB
        assert_eq!(crashkernel_pages("ro quiet", dom), Ok(None));
        assert_eq!(crashkernel_pages("crashkernel=256M", dom), mib(256));
        assert_eq!(crashkernel_pages("crashkernel=130M@16M", dom), mib(132));
        assert_eq!(crashkernel_pages("crashkernel=1G,high", dom), mib(1024));
        assert_eq!(crashkernel_pages("crashkernel=262144K", dom), mib(256));
        let ranges = "crashkernel=256M-1G:160M,1G-:384M";
        assert_eq!(crashkernel_pages(ranges, dom), mib(160));
        assert_eq!(crashkernel_pages(ranges, 4 << 18), mib(384));
        assert_eq!(crashkernel_pages(ranges, 128 * 256), Ok(None));
        // The last one counts, as in Linux.
        assert_eq!(
            crashkernel_pages("crashkernel=64M crashkernel=96M", dom),
            mib(96)
        );
        for bad in ["crashkernel=lots", "crashkernel=1G-:", "crashkernel=x-:64M"] {
            let e = crashkernel_pages(bad, dom).unwrap_err();
            assert!(e.starts_with(bad), "{e}");
        }
    }

    #[test]
    fn a_linux_crash_kernel_gets_mem_nopat_and_elfcorehdr() {
        let a = CrashAliases {
            count: 131_072,
            header_pages: elfcore_pages(131_072),
        };
        let nr = 49_152;
        let first = nr - 1 - a.header_pages;
        assert_eq!(
            linux_crash_words(Some(a), nr),
            format!(
                " mem={}K nopat elfcorehdr={:#x}",
                first * 4,
                (first + 7) << 12
            )
        );
        assert_eq!(linux_crash_words(None, nr), "");
    }

    #[test]
    fn the_default_holds_the_blocks_the_work_and_the_kernel() {
        // A 300 KiB capture kernel in a 256 MiB domain (work: 14 frames).
        let p = default_crash_pages(300 << 10, 14);
        assert_eq!(p % 1024, 0);
        assert!(p >= FIXED_BLOCK_PAGES + 14 + 2048, "{p}");
        assert_eq!(p, 5 * 1024); // 20 MiB
                                 // Big inputs get twice their size.
        let p = default_crash_pages(30 << 20, 14);
        assert!(p * 4096 >= (60 << 20) + (8 << 20));
        assert!(check_crash_pages(default_crash_pages(0, 14), 14, 65536).is_ok());
    }

    /// The figures docs/kdump.md states: the capture kernel (about 120 KiB, so its RAM is
    /// the 8 MiB floor) in domains of 1 to 512 GiB, whose working memory grows by one frame
    /// per 128 MiB: 20 MiB up to 121 GiB, then one more 4 MiB block per further 4 MiB of
    /// working memory (24 MiB for 128 GiB, 36 MiB for 512 GiB). The crash record's list and
    /// directory pages are not part of the reservation (the module allocates them beside it:
    /// one page per GiB and one per 511 GiB), so nothing here depends on the record.
    #[test]
    fn the_default_for_1_to_512_gib_domains() {
        for (gib, work, mib) in [
            (1u64, 62, 20),
            (6, 102, 20),
            (8, 118, 20),
            (64, 566, 20),
            (121, 1022, 20),
            (122, 1030, 24),
            (128, 1078, 24),
            (512, 4150, 36),
        ] {
            let w = pvhandoff::handoff::work_pages(gib << 18).unwrap();
            assert_eq!(w, work, "{gib} GiB");
            assert_eq!(default_crash_pages(120 << 10, w), mib * 256, "{gib} GiB");
        }
    }

    #[test]
    fn bad_sizes_are_named() {
        let e = check_crash_pages(1000, 14, 65536).unwrap_err();
        assert!(e.contains("multiple of 4 MiB"), "{e}");
        let e = check_crash_pages(2048, 14, 65536).unwrap_err();
        assert!(e.contains("at least 16 MiB"), "{e}");
        let e = check_crash_pages(40 * 1024, 14, 65536).unwrap_err();
        assert!(e.contains("more than half"), "{e}");
        assert!(check_crash_pages(4096, 14, 65536).is_ok());
    }

    #[test]
    fn the_record_is_named_on_the_command_line() {
        assert_eq!(
            crate::cli_common::join_cmdline("", &crash_word(0x1234)),
            "pvkexec.crash=0x1234"
        );
        assert_eq!(
            crate::cli_common::join_cmdline("console=hvc0", &crash_word(0xabc)),
            "console=hvc0 pvkexec.crash=0xabc"
        );
    }
}
