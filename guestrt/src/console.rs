//! Line-buffered console over `console_io(CONSOLEIO_write)` (the initial domain may use it on
//! Debian's release Xen; it appears on the serial line with Xen's `(XEN)` prefix).

use core::fmt::{self, Write};
use xenpv::hypercall;

/// A formatter that sends each chunk to Xen's console.
pub struct XenConsole;

impl Write for XenConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            match hypercall::console_write(rest) {
                Ok(0) | Err(_) => return Err(fmt::Error),
                Ok(n) => rest = &rest[(n as usize).min(rest.len())..],
            }
        }
        Ok(())
    }
}

/// Formats into a stack buffer and writes the whole line in one hypercall, so lines from
/// different VCPUs do not interleave mid-line.
pub fn print_line(args: fmt::Arguments) {
    let mut line = LineBuf {
        buf: [0; 256],
        len: 0,
    };
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    let _ = XenConsole.write_str(line.as_str());
}

struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl LineBuf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<non-utf8 line>")
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                // Full line: flush and continue so nothing is silently truncated.
                let _ = XenConsole.write_str(self.as_str());
                self.len = 0;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// `println!` for guests: one console write per line.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::console::print_line(format_args!($($arg)*)) };
}
