// Shared by the build scripts of the binaries that may run on a GPU
// (`include!`d, not a crate).
//
// tch links `-ltorch_cuda`, but no symbol of it is referenced, so the
// linker's default `--as-needed` drops it and libtorch never registers its
// CUDA backend: `tch::Cuda::device_count()` is 0 even on a GPU machine. Link
// it again with `--no-as-needed` in effect, when the libtorch in use has it
// (a CPU-only libtorch does not, and then there is nothing to keep).

/// Emits the link arguments that keep `libtorch_cuda.so` needed.
fn keep_torch_cuda() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = std::path::Path::new(&libtorch).join("lib");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-ltorch_cuda,--pop-state");
    }
}
