//! Links the test kernels as fixed-address static executables with ldscripts/pv-kernel.ld.
include!("../../ldscripts/pv_kernel_link.rs");

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    link_pv_kernel(&std::path::Path::new(&manifest).join("../../ldscripts/pv-kernel.ld"));
}
