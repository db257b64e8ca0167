//! `pvkexec`: kexec for Xen PV guests. Exit codes: 0 success, 2 usage error, 3 bad input
//! (unreadable or invalid kernel/initrd, or no layout fits).

use clap::{Parser, Subcommand, ValueEnum};
use loader::plan::{plan_files, render_json, render_text};
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
enum ModeArg {
    /// Xen's initial-domain builder (dom0_build.c).
    Dom0,
    /// The toolstack's builder (libxenguest), with xenstore and console pages.
    Domu,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prints the start-of-day layout a kernel gets, in the shape of Xen's
    /// "VIRTUAL MEMORY ARRANGEMENT", with the start_info fields and the kernel's notes.
    Plan {
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Domain memory in MiB.
        #[arg(long)]
        mem_mib: u64,
        #[arg(long, value_enum, default_value = "domu")]
        mode: ModeArg,
        /// Print one JSON object (field names: docs/plan-json.md).
        #[arg(long)]
        json: bool,
    },
}

const EXIT_BAD_INPUT: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit 2
    match cli.cmd {
        Cmd::Plan {
            kernel,
            initrd,
            mem_mib,
            mode,
            json,
        } => {
            let mode = match mode {
                ModeArg::Dom0 => pvlayout::Mode::Dom0,
                ModeArg::Domu => pvlayout::Mode::DomU,
            };
            match plan_files(&kernel, initrd.as_deref(), mem_mib, mode) {
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
