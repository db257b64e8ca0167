//! Boot-check kernel: checks what Xen's builder handed it and reports one line per check
//! (`pvtest_kernels::checks`).
//!
//! Command-line words (start_info.cmd_line): `mem_mib=N` is the `dom0_mem` the harness gave Xen
//! (the `nr_pages` check compares against it; a wrong value makes that check fail on purpose).
#![no_std]
#![no_main]

use kernelrt::entry::{entry_regs, reg};
use kernelrt::notes::VIRT_BASE;
use kernelrt::report::finish;
use kernelrt::view::Region;
use pvtest_kernels::checks::boot_checks;
use xenpv::StartInfo;

#[no_mangle]
extern "C" fn guest_main(si: *const StartInfo) -> ! {
    // SAFETY: Xen passes a mapped start_info page in rsi; it stays mapped and unchanged.
    let si = unsafe { &*si };
    let regs = entry_regs();
    let region = Region::from_stack_top(VIRT_BASE, regs[reg::RSP]);
    kernelrt::console_init(si, &region);
    boot_checks(si, &regs, &region, 0);
    finish()
}
