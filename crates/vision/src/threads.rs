//! Which threads run libtorch's intra-op parallelism.
//!
//! On Linux libtorch parallelises an operation with OpenMP (libgomp). Every
//! thread that runs a parallel operation gets a team of worker threads of
//! its own, kept until that thread exits. Once a process holds more OpenMP
//! threads than CPUs, libgomp stops spinning between parallel regions and
//! every operation pays for waking its team up: on 2 cores a ResNet34
//! forward pass at 224 px went from 27 to 40 ms because one other thread
//! (a model loader, an image decoder) had run a single parallel operation.
//!
//! So the compute threads (a worker's rank threads, the explainer's
//! inference threads) keep libtorch's thread count, or share the cores
//! with [`use_threads_here`] when several run at once (CPU ranks of one
//! process), and every other thread that may touch tensors calls
//! [`run_serially_here`] first: its operations then run on itself alone and
//! it starts no OpenMP team.

#![allow(unsafe_code)]

use std::cell::Cell;

#[cfg(target_os = "linux")]
unsafe extern "C" {
    // libgomp, linked by torch-sys on Linux.
    fn omp_set_num_threads(n: std::ffi::c_int);
}

thread_local! {
    /// The count [`use_threads_here`] last set on this thread.
    static THREADS: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Makes libtorch run the calling thread's operations on `n` threads (this
/// one and `n - 1` OpenMP workers; at least 1), for the rest of its life or
/// until it calls `tch::set_num_threads`. Other threads keep their count,
/// and threads it starts later get libtorch's. Cheap when `n` is already
/// this thread's count.
pub fn use_threads_here(n: usize) {
    let n = n.max(1);
    if THREADS.with(|count| count.replace(Some(n))) == Some(n) {
        return;
    }
    // libtorch sets a thread's OpenMP team size from its global count the
    // first time the thread asks for it; asking now keeps that from undoing
    // the setting below later.
    let _ = tch::get_num_threads();
    #[cfg(target_os = "linux")]
    // SAFETY: omp_set_num_threads takes a plain int and sets only the
    // calling thread's team size (the nthreads-var ICV); it has no
    // preconditions.
    unsafe {
        omp_set_num_threads(std::ffi::c_int::try_from(n).unwrap_or(std::ffi::c_int::MAX));
    }
}

/// [`use_threads_here`]`(1)`: the calling thread's operations run on it
/// alone and it starts no OpenMP team.
pub fn run_serially_here() {
    use_threads_here(1);
}
