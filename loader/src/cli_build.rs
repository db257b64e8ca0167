//! The commands that work on files alone, with no module (`plan`, `build`, `extract`,
//! `inspect`), and the arguments they share. Exit status on a bad input: 3.

use crate::cli_common::{CliError, Output, EXIT_BAD_INPUT};
use crate::input::{open_checked, read_checked, write_named, Role, MAX_KERNEL_BYTES};
use crate::plan::{plan_files_for, render_json, render_text, DomuBuilder};
use clap::ValueEnum;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum)]
pub enum ToolstackArg {
    #[value(name = "4.17")]
    Xen417,
    #[value(name = "4.20")]
    Xen420,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Xen's initial-domain builder (dom0_build.c).
    Dom0,
    /// The toolstack's builder (libxenguest), with xenstore and console pages.
    Domu,
}

/// What every command that lays out a kernel takes.
#[derive(clap::Args)]
pub struct Target {
    /// The new kernel: ELF, gzip'd ELF or bzImage.
    #[arg(long)]
    pub kernel: PathBuf,
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Domain memory in MiB.
    #[arg(long, value_parser = parse_mem_mib)]
    pub mem_mib: u64,
    #[arg(long, value_enum, default_value = "domu")]
    pub mode: ModeArg,
    /// The toolstack whose libxenguest builds the domU: up to 4.19 it gunzips a gzip'd
    /// initrd, from 4.20 on it places the file as it is.
    #[arg(long, value_enum, default_value = "4.17")]
    pub toolstack: ToolstackArg,
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

pub(crate) fn parse_old_vcpus(s: &str) -> Result<u32, String> {
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
fn domain_pages(mem_mib: u64) -> Result<u64, crate::LoadError> {
    mem_mib.checked_mul(256).ok_or_else(|| {
        crate::LoadError::new(
            "--mem-mib",
            None,
            crate::Reason::Input(format!("{mem_mib} MiB does not fit in 2^64 frames")),
        )
    })
}

/// Checks the kernel and initrd for type and size before either is read.
fn check_inputs(t: &Target) -> Result<(), crate::LoadError> {
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

fn initrd_role(t: &Target) -> Result<Role, crate::LoadError> {
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

pub fn build(
    t: &Target,
    append: &str,
    old: crate::linux::OldKernel,
    grant_reserve: u64,
    output: &std::path::Path,
) -> Result<String, crate::LoadError> {
    check_inputs(t)?;
    let name = t.kernel.display().to_string();
    let k = crate::parse_kernel(
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
    let adjusted = crate::linux::adjust(&k, append, old);
    for n in &adjusted.notes {
        eprintln!("pvkexec: note: {name}: {n}");
    }
    for w in &adjusted.warnings {
        eprintln!("pvkexec: warning: {name}: {w}");
    }
    // Written as it is built: the image is never whole in memory.
    let req = crate::image::BuildRequest {
        input: &name,
        kernel: &k,
        initrd: initrd.as_deref(),
        cmdline: &adjusted.cmdline,
        domain_pages: domain_pages(t.mem_mib)?,
        old_p2m_len: 0,
        hidden: crate::image::Hidden {
            vcpu_pages: old.hidden_pages(),
            grant_reserve,
            vcpu_reset: old.xen_resets_vcpus,
            aliases: None,
        },
        mode: mode_of(t.mode),
        builder: builder_of(t.toolstack),
    };
    let (plan, relocations) = crate::image::build_image_file(&req, output)?;
    drop((k, initrd));
    let (report, _) = crate::inspect::inspect_file(output)?;
    Ok(format!(
        "{}{}purgatory relocations applied: {relocations}\nwrote {}\n",
        plan.render_xen_arrangement(),
        report,
        output.display()
    ))
}

/// `pvkexec plan`.
pub fn plan(target: &Target, json: bool) -> Result<Output, CliError> {
    check_inputs(target)?;
    let (k, plan) = plan_files_for(
        &target.kernel,
        target.initrd.as_deref(),
        target.mem_mib,
        mode_of(target.mode),
        builder_of(target.toolstack),
    )?;
    Ok(match json {
        true => format!("{}\n", render_json(&k, &plan)),
        false => render_text(&k, &plan),
    }
    .into())
}

/// `pvkexec extract`: the kernel's ELF, decompressed.
pub fn extract(kernel: &Path, output: &Path) -> Result<Output, CliError> {
    let name = kernel.display().to_string();
    let bytes = read_checked(
        kernel,
        Role::Kernel {
            max: MAX_KERNEL_BYTES,
        },
    )?;
    let k = crate::parse_kernel(&name, &bytes)?;
    write_named(output, &k.elf)?;
    let mut text = format!(
        "{name}: {:?}, ELF of {} bytes written to {}\n",
        k.container,
        k.elf.len(),
        output.display()
    );
    if k.trailing > 0 {
        text += &format!(
            "{name}: {} bytes after the ELF in the payload (Linux's relocation table) not \
             written\n",
            k.trailing
        );
    }
    Ok(text.into())
}

/// `pvkexec inspect`: an image's segments, every digest checked (exit 3 on a mismatch).
pub fn inspect(image: &Path) -> Result<Output, CliError> {
    let (text, all_ok) = crate::inspect::inspect_file(image)?;
    match all_ok {
        true => Ok(text.into()),
        false => {
            print!("{text}");
            Err(CliError {
                message: format!("{}: a digest does not match", image.display()),
                code: EXIT_BAD_INPUT,
            })
        }
    }
}
