//! Keeps libtorch's CUDA backend linked in this crate's tests and examples,
//! which run on GPU machines too (see `build/torch_cuda.rs`).

include!("../../build/torch_cuda.rs");

fn main() {
    keep_torch_cuda();
}
