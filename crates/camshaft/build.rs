//! Keeps libtorch's CUDA backend linked (see `build/torch_cuda.rs`).

include!("../../build/torch_cuda.rs");

fn main() {
    keep_torch_cuda();
}
