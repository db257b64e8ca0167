// Link arguments of pvkexec's fixed-address PV kernels (the capture kernel and the test
// kernels), `include!`d by their build scripts: static, non-PIE executables linked with
// ldscripts/pv-kernel.ld at Linux's `__START_KERNEL_map`.

/// Links the package's binaries with `script` (ldscripts/pv-kernel.ld).
fn link_pv_kernel(script: &std::path::Path) {
    println!("cargo:rerun-if-changed={}", script.display());
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-nodefaultlibs",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,norelro",
        "-Wl,-z,noexecstack",
        "-Wl,--no-dynamic-linker",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}
