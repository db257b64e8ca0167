//! Any bytes given to the kernel reader, and any kernel it accepts given to the planner, must
//! produce a value or an error: never a panic, a hang or unbounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(kernel) = loader::parse_kernel("fuzz", data) {
        for mode in [pvlayout::Mode::Dom0, pvlayout::Mode::DomU] {
            let _ = loader::plan::plan_kernel("fuzz", &kernel, Some(4096), 65536, mode, None);
        }
    }
});
