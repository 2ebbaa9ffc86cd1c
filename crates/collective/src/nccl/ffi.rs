//! The few NCCL and CUDA runtime calls this crate needs, bound at run time
//! with `libloading`. With `memory`, the only module with `unsafe` code; everything
//! it exports is safe to call: device pointers come from tensors checked here
//! (CUDA, contiguous, the communicator's dtype), and a communicator handle is
//! released exactly once, never while another call uses it (see [`Comm`]).
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

use libloading::Library;
use tch::{Device, Tensor};

use crate::{Error, Result};

/// `ncclUniqueId`: 128 opaque bytes, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawUniqueId {
    internal: [u8; 128],
}

type NcclComm = *mut c_void;
type CudaStream = *mut c_void;

type GetVersionFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type GetUniqueIdFn = unsafe extern "C" fn(*mut RawUniqueId) -> c_int;
type CommInitRankFn = unsafe extern "C" fn(*mut NcclComm, c_int, RawUniqueId, c_int) -> c_int;
type AllReduceFn = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    NcclComm,
    CudaStream,
) -> c_int;
type BroadcastFn = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    NcclComm,
    CudaStream,
) -> c_int;
type CommReleaseFn = unsafe extern "C" fn(NcclComm) -> c_int;
type GetErrorStringFn = unsafe extern "C" fn(c_int) -> *const c_char;
type CommGetAsyncErrorFn = unsafe extern "C" fn(NcclComm, *mut c_int) -> c_int;
type CudaSetDeviceFn = unsafe extern "C" fn(c_int) -> c_int;

const NCCL_SUCCESS: c_int = 0;
/// `ncclInProgress`: an asynchronous operation has not finished yet.
const NCCL_IN_PROGRESS: c_int = 7;

/// Opens the first library of `candidates` that loads; the error names every
/// path tried with the loader's reason.
fn open_first(library: &'static str, candidates: &[String]) -> Result<(Library, String)> {
    let mut tried = Vec::new();
    for name in candidates {
        // SAFETY: loading runs the library's initialisers. NCCL and the CUDA
        // runtime are ordinary C libraries whose initialisers have no
        // preconditions; loading an already loaded one (libtorch's) only
        // increments its reference count.
        match unsafe { Library::new(name) } {
            Ok(lib) => return Ok((lib, name.clone())),
            Err(e) => {
                // libloading's message is generic; the loader's is in `source`.
                let why = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
                tried.push(format!("{name}: {why}"));
            }
        }
    }
    Err(Error::LibraryMissing {
        library,
        tried: tried.join("; "),
    })
}

/// Copies the function `name` out of `lib`.
///
/// # Safety
///
/// `T` must be the C signature of `name`, and the returned pointer must not
/// outlive `lib`.
unsafe fn symbol<T: Copy>(lib: &Library, name: &str) -> Result<T> {
    // SAFETY: the caller guarantees `T` matches the symbol's signature.
    let sym = unsafe { lib.get::<T>(name) };
    sym.map(|s| *s).map_err(|e| Error::Nccl {
        call: "dlsym",
        code: -1,
        message: format!("symbol {name} missing: {e}"),
    })
}

/// The loaded NCCL library and its entry points.
pub(crate) struct NcclLib {
    get_version: GetVersionFn,
    get_unique_id: GetUniqueIdFn,
    comm_init_rank: CommInitRankFn,
    all_reduce: AllReduceFn,
    broadcast: BroadcastFn,
    comm_destroy: CommReleaseFn,
    comm_abort: CommReleaseFn,
    get_error_string: GetErrorStringFn,
    comm_get_async_error: CommGetAsyncErrorFn,
    path: String,
    /// Keeps the function pointers above valid; dropped last.
    _lib: Library,
}

impl NcclLib {
    /// Loads NCCL from `candidates`, in order.
    pub(crate) fn open(candidates: &[String]) -> Result<NcclLib> {
        let (lib, path) = open_first("libnccl", candidates)?;
        // SAFETY: each type alias above is the C signature of the symbol of
        // that name in nccl.h (NCCL 2.x; enums are C ints, `ncclUniqueId` a
        // 128-byte struct passed by value); `_lib` outlives the pointers.
        unsafe {
            Ok(NcclLib {
                get_version: symbol(&lib, "ncclGetVersion")?,
                get_unique_id: symbol(&lib, "ncclGetUniqueId")?,
                comm_init_rank: symbol(&lib, "ncclCommInitRank")?,
                all_reduce: symbol(&lib, "ncclAllReduce")?,
                broadcast: symbol(&lib, "ncclBroadcast")?,
                comm_destroy: symbol(&lib, "ncclCommDestroy")?,
                comm_abort: symbol(&lib, "ncclCommAbort")?,
                get_error_string: symbol(&lib, "ncclGetErrorString")?,
                comm_get_async_error: symbol(&lib, "ncclCommGetAsyncError")?,
                path,
                _lib: lib,
            })
        }
    }

    /// The path the library was loaded from.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// `ncclGetErrorString(code)`.
    fn error_string(&self, code: c_int) -> String {
        // SAFETY: ncclGetErrorString accepts any value and returns a pointer
        // to a static NUL-terminated string (or null, checked).
        let ptr = unsafe { (self.get_error_string)(code) };
        if ptr.is_null() {
            return format!("unknown nccl error {code}");
        }
        // SAFETY: non-null, NUL-terminated, static.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }

    fn check(&self, call: &'static str, code: c_int) -> Result<()> {
        if code == NCCL_SUCCESS {
            Ok(())
        } else {
            Err(Error::Nccl {
                call,
                code,
                message: self.error_string(code),
            })
        }
    }

    /// `ncclGetVersion`: e.g. 22809 for 2.28.9.
    pub(crate) fn version(&self) -> Result<i32> {
        let mut v: c_int = 0;
        // SAFETY: writes one int through a valid pointer.
        let code = unsafe { (self.get_version)(&mut v) };
        self.check("ncclGetVersion", code)?;
        Ok(v)
    }

    /// `ncclGetUniqueId`.
    pub(crate) fn unique_id(&self) -> Result<[u8; 128]> {
        let mut id = RawUniqueId { internal: [0; 128] };
        // SAFETY: writes 128 bytes into a valid, properly sized struct.
        let code = unsafe { (self.get_unique_id)(&mut id) };
        self.check("ncclGetUniqueId", code)?;
        Ok(id.internal)
    }
}

/// How a communicator is released: `ncclCommAbort` (stops the kernels in
/// flight) or `ncclCommDestroy` (waits for pending work).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    Abort,
    Destroy,
}

/// Where a [`Comm`] is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    /// Usable; `calls` NCCL calls on the handle are running.
    Live { calls: usize },
    /// Asked to be released while `calls` calls were running: no call may
    /// start, and the thread that ends the last one releases it.
    Releasing { how: Release, calls: usize },
    /// Released (or being released): the handle is gone.
    Released,
}

impl Lifecycle {
    /// The state once a call starts; `None` when no call may start.
    fn begin_call(self) -> Option<Lifecycle> {
        match self {
            Lifecycle::Live { calls } => Some(Lifecycle::Live { calls: calls + 1 }),
            Lifecycle::Releasing { .. } | Lifecycle::Released => None,
        }
    }

    /// The state once a call ends, and the release its thread must now
    /// run (the last call of a `Releasing` communicator).
    fn end_call(self) -> (Lifecycle, Option<Release>) {
        match self {
            Lifecycle::Live { calls } => (
                Lifecycle::Live {
                    calls: calls.saturating_sub(1),
                },
                None,
            ),
            Lifecycle::Releasing { how, calls } if calls <= 1 => (Lifecycle::Released, Some(how)),
            Lifecycle::Releasing { how, calls } => (
                Lifecycle::Releasing {
                    how,
                    calls: calls - 1,
                },
                None,
            ),
            Lifecycle::Released => (Lifecycle::Released, None),
        }
    }

    /// The state once a release is asked for, and whether the asking
    /// thread runs it now (no call running); a later ask changes nothing.
    fn release(self, how: Release) -> (Lifecycle, bool) {
        match self {
            Lifecycle::Live { calls: 0 } => (Lifecycle::Released, true),
            Lifecycle::Live { calls } => (Lifecycle::Releasing { how, calls }, false),
            Lifecycle::Releasing { .. } | Lifecycle::Released => (self, false),
        }
    }
}

/// An initialised NCCL communicator. Released exactly once (the first of
/// [`Comm::destroy`], [`Comm::abort`] or drop wins); calls after that fail
/// with [`Error::Aborted`].
///
/// Releasing frees the handle, so it must not overlap a call that uses it
/// (an enqueue checked `live` a moment before an [`crate::Aborter`] on
/// another thread aborted). Every call on the handle goes through
/// [`Comm::call`], which counts it in `lifecycle`; a release that finds a
/// call running only marks the communicator `Releasing` and the thread that
/// ends the last call performs it. So the lock is never held across an NCCL
/// call (an abort never waits for an enqueue that may block on a dead peer),
/// yet no NCCL call ever sees a freed handle. An abort that comes while
/// the worker waits for its kernels (outside any call) runs at once and
/// stops them.
pub(crate) struct Comm {
    lib: Arc<NcclLib>,
    ptr: NcclComm,
    lifecycle: Mutex<Lifecycle>,
}

// SAFETY: an NCCL communicator may be used from any thread; this type only
// hands the pointer to NCCL, and `lifecycle` makes its release happen once
// and after every call that uses it.
unsafe impl Send for Comm {}
// SAFETY: as above. Calls on the handle are only made by the one worker
// thread that owns the communicator (they are counted, not serialised);
// what another thread may do concurrently is release it, which
// `lifecycle` defers until no call is running.
unsafe impl Sync for Comm {}

/// NCCL's `ncclDataType_t` and reduction codes for what this crate sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wire {
    /// `ncclDataType_t`.
    pub(crate) dtype: c_int,
    /// Bytes per element.
    pub(crate) size: usize,
}

impl Comm {
    /// `ncclCommInitRank` on the calling thread's current CUDA device. Blocks
    /// until all `world_size` ranks have joined.
    pub(crate) fn init(
        lib: Arc<NcclLib>,
        id: &[u8; 128],
        rank: usize,
        world_size: usize,
    ) -> Result<Comm> {
        let nranks = c_int::try_from(world_size)
            .map_err(|_| Error::Config(format!("world size {world_size} is too large")))?;
        let rank_c = c_int::try_from(rank)
            .map_err(|_| Error::Config(format!("rank {rank} is too large")))?;
        let mut ptr: NcclComm = std::ptr::null_mut();
        let id = RawUniqueId { internal: *id };
        // SAFETY: `ptr` is a valid out-pointer; the id is passed by value as
        // nccl.h declares.
        let code = unsafe { (lib.comm_init_rank)(&mut ptr, nranks, id, rank_c) };
        lib.check("ncclCommInitRank", code)?;
        if ptr.is_null() {
            return Err(Error::Nccl {
                call: "ncclCommInitRank",
                code,
                message: "returned no communicator".into(),
            });
        }
        Ok(Comm {
            lib,
            ptr,
            lifecycle: Mutex::new(Lifecycle::Live { calls: 0 }),
        })
    }

    fn lifecycle(&self) -> MutexGuard<'_, Lifecycle> {
        // The lock guards plain state updated in one step: a panic elsewhere
        // cannot leave it half-written.
        self.lifecycle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the live handle, which cannot be released until `f`
    /// returns; [`Error::Aborted`] when it is released or being released.
    fn call<T>(&self, f: impl FnOnce(NcclComm) -> T) -> Result<T> {
        {
            let mut state = self.lifecycle();
            *state = state.begin_call().ok_or(Error::Aborted)?;
        }
        let out = f(self.ptr);
        let deferred = {
            let mut state = self.lifecycle();
            let (next, deferred) = state.end_call();
            *state = next;
            deferred
        };
        if let Some(how) = deferred {
            self.run_release(how);
        }
        Ok(out)
    }

    /// Checks `t` can be handed to NCCL as `count` elements of `wire` on
    /// `device` and returns its device pointer and element count.
    fn buffer(t: &Tensor, wire: Wire, device: Device) -> Result<(*mut c_void, usize)> {
        if !t.defined() {
            return Err(Error::Tensor("nccl: tensor is undefined".into()));
        }
        if t.device() != device {
            return Err(Error::Tensor(format!(
                "nccl needs tensors on {device:?}, got one on {:?}",
                t.device()
            )));
        }
        if !t.is_contiguous() {
            return Err(Error::Tensor("nccl needs contiguous tensors".into()));
        }
        let kind = t.f_kind()?;
        if kind.elt_size_in_bytes() != wire.size {
            return Err(Error::Tensor(format!(
                "nccl: a {kind:?} tensor does not match the wire type"
            )));
        }
        Ok((t.data_ptr(), t.numel()))
    }

    /// In-place `ncclAllReduce` of `t` on the legacy default stream.
    pub(crate) fn all_reduce(
        &self,
        t: &Tensor,
        wire: Wire,
        op: c_int,
        device: Device,
    ) -> Result<()> {
        let (ptr, count) = Self::buffer(t, wire, device)?;
        if count == 0 {
            return self.call(|_| ());
        }
        // SAFETY: `ptr` is the start of `count` contiguous elements of
        // `wire.dtype` on the communicator's device (checked by `buffer`),
        // kept alive by the caller until the stream has finished; in place is
        // allowed (sendbuff == recvbuff); stream null is the legacy default
        // stream. `comm` is live for the whole call: `call` defers any
        // release until it returns.
        let code = self.call(|comm| unsafe {
            (self.lib.all_reduce)(ptr, ptr, count, wire.dtype, op, comm, std::ptr::null_mut())
        })?;
        self.lib.check("ncclAllReduce", code)
    }

    /// In-place `ncclBroadcast` of `t` from `root` on the legacy default
    /// stream.
    pub(crate) fn broadcast(
        &self,
        t: &Tensor,
        wire: Wire,
        root: usize,
        device: Device,
    ) -> Result<()> {
        let (ptr, count) = Self::buffer(t, wire, device)?;
        if count == 0 {
            return self.call(|_| ());
        }
        let root = c_int::try_from(root)
            .map_err(|_| Error::Config(format!("root {root} is too large")))?;
        // SAFETY: as in `all_reduce`; in place (sendbuff == recvbuff) is
        // allowed for broadcast.
        let code = self.call(|comm| unsafe {
            (self.lib.broadcast)(
                ptr,
                ptr,
                count,
                wire.dtype,
                root,
                comm,
                std::ptr::null_mut(),
            )
        })?;
        self.lib.check("ncclBroadcast", code)
    }

    /// `ncclCommGetAsyncError`: an error NCCL hit while running kernels
    /// (a peer died, a network failure).
    pub(crate) fn async_error(&self) -> Result<()> {
        let mut state: c_int = NCCL_SUCCESS;
        // SAFETY: `comm` is live for the whole call (`call` defers any
        // release); `state` is a valid out-pointer.
        let code =
            self.call(|comm| unsafe { (self.lib.comm_get_async_error)(comm, &mut state) })?;
        self.lib.check("ncclCommGetAsyncError", code)?;
        if state == NCCL_IN_PROGRESS {
            return Ok(());
        }
        self.lib.check("ncclCommGetAsyncError", state)
    }

    /// Releases the handle now, or, while a call uses it, marks it
    /// `Releasing` for that call's thread to release when it ends. Returns
    /// false when it was already released (or being released).
    fn release(&self, how: Release) -> bool {
        let (now, asked) = {
            let mut state = self.lifecycle();
            let (next, now) = state.release(how);
            let asked = *state != next;
            *state = next;
            (now, asked)
        };
        if now {
            self.run_release(how);
        }
        asked
    }

    /// `ncclCommAbort` or `ncclCommDestroy`; run once, by the thread that
    /// moved `lifecycle` to `Released`.
    fn run_release(&self, how: Release) {
        let f = match how {
            Release::Destroy => self.lib.comm_destroy,
            Release::Abort => self.lib.comm_abort,
        };
        // SAFETY: the caller moved `lifecycle` to `Released` with no call
        // running, so this is the only release of a communicator that
        // ncclCommInitRank returned and no other NCCL call uses the handle
        // now or later. A thread waiting for this communicator's kernels
        // (synchronising its stream, not calling NCCL) may be running: that
        // is what ncclCommAbort exists for (it stops the kernels in flight).
        let code = unsafe { f(self.ptr) };
        if code != NCCL_SUCCESS {
            tracing::warn!(code, error = %self.lib.error_string(code), ?how, "releasing an nccl communicator failed");
        }
    }

    /// `ncclCommAbort`, unless already released. Returns whether it ran or
    /// will run (at the end of the call in progress).
    pub(crate) fn abort(&self) -> bool {
        self.release(Release::Abort)
    }

    /// `ncclCommDestroy` (waits for pending work), unless already released.
    pub(crate) fn destroy(&self) -> bool {
        self.release(Release::Destroy)
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// The CUDA runtime's `cudaSetDevice`: NCCL initialises a communicator on
/// the calling thread's current device.
pub(crate) struct CudaRuntime {
    set_device: CudaSetDeviceFn,
    _lib: Library,
}

impl CudaRuntime {
    /// Opens the CUDA runtime libtorch already loaded (by soname), or the
    /// one `CAMSHAFT_CUDART_LIB` names.
    pub(crate) fn open() -> Result<CudaRuntime> {
        let mut candidates: Vec<String> =
            std::env::var("CAMSHAFT_CUDART_LIB").into_iter().collect();
        candidates.extend(
            [
                "libcudart.so.13",
                "libcudart.so.12",
                "libcudart.so.11.0",
                "libcudart.so",
            ]
            .map(String::from),
        );
        let (lib, _) = open_first("libcudart", &candidates)?;
        // SAFETY: `cudaError_t cudaSetDevice(int)`; `_lib` outlives it.
        let set_device = unsafe { symbol::<CudaSetDeviceFn>(&lib, "cudaSetDevice") }
            .map_err(|e| Error::Cuda(format!("{e}")))?;
        Ok(CudaRuntime {
            set_device,
            _lib: lib,
        })
    }

    /// `cudaSetDevice(index)` for the calling thread.
    pub(crate) fn set_device(&self, index: usize) -> Result<()> {
        let dev = c_int::try_from(index)
            .map_err(|_| Error::Cuda(format!("device index {index} is too large")))?;
        // SAFETY: takes an int; an invalid index is reported as an error code.
        let code = unsafe { (self.set_device)(dev) };
        if code != 0 {
            return Err(Error::Cuda(format!(
                "cudaSetDevice({index}) failed with cudaError_t {code}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_during_a_call_is_run_by_that_call_once_it_ends() {
        let live = Lifecycle::Live { calls: 0 };
        let calling = live.begin_call().expect("a live communicator takes calls");
        // The aborter finds a call running: it only marks the communicator.
        let (marked, now) = calling.release(Release::Abort);
        assert!(!now);
        assert_eq!(marked.begin_call(), None, "no call starts any more");
        // A second release (the owner's destroy) changes nothing.
        assert_eq!(marked.release(Release::Destroy), (marked, false));
        // The call ends: its thread runs the abort, and only it.
        assert_eq!(
            marked.end_call(),
            (Lifecycle::Released, Some(Release::Abort))
        );
    }

    #[test]
    fn a_release_without_a_call_runs_at_once_and_only_once() {
        let (released, now) = Lifecycle::Live { calls: 0 }.release(Release::Destroy);
        assert_eq!((released, now), (Lifecycle::Released, true));
        assert_eq!(
            released.release(Release::Abort),
            (Lifecycle::Released, false)
        );
        assert_eq!(released.begin_call(), None);
    }

    #[test]
    fn calls_are_counted_until_the_last_one_ends() {
        let two = Lifecycle::Live { calls: 0 }
            .begin_call()
            .and_then(Lifecycle::begin_call)
            .expect("live");
        let (marked, _) = two.release(Release::Abort);
        let (one_left, deferred) = marked.end_call();
        assert_eq!(deferred, None);
        assert_eq!(
            one_left.end_call(),
            (Lifecycle::Released, Some(Release::Abort))
        );
        assert_eq!(two.end_call(), (Lifecycle::Live { calls: 1 }, None));
    }
}
