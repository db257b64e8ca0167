//! What the CLI loaded, for `pvkexec status`: the module keeps images, not file names, so each
//! load writes a small record under `/run/pvkexec/` (`kexec.json`, `crash.json`; `$PVKEXEC_RUN_DIR`
//! overrides the directory), written atomically (a temporary file renamed over it) and removed at
//! unload. `status` believes a record only when it matches what the module reports as loaded
//! (the same boot, the image's size, the crash record's frame) and says "unknown" otherwise.

use crate::device::Info;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The default directory: `/run` is emptied at every boot, as the module's images are.
pub const RUN_DIR: &str = "/run/pvkexec";

/// The record directory: `$PVKEXEC_RUN_DIR`, else [`RUN_DIR`].
pub fn dir() -> PathBuf {
    std::env::var_os("PVKEXEC_RUN_DIR")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(RUN_DIR), PathBuf::from)
}

/// Which image a record is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The kexec image (`pvkexec load`, `kexec -l`).
    Kexec,
    /// The crash kernel (`pvkexec load -p`, `kexec -p`).
    Crash,
}

impl Kind {
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Kexec => "kexec.json",
            Kind::Crash => "crash.json",
        }
    }
}

/// One load as the CLI made it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The kernel file (absolute), or `None` for a prebuilt image.
    pub kernel: Option<String>,
    /// The prebuilt image file (`load --image`).
    pub image: Option<String>,
    pub initrd: Option<String>,
    /// The command line built into the image; `None` when not known (a prebuilt image).
    pub cmdline: Option<String>,
    /// The image's length, as the module reports it for the kexec image.
    pub image_bytes: u64,
    /// Crash kernel: the crash record's MFN and the frames set aside, as the module reports.
    pub crash_record_mfn: Option<u64>,
    pub crash_pages: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` at the load.
    pub boot_id: String,
}

impl Record {
    pub fn to_json(&self) -> Value {
        json!({
            "kernel": self.kernel,
            "image": self.image,
            "initrd": self.initrd,
            "cmdline": self.cmdline,
            "image_bytes": self.image_bytes,
            "crash_record_mfn": self.crash_record_mfn,
            "crash_pages": self.crash_pages,
            "boot_id": self.boot_id,
        })
    }

    /// Parses a record; what is not one is named.
    pub fn from_json(text: &str) -> Result<Record, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let string = |k: &str| -> Result<Option<String>, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("{k}: not a string")),
            }
        };
        let number = |k: &str| -> Result<Option<u64>, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or(format!("{k}: not a number")),
            }
        };
        Ok(Record {
            kernel: string("kernel")?,
            image: string("image")?,
            initrd: string("initrd")?,
            cmdline: string("cmdline")?,
            image_bytes: number("image_bytes")?.ok_or("image_bytes: missing")?,
            crash_record_mfn: number("crash_record_mfn")?,
            crash_pages: number("crash_pages")?,
            boot_id: string("boot_id")?.ok_or("boot_id: missing")?,
        })
    }
}

/// This boot's id (`None` when the kernel does not tell).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// A path as recorded: absolute (relative to the current directory when given relative), so
/// it still names the file from anywhere.
pub fn recorded_path(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Writes `rec` as `dir/<kind>.json` atomically: a reader sees the old record or the new one,
/// never part of one.
pub fn write(dir: &Path, kind: Kind, rec: &Record) -> Result<(), String> {
    let name = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| name(dir, e))?;
    let path = dir.join(kind.file_name());
    let tmp = dir.join(format!(".{}.{}", kind.file_name(), std::process::id()));
    let text = format!("{:#}\n", rec.to_json());
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        name(&path, e)
    })
}

/// Removes `dir/<kind>.json` (none there is fine).
pub fn remove(dir: &Path, kind: Kind) -> Result<(), String> {
    let path = dir.join(kind.file_name());
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Reads `dir/<kind>.json`: `Ok(None)` when there is none.
pub fn read(dir: &Path, kind: Kind) -> Result<Option<Record>, String> {
    let path = dir.join(kind.file_name());
    match std::fs::read_to_string(&path) {
        Ok(text) => Record::from_json(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Records a load in [`dir`]; a failure is a note for the user, not a failed load (the image
/// is in the module either way, and `status` then says unknown).
pub fn record(kind: Kind, rec: Record) -> String {
    let rec = Record {
        boot_id: boot_id().unwrap_or_default(),
        ..rec
    };
    match write(&dir(), kind, &rec) {
        Ok(()) => String::new(),
        Err(e) => format!("note: not recorded for pvkexec status ({e}): it will say unknown\n"),
    }
}

/// Removes the record of an unloaded image; a failure is a note (`status` would not believe
/// the stale record anyway: the module has nothing loaded).
pub fn forget(kind: Kind) -> String {
    match remove(&dir(), kind) {
        Ok(()) => String::new(),
        Err(e) => format!("note: the load record was not removed: {e}\n"),
    }
}

/// What `status` says about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Known {
    /// The module has none loaded.
    NotLoaded,
    /// Loaded, and the record matches it.
    Recorded(Record),
    /// Loaded, but what it was loaded from is not known (the reason).
    Unknown(String),
}

/// Checks a record against the module's facts: believed only when the module has an image of
/// that kind loaded in this boot and its size (kexec) or crash record frame and reservation
/// (crash) are the record's.
pub fn cross_check(
    kind: Kind,
    info: &Info,
    record: Result<Option<Record>, String>,
    boot_id: Option<&str>,
) -> Known {
    let loaded = match kind {
        Kind::Kexec => info.image_loaded(),
        Kind::Crash => info.crash_loaded(),
    };
    if !loaded {
        return Known::NotLoaded;
    }
    let rec = match record {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Known::Unknown(format!(
                "no record of this load in {} (loaded by another program, or the record was \
                 removed)",
                dir().display()
            ))
        }
        Err(e) => return Known::Unknown(format!("the record is unreadable: {e}")),
    };
    if boot_id.is_none_or(|b| b != rec.boot_id) {
        return Known::Unknown("the record is of another boot".into());
    }
    let matches = match kind {
        Kind::Kexec => rec.image_bytes == info.image_bytes,
        Kind::Crash => {
            rec.crash_record_mfn == Some(info.crash_record_mfn)
                && rec.crash_pages == Some(info.crash_pages)
        }
    };
    match matches {
        true => Known::Recorded(rec),
        false => Known::Unknown(
            "the record is of another load than the one the module holds (loaded since by \
             another program?)"
                .into(),
        ),
    }
}

/// The dump disk a crash kernel's command line names (`pvkexec.dump=`; the first, as the
/// capture kernel takes it).
pub fn named_dump_disk(cmdline: &str) -> Option<String> {
    crate::cli_common::cmdline_words(cmdline)
        .into_iter()
        .find_map(|w| w.strip_prefix("pvkexec.dump="))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{INFO_CRASH_LOADED, INFO_CRASH_RESERVED, INFO_IMAGE_LOADED};

    fn kexec_record() -> Record {
        Record {
            kernel: Some("/boot/vmlinuz".into()),
            initrd: Some("/boot/initrd.img".into()),
            cmdline: Some("console=hvc0 root=/dev/xvda1".into()),
            image_bytes: 12345,
            boot_id: "b1".into(),
            ..Record::default()
        }
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_named() {
        let r = Record {
            crash_record_mfn: Some(0x1234),
            crash_pages: Some(5120),
            ..kexec_record()
        };
        assert_eq!(Record::from_json(&r.to_json().to_string()).unwrap(), r);
        assert!(Record::from_json("[]")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(Record::from_json("{").unwrap_err().contains("not JSON"));
        let e = Record::from_json(r#"{"kernel": 3, "image_bytes": 1, "boot_id": "x"}"#);
        assert!(e.unwrap_err().contains("kernel: not a string"));
        let e = Record::from_json(r#"{"boot_id": "x"}"#);
        assert!(e.unwrap_err().contains("image_bytes: missing"));
    }

    #[test]
    fn written_atomically_read_back_and_removed() {
        let dir = std::env::temp_dir().join(format!("pvkexec-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(read(&dir, Kind::Kexec), Ok(None));
        write(&dir, Kind::Kexec, &kexec_record()).unwrap();
        assert_eq!(read(&dir, Kind::Kexec), Ok(Some(kexec_record())));
        assert_eq!(read(&dir, Kind::Crash), Ok(None));
        // Only the record is left: no temporary file.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        remove(&dir, Kind::Kexec).unwrap();
        remove(&dir, Kind::Kexec).unwrap();
        assert_eq!(read(&dir, Kind::Kexec), Ok(None));
        std::fs::write(dir.join("crash.json"), "garbage").unwrap();
        assert!(read(&dir, Kind::Crash)
            .unwrap_err()
            .contains("crash.json: not JSON"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_is_believed_only_when_it_matches_the_module() {
        let info = Info {
            flags: INFO_IMAGE_LOADED,
            image_bytes: 12345,
            ..Info::default()
        };
        let rec = || Ok(Some(kexec_record()));
        assert_eq!(
            cross_check(Kind::Kexec, &info, rec(), Some("b1")),
            Known::Recorded(kexec_record())
        );
        assert_eq!(
            cross_check(Kind::Kexec, &Info::default(), rec(), Some("b1")),
            Known::NotLoaded
        );
        let unknown = |k: Known| matches!(k, Known::Unknown(_));
        assert!(unknown(cross_check(
            Kind::Kexec,
            &info,
            Ok(None),
            Some("b1")
        )));
        assert!(unknown(cross_check(Kind::Kexec, &info, rec(), Some("b2"))));
        assert!(unknown(cross_check(Kind::Kexec, &info, rec(), None)));
        let other = Info {
            image_bytes: 999,
            ..info
        };
        assert!(unknown(cross_check(Kind::Kexec, &other, rec(), Some("b1"))));
        assert!(unknown(cross_check(
            Kind::Kexec,
            &info,
            Err("x: not JSON".into()),
            Some("b1")
        )));
        // The crash kernel: the record frame and the reservation must match.
        let crash = Info {
            flags: INFO_CRASH_LOADED | INFO_CRASH_RESERVED,
            crash_record_mfn: 0x1234,
            crash_pages: 5120,
            ..Info::default()
        };
        let crec = Record {
            crash_record_mfn: Some(0x1234),
            crash_pages: Some(5120),
            ..kexec_record()
        };
        assert_eq!(
            cross_check(Kind::Crash, &crash, Ok(Some(crec.clone())), Some("b1")),
            Known::Recorded(crec.clone())
        );
        let moved = Info {
            crash_record_mfn: 0x9999,
            ..crash
        };
        assert!(unknown(cross_check(
            Kind::Crash,
            &moved,
            Ok(Some(crec)),
            Some("b1")
        )));
    }

    #[test]
    fn the_dump_disk_is_the_first_pvkexec_dump() {
        assert_eq!(
            named_dump_disk("console=hvc0 pvkexec.dump=xvdb pvkexec.crash=0x12"),
            Some("xvdb".into())
        );
        assert_eq!(
            named_dump_disk("pvkexec.dump=51728 pvkexec.dump=xvdc"),
            Some("51728".into())
        );
        assert_eq!(named_dump_disk("console=hvc0 xpvkexec.dump=xvdb"), None);
    }
}
