//! Linux's own "a kexec image is loaded" flag, kept in step with pvkexec's image.
//!
//! `systemctl kexec` starts `kexec.target` only when `/sys/kernel/kexec_loaded` reads 1, and
//! that file reads Linux's own `kexec_image`, which pvkexec.ko cannot set. So a load also
//! registers a one-page placeholder with kexec_load(2), and an unload removes it. The
//! placeholder is never entered: on the way to a kexec, systemd-shutdown runs pvkexec's hook
//! (`pvkexec exec`), and should anything call reboot(LINUX_REBOOT_CMD_KEXEC) instead, Linux on
//! Xen PV shuts down through `machine_shutdown()`, which powers the domain off before
//! `machine_kexec()` could run (arch/x86/xen/enlighten_pv.c), as it does without pvkexec.
//! docs/kexec-tools-compat.md, "systemctl kexec".

use std::io;

/// The kernel's `struct kexec_segment` (include/uapi/linux/kexec.h).
#[repr(C)]
struct KexecSegment {
    buf: *const libc::c_void,
    bufsz: libc::size_t,
    mem: libc::c_ulong,
    memsz: libc::size_t,
}
const _: () = {
    assert!(std::mem::size_of::<KexecSegment>() == 32);
    assert!(std::mem::offset_of!(KexecSegment, bufsz) == 8);
    assert!(std::mem::offset_of!(KexecSegment, mem) == 16);
    assert!(std::mem::offset_of!(KexecSegment, memsz) == 24);
};

/// `KEXEC_ARCH_DEFAULT`: the running architecture, no flags (not a crash image).
const KEXEC_ARCH_DEFAULT: libc::c_ulong = 0;
/// Where the placeholder would go: 1 MiB, page aligned and below any limit Linux sets.
const PLACEHOLDER_ADDR: libc::c_ulong = 0x10_0000;
/// The file systemd reads.
pub const KEXEC_LOADED: &str = "/sys/kernel/kexec_loaded";

/// Registers the placeholder (replacing whatever Linux had loaded).
pub fn mark_loaded() -> io::Result<()> {
    // hlt; jmp back: what the page would do if anything ever entered it.
    let mut page = vec![0u8; 4096];
    page[..3].copy_from_slice(&[0xf4, 0xeb, 0xfd]);
    let seg = KexecSegment {
        buf: page.as_ptr().cast(),
        bufsz: page.len(),
        mem: PLACEHOLDER_ADDR,
        memsz: page.len(),
    };
    // SAFETY: kexec_load reads one segment descriptor at &seg and page.len() bytes at
    // seg.buf; both live until the call returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            PLACEHOLDER_ADDR,
            1 as libc::c_ulong,
            &seg as *const KexecSegment,
            KEXEC_ARCH_DEFAULT,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes Linux's kexec image, the placeholder (nothing loaded is not an error).
pub fn clear() -> io::Result<()> {
    // SAFETY: no segments: Linux reads no memory of this process and unloads its image.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            std::ptr::null::<KexecSegment>(),
            KEXEC_ARCH_DEFAULT,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What `/sys/kernel/kexec_loaded` says (`None`: unreadable).
pub fn is_marked() -> Option<bool> {
    let text = std::fs::read_to_string(KEXEC_LOADED).ok()?;
    match text.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// The note a load prints when the placeholder could not be registered: the image is loaded
/// either way, and `pvkexec exec` / `systemctl reboot` still enter it.
pub fn mark_failed_note(e: &io::Error) -> String {
    format!(
        "note: Linux refused the placeholder that makes {KEXEC_LOADED} read 1 ({e}), so \
         `systemctl kexec` will not start; `systemctl reboot` and `pvkexec exec` enter the \
         image\n"
    )
}
