//! What kexec-tools does around a kexec besides the kexec itself, done the same way: `sync()`
//! before the handover, network interfaces brought down (`ifdown`), and a reboot through
//! `shutdown -r now`, which reaches pvkexec's systemd-shutdown hook.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Flushes every file system's dirty data (sync(2)): the module's handover does not, and the
/// new kernel starts on whatever reached the disks.
pub fn sync() {
    // SAFETY: sync(2) takes no arguments, touches no memory of this process and cannot fail.
    unsafe { libc::sync() }
}

/// The interfaces kexec-tools' `ifdown` brings down, in its order: the traffic shapers first (a
/// shaper must go before the device it is attached to), then the others; never `lo` nor an
/// alias (`eth0:1`, which goes with its device). `names` are in the kernel's order.
pub fn ifdown_order(names: &[String]) -> Vec<String> {
    let eligible = |n: &&String| n.as_str() != "lo" && !n.contains(':');
    let shaper = |n: &&String| n.starts_with("shaper");
    let mut out: Vec<String> = names
        .iter()
        .filter(eligible)
        .filter(shaper)
        .cloned()
        .collect();
    out.extend(
        names
            .iter()
            .filter(eligible)
            .filter(|n| !shaper(n))
            .cloned(),
    );
    out
}

/// Interface names from `/proc/net/dev` (header lines, then `  name: counters...`), in the
/// kernel's order.
pub fn proc_net_dev_names(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Brings every interface but `lo` down (clears `IFF_UP`), as `kexec -e` does unless `-x`:
/// whatever a daemon still sends stops before the handover. Never fatal (kexec-tools carries on
/// too); each failure is returned as a warning naming the interface.
pub fn ifdown() -> Vec<String> {
    let names = match std::fs::read_to_string("/proc/net/dev") {
        Ok(text) => proc_net_dev_names(&text),
        Err(e) => return vec![format!("ifdown: /proc/net/dev: {e}")],
    };
    let order = ifdown_order(&names);
    if order.is_empty() {
        return Vec::new();
    }
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return vec![format!(
            "ifdown: socket: {}",
            std::io::Error::last_os_error()
        )];
    }
    // SAFETY: `fd` is a socket this function just opened and owns nowhere else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    order
        .iter()
        .filter_map(|name| set_down(&sock, name).err())
        .collect()
}

/// Clears `IFF_UP` on one interface through SIOCGIFFLAGS / SIOCSIFFLAGS.
fn set_down(sock: &OwnedFd, name: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(format!("ifdown {name}: not an interface name"));
    }
    // SAFETY: ifreq is plain old data (a name array and a union of integers and addresses):
    // all zeroes is a valid value of it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let os = |what: &str| format!("ifdown {name}: {what}: {}", std::io::Error::last_os_error());
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name from `ifr` and writes its flags into
    // it; `ifr` is a live, writable ifreq for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(os("SIOCGIFFLAGS"));
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the interface's flags.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
    // SAFETY: SIOCSIFFLAGS reads the name and the flags from `ifr`, which lives for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(os("SIOCSIFFLAGS"));
    }
    Ok(())
}

/// Where systemd-shutdown looks for its hooks (`/lib` is `/usr/lib` on a merged-/usr system,
/// a directory of its own on an older one).
pub const HOOK_DIRS: [&str; 2] = [
    "/usr/lib/systemd/system-shutdown",
    "/lib/systemd/system-shutdown",
];
/// The hook's name there (the `pvkexec` package installs packaging/systemd/system-shutdown-pvkexec
/// as this).
pub const HOOK_NAME: &str = "pvkexec";

/// What the reboot of `kexec KERNEL` will meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebootPath {
    /// systemd is the running init (`/run/systemd/system` exists, as sd_booted() checks).
    pub systemd: bool,
    /// pvkexec's hook, found and executable.
    pub hook: Option<PathBuf>,
    /// A hook file found but not executable (systemd-shutdown skips it).
    pub hook_not_executable: Option<PathBuf>,
}

impl RebootPath {
    /// This system's.
    pub fn probe() -> RebootPath {
        use std::os::unix::fs::PermissionsExt;
        let mut path = RebootPath {
            systemd: Path::new("/run/systemd/system").is_dir(),
            hook: None,
            hook_not_executable: None,
        };
        for dir in HOOK_DIRS {
            let p = Path::new(dir).join(HOOK_NAME);
            match std::fs::metadata(&p) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                    path.hook = Some(p);
                    break;
                }
                Ok(m) if m.is_file() => path.hook_not_executable = Some(p),
                _ => {}
            }
        }
        path
    }

    /// Whether `shutdown -r now` will end in `pvkexec exec`: refused, with what to do instead,
    /// when it would reboot the domain as usual and drop the loaded image.
    pub fn check(&self) -> Result<(), String> {
        let instead = "Nothing was loaded. `kexec -f KERNEL` loads and hands over at once \
                       (services are not stopped); `kexec -l KERNEL` then your own shutdown \
                       path ending in `kexec -e` or `pvkexec exec`";
        if !self.systemd {
            return Err(format!(
                "kexec KERNEL without -l, -e or -f loads, then reboots with `shutdown -r now`, \
                 and only systemd's shutdown runs pvkexec's hook, which hands over to the loaded \
                 image; this system was not booted with systemd (no /run/systemd/system), so \
                 the reboot would be an ordinary one. {instead}"
            ));
        }
        if self.hook.is_some() {
            return Ok(());
        }
        let found = match &self.hook_not_executable {
            Some(p) => format!("{} is not executable", p.display()),
            None => format!("no {}/{HOOK_NAME}", HOOK_DIRS[0]),
        };
        Err(format!(
            "kexec KERNEL without -l, -e or -f loads, then reboots with `shutdown -r now`, which \
             kexecs only through pvkexec's systemd-shutdown hook ({}/{HOOK_NAME}, mode 0755, \
             which the pvkexec package installs): {found}, so the reboot would be an ordinary \
             one. {instead}",
            HOOK_DIRS[0]
        ))
    }
}

/// Where kexec-tools looks for `shutdown`, in its order.
pub const SHUTDOWN_PATHS: [&str; 3] = ["/sbin/shutdown", "/etc/shutdown", "/bin/shutdown"];

/// Replaces this process with `shutdown -r now` (the first of [`SHUTDOWN_PATHS`] that runs);
/// returns only when none could be started.
pub fn exec_shutdown_reboot() -> String {
    use std::os::unix::process::CommandExt;
    let mut tried = Vec::new();
    for p in SHUTDOWN_PATHS {
        let e = std::process::Command::new(p)
            .arg0("shutdown")
            .args(["-r", "now"])
            .exec();
        tried.push(format!("{p}: {e}"));
    }
    format!("cannot start shutdown -r now ({})", tried.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ifdown_takes_shapers_first_and_leaves_lo_and_aliases() {
        let order = ifdown_order(&names(&["lo", "eth0", "shaper0", "eth0:1", "eth1"]));
        assert_eq!(order, names(&["shaper0", "eth0", "eth1"]));
        assert!(ifdown_order(&names(&["lo"])).is_empty());
    }

    #[test]
    fn proc_net_dev_lists_names_in_order() {
        let text = "Inter-|   Receive                            |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
                    lo:  1234 5 0 0 0 0 0 0 1234\n  eth0: 99 1 0 0 0 0 0 0 7\n";
        assert_eq!(proc_net_dev_names(text), names(&["lo", "eth0"]));
        assert!(proc_net_dev_names("").is_empty());
    }

    #[test]
    fn a_reboot_that_would_not_kexec_is_refused() {
        let hook = Some(PathBuf::from("/usr/lib/systemd/system-shutdown/pvkexec"));
        let ok = RebootPath {
            systemd: true,
            hook: hook.clone(),
            hook_not_executable: None,
        };
        assert!(ok.check().is_ok());
        let e = RebootPath {
            systemd: false,
            ..ok.clone()
        }
        .check()
        .unwrap_err();
        assert!(
            e.contains("not booted with systemd") && e.contains("Nothing was loaded"),
            "{e}"
        );
        let e = RebootPath {
            hook: None,
            ..ok.clone()
        }
        .check()
        .unwrap_err();
        assert!(
            e.contains("no /usr/lib/systemd/system-shutdown/pvkexec"),
            "{e}"
        );
        assert!(e.contains("kexec -f KERNEL"), "{e}");
        let e = RebootPath {
            hook: None,
            hook_not_executable: hook,
            ..ok
        }
        .check()
        .unwrap_err();
        assert!(e.contains("is not executable"), "{e}");
    }
}
