//! kexec-tools' spelling, for `pvkexec` started as `kexec` (a symlink): `kexec -l K
//! --initrd=I --append=S`, `kexec -e`, `kexec -u`, and kdump-tools' `kexec -p ...`. It parses
//! kexec-tools' options and runs the same commands as `pvkexec load`, `exec`, `unload` and
//! `load -p`.

use crate::cli_common::{CliError, Cmdline, LoadRequest, EXIT_USAGE};
use crate::cli_kdump::{load_crash, unload_crash, CrashLoadRequest};
use crate::cli_kexec::{exec, load, unload};
use std::path::{Path, PathBuf};

/// What `kexec ...` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KexecAction {
    Load(LoadRequest),
    /// `kexec KERNEL` with no action: load, then exec.
    LoadExec(LoadRequest),
    Exec,
    Unload,
    /// `kexec -p KERNEL ...`: a crash kernel for panics.
    LoadCrash(CrashLoadRequest),
    /// `kexec -p -u`.
    UnloadCrash,
    Help,
}

pub const KEXEC_USAGE: &str =
    "usage: kexec -l KERNEL [--initrd=FILE] [--append=S | --command-line=S | --reuse-cmdline] [-s]
       kexec -e | kexec -u | kexec KERNEL [options]  (load, then exec)
       kexec -p KERNEL [--initrd=FILE] [--command-line=S]  (a crash kernel for panics)
       kexec -p -u
pvkexec's kexec-tools spelling for Xen PV guests (needs the pvkexec module).";

fn usage(msg: String) -> CliError {
    CliError {
        message: format!("{msg}\n{KEXEC_USAGE}"),
        code: EXIT_USAGE,
    }
}

/// Parses kexec-tools' options (after argv[0]).
pub fn parse_kexec(args: &[String]) -> Result<KexecAction, CliError> {
    #[derive(PartialEq)]
    enum Act {
        None,
        Load,
        Exec,
        Unload,
    }
    let mut act = Act::None;
    let mut kernel: Option<PathBuf> = None;
    let mut initrd = None;
    let mut cmdline: Option<Cmdline> = None;
    let mut panic = false;
    let mut it = args.iter();
    let set = |act: &mut Act, new: Act, flag: &str| -> Result<(), CliError> {
        if *act != Act::None && *act != new {
            return Err(usage(format!(
                "{flag}: only one of -l, -e and -u at a time"
            )));
        }
        *act = new;
        Ok(())
    };
    let mut set_cmdline = |c: Cmdline, flag: &str| -> Result<(), CliError> {
        if cmdline.replace(c).is_some() {
            return Err(usage(format!(
                "{flag}: give one of --append, --command-line and --reuse-cmdline"
            )));
        }
        Ok(())
    };
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, CliError> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(usage(format!("{flag} needs {what}"))),
            }
        };
        match flag {
            "-l" | "--load" => set(&mut act, Act::Load, flag)?,
            "-e" | "--exec" => set(&mut act, Act::Exec, flag)?,
            "-u" | "--unload" => set(&mut act, Act::Unload, flag)?,
            "-p" | "--load-panic" => panic = true,
            "-s" | "--kexec-file-syscall" => {}
            "-h" | "--help" => return Ok(KexecAction::Help),
            "--initrd" | "--ramdisk" => initrd = Some(PathBuf::from(value("a file")?)),
            "--append" | "--command-line" => set_cmdline(Cmdline::Given(value("a string")?), flag)?,
            "--reuse-cmdline" => set_cmdline(Cmdline::Reuse, flag)?,
            f if f.starts_with('-') => {
                return Err(usage(format!("{f}: not an option pvkexec's kexec takes")))
            }
            k => {
                if kernel.replace(PathBuf::from(k)).is_some() {
                    return Err(usage(format!("{k}: a second kernel")));
                }
            }
        }
    }
    let req = |kernel: Option<PathBuf>| -> Result<LoadRequest, CliError> {
        Ok(LoadRequest {
            kernel: kernel.ok_or_else(|| usage("no kernel given".into()))?,
            initrd: initrd.clone(),
            cmdline: cmdline.clone().unwrap_or(Cmdline::Given(String::new())),
            force: false,
        })
    };
    if panic {
        let crash = |kernel| -> Result<KexecAction, CliError> {
            Ok(KexecAction::LoadCrash(CrashLoadRequest {
                load: req(kernel)?,
                crash_mib: None,
            }))
        };
        return match act {
            Act::Unload if kernel.is_none() && initrd.is_none() && cmdline.is_none() => {
                Ok(KexecAction::UnloadCrash)
            }
            Act::Unload => Err(usage(
                "-p -u takes no kernel, initrd or command line".into(),
            )),
            Act::Exec => Err(usage(
                "-p -e: a crash kernel runs on a panic, not on request".into(),
            )),
            Act::Load | Act::None => crash(kernel),
        };
    }
    match act {
        Act::Load => Ok(KexecAction::Load(req(kernel)?)),
        Act::None if kernel.is_some() => Ok(KexecAction::LoadExec(req(kernel)?)),
        Act::None => Err(usage("nothing to do".into())),
        Act::Exec | Act::Unload if kernel.is_some() || initrd.is_some() || cmdline.is_some() => {
            Err(usage(
                "-e and -u take no kernel, initrd or command line".into(),
            ))
        }
        Act::Exec => Ok(KexecAction::Exec),
        Act::Unload => Ok(KexecAction::Unload),
    }
}

/// Whether the program was started under the name `kexec` (a symlink to pvkexec).
pub fn invoked_as_kexec(argv0: &str) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "kexec")
}

/// `kexec ...`: runs the parsed action; returns the text to print.
pub fn run_kexec(args: &[String]) -> Result<String, CliError> {
    match parse_kexec(args)? {
        KexecAction::Help => Ok(format!("{KEXEC_USAGE}\n")),
        KexecAction::Load(r) => load(&r),
        KexecAction::LoadExec(r) => {
            let mut out = load(&r)?;
            out += &exec()?;
            Ok(out)
        }
        KexecAction::Exec => exec(),
        KexecAction::Unload => unload(),
        KexecAction::LoadCrash(r) => load_crash(&r),
        KexecAction::UnloadCrash => unload_crash(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn kexec_tools_spelling() {
        let a = parse_kexec(&args(&[
            "-l",
            "/boot/vmlinuz",
            "--initrd=/boot/initrd",
            "--append=console=hvc0 quiet",
            "-s",
        ]))
        .unwrap();
        assert_eq!(
            a,
            KexecAction::Load(LoadRequest {
                kernel: "/boot/vmlinuz".into(),
                initrd: Some("/boot/initrd".into()),
                cmdline: Cmdline::Given("console=hvc0 quiet".into()),
                force: false,
            })
        );
        let a = parse_kexec(&args(&[
            "-l",
            "k",
            "--command-line",
            "x=1",
            "--ramdisk",
            "i",
        ]))
        .unwrap();
        match a {
            KexecAction::Load(r) => {
                assert_eq!(r.cmdline, Cmdline::Given("x=1".into()));
                assert_eq!(r.initrd, Some("i".into()));
            }
            o => panic!("{o:?}"),
        }
        match parse_kexec(&args(&["-l", "k", "--reuse-cmdline"])).unwrap() {
            KexecAction::Load(r) => assert_eq!(r.cmdline, Cmdline::Reuse),
            o => panic!("{o:?}"),
        }
        assert_eq!(parse_kexec(&args(&["-e"])).unwrap(), KexecAction::Exec);
        assert_eq!(parse_kexec(&args(&["-u"])).unwrap(), KexecAction::Unload);
        assert!(matches!(
            parse_kexec(&args(&["k"])).unwrap(),
            KexecAction::LoadExec(_)
        ));
    }

    #[test]
    fn kdump_tools_spelling() {
        // kdump-config's `kexec -p --command-line="..." --initrd=I K`.
        match parse_kexec(&args(&[
            "-p",
            "--command-line=console=hvc0 nr_cpus=1",
            "--initrd=/boot/i",
            "/boot/k",
        ]))
        .unwrap()
        {
            KexecAction::LoadCrash(r) => {
                assert_eq!(r.load.kernel, PathBuf::from("/boot/k"));
                assert_eq!(r.load.initrd, Some("/boot/i".into()));
                assert_eq!(
                    r.load.cmdline,
                    Cmdline::Given("console=hvc0 nr_cpus=1".into())
                );
                assert_eq!(r.crash_mib, None);
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            parse_kexec(&args(&["-l", "-p", "k"])).unwrap(),
            KexecAction::LoadCrash(_)
        ));
        assert_eq!(
            parse_kexec(&args(&["-p", "-u"])).unwrap(),
            KexecAction::UnloadCrash
        );
    }

    #[test]
    fn kexec_refusals() {
        for bad in [
            &["-p", "-e"][..],
            &["-p", "-u", "k"],
            &["-p"],
            &["-l"][..],
            &["-l", "-e", "k"],
            &["-e", "k"],
            &["--bogus"],
            &[],
            &["-l", "k", "--append=a", "--reuse-cmdline"],
            &["-l", "k", "--initrd"],
        ] {
            let e = parse_kexec(&args(bad)).unwrap_err();
            assert_eq!(e.code, EXIT_USAGE, "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn argv0() {
        assert!(invoked_as_kexec("kexec"));
        assert!(invoked_as_kexec("/sbin/kexec"));
        assert!(!invoked_as_kexec("/usr/bin/pvkexec"));
    }
}
