//! Build script shared by every crate of the workspace that links libtorch.
//!
//! torch-sys tells its dependents where libtorch lives (`DEP_TCH_LIBTORCH_LIB`).
//! We bake that directory into the binaries as an rpath so that `rl-run` and
//! the test binaries run without `LD_LIBRARY_PATH`, and, when the libtorch has
//! CUDA, force `libtorch_cuda.so` into the dynamic section: the linker drops
//! it with `--as-needed` because no symbol of ours names it, and CUDA would
//! then be silently unavailable at run time.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report its libtorch directory (DEP_TCH_LIBTORCH_LIB); run scripts/setup.sh first");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // Where libtorch is, for libraries opened at run time beside it (NCCL).
    println!("cargo:rustc-env=SHORTCUT_LIBTORCH_LIB={lib_dir}");
    if Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
}
