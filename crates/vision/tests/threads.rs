//! `threads::run_serially_here` and `use_threads_here` (alone in this binary: it counts the
//! process's OS threads, which other tests running alongside would change).

#![allow(clippy::unwrap_used)]

use camshaft_vision::threads::{run_serially_here, use_threads_here};

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The thread count once it has stopped changing: the OpenMP team of a
/// thread that just ended leaves asynchronously, and counting while it does
/// made the checks below flaky.
fn settled_os_threads() -> usize {
    let mut last = os_threads();
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let now = os_threads();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// An operation large enough for libtorch to run in parallel.
fn big_op() {
    let x = tch::Tensor::ones([4_000_000], (tch::Kind::Float, tch::Device::Cpu));
    let _ = (&x * 2.0).relu().sum(tch::Kind::Float).double_value(&[]);
}

#[test]
fn a_serial_thread_starts_no_openmp_team_and_others_keep_theirs() {
    tch::set_num_threads(2);
    // Each check runs on a fresh thread: the harness's thread may have run
    // parallel operations already.
    std::thread::spawn(|| {
        run_serially_here();
        assert_eq!(tch::get_num_threads(), 1);
        let before = settled_os_threads();
        big_op();
        assert_eq!(tch::get_num_threads(), 1, "libtorch reset the count");
        assert_eq!(
            os_threads(),
            before,
            "a serial thread started OpenMP threads"
        );
        // A thread it starts (a rank or inference thread started from a
        // serial runtime thread) has libtorch's count again.
        std::thread::spawn(|| assert_eq!(tch::get_num_threads(), 2))
            .join()
            .unwrap();
        // And the thread itself can take another count.
        use_threads_here(2);
        assert_eq!(tch::get_num_threads(), 2);
        big_op();
        assert!(os_threads() > before, "two threads started no team");
    })
    .join()
    .unwrap();
    std::thread::spawn(|| {
        assert_eq!(tch::get_num_threads(), 2);
        let before = settled_os_threads();
        big_op();
        // The control: the same operation on a thread with the default
        // count starts a team, so the check above can fail.
        assert!(os_threads() > before, "a parallel thread started no team");
    })
    .join()
    .unwrap();
}
