//! NCCL without a GPU is an error value; with one, a 1-rank group works.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use camshaft_collective::{
    CollectiveConfig, Communicator, Error, Nccl, NcclCommunicator, ReduceOp, nccl_available,
};
use tch::{Device, Kind, Tensor};

#[test]
fn load_reports_what_it_tried_or_loads() {
    match Nccl::load() {
        Ok(nccl) => {
            assert!(nccl.version() >= 20000, "{nccl:?}");
            eprintln!("loaded nccl {} from {}", nccl.version_string(), nccl.path());
        }
        Err(e) => {
            assert!(matches!(e, Error::LibraryMissing { .. }), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("libnccl.so.2") && msg.contains("libnccl.so"),
                "{msg}"
            );
            eprintln!("{msg}");
        }
    }
}

#[test]
fn a_missing_library_is_an_error_naming_the_path() {
    let e = Nccl::load_from(&["/nonexistent/libnccl.so.2".to_string()]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/libnccl.so.2"), "{e}");
}

#[test]
fn availability_matches_the_machine() {
    if tch::Cuda::device_count() == 0 {
        assert!(!nccl_available());
    }
}

/// The wheel's library, when the venv has it (not on the loader path).
fn venv_nccl() -> Option<Nccl> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    let lib = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/nvidia/nccl/lib/libnccl.so.2"))
        .find(|p| p.exists())?;
    Nccl::load_from(&[lib.to_string_lossy().into_owned()]).ok()
}

#[test]
fn a_communicator_without_a_gpu_is_an_error() {
    if tch::Cuda::device_count() > 0 {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let Some(nccl) = Nccl::load().ok().or_else(venv_nccl) else {
        eprintln!("skipped: no libnccl.so.2 here");
        return;
    };
    eprintln!("nccl {} from {}", nccl.version_string(), nccl.path());
    let e =
        NcclCommunicator::new(&nccl, [0; 128], 0, 1, 0, CollectiveConfig::default()).unwrap_err();
    assert!(matches!(e, Error::Cuda(_)), "{e}");
    assert!(e.to_string().contains("0 CUDA device"), "{e}");
}

#[test]
#[ignore = "needs a GPU and libnccl.so.2"]
fn one_rank_group_on_a_gpu() {
    let nccl = Nccl::load().unwrap();
    let id = nccl.unique_id().unwrap();
    let config = CollectiveConfig::with_timeout(Duration::from_secs(60));
    let mut comm = NcclCommunicator::new(&nccl, id, 0, 1, 0, config).unwrap();
    let dev = Device::Cuda(0);
    let a = Tensor::arange(1000, (Kind::Float, dev));
    let b = Tensor::arange(10, (Kind::Double, dev));
    let c = Tensor::arange(16, (Kind::Float, dev)).to_kind(Kind::BFloat16);
    comm.all_reduce(
        &[a.shallow_clone(), b.shallow_clone(), c.shallow_clone()],
        ReduceOp::Sum,
    )
    .unwrap();
    assert_eq!(a, Tensor::arange(1000, (Kind::Float, dev)));
    assert_eq!(b, Tensor::arange(10, (Kind::Double, dev)));
    comm.all_reduce(&[a.shallow_clone()], ReduceOp::Average)
        .unwrap();
    assert_eq!(a, Tensor::arange(1000, (Kind::Float, dev)));
    comm.broadcast(&[a.shallow_clone()], 0).unwrap();
    assert_eq!(a, Tensor::arange(1000, (Kind::Float, dev)));
    comm.barrier().unwrap();
    // CPU tensors and non-contiguous tensors are errors, not UB.
    let e = comm
        .all_reduce(
            &[Tensor::zeros([3], (Kind::Float, Device::Cpu))],
            ReduceOp::Sum,
        )
        .unwrap_err();
    assert!(matches!(e, Error::Tensor(_)), "{e}");
    let t = Tensor::zeros([4, 4], (Kind::Float, dev)).transpose(0, 1);
    assert!(matches!(
        comm.all_reduce(&[t], ReduceOp::Sum),
        Err(Error::Tensor(_))
    ));
    // The aborter makes every later call fail fast.
    comm.aborter().abort();
    assert!(matches!(comm.barrier(), Err(Error::Aborted)));
}
