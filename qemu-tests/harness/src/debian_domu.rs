//! A real Debian domU: a bookworm root file system built from Debian's packages (mmdebstrap),
//! systemd as init, Debian's 6.1 kernel and the initramfs initramfs-tools built inside it,
//! booted by `xl` as `root=/dev/xvda` from an ext4 image on a host disk, with pvkexec's two
//! packages installed by apt inside (DKMS builds the module against Debian's headers there)
//! and a second disk as the dump disk.
//!
//! The base (everything from Debian) is cached as a tarball; each image unpacks it, installs
//! this checkout's packages and the scenario unit, and packs an ext4 image with
//! `mkfs.ext4 -d`. A scenario ([`Scenario`]) runs from `pvkexec-scenario.service`
//! (`qemu-tests/harness/debian/`), which prints `PVKEXEC-DEBIAN` lines on the console and
//! keeps its state on the root disk across the reboots it causes. Building needs root
//! (chroot, file ownership).

use crate::domu::DomuSpec;
use crate::provision::DebianLinux;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Lines the scenario unit prints start with this.
pub const MARK: &str = "PVKEXEC-DEBIAN ";

/// Debian's packages the base holds besides the kernels and their headers: systemd as init,
/// DKMS (which brings the compiler) and what pvkexec's packages depend on (Debian's
/// kdump-tools is added by [`BASE_CUSTOMIZE`]).
const BASE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "e2fsprogs",
    "procps",
    "initramfs-tools",
    "dkms",
    "makedumpfile",
    // The kernel upgrade the `upgrade` scenario kexecs into (bookworm-security's 6.12).
    "linux-image-6.12-amd64",
    "linux-headers-6.12-amd64",
];

/// Run inside the new root by mmdebstrap (`$1`): what makes a bookworm tree a rig domU.
const BASE_CUSTOMIZE: &str = r#"set -e
root=$1
echo pvkexec-domu > "$root/etc/hostname"
printf '/dev/xvda / ext4 errors=remount-ro 0 1\n' > "$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null
# A persistent journal: the tests read the boots from the disk afterwards.
mkdir -p "$root/var/log/journal"
# Debian's kdump-tools (it brings kexec-tools; installing pvkexec-kexec removes that), after
# the kernels: its kernel hook builds a kdump initramfs with MODULES=dep, which cannot find
# the root device in a chroot. kdump-config builds it in the domU when it first loads.
chroot "$root" apt-get install -y --no-install-recommends kdump-tools >/dev/null
# Off, for an admin to enable (the kdump-tools scenario does).
sed -i 's/^USE_KDUMP=.*/USE_KDUMP=0/' "$root/etc/default/kdump-tools"
# Timers that would start work at boot which the rig never needs.
for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
         man-db.timer dpkg-db-backup.timer e2scrub_reap.service; do
  chroot "$root" systemctl mask "$t" >/dev/null 2>&1 || true
done
"#;

/// The scenario runner and its unit (test code, installed into every image).
const SCENARIO_SH: &str = include_str!("../debian/pvkexec-scenario");
const SCENARIO_UNIT: &str = include_str!("../debian/pvkexec-scenario.service");

/// The scenarios of the issue "A Debian admin's pvkexec" (`cargo xtask debian-domu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// kdump armed at boot by the package's unit; sysrq crash; the capture kernel writes the
    /// dump disk and reboots; the next boot saves the dump to /var/crash.
    Kdump,
    /// The same with CPU 1 spinning with interrupts off at the panic.
    Kdump2Cpu,
    /// With the probe loaded, `systemctl reboot` ends in the probe through the
    /// system-shutdown hook.
    RebootHook,
    /// `pvkexec load -p` refuses unfit dump disks, each by name.
    DumpDiskGuard,
    /// Debian's kdump-tools enabled (`USE_KDUMP=1`). On stock Xen beside pvkexec's armed kdump:
    /// `kdump-config load` runs `kexec -p` with the domU's own kernel, which pvkexec refuses by
    /// name, and `kdump-config try-reload` (its udev rule's command) leaves pvkexec's crash
    /// kernel armed. On a patched Xen in its place: kdump-tools loads the domU's own kernel
    /// and initramfs as the crash kernel; sysrq crash; kdump-tools' own scripts save
    /// `/var/crash/<ts>/dump.<ts>` and `dmesg.<ts>` and reboot; the next boot checks them.
    KdumpTools,
    /// Patched Xen: kdump-tools as above with CPU 1 spinning with interrupts off at the panic.
    KdumpTools2Cpu,
    /// Patched Xen: `kexec -l` the running kernel (`--reuse-cmdline`) and `systemctl kexec`;
    /// the next boot checks the new kernel, then a toolstack reboot for comparison.
    Kexec,
    /// Patched Xen: `systemctl kexec` into the running kernel, then into bookworm's 6.12.
    Upgrade,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Kdump,
        Scenario::Kdump2Cpu,
        Scenario::RebootHook,
        Scenario::DumpDiskGuard,
        Scenario::KdumpTools,
        Scenario::KdumpTools2Cpu,
        Scenario::Kexec,
        Scenario::Upgrade,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kdump => "kdump",
            Scenario::Kdump2Cpu => "kdump-2cpu",
            Scenario::RebootHook => "reboot-hook",
            Scenario::DumpDiskGuard => "dump-disk-guard",
            Scenario::KdumpTools => "kdump-tools",
            Scenario::KdumpTools2Cpu => "kdump-tools-2cpu",
            Scenario::Kexec => "kexec",
            Scenario::Upgrade => "upgrade",
        }
    }

    /// Whether the scenario needs Xen with pvkexec's patches (VCPU reset: Linux after Linux).
    pub fn needs_patched_xen(self) -> bool {
        matches!(
            self,
            Scenario::Kexec | Scenario::Upgrade | Scenario::KdumpTools2Cpu
        )
    }

    /// Whether the scenario runs on a patched Xen (those that need it, and kdump-tools,
    /// which takes the Linux crash kernel there).
    pub fn runs_on_patched_xen(self) -> bool {
        self.needs_patched_xen() || self == Scenario::KdumpTools
    }

    pub fn from_name(s: &str) -> Result<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .with_context(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|c| c.name()).collect();
                format!("unknown scenario {s:?}: {}", names.join(", "))
            })
    }

    /// The boots the scenario takes (xl restarts the domain between them).
    fn reboots(self, patched_xen: bool) -> u32 {
        match self {
            // crash -> Linux crash kernel saves and reboots -> check
            Scenario::KdumpTools if patched_xen => 1,
            Scenario::KdumpTools2Cpu => 1,
            // crash -> capture kernel reboots -> collect
            Scenario::Kdump | Scenario::Kdump2Cpu => 1,
            // systemctl reboot -> probe (same domain) -> probe reboots -> check
            Scenario::RebootHook => 1,
            Scenario::DumpDiskGuard | Scenario::KdumpTools => 0,
            // systemctl kexec (same domain) -> toolstack reboot -> done
            Scenario::Kexec => 1,
            // two kexecs in the same domain, no toolstack reboot
            Scenario::Upgrade => 0,
        }
    }

    /// The boots in all, kexecs included (for the timeout).
    fn boots(self, patched_xen: bool) -> u32 {
        match self {
            Scenario::Kexec => 3,
            Scenario::Upgrade => 3,
            // The crash kernel's boot, besides the domain's two.
            Scenario::KdumpTools | Scenario::KdumpTools2Cpu if patched_xen => 3,
            s => s.reboots(patched_xen) + 1,
        }
    }

    fn default_vcpus(self) -> u32 {
        match self {
            Scenario::Kdump2Cpu
            | Scenario::KdumpTools
            | Scenario::KdumpTools2Cpu
            | Scenario::Kexec
            | Scenario::Upgrade => 2,
            _ => 1,
        }
    }
}

/// The boot files and root disk of one image.
#[derive(Clone, Debug)]
pub struct Image {
    /// The ext4 root file system (raw, sparse).
    pub root_disk: PathBuf,
    /// `/boot/vmlinuz-<release>` and `/boot/initrd.img-<release>` as built inside.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub release: String,
    /// How long the image took (unpack, apt install with the DKMS build, mkfs).
    pub build_time: Duration,
    /// What `dkms status` said inside.
    pub dkms_status: String,
}

/// The base tarball for the rig's bookworm kernel, built once with mmdebstrap.
pub fn ensure_base() -> Result<PathBuf> {
    let release = crate::kmod::image_release(DebianLinux::Bookworm)?;
    let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
    // The kernel the rig's other tests and Debian's -dbg vmlinux are for.
    packages.push(format!("linux-image-{release}-unsigned"));
    packages.push(format!("linux-headers-{release}"));
    let mut h = Sha256::new();
    h.update(packages.join(",").as_bytes());
    h.update(BASE_CUSTOMIZE.as_bytes());
    let key: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = crate::cache_dir().join("debian-domu");
    let tar = dir.join(format!("base-{release}-{key}.tar"));
    if tar.is_file() {
        return Ok(tar);
    }
    crate::provision::apt_install(&["mmdebstrap"])?;
    fs::create_dir_all(&dir)?;
    let hook = dir.join(format!("customize-{key}.sh"));
    fs::write(&hook, BASE_CUSTOMIZE)?;
    let partial = dir.join(format!("base-{key}.tar.partial"));
    let started = Instant::now();
    let o = Command::new("mmdebstrap")
        .args(["--variant=minbase", "--format=tar"])
        .arg(format!("--include={}", packages.join(",")))
        .arg(format!("--customize-hook=sh {} \"$1\"", hook.display()))
        .arg("bookworm")
        .arg(&partial)
        .args([
            "deb http://deb.debian.org/debian bookworm main",
            "deb http://deb.debian.org/debian bookworm-updates main",
            "deb http://deb.debian.org/debian-security bookworm-security main",
        ])
        .output()
        .context("running mmdebstrap")?;
    if !o.status.success() {
        let _ = fs::remove_file(&partial);
        bail!(
            "mmdebstrap for the Debian domU failed ({}):\n{}",
            o.status,
            tail(&String::from_utf8_lossy(&o.stderr), 30)
        );
    }
    fs::rename(&partial, &tar)?;
    eprintln!(
        "debian domU: base {} built in {:.0} s ({} MB)",
        tar.display(),
        started.elapsed().as_secs_f64(),
        fs::metadata(&tar)?.len() >> 20
    );
    Ok(tar)
}

/// What an image holds besides the base: files (destination in the root, source, mode) and
/// shell commands run in the root after the packages are installed.
#[derive(Clone, Debug, Default)]
pub struct Customize {
    pub files: Vec<(String, PathBuf, u32)>,
    pub commands: Vec<String>,
}

/// Builds one image in `out_dir` (`root.img`, `vmlinuz`, `initrd.img`): the base, this
/// checkout's packages installed with apt, the scenario unit, `extra`, and kdump's one
/// config line (`PVKEXEC_KDUMP_DISK=xvdb`).
pub fn build_image(out_dir: &Path, extra: &Customize) -> Result<Image> {
    let started = Instant::now();
    let base = ensure_base()?;
    let debs = crate::deb::build()?;
    let release = crate::kmod::image_release(DebianLinux::Bookworm)?;
    fs::create_dir_all(out_dir)?;
    let tree = out_dir.join("tree");
    let _cleanup = RemoveTreeOnDrop(tree.clone());
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree)?;
    run(Command::new("tar")
        .args(["-x", "-p", "--numeric-owner", "-f"])
        .arg(&base)
        .arg("-C")
        .arg(&tree))
    .context("unpacking the base")?;

    // apt installs the packages as an admin would, from files.
    let debdir = tree.join("var/cache/pvkexec-debs");
    fs::create_dir_all(&debdir)?;
    for d in debs.all() {
        let name = d.file_name().context("deb without a name")?;
        fs::copy(d, debdir.join(name))?;
    }
    let apt = in_chroot(
        &tree,
        "apt-get install -y --no-install-recommends /var/cache/pvkexec-debs/*.deb",
    )
    .context("apt-get install of pvkexec's packages in the Debian domU")?;
    fs::remove_dir_all(&debdir)?;
    let dkms_status = in_chroot(&tree, "dkms status")?;
    let want = format!("{release}, x86_64: installed");
    if !dkms_status
        .lines()
        .any(|l| l.starts_with("pvkexec/") && l.contains(&want))
    {
        bail!(
            "dkms did not install pvkexec for {release}:\n{dkms_status}\napt said:\n{}",
            tail(&apt, 40)
        );
    }

    // Every unit the packages install, as systemd itself reads them (the pages Documentation=
    // names are in the package; the image has no man-db to look them up).
    in_chroot(
        &tree,
        "systemd-analyze verify --man=no /usr/lib/systemd/system/pvkexec-kdump.service \
         /usr/lib/systemd/system/pvkexec-kdump-collect.service",
    )
    .context("systemd-analyze verify of the packages' units")?;

    // kdump's one config line, as the install page tells an admin.
    in_chroot(
        &tree,
        "sed -i 's/^PVKEXEC_KDUMP_DISK=$/PVKEXEC_KDUMP_DISK=xvdb/' /etc/default/pvkexec-kdump && \
         grep -q '^PVKEXEC_KDUMP_DISK=xvdb$' /etc/default/pvkexec-kdump",
    )?;
    write(
        &tree,
        "usr/local/sbin/pvkexec-scenario",
        SCENARIO_SH.as_bytes(),
        0o755,
    )?;
    write(
        &tree,
        "etc/systemd/system/pvkexec-scenario.service",
        SCENARIO_UNIT.as_bytes(),
        0o644,
    )?;
    in_chroot(&tree, "systemctl enable pvkexec-scenario.service")?;
    for (dest, src, mode) in &extra.files {
        let bytes = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        write(&tree, dest, &bytes, *mode)?;
    }
    for c in &extra.commands {
        in_chroot(&tree, c)?;
    }

    let kernel = out_dir.join("vmlinuz");
    let initrd = out_dir.join("initrd.img");
    fs::copy(tree.join(format!("boot/vmlinuz-{release}")), &kernel)
        .context("copying the image's vmlinuz")?;
    fs::copy(tree.join(format!("boot/initrd.img-{release}")), &initrd)
        .context("copying the initramfs initramfs-tools built")?;
    let root_disk = out_dir.join("root.img");
    let _ = fs::remove_file(&root_disk);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "pvkexec-root", "-d"])
        .arg(&tree)
        .arg(&root_disk)
        .arg(format!("{ROOT_DISK_MIB}M")))
    .context("mkfs.ext4 -d for the root disk")?;
    Ok(Image {
        root_disk,
        kernel,
        initrd,
        release,
        build_time: started.elapsed(),
        dkms_status,
    })
}

/// What the scenarios need besides the packages: the probe kernel (the new kernel of the
/// reboot-hook scenario), and `append`, words the kexec scenarios add to the next kernel's
/// command line and kdump-tools on a patched Xen to its crash kernel's (`cargo xtask
/// debian-domu --append`).
pub fn scenario_customize(append: &str) -> Result<Customize> {
    let quoted = append.replace('\'', "'\\''");
    Ok(Customize {
        files: vec![(
            "usr/lib/pvkexec-test/probe".into(),
            crate::guest::binary("probe")?,
            0o644,
        )],
        commands: vec![format!(
            "mkdir -p /etc/pvkexec-scenario && printf '%s\\n' '{quoted}' > /etc/pvkexec-scenario/append"
        )],
    })
}

/// The root disk: the base (about 1 GiB) plus room for dumps under /var/crash.
const ROOT_DISK_MIB: u64 = 3072;

/// A run of `scenario`: the domU spec over a sparse copy of `image`'s root disk (the image
/// stays clean for the next scenario) and a zeroed dump disk of the domain's size plus 64 MiB,
/// both under `dir`.
pub fn spec(name: &str, image: &Image, r: &Run, patched_xen: bool, dir: &Path) -> Result<DomuSpec> {
    let (scenario, vcpus, mem_mib) = (r.scenario, r.vcpus, r.mem_mib);
    fs::create_dir_all(dir)?;
    let root = dir.join(format!("{name}-root.img"));
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&image.root_disk)
        .arg(&root))?;
    let dump = dir.join(format!("{name}-dump.img"));
    let f = fs::File::create(&dump).with_context(|| format!("creating {}", dump.display()))?;
    f.set_len((mem_mib + 64) << 20)?;
    let mut disks = vec![dump];
    if scenario == Scenario::DumpDiskGuard {
        // xvdc: a disk too small for any dump of this domain.
        let small = dir.join(format!("{name}-small.img"));
        fs::File::create(&small)?.set_len(32 << 20)?;
        disks.push(small);
    }
    let mut s = DomuSpec::new(name, &image.kernel);
    s.ramdisk = Some(image.initrd.clone());
    s.vcpus = vcpus.unwrap_or(scenario.default_vcpus());
    // crashkernel=: kdump-tools checks for it (Linux on Xen PV ignores it); pvkexec sets that
    // much aside for a Linux crash kernel.
    s.cmdline = format!(
        "root=/dev/xvda ro console=hvc0 pvkexec_scenario={} pvkexec_mem_mib={mem_mib} \
         pvkexec_vcpus={}{}",
        scenario.name(),
        s.vcpus,
        match scenario {
            // 192 MiB: a Debian kdump kernel with systemd, and the 39 MB crash image loaded
            // beside the rest of a 512 MiB domain (the module keeps an image in half of
            // what is available).
            Scenario::KdumpTools | Scenario::KdumpTools2Cpu => " crashkernel=192M",
            _ => "",
        }
    );
    s.mem_mib = mem_mib;
    s.host_disk = Some(root);
    s.extra_host_disks = disks;
    s.reboots = scenario.reboots(patched_xen);
    // systemd under TCG: 40 s to 2 minutes a boot (two VCPUs, other QEMU runs beside it),
    // plus the scenario's own work (a dump of the domain, a copy of it).
    s.timeout = Duration::from_secs(60 + 360 * u64::from(scenario.boots(patched_xen)));
    Ok(s)
}

/// One scenario to run: its domU name (at most 15 characters: the dump disk's serial), the
/// scenario, VCPUs (default: the scenario's) and memory.
#[derive(Clone, Debug)]
pub struct Run {
    pub name: String,
    pub scenario: Scenario,
    pub vcpus: Option<u32>,
    pub mem_mib: u64,
}

/// What a scenario did, judged.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub scenario: Scenario,
    pub domu: crate::domu::DomuResult,
    pub root_disk: PathBuf,
    /// Checks the scenario (and the host, after it) found wrong; empty: it passed.
    pub failures: Vec<String>,
    /// The vmcore saved to /var/crash, copied out of the root disk (kdump scenarios).
    pub vmcore: Option<PathBuf>,
    /// crash's `bt` and `log` of that vmcore with Debian's -dbg vmlinux.
    pub crash: Option<crate::vmcore_tools::CrashReport>,
    /// Booted on Xen with pvkexec's patches.
    pub patched_xen: bool,
}

impl Outcome {
    /// `PVKEXEC-DEBIAN <key> <value...>`: the first such line's value.
    pub fn value(&self, key: &str) -> Option<String> {
        let prefix = format!("{MARK}{key} ");
        self.domu
            .console
            .iter()
            .find_map(|l| l.split_once(&prefix).map(|(_, v)| v.trim().to_string()))
    }

    /// Host seconds (QEMU's log clock) of the first console line containing `needle`.
    pub fn line_secs(&self, run: &crate::domu::RigRun, needle: &str) -> Option<f64> {
        self.line_secs_after(run, needle, f64::NEG_INFINITY)
    }

    /// Host seconds of the first console line containing `needle` at or after `after`.
    pub fn line_secs_after(
        &self,
        run: &crate::domu::RigRun,
        needle: &str,
        after: f64,
    ) -> Option<f64> {
        let tagged = format!("[domu:{}] ", self.name);
        run.dom0
            .log
            .lines()
            .zip(&run.dom0.line_secs)
            .find(|(l, t)| **t >= after && l.contains(&tagged) && l.contains(needle))
            .map(|(_, t)| *t)
    }

    /// Host seconds from the console line containing `from` to the next login prompt (the
    /// getty on hvc0): how long a reboot took, as a user at the console sees it.
    pub fn secs_to_login(&self, run: &crate::domu::RigRun, from: &str) -> Option<f64> {
        let start = self.line_secs(run, from)?;
        let login = self.line_secs_after(run, "login:", start)?;
        Some(login - start)
    }
}

/// The PASS names of the first and second `kexec_into`/`kexec_check` of the scenario script.
const KEXEC_1: &[&str] = &[
    "kexec-l-1",
    "kexec-loaded-flag-1",
    "kexec-1-kernel",
    "kexec-1-cmdline",
    "kexec-1-every-vcpu",
    "kexec-1-disks",
    "kexec-1-previous-boot-stopped-services",
    "kexec-1-journal-has-the-new-command-line",
];
const KEXEC_2: &[&str] = &[
    "kexec-l-2",
    "kexec-loaded-flag-2",
    "kexec-2-kernel",
    "kexec-2-cmdline",
    "kexec-2-every-vcpu",
    "kexec-2-disks",
    "kexec-2-previous-boot-stopped-services",
    "kexec-2-journal-has-the-new-command-line",
];

/// The PASS names of kdump-tools with the domU's own kernel as the crash kernel.
const KDUMP_TOOLS_LINUX: &[&str] = &[
    "kdump-tools-loaded",
    "kexec-crash-loaded-flag",
    "kdump-config-show-ready",
    "kdump-tools-reload-keeps-it-loaded",
    "kdump-tools-dump-saved",
    "kdump-tools-dmesg-saved",
    "dmesg-has-the-sysrq-crash",
    "kdump-tools-loaded-again-at-boot",
];

/// The PASS names each scenario must print.
fn expected_passes(s: Scenario, patched_xen: bool) -> Vec<&'static str> {
    const KDUMP: &[&str] = &[
        "kdump-armed-at-boot",
        "dump-saved",
        "vmcore-mode-0600",
        "dmesg-beside-vmcore",
        "dmesg-has-the-sysrq-crash",
        "disk-header-cleared",
        "kdump-armed-again",
    ];
    match s {
        Scenario::Kdump => KDUMP.to_vec(),
        Scenario::Kdump2Cpu => {
            let mut v = KDUMP.to_vec();
            v.extend([
                "kdump-rearmed-with-fault-injection",
                "kdump-rearmed-after-cpu-hotplug",
            ]);
            v
        }
        Scenario::RebootHook => vec!["previous-boot-stopped-services", "root-was-clean"],
        Scenario::KdumpTools | Scenario::KdumpTools2Cpu if patched_xen => {
            let mut v = KDUMP_TOOLS_LINUX.to_vec();
            if s == Scenario::KdumpTools2Cpu {
                v.push("fault-injection-module");
            }
            v
        }
        Scenario::KdumpTools | Scenario::KdumpTools2Cpu => vec![
            "kdump-tools-load-refused",
            "refusal-names-the-reason",
            "pvkexec-kdump-still-armed",
            "kdump-tools-reload-leaves-pvkexec-armed",
        ],
        Scenario::Kexec => [
            KEXEC_1,
            &["journal-has-every-boot", "toolstack-reboot-came-back"],
        ]
        .concat(),
        Scenario::Upgrade => [KEXEC_1, KEXEC_2, &["journal-has-every-boot"]].concat(),
        Scenario::DumpDiskGuard => vec![
            "refuses-missing-disk",
            "refuses-small-disk",
            "refuses-disk-with-file-system",
            "force-takes-disk-with-file-system",
            "refuses-mounted-disk",
            "force-still-refuses-mounted-disk",
            "takes-blank-disk",
        ],
    }
}

/// Runs `runs` in one dom0 boot, each over its own copy of `image`'s root disk under `dir`,
/// and judges each: the scenario's PASS lines, no FAIL line, the domain powered off after
/// `DONE`, and the host's own checks (the saved vmcore opens in crash and `bt` shows the
/// sysrq path; the probe passed after the reboot hook).
pub fn run_scenarios(
    rig: &crate::domu::DomuRig,
    image: &Image,
    runs: &[Run],
    dir: &Path,
) -> Result<(crate::domu::RigRun, Vec<Outcome>)> {
    let mut specs = Vec::new();
    for r in runs {
        specs.push(spec(&r.name, image, r, rig.patched_xen, dir)?);
    }
    let rig_run = rig.run(&specs)?;
    let mut outcomes = Vec::new();
    for (r, (domu, spec)) in runs.iter().zip(rig_run.domus.iter().zip(&specs)) {
        let mut o = Outcome {
            name: r.name.clone(),
            scenario: r.scenario,
            domu: domu.clone(),
            root_disk: spec.host_disk.clone().context("spec without a root disk")?,
            failures: Vec::new(),
            vmcore: None,
            crash: None,
            patched_xen: rig.patched_xen,
        };
        judge(&mut o, dir);
        outcomes.push(o);
    }
    Ok((rig_run, outcomes))
}

fn judge(o: &mut Outcome, dir: &Path) {
    let fail_mark = format!("{MARK}FAIL ");
    let pass_mark = format!("{MARK}PASS ");
    for l in &o.domu.console {
        if let Some((_, what)) = l.split_once(&fail_mark) {
            o.failures.push(format!("the domU: {}", what.trim()));
        }
    }
    let passed: Vec<String> = o
        .domu
        .console
        .iter()
        .filter_map(|l| l.split_once(&pass_mark).map(|(_, w)| w.trim().to_string()))
        .collect();
    for want in expected_passes(o.scenario, o.patched_xen) {
        if !passed.iter().any(|p| p.as_str() == want) {
            o.failures.push(format!("no PASS {want}"));
        }
    }
    if !o
        .domu
        .console
        .iter()
        .any(|l| l.contains(&format!("{MARK}DONE")))
    {
        o.failures.push("the scenario never printed DONE".into());
    }
    if o.domu.verdict != crate::domu::DomuVerdict::PoweredOff {
        o.failures.push(format!(
            "the domain ended {:?}, not powered off",
            o.domu.verdict
        ));
    }
    match o.scenario {
        Scenario::Kdump | Scenario::Kdump2Cpu => {
            if let Err(e) = open_saved_vmcore(o, dir) {
                o.failures.push(format!("the saved vmcore: {e:#}"));
            }
        }
        Scenario::RebootHook => {
            let after = o.domu.after_switch().unwrap_or_default();
            if after.is_empty() {
                o.failures
                    .push("the purgatory never entered the probe after systemctl reboot".into());
            }
            if !after.contains("PVKEXEC-TEST PASS") || after.contains("PVKEXEC-TEST FAIL") {
                o.failures.push("the probe did not pass its checks".into());
            }
            let log = o.domu.log();
            let before = log
                .split_once(crate::PURGATORY_ENTERING)
                .map_or(log.as_str(), |(b, _)| b);
            if !before.contains("systemd-shutdown") {
                o.failures.push(
                    "no systemd-shutdown line before the kexec: the hook ran elsewhere".into(),
                );
            }
        }
        Scenario::Kexec | Scenario::Upgrade => {
            // Each kexec entered the purgatory in the same domain (xl rebuilt it only for the
            // kexec scenario's final toolstack reboot).
            let entered = o.domu.log().matches(crate::PURGATORY_ENTERING).count();
            if entered != 1 + usize::from(o.scenario == Scenario::Upgrade) {
                o.failures
                    .push(format!("the purgatory was entered {entered} times"));
            }
        }
        Scenario::KdumpTools | Scenario::KdumpTools2Cpu if o.patched_xen => {
            // The crash kernel booted in the same domain; xl rebuilt it for the next boot.
            if !o.domu.log().contains(crate::PURGATORY_ENTERING) {
                o.failures
                    .push("the purgatory was never entered at the panic".into());
            }
            if let Err(e) = open_saved_vmcore(o, dir) {
                o.failures.push(format!("the saved dump: {e:#}"));
            }
        }
        Scenario::DumpDiskGuard | Scenario::KdumpTools | Scenario::KdumpTools2Cpu => {}
    }
}

/// Copies the vmcore the collection unit saved out of the root disk (debugfs, no mount) and
/// opens it in crash with Debian's -dbg vmlinux.
fn open_saved_vmcore(o: &mut Outcome, dir: &Path) -> Result<()> {
    let path = o
        .value("vmcore-path")
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .context("the domU named no saved vmcore")?;
    let out = dir.join(format!("{}-saved.vmcore", o.name));
    let _ = fs::remove_file(&out);
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("dump -p {path} {}", out.display()))
        .arg(&o.root_disk))
    .context("debugfs dump of the saved vmcore")?;
    if fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == 0 {
        bail!("debugfs wrote no {} from {path}", out.display());
    }
    let vmlinux = crate::vmcore_tools::ensure_debug_vmlinux()?;
    let report = crate::vmcore_tools::crash_report(&vmlinux, &out, &["bt", "help -D", "log"])?;
    let bt = report.output("bt").unwrap_or_default();
    if !bt.contains("sysrq_handle_crash") {
        bail!("crash's bt does not show the sysrq path:\n{bt}");
    }
    if o.scenario == Scenario::KdumpTools2Cpu {
        // CPU 1 spun with interrupts off in the module's test fault: its registers are in
        // the dump only if the panic path's NMI reached it (crash does not unwind the other
        // CPUs of a Xen dump itself, so its note's RIP is resolved).
        let notes = report.output("help -D").unwrap_or_default();
        let rip = crate::vmcore_tools::prstatus_rip(notes, 1)
            .with_context(|| format!("no registers of CPU 1 in the dump:\n{notes}"))?;
        let sym = format!("sym {rip:#x}");
        let at = crate::vmcore_tools::crash_report(&vmlinux, &out, &[&sym])?;
        let at = at.output(&sym).unwrap_or_default();
        if !["delay", "park_cpu"].iter().any(|f| at.contains(f)) {
            bail!("CPU 1's RIP {rip:#x} is not in the test fault's delay loop: {at}");
        }
        eprintln!("{}: CPU 1 at {}", o.name, at.trim());
    }
    o.vmcore = Some(out);
    o.crash = Some(report);
    Ok(())
}

/// A file in the root of `tree` at `rel`.
fn write(tree: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let p = tree.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().context("no parent")?)?;
    fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Runs `script` with `sh -c` chrooted into `tree`, with /proc, /sys and /dev mounted in a
/// mount namespace of its own (they vanish with it, whatever happens); its output.
fn in_chroot(tree: &Path, script: &str) -> Result<String> {
    let t = tree.display();
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "set -e; mount -t proc proc '{t}/proc'; mount -t sysfs sysfs '{t}/sys'; \
             mount --rbind /dev '{t}/dev'; exec chroot '{t}' /usr/bin/env -i \
             PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive sh -c \"$0\""
        ))
        .arg(script)
        .output()
        .with_context(|| format!("running `{script}` in {t}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        bail!(
            "`{script}` in the Debian root failed ({}):\n{}",
            o.status,
            tail(&said, 40)
        );
    }
    Ok(said)
}

fn run(cmd: &mut Command) -> Result<()> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            o.status,
            tail(&String::from_utf8_lossy(&o.stderr), 20)
        );
    }
    Ok(())
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct RemoveTreeOnDrop(PathBuf);

impl Drop for RemoveTreeOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()).unwrap(), s);
        }
        let e = Scenario::from_name("kdmp").unwrap_err().to_string();
        assert!(e.contains("kdump-2cpu"), "{e}");
    }
}
