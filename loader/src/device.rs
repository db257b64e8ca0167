//! `/dev/pvkexec`, the kernel module's device (`kmod/`): the ioctl ABI of
//! `kmod/pvkexec_uapi.h`, mirrored with compile-time size and offset asserts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The device the module registers (`PVKEXEC_DEVICE` in the environment overrides it).
pub const DEFAULT_DEVICE: &str = "/dev/pvkexec";

/// `PVKEXEC_ABI_VERSION`.
/// 5: `INFO_XEN_VCPU_RESET` and `INFO_XEN_VCPU_INFO_REREGISTER` report Xen's features, and
/// the exec and crash handoff blocks carry them (`Handoff::flags`).
pub const ABI_VERSION: u32 = 5;

pub const INFO_PV: u32 = 1 << 0;
pub const INFO_INITIAL_DOMAIN: u32 = 1 << 1;
pub const INFO_VCPU_INFO_PLACED: u32 = 1 << 2;
pub const INFO_IMAGE_LOADED: u32 = 1 << 3;
pub const INFO_EXEC_SUPPORTED: u32 = 1 << 4;
pub const INFO_CRASH_RESERVED: u32 = 1 << 5;
pub const INFO_CRASH_LOADED: u32 = 1 << 6;
/// Xen advertises `XENFEAT_vcpu_reset` (pvkexec's Xen patch; ABI 5).
pub const INFO_XEN_VCPU_RESET: u32 = 1 << 7;
/// Xen advertises `XENFEAT_vcpu_info_reregister` (pvkexec's Xen patch; ABI 5).
pub const INFO_XEN_VCPU_INFO_REREGISTER: u32 = 1 << 8;

/// `pvkexec_load.flags`: a crash image, into the frames set aside by [`Device::crash_reserve`].
pub const LOAD_CRASH: u32 = 1 << 0;

/// `struct pvkexec_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub abi_version: u32,
    pub flags: u32,
    pub current_pages: u64,
    pub maximum_pages: u64,
    pub start_info_pages: u64,
    pub possible_cpus: u32,
    pub online_cpus: u32,
    pub vcpus_up: u32,
    pub gnttab_version: u32,
    pub linux_version: u32,
    pub image_segments: u32,
    pub image_bytes: u64,
    pub image_pages: u64,
    /// Frames set aside for a crash kernel (0: none).
    pub crash_pages: u64,
    /// Present frames of the crash view (the frames a crash kernel is planned for).
    pub crash_present: u64,
    /// MFN of the crash record page (0: none).
    pub crash_record_mfn: u64,
}

/// `struct pvkexec_crash_reserve`: frames to set aside in, the crash view's facts out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReserve {
    pub pages: u64,
    pub present: u64,
    pub record_mfn: u64,
    pub p2m_len: u64,
}

/// `PVKEXEC_RESERVE_LINUX` (in `pvkexec_crash_reserve.present`): a Linux crash
/// kernel on a Xen that resets VCPUs: the vcpu_info frames stay holes in the view, and the
/// image and free pool may take set-aside frames past the two blocks
/// (docs/kdump.md).
pub const RESERVE_LINUX: u64 = 1 << 0;

/// `struct pvkexec_load`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct LoadArg {
    image: u64,
    len: u64,
    flags: u32,
    handoff_version: u32,
    work_pages: u64,
    pool_pages: u64,
}

/// What a load asks of the module besides the image: the handoff block version the image's
/// purgatory reads, its working memory and its free pool (frames, handoff v6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadParams {
    pub handoff_version: u32,
    pub work_pages: u64,
    /// Free-pool frames the image needs (`pvhandoff::renumber::pool_demand`): the module
    /// gives exactly that many at exec.
    pub pool_pages: u64,
}

const _: () = {
    assert!(std::mem::size_of::<Info>() == 96);
    assert!(std::mem::offset_of!(Info, crash_pages) == 72);
    assert!(std::mem::offset_of!(Info, crash_present) == 80);
    assert!(std::mem::offset_of!(Info, crash_record_mfn) == 88);
    assert!(std::mem::size_of::<CrashReserve>() == 32);
    assert!(std::mem::offset_of!(CrashReserve, present) == 8);
    assert!(std::mem::offset_of!(CrashReserve, record_mfn) == 16);
    assert!(std::mem::offset_of!(CrashReserve, p2m_len) == 24);
    assert!(std::mem::offset_of!(Info, current_pages) == 8);
    assert!(std::mem::offset_of!(Info, possible_cpus) == 32);
    assert!(std::mem::offset_of!(Info, linux_version) == 48);
    assert!(std::mem::offset_of!(Info, image_segments) == 52);
    assert!(std::mem::offset_of!(Info, image_bytes) == 56);
    assert!(std::mem::offset_of!(Info, image_pages) == 64);
    assert!(std::mem::size_of::<LoadArg>() == 40);
    assert!(std::mem::offset_of!(LoadArg, pool_pages) == 32);
    assert!(std::mem::offset_of!(LoadArg, flags) == 16);
    assert!(std::mem::offset_of!(LoadArg, handoff_version) == 20);
    assert!(std::mem::offset_of!(LoadArg, work_pages) == 24);
};

const IOC_MAGIC: u64 = 0xcf;

/// Linux's `_IOC(dir, type, nr, size)` on x86.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (IOC_MAGIC << 8) | nr
}

const IOC_READ: u64 = 2;
const IOC_WRITE: u64 = 1;
pub const IOC_INFO: u64 = ioc(IOC_READ, 0, std::mem::size_of::<Info>());
pub const IOC_LOAD: u64 = ioc(IOC_WRITE, 1, std::mem::size_of::<LoadArg>());
pub const IOC_UNLOAD: u64 = ioc(0, 2, 0);
pub const IOC_EXEC: u64 = ioc(0, 3, 0);
pub const IOC_CRASH_RESERVE: u64 =
    ioc(IOC_READ | IOC_WRITE, 4, std::mem::size_of::<CrashReserve>());
pub const IOC_CRASH_UNLOAD: u64 = ioc(0, 5, 0);
/// Tests only (the module loaded with `fault_injection=1`): flip a byte of the loaded crash
/// image, or park CPU 1 with interrupts off until a crash is in progress.
pub const IOC_TEST_CORRUPT_CRASH: u64 = ioc(0, 0x40, 0);
pub const IOC_TEST_PARK_CPU1: u64 = ioc(0, 0x41, 0);

/// A test fault the module injects when loaded with `fault_injection=1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestFault {
    /// One byte of the loaded crash image's kernel segment flipped.
    CorruptCrash,
    /// CPU 1 spins with interrupts off until a crash is in progress.
    ParkCpu1,
}

impl Info {
    pub fn initial_domain(&self) -> bool {
        self.flags & INFO_INITIAL_DOMAIN != 0
    }
    pub fn vcpu_info_placed(&self) -> bool {
        self.flags & INFO_VCPU_INFO_PLACED != 0
    }
    pub fn image_loaded(&self) -> bool {
        self.flags & INFO_IMAGE_LOADED != 0
    }
    pub fn exec_supported(&self) -> bool {
        self.flags & INFO_EXEC_SUPPORTED != 0
    }
    pub fn crash_reserved(&self) -> bool {
        self.flags & INFO_CRASH_RESERVED != 0
    }
    pub fn crash_loaded(&self) -> bool {
        self.flags & INFO_CRASH_LOADED != 0
    }
    /// Xen resets VCPUs that are down and undoes vcpu_info registrations (both features of
    /// pvkexec's Xen patches): the purgatory resets the old kernel's VCPUs instead of parking
    /// them (docs/smp.md).
    pub fn xen_resets_vcpus(&self) -> bool {
        let both = INFO_XEN_VCPU_RESET | INFO_XEN_VCPU_INFO_REREGISTER;
        self.flags & both == both
    }
    /// `LINUX_VERSION_CODE` as `(major, minor, patch)`.
    pub fn linux_version(&self) -> (u32, u32, u32) {
        let v = self.linux_version;
        (v >> 16, (v >> 8) & 0xff, v & 0xff)
    }
}

/// Why the device could not be used.
#[derive(Debug)]
pub enum DeviceError {
    /// The device node does not exist: the module is not loaded.
    Missing(PathBuf),
    /// Opening or an ioctl failed with this OS error.
    Os {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
}

impl DeviceError {
    /// The errno of a failed ioctl or open.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DeviceError::Missing(_) => None,
            DeviceError::Os { err, .. } => err.raw_os_error(),
        }
    }
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceError::Missing(p) => write!(
                f,
                "{}: no such device: the pvkexec module is not loaded (insmod pvkexec.ko or \
                 modprobe pvkexec; it refuses to load outside a Xen PV guest)",
                p.display()
            ),
            DeviceError::Os { what, path, err } => {
                write!(f, "{}: {what} failed: {err}", path.display())
            }
        }
    }
}

impl std::error::Error for DeviceError {}

/// An open `/dev/pvkexec`.
pub struct Device {
    file: File,
    path: PathBuf,
}

impl Device {
    /// The device path: `$PVKEXEC_DEVICE`, else [`DEFAULT_DEVICE`].
    pub fn path() -> PathBuf {
        std::env::var_os("PVKEXEC_DEVICE")
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_DEVICE), PathBuf::from)
    }

    pub fn open(path: &Path) -> Result<Device, DeviceError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(Device {
                file,
                path: path.to_path_buf(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(DeviceError::Missing(path.to_path_buf()))
            }
            Err(err) => Err(DeviceError::Os {
                what: "open",
                path: path.to_path_buf(),
                err,
            }),
        }
    }

    fn ioctl(
        &self,
        what: &'static str,
        req: u64,
        arg: *mut libc::c_void,
    ) -> Result<(), DeviceError> {
        // SAFETY: `req` is one of the module's ioctls and `arg` points to the struct of the
        // size encoded in it (or is null for the argument-less ones), valid for the call.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), req as libc::c_ulong, arg) };
        if rc < 0 {
            return Err(DeviceError::Os {
                what,
                path: self.path.clone(),
                err: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    pub fn info(&self) -> Result<Info, DeviceError> {
        let mut info = Info::default();
        self.ioctl(
            "PVKEXEC_IOC_INFO",
            IOC_INFO,
            (&mut info as *mut Info).cast(),
        )?;
        Ok(info)
    }

    /// Hands `image` to the module, replacing any loaded image (kept on failure). The
    /// module fills the handoff block `p` names at exec, with `p.work_pages` frames of
    /// working memory and a free pool of `p.pool_pages` frames.
    pub fn load(&self, image: &[u8], p: LoadParams) -> Result<(), DeviceError> {
        self.load_flags(image, 0, p)
    }

    /// Loads a crash image into the frames [`Device::crash_reserve`] set aside; the module
    /// arms its panic path.
    pub fn load_crash(&self, image: &[u8], p: LoadParams) -> Result<(), DeviceError> {
        self.load_flags(image, LOAD_CRASH, p)
    }

    fn load_flags(&self, image: &[u8], flags: u32, p: LoadParams) -> Result<(), DeviceError> {
        let mut arg = LoadArg {
            image: image.as_ptr() as u64,
            len: image.len() as u64,
            flags,
            handoff_version: p.handoff_version,
            work_pages: p.work_pages,
            pool_pages: p.pool_pages,
        };
        self.ioctl(
            "PVKEXEC_IOC_LOAD",
            IOC_LOAD,
            (&mut arg as *mut LoadArg).cast(),
        )
    }

    pub fn unload(&self) -> Result<(), DeviceError> {
        self.ioctl("PVKEXEC_IOC_UNLOAD", IOC_UNLOAD, std::ptr::null_mut())
    }

    pub fn exec(&self) -> Result<(), DeviceError> {
        self.ioctl("PVKEXEC_IOC_EXEC", IOC_EXEC, std::ptr::null_mut())
    }

    /// Sets `pages` frames aside for a crash kernel and builds the crash view. `flags`:
    /// [`RESERVE_LINUX`] or 0 (passed in `present`, which the module overwrites).
    pub fn crash_reserve(&self, pages: u64, flags: u64) -> Result<CrashReserve, DeviceError> {
        let mut arg = CrashReserve {
            pages,
            present: flags,
            ..CrashReserve::default()
        };
        self.ioctl(
            "PVKEXEC_IOC_CRASH_RESERVE",
            IOC_CRASH_RESERVE,
            (&mut arg as *mut CrashReserve).cast(),
        )?;
        Ok(arg)
    }

    /// Injects a test fault (`-ENOTTY` unless the module was loaded with fault_injection=1).
    pub fn test_fault(&self, fault: TestFault) -> Result<(), DeviceError> {
        let (what, req) = match fault {
            TestFault::CorruptCrash => ("PVKEXEC_IOC_TEST_CORRUPT_CRASH", IOC_TEST_CORRUPT_CRASH),
            TestFault::ParkCpu1 => ("PVKEXEC_IOC_TEST_PARK_CPU1", IOC_TEST_PARK_CPU1),
        };
        self.ioctl(what, req, std::ptr::null_mut())
    }

    /// Disarms the panic path and frees the crash image and the frames set aside.
    pub fn crash_unload(&self) -> Result<(), DeviceError> {
        self.ioctl(
            "PVKEXEC_IOC_CRASH_UNLOAD",
            IOC_CRASH_UNLOAD,
            std::ptr::null_mut(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers gcc computes from kmod/pvkexec_uapi.h.
    #[test]
    fn ioctl_numbers_match_the_c_header() {
        assert_eq!(IOC_INFO, 0x8060_cf00);
        assert_eq!(IOC_CRASH_RESERVE, 0xc020_cf04);
        assert_eq!(IOC_CRASH_UNLOAD, 0xcf05);
        assert_eq!(IOC_LOAD, 0x4028_cf01);
        assert_eq!(IOC_UNLOAD, 0xcf02);
        assert_eq!(IOC_EXEC, 0xcf03);
    }

    #[test]
    fn a_missing_device_names_the_module() {
        let e = Device::open(Path::new("/nonexistent/pvkexec"))
            .err()
            .unwrap();
        assert!(matches!(e, DeviceError::Missing(_)));
        let text = e.to_string();
        assert!(
            text.contains("insmod pvkexec.ko") && text.contains("modprobe"),
            "{text}"
        );
    }

    #[test]
    fn version_code_splits() {
        let i = Info {
            linux_version: (6 << 16) | (1 << 8) | 192,
            ..Info::default()
        };
        assert_eq!(i.linux_version(), (6, 1, 192));
    }
}
