//! `pvkexec`: kexec for Xen PV guests. Exit codes: 0 success, 2 usage error, 3 bad input
//! (unreadable or invalid kernel/initrd, or no layout fits).

use clap::{Parser, Subcommand, ValueEnum};
use loader::input::{open_checked, read_checked, write_named, Role, MAX_KERNEL_BYTES};
use loader::plan::{plan_files_for, render_json, render_text, DomuBuilder};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pvkexec",
    version,
    about = "kexec and kdump for Xen PV x86_64 guests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum ToolstackArg {
    #[value(name = "4.17")]
    Xen417,
    #[value(name = "4.20")]
    Xen420,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Xen's initial-domain builder (dom0_build.c).
    Dom0,
    /// The toolstack's builder (libxenguest), with xenstore and console pages.
    Domu,
}

/// What every command that lays out a kernel takes.
#[derive(clap::Args)]
struct Target {
    /// The new kernel: ELF, gzip'd ELF or bzImage.
    #[arg(long)]
    kernel: PathBuf,
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Domain memory in MiB.
    #[arg(long, value_parser = parse_mem_mib)]
    mem_mib: u64,
    #[arg(long, value_enum, default_value = "domu")]
    mode: ModeArg,
    /// The toolstack whose libxenguest builds the domU: up to 4.19 it gunzips a gzip'd
    /// initrd, from 4.20 on it places the file as it is.
    #[arg(long, value_enum, default_value = "4.17")]
    toolstack: ToolstackArg,
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
    Load {
        #[arg(long, required_unless_present = "image")]
        kernel: Option<PathBuf>,
        /// A prebuilt image (`pvkexec build` for this domain) instead of a kernel.
        #[arg(long, conflicts_with_all = ["kernel", "initrd", "append", "reuse_cmdline", "force"])]
        image: Option<PathBuf>,
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// The new kernel's command line.
        #[arg(long, conflicts_with = "reuse_cmdline")]
        append: Option<String>,
        /// Use the running kernel's command line (/proc/cmdline).
        #[arg(long)]
        reuse_cmdline: bool,
        /// Load even a kernel the vcpu_info rule says cannot boot after the running one.
        #[arg(long)]
        force: bool,
        /// Load a crash kernel: frames are set aside now, and the module boots it there on a
        /// panic (kdump).
        #[arg(short = 'p', long = "panic", conflicts_with = "image")]
        panic: bool,
        /// MiB to set aside for the crash kernel (a multiple of 4; default: sized for the
        /// crash kernel and its initrd, printed).
        #[arg(long, requires = "panic")]
        crash_mib: Option<u64>,
    },
    /// Hands the domain to the loaded image.
    Exec,
    /// Frees the loaded image (-p: the crash kernel and the frames set aside for it).
    Unload {
        #[arg(short = 'p', long = "panic")]
        panic: bool,
    },
    /// Prints the running domain's facts (from the pvkexec module) and the loaded image.
    Status,
    /// After a kdump: copies the vmcore the capture kernel wrote from sector 0 of the dump
    /// disk (`pvkexec.dump=`) into a file.
    Vmcore {
        /// The dump disk (a block device or an image file).
        #[arg(long)]
        disk: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Tests only: a fault the module injects when loaded with fault_injection=1
    /// (corrupt-crash, park-cpu1).
    #[command(hide = true)]
    TestFault { fault: String },
}

/// Most memory a PV domain can have: 2^40 frames (4 PiB), all that x86-64's 52-bit physical
/// addresses reach.
const MAX_MEM_MIB: u64 = 1 << 32;

fn parse_mem_mib(s: &str) -> Result<u64, String> {
    let v: u64 = s.parse().map_err(|e| format!("{e}"))?;
    match v {
        0 => Err("a domain needs memory".into()),
        v if v > MAX_MEM_MIB => Err(format!(
            "{v} MiB is more than a PV domain can have ({MAX_MEM_MIB} MiB: 2^40 frames, all that \
             x86-64's 52-bit physical addresses reach)"
        )),
        v => Ok(v),
    }
}

fn parse_old_vcpus(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    let max = pvhandoff::handoff::MAX_VCPUS;
    match v {
        0 => Err("the old kernel runs at least one VCPU".into()),
        v if u64::from(v) > max => Err(format!(
            "{v} VCPUs: the purgatory parks at most {max} (Xen's own PV limit is higher)"
        )),
        v => Ok(v),
    }
}

/// The domain's frames for `--mem-mib` (bounded by [`parse_mem_mib`], checked anyway).
fn domain_pages(mem_mib: u64) -> Result<u64, loader::LoadError> {
    mem_mib.checked_mul(256).ok_or_else(|| {
        loader::LoadError::new(
            "--mem-mib",
            None,
            loader::Reason::Input(format!("{mem_mib} MiB does not fit in 2^64 frames")),
        )
    })
}

/// Checks the kernel and initrd for type and size before either is read.
fn check_inputs(t: &Target) -> Result<(), loader::LoadError> {
    open_checked(
        &t.kernel,
        Role::Kernel {
            max: MAX_KERNEL_BYTES,
        },
    )?;
    if let Some(i) = &t.initrd {
        open_checked(i, initrd_role(t)?)?;
    }
    Ok(())
}

fn initrd_role(t: &Target) -> Result<Role, loader::LoadError> {
    Ok(Role::Initrd {
        domain_bytes: domain_pages(t.mem_mib)?.saturating_mul(4096),
    })
}

fn builder_of(t: ToolstackArg) -> DomuBuilder {
    match t {
        ToolstackArg::Xen417 => DomuBuilder::Xen417,
        ToolstackArg::Xen420 => DomuBuilder::Xen420,
    }
}

fn mode_of(m: ModeArg) -> pvlayout::Mode {
    match m {
        ModeArg::Dom0 => pvlayout::Mode::Dom0,
        ModeArg::Domu => pvlayout::Mode::DomU,
    }
}

fn build(
    t: &Target,
    append: &str,
    old: loader::linux::OldKernel,
    grant_reserve: u64,
    output: &std::path::Path,
) -> Result<String, loader::LoadError> {
    check_inputs(t)?;
    let name = t.kernel.display().to_string();
    let k = loader::parse_kernel(
        &name,
        &read_checked(
            &t.kernel,
            Role::Kernel {
                max: MAX_KERNEL_BYTES,
            },
        )?,
    )?;
    let initrd = match &t.initrd {
        Some(i) => Some(read_checked(i, initrd_role(t)?)?),
        None => None,
    };
    let adjusted = loader::linux::adjust(&k, append, old);
    for n in &adjusted.notes {
        eprintln!("pvkexec: note: {name}: {n}");
    }
    for w in &adjusted.warnings {
        eprintln!("pvkexec: warning: {name}: {w}");
    }
    // Written as it is built: the image is never whole in memory.
    let req = loader::image::BuildRequest {
        input: &name,
        kernel: &k,
        initrd: initrd.as_deref(),
        cmdline: &adjusted.cmdline,
        domain_pages: domain_pages(t.mem_mib)?,
        old_p2m_len: 0,
        hidden: loader::image::Hidden {
            vcpu_pages: old.hidden_pages(),
            grant_reserve,
            vcpu_reset: old.xen_resets_vcpus,
        },
        mode: mode_of(t.mode),
        builder: builder_of(t.toolstack),
    };
    let (plan, relocations) = loader::image::build_image_file(&req, output)?;
    drop((k, initrd));
    let (report, _) = loader::inspect::inspect_file(output)?;
    Ok(format!(
        "{}{}purgatory relocations applied: {relocations}\nwrote {}\n",
        plan.render_xen_arrangement(),
        report,
        output.display()
    ))
}

const EXIT_BAD_INPUT: u8 = 3;

/// Prints a running-kernel command's result (loader/src/cli_kexec.rs).
fn report(r: Result<String, loader::cli_common::CliError>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pvkexec: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv
        .first()
        .is_some_and(|a| loader::cli_kexec_tools::invoked_as_kexec(a))
    {
        return report(loader::cli_kexec_tools::run_kexec(&argv[1..]));
    }
    let cli = Cli::parse(); // usage errors exit 2
    match cli.cmd {
        Cmd::Load {
            image: Some(image), ..
        } => report(loader::cli_kexec::load_image(&image)),
        Cmd::Load {
            kernel,
            initrd,
            append,
            reuse_cmdline,
            force,
            panic,
            crash_mib,
            ..
        } => {
            let load = loader::cli_common::LoadRequest {
                kernel: kernel.unwrap_or_default(),
                initrd,
                cmdline: if reuse_cmdline {
                    loader::cli_common::Cmdline::Reuse
                } else {
                    loader::cli_common::Cmdline::Given(append.unwrap_or_default())
                },
                force,
            };
            match panic {
                true => report(loader::cli_kdump::load_crash(
                    &loader::cli_kdump::CrashLoadRequest { load, crash_mib },
                )),
                false => report(loader::cli_kexec::load(&load)),
            }
        }
        Cmd::Exec => report(loader::cli_kexec::exec()),
        Cmd::Unload { panic: false } => report(loader::cli_kexec::unload()),
        Cmd::Unload { panic: true } => report(loader::cli_kdump::unload_crash()),
        Cmd::Status => report(loader::cli_kexec::status()),
        Cmd::Vmcore { disk, output } => report(loader::cli_vmcore::vmcore(&disk, &output)),
        Cmd::TestFault { fault } => report(loader::cli_kdump::test_fault(&fault)),
        Cmd::Extract { kernel, output } => {
            let name = kernel.display().to_string();
            let result = read_checked(
                &kernel,
                Role::Kernel {
                    max: MAX_KERNEL_BYTES,
                },
            )
            .and_then(|bytes| loader::parse_kernel(&name, &bytes))
            .and_then(|k| {
                write_named(&output, &k.elf)?;
                Ok(k)
            });
            match result {
                Ok(k) => {
                    println!(
                        "{name}: {:?}, ELF of {} bytes written to {}",
                        k.container,
                        k.elf.len(),
                        output.display()
                    );
                    if k.trailing > 0 {
                        println!(
                            "{name}: {} bytes after the ELF in the payload (Linux's relocation \
                             table) not written",
                            k.trailing
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pvkexec: {e}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            }
        }
        Cmd::Build {
            target,
            append,
            old_vcpus,
            old_vcpu_info,
            xen_vcpu_reset,
            grant_reserve,
            output,
        } => match build(
            &target,
            &append,
            loader::linux::OldKernel {
                vcpus: old_vcpus,
                vcpu_info_registered: old_vcpu_info,
                xen_resets_vcpus: xen_vcpu_reset,
            },
            grant_reserve,
            &output,
        ) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pvkexec: {e}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
        Cmd::Inspect { image } => {
            let name = image.display().to_string();
            let result = loader::inspect::inspect_file(&image);
            match result {
                Ok((text, all_ok)) => {
                    print!("{text}");
                    if all_ok {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("pvkexec: {name}: a digest does not match");
                        ExitCode::from(EXIT_BAD_INPUT)
                    }
                }
                Err(e) => {
                    eprintln!("pvkexec: {e}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            }
        }
        Cmd::Plan { target, json } => {
            let mode = mode_of(target.mode);
            if let Err(e) = check_inputs(&target) {
                eprintln!("pvkexec: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            let builder = builder_of(target.toolstack);
            match plan_files_for(
                &target.kernel,
                target.initrd.as_deref(),
                target.mem_mib,
                mode,
                builder,
            ) {
                Ok((k, plan)) => {
                    if json {
                        println!("{}", render_json(&k, &plan));
                    } else {
                        print!("{}", render_text(&k, &plan));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pvkexec: {e}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            }
        }
    }
}
