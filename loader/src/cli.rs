//! The `pvkexec` command line: its clap definition ([`command`], from which `cargo xtask man`
//! writes the man pages and shell completions) and the dispatch to each command's module. The
//! binary (`src/bin/pvkexec.rs`) only calls [`main`].

use crate::cli_build::{self, parse_old_vcpus, Target};
use crate::cli_common::{CliError, Cmdline, LoadRequest, Output};
use crate::cli_kdump::{self, CrashLoadRequest};
use crate::cli_kexec::{self, ExecSteps};
use crate::cli_kexec_tools;
use crate::cli_status::{self, StatusRequest};
use crate::cli_vmcore;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit statuses (`--help`, the man page's EXIT STATUS).
pub const EXIT_STATUS: [(&str, &str); 5] = [
    ("0", "success; `status`: the image asked about is loaded"),
    ("1", "refused or failed, with nothing changed"),
    ("2", "usage error"),
    (
        "3",
        "bad input: an unreadable or invalid kernel, initrd, image or dump disk, or no layout \
         fits; `status`: the image asked about is not loaded",
    ),
    (
        "4",
        "`vmcore`: the disk holds no dump (no ELF core file at sector 0)",
    ),
];

/// Files and environment variables (`--help`, the man page's FILES and ENVIRONMENT).
pub const FILES: [(&str, &str); 3] = [
    ("/dev/pvkexec", "the pvkexec module's device"),
    (
        "/run/pvkexec/",
        "what was loaded (kexec.json, crash.json), for `status`",
    ),
    (
        "/usr/lib/systemd/system-shutdown/pvkexec",
        "the hook (packaging/systemd/system-shutdown-pvkexec) that makes `systemctl reboot` a \
         kexec when an image is loaded",
    ),
];
pub const ENVIRONMENT: [(&str, &str); 2] = [
    (
        "PVKEXEC_DEVICE",
        "the module's device instead of /dev/pvkexec",
    ),
    (
        "PVKEXEC_RUN_DIR",
        "the load records' directory instead of /run/pvkexec",
    ),
];

/// The kexec-tools spelling, in a paragraph (`--help`, the man page).
pub const KEXEC_SPELLING: &str = "Started as `kexec` (a symlink to pvkexec), it takes \
    kexec-tools' options instead: `kexec -l KERNEL [--initrd=FILE] [--append=TEXT] \
    [--reuse-cmdline]`, `kexec -e`, `kexec -u`, `kexec -f KERNEL` (load and hand over at once), \
    `kexec KERNEL` (load, then `shutdown -r now`, which hands over through the systemd-shutdown \
    hook), `kexec -p ...` and `kexec -p -u` (a crash kernel), `-y` (no sync), `-x` (no ifdown), \
    `-d` (debug); `kexec --help` lists them, docs/kexec-tools-compat.md says what differs.";

/// What `--help` says after the commands: the same as the man page's last sections.
pub fn after_help() -> String {
    let list = |items: &[(&str, &str)]| -> String {
        items
            .iter()
            .map(|(tag, text)| format!("  {tag}: {text}\n"))
            .collect()
    };
    format!(
        "Exit status:\n{}\n{KEXEC_SPELLING}\n\nFiles:\n{}\nEnvironment:\n{}",
        list(&EXIT_STATUS),
        list(&FILES),
        list(&ENVIRONMENT)
    )
}

/// Text for a roff line: backslashes and hyphens escaped, a leading `.` or `'` made literal.
fn roff_text(s: &str) -> String {
    let escaped = s.replace('\\', "\\e").replace('-', "\\-");
    match escaped.starts_with(['.', '\'']) {
        true => format!("\\&{escaped}"),
        false => escaped,
    }
}

fn roff_tagged(title: &str, items: &[(&str, &str)]) -> String {
    let mut s = format!(".SH \"{title}\"\n");
    for (tag, text) in items {
        s += &format!(".TP\n\\fB{}\\fR\n{}\n", roff_text(tag), roff_text(text));
    }
    s
}

/// The end of the man page `pvkexec.8`, in roff: EXIT STATUS, the kexec-tools spelling (with
/// its usage text), FILES, ENVIRONMENT and SEE ALSO, from the constants `--help` prints
/// (packaging::generate_docs appends it).
pub fn man_extra_roff() -> String {
    let mut s = roff_tagged("EXIT STATUS", &EXIT_STATUS);
    let usage: Vec<String> = cli_kexec_tools::KEXEC_USAGE
        .lines()
        .map(roff_text)
        .collect();
    s += &format!(
        ".SH \"KEXEC\\-TOOLS SPELLING\"\n{}\n.PP\n.nf\n{}\n.fi\n",
        roff_text(KEXEC_SPELLING),
        usage.join("\n")
    );
    s += &roff_tagged("FILES", &FILES);
    s += &roff_tagged("ENVIRONMENT", &ENVIRONMENT);
    s += ".SH \"SEE ALSO\"\n\\fBkexec\\fR(8), \\fBkdump\\-config\\fR(8), \\fBmakedumpfile\\fR(8), \
          \\fBcrash\\fR(8), \\fBsystemd\\-shutdown\\fR(8)\n";
    s
}

#[derive(Parser)]
#[command(
    name = "pvkexec",
    version,
    about = "kexec and kdump for Xen PV x86_64 guests",
    long_about = "kexec and kdump for Xen PV x86_64 guests. `plan`, `build`, `extract` and \
                  `inspect` work on files; `load`, `exec`, `unload` and `status` drive the \
                  pvkexec kernel module (pvkexec.ko) in the running domain; `vmcore` copies a \
                  kdump's vmcore off its dump disk."
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prints the start-of-day layout a kernel gets, in the shape of Xen's
    /// "VIRTUAL MEMORY ARRANGEMENT", with the start_info fields and the kernel's notes.
    Plan {
        #[command(flatten)]
        target: Target,
        /// Print one JSON object (field names: docs/plan-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Builds a kexec image file: kernel, initrd and purgatory segments with SHA-256 digests
    /// (format: docs/kexec-image.md).
    Build {
        #[command(flatten)]
        target: Target,
        /// The new kernel's command line.
        #[arg(long, default_value = "")]
        append: String,
        /// VCPUs the old kernel initialised: with more than one, a Linux new kernel gets
        /// `nr_cpus=1` (it BUG()s re-initialising a VCPU).
        #[arg(long, default_value_t = 1, value_parser = parse_old_vcpus)]
        old_vcpus: u32,
        /// The old kernel placed each VCPU's vcpu_info in a frame of its own: those frames are
        /// kept from the new kernel (and Linux 5.16 and later get a warning).
        #[arg(long)]
        old_vcpu_info: bool,
        /// The hypervisor resets VCPUs that are down and undoes vcpu_info registrations
        /// (pvkexec's Xen patches: XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister): the
        /// purgatory resets the old kernel's VCPUs instead of parking them, nothing is hidden
        /// for them, and a Linux new kernel keeps its CPUs and gets no warning. The purgatory
        /// refuses such an image where Xen or the kernel side does not offer both.
        #[arg(long)]
        xen_vcpu_reset: bool,
        /// Frames to keep from the new kernel for grants a backend may still map at the kexec
        /// (more such grants than this and the purgatory refuses).
        #[arg(long, default_value_t = 0)]
        grant_reserve: u64,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Writes the kernel's ELF image (decompressed from a bzImage or gzip'd ELF).
    Extract {
        #[arg(long)]
        kernel: PathBuf,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Prints an image's segments and checks every digest (exit 3 on a mismatch).
    Inspect { image: PathBuf },
    /// Builds the image for the running domain (facts from the pvkexec module) and loads it
    /// into the module; refused, with nothing changed, when the new kernel cannot boot there.
    /// What was loaded is recorded in /run/pvkexec/ for `status`.
    Load {
        /// The new kernel: ELF, gzip'd ELF or bzImage.
        #[arg(long, required_unless_present = "image")]
        kernel: Option<PathBuf>,
        /// A prebuilt image (`pvkexec build` for this domain) instead of a kernel.
        #[arg(
            long,
            conflicts_with_all = ["kernel", "initrd", "append", "reuse_cmdline", "force", "debug"]
        )]
        image: Option<PathBuf>,
        /// The new kernel's initrd (initramfs).
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// The new kernel's command line; with --reuse-cmdline, added after the running
        /// kernel's.
        #[arg(long)]
        append: Option<String>,
        /// Start from the running kernel's command line (/proc/cmdline, less BOOT_IMAGE= and,
        /// with -p, crashkernel=), as kexec-tools does.
        #[arg(long)]
        reuse_cmdline: bool,
        /// Load even a kernel the vcpu_info rule says cannot boot after the running one.
        #[arg(long)]
        force: bool,
        /// Also print the layout and the image's segments with their digests.
        #[arg(short = 'd', long)]
        debug: bool,
        /// Load a crash kernel: frames are set aside now, and the module boots it there on a
        /// panic (kdump). pvkexec's capture kernel takes from --append `pvkexec.dump=xvdX`
        /// (the dump disk, required) and `pvkexec.dump_zero=skip` (runs of zero frames left
        /// out of the vmcore; `keep`, the default, writes every frame).
        #[arg(short = 'p', long = "panic", conflicts_with = "image")]
        panic: bool,
        /// MiB to set aside for the crash kernel (a multiple of 4; default: sized for the
        /// crash kernel and its initrd, printed).
        #[arg(long, requires = "panic")]
        crash_mib: Option<u64>,
    },
    /// Hands the domain to the loaded image, after sync(2) as kexec-tools does.
    Exec {
        /// Do not sync the file systems first (kexec -y).
        #[arg(short = 'y', long)]
        no_sync: bool,
    },
    /// Frees the loaded image (-p: the crash kernel and the frames set aside for it).
    Unload {
        #[arg(short = 'p', long = "panic")]
        panic: bool,
    },
    /// Prints the running domain's facts (from the pvkexec module), each image and what it was
    /// loaded from. Exit status 0 when the kexec image (with -p: the crash kernel) is loaded, 3
    /// when it is not.
    Status {
        /// The crash kernel decides the exit status.
        #[arg(short = 'p', long = "panic")]
        panic: bool,
        /// Print one JSON object (docs/kernel-module.md names its fields).
        #[arg(long)]
        json: bool,
    },
    /// After a kdump: copies the vmcore the capture kernel wrote from sector 0 of the dump
    /// disk (`pvkexec.dump=`) into a file. Exit status 4 when the disk holds no dump.
    Vmcore {
        /// The dump disk (a block device or an image file).
        #[arg(long)]
        disk: PathBuf,
        /// The vmcore file to write (not created when the disk holds no dump).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Tests only: a fault the module injects when loaded with fault_injection=1
    /// (corrupt-crash, park-cpu1).
    #[command(hide = true)]
    TestFault { fault: String },
}

/// The clap definition of `pvkexec` (man pages, completions), with [`after_help`].
pub fn command() -> clap::Command {
    Cli::command().after_long_help(after_help())
}

/// Prints a command's result and gives its exit code.
fn report(r: Result<Output, CliError>) -> ExitCode {
    match r {
        Ok(out) => {
            print!("{}", out.text);
            ExitCode::from(out.code)
        }
        Err(e) => {
            eprintln!("pvkexec: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// Runs `pvkexec` (or, started as `kexec`, its kexec-tools spelling) on `argv`.
pub fn run(argv: Vec<OsString>) -> ExitCode {
    let as_kexec = argv
        .first()
        .and_then(|a| a.to_str())
        .is_some_and(cli_kexec_tools::invoked_as_kexec);
    if as_kexec {
        let args: Result<Vec<String>, _> =
            argv[1..].iter().map(|a| a.clone().into_string()).collect();
        return match args {
            Ok(args) => report(cli_kexec_tools::run_kexec(&args)),
            Err(bad) => report(Err(CliError {
                message: format!("{}: an argument that is not UTF-8", bad.to_string_lossy()),
                code: crate::cli_common::EXIT_USAGE,
            })),
        };
    }
    // Usage errors exit 2, as clap's do.
    let cli = match Cli::from_arg_matches(&command().get_matches_from(argv)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    report(dispatch(cli.cmd))
}

/// The process's own arguments.
pub fn main() -> ExitCode {
    run(std::env::args_os().collect())
}

fn dispatch(cmd: Cmd) -> Result<Output, CliError> {
    let text = |r: Result<String, CliError>| r.map(Output::from);
    match cmd {
        Cmd::Load {
            image: Some(image), ..
        } => text(cli_kexec::load_image(&image)),
        Cmd::Load {
            kernel,
            initrd,
            append,
            reuse_cmdline,
            force,
            debug,
            panic,
            crash_mib,
            ..
        } => {
            let load = LoadRequest {
                kernel: kernel.unwrap_or_default(),
                initrd,
                cmdline: Cmdline {
                    reuse: reuse_cmdline,
                    append,
                },
                force,
                debug,
            };
            match panic {
                true => text(cli_kdump::load_crash(&CrashLoadRequest { load, crash_mib })),
                false => text(cli_kexec::load(&load)),
            }
        }
        // `pvkexec exec` leaves the interfaces to the module's device shutdown; `kexec -e`
        // brings them down first, as kexec-tools does.
        Cmd::Exec { no_sync } => text(cli_kexec::exec(ExecSteps {
            sync: !no_sync,
            ifdown: false,
        })),
        Cmd::Unload { panic: false } => text(cli_kexec::unload()),
        Cmd::Unload { panic: true } => text(cli_kdump::unload_crash()),
        Cmd::Status { panic, json } => cli_status::status(StatusRequest { crash: panic, json }),
        Cmd::Vmcore { disk, output } => cli_vmcore::vmcore(&disk, &output),
        Cmd::TestFault { fault } => text(cli_kdump::test_fault(&fault)),
        Cmd::Extract { kernel, output } => cli_build::extract(&kernel, &output),
        Cmd::Build {
            target,
            append,
            old_vcpus,
            old_vcpu_info,
            xen_vcpu_reset,
            grant_reserve,
            output,
        } => cli_build::build(
            &target,
            &append,
            crate::linux::OldKernel {
                vcpus: old_vcpus,
                vcpu_info_registered: old_vcpu_info,
                xen_resets_vcpus: xen_vcpu_reset,
            },
            grant_reserve,
            &output,
        )
        .map(Output::from)
        .map_err(CliError::from),
        Cmd::Inspect { image } => cli_build::inspect(&image),
        Cmd::Plan { target, json } => cli_build::plan(&target, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        let m = command()
            .try_get_matches_from(std::iter::once("pvkexec").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&m).map(|c| c.cmd)
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn the_man_page_end_is_escaped_roff() {
        assert_eq!(roff_text("-p"), "\\-p");
        assert_eq!(roff_text(".hidden"), "\\&.hidden");
        assert_eq!(roff_text("a\\b"), "a\\eb");
        let r = man_extra_roff();
        for want in [
            ".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\n",
            ".TP\n\\fB4\\fR\n`vmcore`",
            ".SH \"KEXEC\\-TOOLS SPELLING\"",
            "kexec \\-p \\-u",
            ".SH \"FILES\"\n.TP\n\\fB/dev/pvkexec\\fR",
            ".SH \"ENVIRONMENT\"",
        ] {
            assert!(r.contains(want), "no {want:?} in:\n{r}");
        }
        // No line of text starts a roff request by accident.
        for l in r.lines().filter(|l| !l.starts_with(['.', '\\'])) {
            assert!(!l.starts_with('\''), "{l}");
        }
    }

    #[test]
    fn load_joins_reuse_cmdline_and_append() {
        let Ok(Cmd::Load {
            append,
            reuse_cmdline,
            ..
        }) = parse(&[
            "load",
            "--kernel",
            "k",
            "--reuse-cmdline",
            "--append",
            "quiet",
        ])
        else {
            panic!()
        };
        assert_eq!(append.as_deref(), Some("quiet"));
        assert!(reuse_cmdline);
        // A prebuilt image takes none of the kernel's options.
        for extra in [&["--reuse-cmdline"][..], &["--append", "x"], &["-d"]] {
            let mut a = vec!["load", "--image", "i"];
            a.extend_from_slice(extra);
            assert!(parse(&a).is_err(), "{a:?}");
        }
    }

    #[test]
    fn status_exec_and_unload_options() {
        assert!(matches!(
            parse(&["status", "-p", "--json"]),
            Ok(Cmd::Status {
                panic: true,
                json: true
            })
        ));
        assert!(matches!(parse(&["exec"]), Ok(Cmd::Exec { no_sync: false })));
        assert!(matches!(
            parse(&["exec", "--no-sync"]),
            Ok(Cmd::Exec { no_sync: true })
        ));
        assert!(matches!(
            parse(&["unload", "-p"]),
            Ok(Cmd::Unload { panic: true })
        ));
        let e = parse(&["load", "--kernel", "k", "--crash-mib", "20"])
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
    }
}
