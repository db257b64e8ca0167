//! Opening the files the loader is given: each must be a regular file no larger than what it
//! can be (a kernel, an initrd that must fit in the domain, an image), checked from its
//! metadata before a byte is read, so `/dev/zero` or a sparse 8 GiB initrd costs nothing.

use crate::error::{LoadError, Reason};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Most bytes a kernel file (or its decompressed ELF) may have: Linux's x86-64
/// `KERNEL_IMAGE_SIZE` without KASLR, far above any real PV kernel (Debian's is ~60 MiB).
pub const MAX_KERNEL_BYTES: u64 = 512 << 20;

/// What a file is for, and so how large it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A kernel: at most `max` bytes.
    Kernel { max: u64 },
    /// An initrd for a domain of `domain_bytes`.
    Initrd { domain_bytes: u64 },
    /// A kexec image: at most `max` bytes.
    Image { max: u64 },
}

impl Role {
    fn limit(self) -> (u64, String) {
        match self {
            Role::Kernel { max } => (max, format!("a PV kernel can have ({max} bytes)")),
            Role::Initrd { domain_bytes } => (
                domain_bytes,
                format!("the domain's memory ({} MiB)", domain_bytes >> 20),
            ),
            Role::Image { max } => (max, format!("an image can have ({max} bytes)")),
        }
    }
}

fn io_err(path: &Path, e: impl ToString) -> LoadError {
    LoadError::new(&path.display().to_string(), None, Reason::Io(e.to_string()))
}

/// Opens `path` for `role`: a regular file within the role's size limit. Returns the file and
/// its length.
pub fn open_checked(path: &Path, role: Role) -> Result<(File, u64), LoadError> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "a device, pipe or socket"
        };
        return Err(LoadError::new(
            &name,
            None,
            Reason::Input(format!("is {what}, not a regular file")),
        ));
    }
    let (max, what) = role.limit();
    if meta.len() > max {
        return Err(LoadError::new(
            &name,
            None,
            Reason::Input(format!("{} bytes: more than {what}", meta.len())),
        ));
    }
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    Ok((file, meta.len()))
}

/// Reads `path` whole after [`open_checked`]; a file that grew past its limit while being
/// read is refused, not truncated.
pub fn read_checked(path: &Path, role: Role) -> Result<Vec<u8>, LoadError> {
    let (file, len) = open_checked(path, role)?;
    let (max, what) = role.limit();
    let mut out = Vec::with_capacity(len as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| io_err(path, e))?;
    if out.len() as u64 > max {
        return Err(LoadError::new(
            &path.display().to_string(),
            None,
            Reason::Input(format!("grew past {what} while being read")),
        ));
    }
    Ok(out)
}

/// Writes `bytes` to `path`, naming the path in the error.
pub fn write_named(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    std::fs::write(path, bytes).map_err(|e| {
        LoadError::new(
            &path.display().to_string(),
            None,
            Reason::Write(e.to_string()),
        )
    })
}
