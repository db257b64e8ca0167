//! kexec-tools' spelling, for `pvkexec` started as `kexec` (a symlink): `kexec -l K
//! --initrd=I --append=S`, `kexec -e`, `kexec -u`, `kexec -f K`, `kexec K`, and kdump-tools'
//! and kdumpctl's `kexec [-s] -p [--args-linux] --command-line=S --initrd=I K`, `kexec [-s] -p
//! -u`. It parses kexec-tools' options the way its getopt does (long options with `=VALUE` or a
//! separate argument, short flags bundled, options and the kernel in any order, `--` ending the
//! options) and runs the same commands as `pvkexec load`, `exec`, `unload` and `load -p`, with
//! kexec-tools' steps around them: sync, interfaces brought down, `shutdown -r now`
//! (docs/kexec-tools-compat.md).

use crate::cli_common::{CliError, Cmdline, LoadRequest, Output, EXIT_USAGE};
use crate::cli_kdump::{load_crash, unload_crash, CrashLoadRequest};
use crate::cli_kexec::{exec, load, unload, ExecSteps};
use crate::cli_system;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `kexec ...` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KexecAction {
    /// `-l KERNEL`: load, then sync unless `-y` (kexec-tools syncs after `-l` too).
    Load {
        load: LoadRequest,
        sync: bool,
    },
    /// `KERNEL` with no action option: load, then `shutdown -r now`; systemd's shutdown stops
    /// the services and runs pvkexec's hook, which hands over (`pvkexec exec`).
    LoadReboot(LoadRequest),
    /// `-f KERNEL`: load, then sync, interfaces down and hand over at once, no shutdown.
    LoadExec {
        load: LoadRequest,
        steps: ExecSteps,
    },
    /// `-e` (also `-e -f`): hand over to the loaded image.
    Exec(ExecSteps),
    /// `-u`.
    Unload,
    /// `-p KERNEL ...`: a crash kernel for panics.
    LoadCrash(CrashLoadRequest),
    /// `-p -u`.
    UnloadCrash,
    Help,
    Version,
}

pub const KEXEC_USAGE: &str = "\
usage: kexec [options] KERNEL     load, then reboot through `shutdown -r now`
       kexec -l KERNEL [options]  load
       kexec -f KERNEL [options]  load and hand over at once (no shutdown)
       kexec -e                   hand over to the loaded kernel
       kexec -u                   unload it
       kexec -p KERNEL [options]  load a crash kernel for panics (kdump)
       kexec -p -u                unload the crash kernel
options: --initrd=FILE (--ramdisk), --append=TEXT (--command-line), --reuse-cmdline
         (the running kernel's command line, then --append's text), -y/--no-sync,
         -x/--no-ifdown, -d/--debug (print the layout and the image's segments);
         accepted with no effect: -s, -c, -a (the kexec syscalls), -i, --args-linux
pvkexec's kexec-tools spelling for Xen PV guests (needs the pvkexec module);
docs/kexec-tools-compat.md says what differs.";

fn usage(msg: String) -> CliError {
    CliError {
        message: format!("{msg}\n{KEXEC_USAGE}"),
        code: EXIT_USAGE,
    }
}

/// kexec-tools options pvkexec does not offer, for a message better than "unknown".
const NOT_OFFERED: [&str; 18] = [
    "-t",
    "--type",
    "--mem-min",
    "--mem-max",
    "--reuseinitrd",
    "--load-preserve-context",
    "--load-jump-back-helper",
    "--entry",
    "--print-ckr-size",
    "--load-live-update",
    "--exec-live-update",
    "--hotplug",
    "--no-cma",
    "--force-dtb",
    "--elf32-core-headers",
    "--elf64-core-headers",
    "--console-vga",
    "--console-serial",
];

/// Options as given, before they are checked against each other.
#[derive(Default)]
struct Opts {
    load: bool,
    exec: bool,
    unload: bool,
    force: bool,
    panic: bool,
    no_sync: bool,
    no_ifdown: bool,
    debug: bool,
    help: bool,
    version: bool,
    reuse: bool,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    /// The text and the flag that gave it.
    append: Option<(String, String)>,
}

impl Opts {
    /// A flag without a value; `Ok(false)` when `flag` is not one.
    fn flag(&mut self, flag: &str) -> Result<bool, CliError> {
        match flag {
            "-l" | "--load" => self.load = true,
            "-e" | "--exec" => self.exec = true,
            "-u" | "--unload" => self.unload = true,
            "-p" | "--load-panic" => self.panic = true,
            "-f" | "--force" => self.force = true,
            "-y" | "--no-sync" => self.no_sync = true,
            "-x" | "--no-ifdown" => self.no_ifdown = true,
            "-d" | "--debug" => self.debug = true,
            "-h" | "--help" => self.help = true,
            "-v" | "--version" => self.version = true,
            "--reuse-cmdline" => self.reuse = true,
            // kexec_file_load, kexec_load, either: pvkexec loads through /dev/pvkexec, not a
            // kexec syscall (kexec-tools under Xen uses neither as well).
            "-s"
            | "--kexec-file-syscall"
            | "-c"
            | "--kexec-syscall"
            | "-a"
            | "--kexec-syscall-auto" => {}
            // Skip the purgatory's digest checks: pvkexec's purgatory always checks.
            "-i" | "--no-checks" => {}
            // Linux-style arguments for an ELF kernel: a PV kernel always gets its command
            // line in start_info, ELF or bzImage alike.
            "--args-linux" => {}
            "--args-elf" | "--args-none" => {
                return Err(usage(format!(
                    "{flag}: a Xen PV kernel gets its command line in start_info as Xen's \
                     builder gives it; pvkexec offers no other way (--args-linux is what it does)"
                )))
            }
            "-S" | "--status" => {
                return Err(usage(format!(
                    "{flag}: not offered; `pvkexec status` (exit 0 loaded, 3 not) or \
                     `pvkexec status -p` for the crash kernel"
                )))
            }
            f if NOT_OFFERED.contains(&f) => {
                return Err(usage(format!(
                    "{f}: a kexec-tools option pvkexec does not offer \
                     (docs/kexec-tools-compat.md)"
                )))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// An option that takes a value.
    fn value(&mut self, flag: &str, v: String) -> Result<(), CliError> {
        let twice = || usage(format!("{flag}: given twice"));
        match flag {
            "--initrd" | "--ramdisk" => {
                if self.initrd.replace(PathBuf::from(v)).is_some() {
                    return Err(twice());
                }
            }
            "--append" | "--command-line" => {
                if let Some((_, first)) = self.append.replace((v, flag.to_string())) {
                    return Err(usage(format!(
                        "{flag}: the command line was given already ({first}); give one of \
                         --append and --command-line, once"
                    )));
                }
            }
            _ => return Err(usage(format!("{flag}: takes no value"))),
        }
        Ok(())
    }
}

fn takes_value(flag: &str) -> bool {
    matches!(
        flag,
        "--initrd" | "--ramdisk" | "--append" | "--command-line"
    )
}

/// Parses kexec-tools' options (after argv[0]).
pub fn parse_kexec(args: &[String]) -> Result<KexecAction, CliError> {
    let mut o = Opts::default();
    let mut it = args.iter();
    let positional = |o: &mut Opts, k: &str| -> Result<(), CliError> {
        if let Some(first) = o.kernel.replace(PathBuf::from(k)) {
            return Err(usage(format!(
                "{k}: a second kernel (the first: {})",
                first.display()
            )));
        }
        Ok(())
    };
    while let Some(a) = it.next() {
        if a == "--" {
            for k in it.by_ref() {
                positional(&mut o, k)?;
            }
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (flag, inline) = match long.split_once('=') {
                Some((f, v)) => (format!("--{f}"), Some(v.to_string())),
                None => (a.clone(), None),
            };
            if takes_value(&flag) {
                let v = match inline.or_else(|| it.next().cloned()) {
                    Some(v) => v,
                    None => return Err(usage(format!("{flag} needs a value"))),
                };
                o.value(&flag, v)?;
            } else if inline.is_some() && o.flag(&flag)? {
                return Err(usage(format!("{flag} takes no value")));
            } else if !o.flag(&flag)? {
                return Err(usage(format!(
                    "{flag}: not an option pvkexec's kexec takes"
                )));
            }
        } else if a.len() > 1 && a.starts_with('-') {
            // One flag or several bundled (`-ps`), as getopt takes them.
            for c in a[1..].chars() {
                let flag = format!("-{c}");
                if !o.flag(&flag)? {
                    return Err(usage(format!(
                        "{flag}{}: not an option pvkexec's kexec takes",
                        match a.len() > 2 {
                            true => format!(" (in {a})"),
                            false => String::new(),
                        }
                    )));
                }
            }
        } else {
            positional(&mut o, a)?;
        }
    }
    decide(o)
}

/// Checks the options against each other and names the action.
fn decide(o: Opts) -> Result<KexecAction, CliError> {
    if o.help {
        return Ok(KexecAction::Help);
    }
    if o.version {
        return Ok(KexecAction::Version);
    }
    let actions = [(o.load, "-l"), (o.exec, "-e"), (o.unload, "-u")];
    let given: Vec<&str> = actions.iter().filter(|a| a.0).map(|a| a.1).collect();
    if given.len() > 1 {
        return Err(usage(format!(
            "{}: only one of -l, -e and -u at a time",
            given.join(" ")
        )));
    }
    let has_inputs = o.kernel.is_some() || o.initrd.is_some() || o.append.is_some() || o.reuse;
    let steps = ExecSteps {
        sync: !o.no_sync,
        ifdown: !o.no_ifdown,
    };
    let request = |o: Opts| -> Result<LoadRequest, CliError> {
        Ok(LoadRequest {
            kernel: o.kernel.ok_or_else(|| usage("no kernel given".into()))?,
            initrd: o.initrd,
            cmdline: Cmdline {
                reuse: o.reuse,
                append: o.append.map(|(text, _)| text),
            },
            // kexec's -f is not `pvkexec load --force` (the vcpu_info rule stays).
            force: false,
            debug: o.debug,
        })
    };
    if o.panic {
        return match (o.load, o.exec, o.unload, o.force) {
            (_, true, _, _) | (_, _, _, true) => Err(usage(format!(
                "-p {}: a crash kernel runs on a panic, not on request",
                if o.exec { "-e" } else { "-f" }
            ))),
            (_, _, true, _) if has_inputs => Err(usage(
                "-p -u takes no kernel, initrd or command line".into(),
            )),
            (_, _, true, _) => Ok(KexecAction::UnloadCrash),
            _ => Ok(KexecAction::LoadCrash(CrashLoadRequest {
                load: request(o)?,
                crash_mib: None,
            })),
        };
    }
    if o.force && (o.load || o.unload) {
        return Err(usage(format!(
            "-f with {}: -f loads and hands over at once; give one of them",
            if o.load { "-l" } else { "-u" }
        )));
    }
    if (o.exec || o.unload) && has_inputs {
        return Err(usage(
            "-e and -u take no kernel, initrd or command line".into(),
        ));
    }
    match (o.load, o.exec, o.unload, o.force) {
        (true, ..) => Ok(KexecAction::Load {
            sync: !o.no_sync,
            load: request(o)?,
        }),
        (_, true, ..) => Ok(KexecAction::Exec(steps)),
        (_, _, true, _) => Ok(KexecAction::Unload),
        (.., true) => Ok(KexecAction::LoadExec {
            load: request(o)?,
            steps,
        }),
        _ if o.kernel.is_some() => Ok(KexecAction::LoadReboot(request(o)?)),
        _ => Err(usage(
            "nothing to do: no kernel, and none of -l, -e, -u, -p".into(),
        )),
    }
}

/// Whether the program was started under the name `kexec` (a symlink to pvkexec).
pub fn invoked_as_kexec(argv0: &str) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "kexec")
}

/// Prints at once what a step said: the steps after it (a handover, `shutdown`) do not return.
fn print_now(text: &str) {
    print!("{text}");
    let _ = std::io::stdout().flush();
}

/// `kexec ...`: runs the parsed action; returns what is left to print and the exit code.
pub fn run_kexec(args: &[String]) -> Result<Output, CliError> {
    match parse_kexec(args)? {
        KexecAction::Help => Ok(format!("{KEXEC_USAGE}\n").into()),
        KexecAction::Version => Ok(format!(
            "kexec (pvkexec {}): kexec-tools' spelling for Xen PV guests\n",
            env!("CARGO_PKG_VERSION")
        )
        .into()),
        KexecAction::Load { load: r, sync } => {
            let out = load(&r)?;
            if sync {
                cli_system::sync();
            }
            Ok(out.into())
        }
        KexecAction::LoadExec { load: r, steps } => {
            print_now(&load(&r)?);
            exec(steps).map(Into::into)
        }
        KexecAction::LoadReboot(r) => {
            // Before loading: a reboot that would not reach the hook drops the image.
            cli_system::RebootPath::probe()
                .check()
                .map_err(CliError::refused)?;
            print_now(&load(&r)?);
            Err(CliError::refused(format!(
                "{}. The image stays loaded: `systemctl reboot` or `pvkexec exec` hands over to it",
                cli_system::exec_shutdown_reboot()
            )))
        }
        KexecAction::Exec(steps) => exec(steps).map(Into::into),
        KexecAction::Unload => unload().map(Into::into),
        KexecAction::LoadCrash(r) => load_crash(&r).map(Into::into),
        KexecAction::UnloadCrash => unload_crash().map(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn parse(s: &[&str]) -> KexecAction {
        parse_kexec(&args(s)).unwrap_or_else(|e| panic!("{s:?}: {}", e.message))
    }

    fn req(kernel: &str, initrd: Option<&str>, cmdline: Cmdline) -> LoadRequest {
        LoadRequest {
            kernel: kernel.into(),
            initrd: initrd.map(PathBuf::from),
            cmdline,
            force: false,
            debug: false,
        }
    }

    const ALL: ExecSteps = ExecSteps {
        sync: true,
        ifdown: true,
    };

    fn crash(r: LoadRequest) -> KexecAction {
        KexecAction::LoadCrash(CrashLoadRequest {
            load: r,
            crash_mib: None,
        })
    }

    #[test]
    fn kexec_tools_spelling() {
        assert_eq!(
            parse(&[
                "-l",
                "/boot/vmlinuz",
                "--initrd=/boot/initrd",
                "--append=console=hvc0 quiet",
                "-s",
            ]),
            KexecAction::Load {
                load: req(
                    "/boot/vmlinuz",
                    Some("/boot/initrd"),
                    Cmdline::given("console=hvc0 quiet")
                ),
                sync: true,
            }
        );
        // Values as separate arguments, the kernel anywhere.
        assert_eq!(
            parse(&["--command-line", "x=1", "-l", "--ramdisk", "i", "k"]),
            KexecAction::Load {
                load: req("k", Some("i"), Cmdline::given("x=1")),
                sync: true,
            }
        );
        assert_eq!(parse(&["-e"]), KexecAction::Exec(ALL));
        assert_eq!(parse(&["--exec"]), KexecAction::Exec(ALL));
        assert_eq!(parse(&["-u"]), KexecAction::Unload);
        assert_eq!(parse(&["-h"]), KexecAction::Help);
        assert_eq!(parse(&["--version"]), KexecAction::Version);
        // `--` ends the options.
        assert_eq!(
            parse(&["-l", "--", "-odd-name"]),
            KexecAction::Load {
                load: req("-odd-name", None, Cmdline::default()),
                sync: true,
            }
        );
        // An empty command line is one.
        assert_eq!(
            parse(&["-l", "k", "--append="]),
            KexecAction::Load {
                load: req("k", None, Cmdline::given("")),
                sync: true,
            }
        );
    }

    #[test]
    fn no_action_loads_then_reboots_and_force_execs_at_once() {
        assert_eq!(
            parse(&["/boot/vmlinuz", "--reuse-cmdline"]),
            KexecAction::LoadReboot(req(
                "/boot/vmlinuz",
                None,
                Cmdline {
                    reuse: true,
                    append: None
                }
            ))
        );
        assert_eq!(
            parse(&["-f", "k"]),
            KexecAction::LoadExec {
                load: req("k", None, Cmdline::default()),
                steps: ALL,
            }
        );
        assert_eq!(
            parse(&["--force", "-y", "-x", "k"]),
            KexecAction::LoadExec {
                load: req("k", None, Cmdline::default()),
                steps: ExecSteps {
                    sync: false,
                    ifdown: false
                },
            }
        );
        // -e never calls shutdown: -f adds nothing to it.
        assert_eq!(parse(&["-f", "-e"]), KexecAction::Exec(ALL));
    }

    #[test]
    fn sync_and_ifdown_follow_y_and_x() {
        assert_eq!(
            parse(&["-e", "-y"]),
            KexecAction::Exec(ExecSteps {
                sync: false,
                ifdown: true
            })
        );
        assert_eq!(
            parse(&["-ex"]),
            KexecAction::Exec(ExecSteps {
                sync: true,
                ifdown: false
            })
        );
        assert_eq!(
            parse(&["--no-sync", "--no-ifdown", "-e"]),
            KexecAction::Exec(ExecSteps {
                sync: false,
                ifdown: false
            })
        );
        assert_eq!(
            parse(&["-l", "-y", "k"]),
            KexecAction::Load {
                load: req("k", None, Cmdline::default()),
                sync: false,
            }
        );
    }

    #[test]
    fn reuse_cmdline_and_append_join() {
        let want = Cmdline {
            reuse: true,
            append: Some("console=hvc0".into()),
        };
        for a in [
            &["-l", "k", "--reuse-cmdline", "--append=console=hvc0"][..],
            &["-l", "k", "--append", "console=hvc0", "--reuse-cmdline"],
            &["-l", "k", "--reuse-cmdline", "--command-line=console=hvc0"],
        ] {
            assert_eq!(
                parse(a),
                KexecAction::Load {
                    load: req("k", None, want.clone()),
                    sync: true,
                },
                "{a:?}"
            );
        }
    }

    #[test]
    fn debug_and_the_no_op_options() {
        let KexecAction::Load { load, .. } = parse(&["-d", "-l", "k"]) else {
            panic!()
        };
        assert!(load.debug);
        let plain = parse(&["-l", "k"]);
        for extra in [
            "-s",
            "--kexec-file-syscall",
            "-c",
            "--kexec-syscall",
            "-a",
            "--kexec-syscall-auto",
            "-i",
            "--no-checks",
            "--args-linux",
        ] {
            assert_eq!(parse(&["-l", "k", extra]), plain, "{extra}");
        }
    }

    /// Every form kdump-tools' kdump-config and kdumpctl run: `$KEXEC -p [-s] [--args-linux]
    /// [KDUMP_KEXEC_ARGS] --command-line="..." [--initrd=I] KERNEL` (the command line may start
    /// with a space when KDUMP_CMDLINE is empty, and kdumpctl puts -s, from KEXEC_ARGS, first),
    /// and `[-s] -p -u`.
    #[test]
    fn kdump_tools_spelling() {
        let cl = " console=hvc0 reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 \
                  irqpoll nousb";
        let full = || {
            crash(req(
                "/var/lib/kdump/vmlinuz",
                Some("/var/lib/kdump/initrd.img"),
                Cmdline::given(cl),
            ))
        };
        let cmd = format!("--command-line={cl}");
        for form in [
            &[
                "-p",
                &cmd,
                "--initrd=/var/lib/kdump/initrd.img",
                "/var/lib/kdump/vmlinuz",
            ][..],
            &[
                "-p",
                "-s",
                &cmd,
                "--initrd=/var/lib/kdump/initrd.img",
                "/var/lib/kdump/vmlinuz",
            ],
            &[
                "-p",
                "--args-linux",
                &cmd,
                "--initrd=/var/lib/kdump/initrd.img",
                "/var/lib/kdump/vmlinuz",
            ],
            &[
                "-p",
                "-s",
                "--args-linux",
                &cmd,
                "--initrd=/var/lib/kdump/initrd.img",
                "/var/lib/kdump/vmlinuz",
            ],
            &[
                "-s",
                "-p",
                &cmd,
                "--initrd=/var/lib/kdump/initrd.img",
                "/var/lib/kdump/vmlinuz",
            ],
            &[
                "-d",
                "-s",
                "-p",
                &cmd,
                "--initrd=/var/lib/kdump/initrd.img",
                "/var/lib/kdump/vmlinuz",
            ],
        ] {
            let got = parse(form);
            let want = match form.contains(&"-d") {
                true => match full() {
                    KexecAction::LoadCrash(mut c) => {
                        c.load.debug = true;
                        KexecAction::LoadCrash(c)
                    }
                    o => o,
                },
                false => full(),
            };
            assert_eq!(got, want, "{form:?}");
        }
        // Without an initrd (kdump-config adds --initrd only when the file exists).
        assert_eq!(
            parse(&["-p", &cmd, "/boot/k"]),
            crash(req("/boot/k", None, Cmdline::given(cl)))
        );
        for form in [
            &["-p", "-u"][..],
            &["-s", "-p", "-u"],
            &["-p", "-s", "-u"],
            &["-pu"],
            &["--load-panic", "--unload"],
        ] {
            assert_eq!(parse(form), KexecAction::UnloadCrash, "{form:?}");
        }
        assert!(matches!(
            parse(&["-l", "-p", "k"]),
            KexecAction::LoadCrash(_)
        ));
        // kexec-tools' -p also strips crashkernel= from a reused command line (cli_common).
        let KexecAction::LoadCrash(c) = parse(&["-p", "--reuse-cmdline", "k"]) else {
            panic!()
        };
        assert!(c.load.cmdline.reuse);
    }

    #[test]
    fn kexec_refusals_are_usage_errors_that_name_the_option() {
        for (bad, says) in [
            (&["-p", "-e"][..], "a crash kernel runs on a panic"),
            (&["-p", "-f", "k"], "a crash kernel runs on a panic"),
            (&["-p", "-u", "k"], "-p -u takes no kernel"),
            (&["-p"], "no kernel given"),
            (&["-l"], "no kernel given"),
            (&["-f"], "no kernel given"),
            (&["-l", "-e", "k"], "-l -e: only one of"),
            (&["-l", "-f", "k"], "-f with -l"),
            (&["-u", "-f"], "-f with -u"),
            (&["-e", "k"], "-e and -u take no kernel"),
            (&["-e", "--reuse-cmdline"], "-e and -u take no kernel"),
            (&["--bogus"], "--bogus: not an option"),
            (&["-lq", "k"], "-q (in -lq): not an option"),
            (&[], "nothing to do"),
            (
                &["-l", "k", "--append=a", "--command-line=b"],
                "given already (--append)",
            ),
            (
                &["-l", "k", "--initrd=a", "--initrd=b"],
                "--initrd: given twice",
            ),
            (&["-l", "k", "--initrd"], "--initrd needs a value"),
            (&["-l", "k", "j"], "j: a second kernel (the first: k)"),
            (&["-l", "k", "--args-none"], "start_info"),
            (&["-l", "k", "--args-elf"], "start_info"),
            (&["-S"], "pvkexec status"),
            (
                &["-l", "k", "--mem-min=0x1000"],
                "--mem-min: a kexec-tools option pvkexec",
            ),
            (&["-l", "k", "--hotplug"], "does not offer"),
            (&["-l", "k", "--debug=1"], "--debug takes no value"),
        ] {
            let e = parse_kexec(&args(bad)).unwrap_err();
            assert_eq!(e.code, EXIT_USAGE, "{bad:?}: {}", e.message);
            assert!(
                e.message.contains(says),
                "{bad:?}: {says:?} in {}",
                e.message
            );
        }
    }

    #[test]
    fn argv0() {
        assert!(invoked_as_kexec("kexec"));
        assert!(invoked_as_kexec("/sbin/kexec"));
        assert!(!invoked_as_kexec("/usr/bin/pvkexec"));
    }
}
