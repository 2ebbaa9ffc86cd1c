//! Compiles `csrc/shim.cpp` against the libtorch that `torch-sys` links,
//! with the flags `torch-sys` compiles its own wrapper with (C++17, the
//! library's C++ ABI, `GLOG_USE_GLOG_EXPORT`), and decides whether the CUDA
//! parts are built: when the libtorch has `libtorch_cuda` and the CUDA
//! runtime headers are found (`CUDA_HOME`, `/usr/local/cuda`, or the
//! wheels beside a PyTorch install: see `cuda_headers`). `CAMSHAFT_ATEN_CUDA=0`
//! turns them off. The Rust side sees the choice as `cfg(aten_cuda)`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=csrc/shim.cpp");
    println!("cargo::rerun-if-env-changed=CAMSHAFT_ATEN_CUDA");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    println!("cargo::rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo::rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo::rustc-check-cfg=cfg(aten_cuda)");
    if env::var_os("DOCS_RS").is_some() {
        return;
    }
    // torch-sys (`links = "tch"`) tells its dependents where libtorch's
    // libraries are; the headers sit beside them in every layout it
    // accepts (a libtorch archive, a PyTorch install).
    let lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report its libtorch (DEP_TCH_LIBTORCH_LIB)"),
    );
    let root = lib
        .parent()
        .expect("libtorch's lib dir has a parent")
        .to_path_buf();
    let includes = [
        root.join("include"),
        root.join("include/torch/csrc/api/include"),
    ];
    let cuda_headers = cuda_headers(&lib);
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .includes(&includes)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // libtorch's headers warn a lot with -Wall; ours must not.
        .warnings(false)
        .file("csrc/shim.cpp");
    if let Some(dirs) = &cuda_headers {
        build.includes(dirs).define("CAMSHAFT_ATEN_CUDA", "1");
    }
    build.compile("camshaft_aten_shim");
    println!("cargo::rustc-link-search=native={}", lib.display());
    if cuda_headers.is_some() {
        println!("cargo::rustc-cfg=aten_cuda");
        println!("cargo::rustc-link-lib=torch_cuda");
        println!("cargo::rustc-link-lib=c10_cuda");
    }
    println!("cargo::rustc-link-lib=torch_cpu");
    println!("cargo::rustc-link-lib=c10");
}

/// libtorch's C++ ABI, found as torch-sys finds it: from the PyTorch
/// install when `LIBTORCH_USE_PYTORCH` is set, else `LIBTORCH_CXX11_ABI`
/// (default 1, what every libtorch 2.x for Linux uses).
fn cxx11_abi() -> String {
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = if env::var_os("VIRTUAL_ENV").is_some() {
            "python"
        } else {
            "python3"
        };
        let out = Command::new(python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output();
        if let Ok(out) = out
            && out.status.success()
        {
            let abi = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if abi == "0" || abi == "1" {
                return abi;
            }
        }
        panic!("LIBTORCH_USE_PYTORCH is set but {python} could not tell torch's C++ ABI");
    }
    env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into())
}

/// The folders of the CUDA runtime headers, when this libtorch is a CUDA
/// build and they are found: the one with `cuda_runtime_api.h` (first
/// found: `CUDA_HOME`, `/usr/local/cuda`, the PyTorch wheel's
/// `nvidia/cu*/include`), then one with the compiler's `crt/host_config.h`
/// that `cuda_runtime.h` includes (the same folder in a CUDA toolkit; the
/// PyTorch wheel's `nvidia/cu13/include` lacks `crt/`, which Triton's
/// bundled CUDA headers beside it, or the `nvidia-cuda-nvcc` wheel,
/// provide). Only host declarations are compiled: no device code.
fn cuda_headers(lib: &Path) -> Option<Vec<PathBuf>> {
    if env::var("CAMSHAFT_ATEN_CUDA").is_ok_and(|v| v == "0") {
        return None;
    }
    if !lib.join("libtorch_cuda.so").exists() {
        return None;
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            candidates.push(PathBuf::from(home).join("include"));
        }
    }
    candidates.push("/usr/local/cuda/include".into());
    // A PyTorch wheel: site-packages/torch/lib → site-packages/nvidia/*.
    if let Some(site) = lib.parent().and_then(Path::parent) {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            let mut dirs: Vec<PathBuf> = entries
                .flatten()
                .flat_map(|e| [e.path().join("include"), e.path().join("bin")])
                .collect();
            dirs.sort();
            candidates.extend(dirs);
        }
        candidates.push(site.join("triton/backends/nvidia/include"));
    }
    let runtime = candidates
        .iter()
        .find(|d| d.join("cuda_runtime_api.h").exists())?;
    let crt = candidates
        .iter()
        .find(|d| d.join("crt/host_config.h").exists() && d.join("crt/host_defines.h").exists())?;
    let mut dirs = vec![runtime.clone()];
    if crt != runtime {
        dirs.push(crt.clone());
    }
    Some(dirs)
}
