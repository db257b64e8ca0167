//! `pvkexec status`: the domain's facts from the module, and for each image (the kexec image,
//! the crash kernel) whether one is loaded and what it was loaded from (the CLI's load records,
//! crate::cli_state). Exit status: 0 when the image asked about is loaded (the kexec image, or
//! with `-p` the crash kernel), 3 when none is; `--json` prints one JSON object instead of the
//! text.

use crate::cli_common::{open, running_release, CliError, Output, EXIT_NOT_LOADED};
use crate::cli_state::{self, cross_check, named_dump_disk, Kind, Known};
use crate::device::Info;
use serde_json::{json, Value};

/// What `status` reports on and prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusRequest {
    /// The crash kernel decides the exit status (`-p`), not the kexec image.
    pub crash: bool,
    /// One JSON object instead of the text.
    pub json: bool,
}

/// `pvkexec status [-p] [--json]`.
pub fn status(req: StatusRequest) -> Result<Output, CliError> {
    let (_, info) = open()?;
    let dir = cli_state::dir();
    let boot = cli_state::boot_id();
    let kexec = cross_check(
        Kind::Kexec,
        &info,
        cli_state::read(&dir, Kind::Kexec),
        boot.as_deref(),
    );
    let crash = cross_check(
        Kind::Crash,
        &info,
        cli_state::read(&dir, Kind::Crash),
        boot.as_deref(),
    );
    let text = match req.json {
        true => format!("{:#}\n", render_json(&info, &kexec, &crash)),
        false => render_status(&info, &running_release(), &kexec, &crash),
    };
    Ok(Output {
        text,
        code: status_code(&info, req.crash),
    })
}

/// 0 when the image asked about is loaded, [`EXIT_NOT_LOADED`] when not.
pub fn status_code(info: &Info, crash: bool) -> u8 {
    let loaded = match crash {
        true => info.crash_loaded(),
        false => info.image_loaded(),
    };
    match loaded {
        true => 0,
        false => EXIT_NOT_LOADED,
    }
}

/// The lines under an image's: its files and command line, or why they are unknown.
fn render_known(k: &Known, crash: bool) -> String {
    let r = match k {
        Known::NotLoaded => return String::new(),
        Known::Unknown(why) => return format!("  loaded from: unknown ({why})\n"),
        Known::Recorded(r) => r,
    };
    let mut s = String::new();
    if let Some(k) = &r.kernel {
        s += &format!("  kernel: {k}\n");
    }
    if let Some(i) = &r.image {
        s += &format!("  image file: {i}\n");
    }
    if r.image.is_none() {
        s += &format!("  initrd: {}\n", r.initrd.as_deref().unwrap_or("none"));
    }
    match &r.cmdline {
        Some(c) => s += &format!("  command line: {c:?}\n"),
        None => s += "  command line: unknown (a prebuilt image)\n",
    }
    if crash {
        let disk = r.cmdline.as_deref().and_then(named_dump_disk);
        s += &format!(
            "  dump disk: {}\n",
            disk.as_deref().unwrap_or("none named (no pvkexec.dump=)")
        );
    }
    s
}

/// One image in `--json`: `loaded`; `record` ("recorded", "unknown" or "none" when nothing is
/// loaded); `kernel`, `image` (a prebuilt image file), `initrd` and `cmdline`, each a string
/// or null (all null unless `record` is "recorded"); `unknown_because` when unknown.
fn known_json(k: &Known, loaded: bool) -> Value {
    let mut v = json!({
        "loaded": loaded,
        "record": match k {
            Known::NotLoaded => "none",
            Known::Recorded(_) => "recorded",
            Known::Unknown(_) => "unknown",
        },
        "kernel": null, "image": null, "initrd": null, "cmdline": null,
    });
    match k {
        Known::Recorded(r) => {
            v["kernel"] = json!(r.kernel);
            v["image"] = json!(r.image);
            v["initrd"] = json!(r.initrd);
            v["cmdline"] = json!(r.cmdline);
        }
        Known::Unknown(why) => v["unknown_because"] = json!(why),
        Known::NotLoaded => {}
    }
    v
}

/// `pvkexec status --json` (docs/kernel-module.md names the fields): `kexec` and `crash`
/// objects ([`known_json`]); the kexec image adds `image_bytes`; the crash kernel adds
/// `dump_disk` (from `pvkexec.dump=` in its command line; null when unknown or not named) and
/// `reserved_mib` (the frames set aside, also before a crash image is loaded).
pub fn render_json(info: &Info, kexec: &Known, crash: &Known) -> Value {
    let mut k = known_json(kexec, info.image_loaded());
    if info.image_loaded() {
        k["image_bytes"] = json!(info.image_bytes);
    }
    let mut c = known_json(crash, info.crash_loaded());
    c["dump_disk"] = match crash {
        Known::Recorded(r) => json!(r.cmdline.as_deref().and_then(named_dump_disk)),
        _ => Value::Null,
    };
    c["reserved_mib"] = json!(info.crash_pages / 256);
    json!({"kexec": k, "crash": c})
}

/// The text of `pvkexec status`: the module's facts, then each image with what it was loaded
/// from.
pub fn render_status(info: &Info, release: &str, kexec: &Known, crash: &Known) -> String {
    let (a, b, c) = info.linux_version();
    let mut s = format!(
        "module: pvkexec ABI {} for Linux {a}.{b}.{c}, running {release}\n",
        info.abi_version
    );
    s += &format!(
        "domain: {}\n",
        if info.initial_domain() {
            "initial domain (dom0)"
        } else {
            "domU"
        }
    );
    s += &format!(
        "frames: {} (maximum {}, start_info nr_pages {})\n",
        info.current_pages, info.maximum_pages, info.start_info_pages
    );
    s += &format!(
        "vcpus: {} online, {} up, {} possible\n",
        info.online_cpus, info.vcpus_up, info.possible_cpus
    );
    s += &format!(
        "vcpu_info: {}\n",
        if info.vcpu_info_placed() {
            "placed on every CPU brought up (stock Linux registers it on each; Xen never \
             unregisters it)"
        } else {
            "in shared_info"
        }
    );
    s += &format!(
        "hypervisor: {}\n",
        if info.xen_resets_vcpus() {
            "resets VCPUs and undoes vcpu_info registrations (XENFEAT_vcpu_reset, \
             XENFEAT_vcpu_info_reregister): the other VCPUs are reset, not parked, and a Linux \
             new kernel keeps its CPUs"
        } else {
            "stock (no XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister): the other VCPUs \
             are parked"
        }
    );
    s += &format!(
        "grant table: {}\n",
        match info.gnttab_version {
            0 => "version unknown".to_string(),
            v => format!("v{v}"),
        }
    );
    if info.image_loaded() {
        s += &format!(
            "image: loaded, {} bytes in {} pages, {} segments\n",
            info.image_bytes, info.image_pages, info.image_segments
        );
        s += &render_known(kexec, false);
    } else {
        s += "image: none loaded\n";
    }
    s += &match (info.crash_reserved(), info.crash_loaded()) {
        (_, true) => format!(
            "crash kernel: loaded, {} MiB set aside, the crash kernel gets {} frames; record at \
             mfn {:#x}\n",
            info.crash_pages / 256,
            info.crash_present,
            info.crash_record_mfn
        ),
        (true, false) => format!(
            "crash kernel: {} MiB set aside, no image loaded\n",
            info.crash_pages / 256
        ),
        _ => "crash kernel: none loaded\n".to_string(),
    };
    if info.crash_loaded() {
        s += &render_known(crash, true);
    }
    s += &format!(
        "exec: {}\n",
        if info.exec_supported() {
            "supported"
        } else {
            "not supported by this module yet"
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli_common::hidden_vcpu_pages;
    use crate::cli_common::old_kernel;
    use crate::cli_state::Record;
    use crate::device::{INFO_CRASH_LOADED, INFO_CRASH_RESERVED, INFO_IMAGE_LOADED};

    fn render(info: &Info) -> String {
        render_status(info, "6.1.0-57-amd64", &Known::NotLoaded, &Known::NotLoaded)
    }

    #[test]
    fn xen_vcpu_reset_from_the_module() {
        use crate::device::{INFO_XEN_VCPU_INFO_REREGISTER, INFO_XEN_VCPU_RESET};
        let stock = Info {
            online_cpus: 2,
            vcpus_up: 2,
            flags: crate::device::INFO_VCPU_INFO_PLACED,
            ..Info::default()
        };
        assert!(!old_kernel(&stock).xen_resets_vcpus);
        // Both features, or it is stock Xen's path.
        for (extra, resets) in [
            (INFO_XEN_VCPU_RESET, false),
            (INFO_XEN_VCPU_INFO_REREGISTER, false),
            (INFO_XEN_VCPU_RESET | INFO_XEN_VCPU_INFO_REREGISTER, true),
        ] {
            let info = Info {
                flags: stock.flags | extra,
                ..stock
            };
            let old = old_kernel(&info);
            assert_eq!(old.xen_resets_vcpus, resets);
            let hidden = if resets {
                0
            } else {
                pvhandoff::image::PARK_PAGES + 2
            };
            assert_eq!(hidden_vcpu_pages(old), hidden);
            let status = render(&info);
            assert_eq!(
                status.contains("hypervisor: resets VCPUs"),
                resets,
                "{status}"
            );
        }
    }

    #[test]
    fn status_names_the_facts() {
        let info = Info {
            abi_version: 3,
            flags: crate::device::INFO_PV | crate::device::INFO_VCPU_INFO_PLACED,
            current_pages: 65536,
            maximum_pages: 65536,
            start_info_pages: 65536,
            possible_cpus: 2,
            online_cpus: 2,
            vcpus_up: 2,
            gnttab_version: 1,
            linux_version: (6 << 16) | (1 << 8) | 192,
            ..Info::default()
        };
        let s = render(&info);
        for want in [
            "domain: domU",
            "frames: 65536",
            "vcpus: 2 online, 2 up, 2 possible",
            "vcpu_info: placed",
            "grant table: v1",
            "image: none loaded",
        ] {
            assert!(s.contains(want), "{want}: {s}");
        }
    }

    fn loaded() -> Info {
        Info {
            flags: INFO_IMAGE_LOADED | INFO_CRASH_LOADED | INFO_CRASH_RESERVED,
            image_bytes: 4096,
            image_pages: 1,
            image_segments: 3,
            crash_pages: 5120,
            crash_present: 5125,
            crash_record_mfn: 0x1234,
            ..Info::default()
        }
    }

    fn kexec_rec() -> Record {
        Record {
            kernel: Some("/boot/vmlinuz".into()),
            initrd: None,
            cmdline: Some("console=hvc0".into()),
            image_bytes: 4096,
            ..Record::default()
        }
    }

    fn crash_rec() -> Record {
        Record {
            kernel: Some("/usr/lib/pvkexec/capture".into()),
            initrd: Some("/boot/i".into()),
            cmdline: Some("pvkexec.dump=xvdb pvkexec.crash=0x1234".into()),
            ..Record::default()
        }
    }

    #[test]
    fn the_exit_status_says_whether_the_image_asked_about_is_loaded() {
        let none = Info::default();
        assert_eq!(status_code(&none, false), EXIT_NOT_LOADED);
        assert_eq!(status_code(&none, true), EXIT_NOT_LOADED);
        assert_eq!(status_code(&loaded(), false), 0);
        assert_eq!(status_code(&loaded(), true), 0);
        let only_crash = Info {
            flags: INFO_CRASH_LOADED | INFO_CRASH_RESERVED,
            ..loaded()
        };
        assert_eq!(status_code(&only_crash, false), EXIT_NOT_LOADED);
        assert_eq!(status_code(&only_crash, true), 0);
        // Frames set aside without a crash image: not loaded.
        let reserved = Info {
            flags: INFO_CRASH_RESERVED,
            ..loaded()
        };
        assert_eq!(status_code(&reserved, true), EXIT_NOT_LOADED);
    }

    #[test]
    fn status_text_names_the_files_or_says_unknown() {
        let s = render_status(
            &loaded(),
            "6.1",
            &Known::Recorded(kexec_rec()),
            &Known::Recorded(crash_rec()),
        );
        for want in [
            "image: loaded, 4096 bytes in 1 pages, 3 segments\n  kernel: /boot/vmlinuz\n  \
             initrd: none\n  command line: \"console=hvc0\"\n",
            "crash kernel: loaded, 20 MiB set aside",
            "  kernel: /usr/lib/pvkexec/capture\n  initrd: /boot/i\n",
            "  dump disk: xvdb\n",
        ] {
            assert!(s.contains(want), "{want:?} in:\n{s}");
        }
        let s = render_status(
            &loaded(),
            "6.1",
            &Known::Unknown("no record".into()),
            &Known::NotLoaded,
        );
        assert!(s.contains("  loaded from: unknown (no record)\n"), "{s}");
    }

    #[test]
    fn status_json_is_one_object_with_both_images() {
        let v = render_json(
            &loaded(),
            &Known::Recorded(kexec_rec()),
            &Known::Recorded(crash_rec()),
        );
        assert_eq!(
            v,
            json!({
                "kexec": {
                    "loaded": true, "record": "recorded", "kernel": "/boot/vmlinuz",
                    "image": null, "initrd": null, "cmdline": "console=hvc0",
                    "image_bytes": 4096,
                },
                "crash": {
                    "loaded": true, "record": "recorded",
                    "kernel": "/usr/lib/pvkexec/capture", "image": null, "initrd": "/boot/i",
                    "cmdline": "pvkexec.dump=xvdb pvkexec.crash=0x1234", "dump_disk": "xvdb",
                    "reserved_mib": 20,
                },
            })
        );
        let v = render_json(
            &loaded(),
            &Known::Unknown("no record".into()),
            &Known::NotLoaded,
        );
        assert_eq!(v["kexec"]["record"], "unknown");
        assert_eq!(v["kexec"]["kernel"], Value::Null);
        assert_eq!(v["kexec"]["unknown_because"], "no record");
        assert_eq!(v["crash"]["record"], "none");
        assert_eq!(v["crash"]["dump_disk"], Value::Null);
        // The text round-trips as one JSON object.
        let text = format!("{v:#}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }
}
