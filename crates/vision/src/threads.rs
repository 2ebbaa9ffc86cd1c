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
//! inference threads) keep libtorch's thread count, and every other thread
//! that may touch tensors calls [`run_serially_here`] first: its operations
//! then run on itself alone and it starts no OpenMP team.

#![allow(unsafe_code)]

use std::cell::Cell;

#[cfg(target_os = "linux")]
unsafe extern "C" {
    // libgomp, linked by torch-sys on Linux.
    fn omp_set_num_threads(n: std::ffi::c_int);
}

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Makes libtorch run the calling thread's operations on that thread alone,
/// for the rest of its life (or until it calls `tch::set_num_threads`).
/// Other threads keep their count. Cheap after the first call on a thread.
pub fn run_serially_here() {
    if SERIAL.with(|serial| serial.replace(true)) {
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
        omp_set_num_threads(1);
    }
}
