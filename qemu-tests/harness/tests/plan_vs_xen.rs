//! Differential test of the loader's dom0 layout planner against Xen 4.17's own dom0 builder:
//! boot each kernel under the rig, read Xen's `VIRTUAL MEMORY ARRANGEMENT` block, and require
//! `pvkexec plan --mode dom0` to print the same lines; for the boot-check kernel also compare
//! the start_info fields and entry `rsp` the kernel itself reports.

use harness::{guest, BootConfig, BootResult, Echo, Module, Verdict};
use std::path::{Path, PathBuf};
use std::process::Command;

fn pvkexec() -> PathBuf {
    harness::tools::pvkexec().expect("building pvkexec")
}

fn initrd(len: usize) -> PathBuf {
    harness::tools::test_file(len).expect("writing the test initrd")
}

/// Xen's arrangement block: the lines from `VIRTUAL MEMORY ARRANGEMENT:` to `ENTRY ADDRESS`,
/// without the `(XEN)` prefix.
fn xen_arrangement(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        let text = line.strip_prefix("(XEN) ").unwrap_or(line);
        if text.contains("VIRTUAL MEMORY ARRANGEMENT:") {
            inside = true;
        }
        if inside {
            out.push(text.trim_end().to_string());
            if text.contains("ENTRY ADDRESS") {
                break;
            }
        }
    }
    out
}

fn plan_lines(kernel: &Path, initrd: Option<&Path>, mem_mib: u64) -> Result<Vec<String>, String> {
    let mut cmd = Command::new(pvkexec());
    cmd.arg("plan").arg("--kernel").arg(kernel).args([
        "--mem-mib",
        &mem_mib.to_string(),
        "--mode",
        "dom0",
    ]);
    if let Some(i) = initrd {
        cmd.arg("--initrd").arg(i);
    }
    let out = cmd.output().expect("running pvkexec plan");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    Ok(xen_arrangement(&stdout))
}

fn boot(
    kernel: &Path,
    initrd: Option<&Path>,
    mem_mib: u64,
    cmdline: &str,
    stop: bool,
) -> BootResult {
    let mut cfg = BootConfig::new(kernel);
    cfg.mem_mib = mem_mib;
    cfg.cmdline = cmdline.into();
    cfg.echo = Echo::Quiet;
    if let Some(i) = initrd {
        cfg.modules.push(Module {
            path: i.to_path_buf(),
            args: String::new(),
        });
    }
    if stop {
        cfg.stop_after = Some("ENTRY ADDRESS".into());
    }
    harness::boot(&cfg).expect("booting Xen")
}

fn compare(name: &str, xen: &[String], plan: &[String]) {
    eprintln!("[{name}] Xen's dom0 builder and pvkexec plan:");
    for (i, x) in xen.iter().enumerate() {
        let p = plan.get(i).map(String::as_str).unwrap_or("<missing>");
        eprintln!("[{name}]   xen:  {x}\n[{name}]   plan: {p}");
    }
    assert!(
        xen.len() >= 7,
        "[{name}] Xen printed no full arrangement: {xen:?}"
    );
    assert_eq!(xen, plan, "[{name}] plan differs from Xen's builder");
}

/// `key=0x...` from the kernel's `PVKEXEC-INFO start_info=...` line.
fn info_field(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("PVKEXEC-INFO start_info="))
        .expect("kernel printed its start_info");
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"));
    u64::from_str_radix(value.trim_start_matches("0x"), 16).unwrap()
}

/// `key` from the plan's JSON.
fn json_u64(json: &serde_json::Value, pointer: &str) -> u64 {
    json.pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("plan JSON has no number at {pointer}: {json}"))
}

#[test]
fn bootcheck_kernel_layout_equals_xen() {
    let kernel = guest::binary("bootcheck").unwrap();
    for mem in [32u64, 64, 256, 1024] {
        for initrd_len in [None, Some((1 << 20) + 4097)] {
            let initrd = initrd_len.map(initrd);
            let name = format!("bootcheck {mem} MiB initrd {initrd_len:?}");
            let result = boot(
                &kernel,
                initrd.as_deref(),
                mem,
                &format!("mem_mib={mem}"),
                false,
            );
            assert_eq!(
                result.verdict,
                Verdict::Pass,
                "[{name}] log:\n{}",
                result.log
            );
            let plan = plan_lines(&kernel, initrd.as_deref(), mem).unwrap();
            compare(&name, &xen_arrangement(&result.log), &plan);

            // The start_info the kernel saw equals the plan's.
            let mut cmd = Command::new(pvkexec());
            cmd.arg("plan").arg("--kernel").arg(&kernel);
            cmd.args(["--mem-mib", &mem.to_string(), "--mode", "dom0", "--json"]);
            if let Some(i) = &initrd {
                cmd.arg("--initrd").arg(i);
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success());
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            for (key, pointer) in [
                ("start_info", "/start_info/address"),
                ("rsp", "/registers/rsp"),
                ("nr_pages", "/start_info/nr_pages"),
                ("pt_base", "/start_info/pt_base"),
                ("nr_pt_frames", "/start_info/nr_pt_frames"),
                ("mfn_list", "/start_info/mfn_list"),
                ("mod_start", "/start_info/mod_start"),
                ("mod_len", "/start_info/mod_len"),
                ("first_p2m_pfn", "/start_info/first_p2m_pfn"),
                ("nr_p2m_frames", "/start_info/nr_p2m_frames"),
            ] {
                assert_eq!(
                    info_field(&result.log, key),
                    json_u64(&json, pointer),
                    "[{name}] start_info {key}: kernel saw vs plan"
                );
            }
            eprintln!("[{name}] start_info fields equal the plan");
        }
    }
}

#[test]
fn debian_linux_layout_equals_xen() {
    let kernel = harness::provision::ensure_debian_linux().unwrap();
    for mem in [256u64, 1024] {
        for initrd_len in [None, Some(3 << 20)] {
            let initrd = initrd_len.map(initrd);
            let name = format!("linux {mem} MiB initrd {initrd_len:?}");
            let result = boot(&kernel, initrd.as_deref(), mem, "console=hvc0", true);
            assert_eq!(
                result.verdict,
                Verdict::Stopped,
                "[{name}] log:\n{}",
                result.log
            );
            let plan = plan_lines(&kernel, initrd.as_deref(), mem).unwrap();
            compare(&name, &xen_arrangement(&result.log), &plan);
        }
    }
}

#[test]
fn too_small_domain_is_refused_like_xen() {
    // Linux's image (with its bss) needs more than 32 MiB: Xen's builder panics, and the
    // planner must refuse too rather than produce a layout.
    let kernel = harness::provision::ensure_debian_linux().unwrap();
    let result = boot(&kernel, None, 32, "console=hvc0", true);
    assert_eq!(result.verdict, Verdict::XenPanic, "log:\n{}", result.log);
    assert!(result.log.contains("too small"), "log:\n{}", result.log);
    let err = plan_lines(&kernel, None, 32).unwrap_err();
    eprintln!("[linux 32 MiB] Xen panicked; pvkexec plan: {}", err.trim());
    assert!(!err.is_empty());
}
