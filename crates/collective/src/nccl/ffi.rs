//! The few NCCL and CUDA runtime calls this crate needs, bound at run time
//! with `libloading`. With `memory`, the only module with `unsafe` code; everything
//! it exports is safe to call: device pointers come from tensors checked here
//! (CUDA, contiguous, the communicator's dtype), and a communicator handle is
//! released exactly once.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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

const COMM_LIVE: u8 = 0;
const COMM_RELEASED: u8 = 1;

/// An initialised NCCL communicator. Destroyed or aborted exactly once (the
/// first of [`Comm::destroy`], [`Comm::abort`] or drop wins); calls after
/// that fail with [`Error::Aborted`].
pub(crate) struct Comm {
    lib: Arc<NcclLib>,
    ptr: NcclComm,
    state: AtomicU8,
}

// SAFETY: an NCCL communicator may be used from any thread; this type only
// hands the pointer to NCCL, and `state` makes its release happen once.
unsafe impl Send for Comm {}
// SAFETY: as above; the only call made concurrently with an operation is
// ncclCommAbort, which NCCL provides to cancel operations in flight.
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
            state: AtomicU8::new(COMM_LIVE),
        })
    }

    fn live(&self) -> Result<()> {
        if self.state.load(Ordering::SeqCst) == COMM_LIVE {
            Ok(())
        } else {
            Err(Error::Aborted)
        }
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
        self.live()?;
        let (ptr, count) = Self::buffer(t, wire, device)?;
        if count == 0 {
            return Ok(());
        }
        // SAFETY: `ptr` is the start of `count` contiguous elements of
        // `wire.dtype` on the communicator's device (checked by `buffer`),
        // kept alive by the caller until the stream has finished; in place is
        // allowed (sendbuff == recvbuff); stream null is the legacy default
        // stream.
        let code = unsafe {
            (self.lib.all_reduce)(
                ptr,
                ptr,
                count,
                wire.dtype,
                op,
                self.ptr,
                std::ptr::null_mut(),
            )
        };
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
        self.live()?;
        let (ptr, count) = Self::buffer(t, wire, device)?;
        if count == 0 {
            return Ok(());
        }
        let root = c_int::try_from(root)
            .map_err(|_| Error::Config(format!("root {root} is too large")))?;
        // SAFETY: as in `all_reduce`; in place (sendbuff == recvbuff) is
        // allowed for broadcast.
        let code = unsafe {
            (self.lib.broadcast)(
                ptr,
                ptr,
                count,
                wire.dtype,
                root,
                self.ptr,
                std::ptr::null_mut(),
            )
        };
        self.lib.check("ncclBroadcast", code)
    }

    /// `ncclCommGetAsyncError`: an error NCCL hit while running kernels
    /// (a peer died, a network failure).
    pub(crate) fn async_error(&self) -> Result<()> {
        self.live()?;
        let mut state: c_int = NCCL_SUCCESS;
        // SAFETY: the communicator is live; `state` is a valid out-pointer.
        let code = unsafe { (self.lib.comm_get_async_error)(self.ptr, &mut state) };
        self.lib.check("ncclCommGetAsyncError", code)?;
        if state == NCCL_IN_PROGRESS {
            return Ok(());
        }
        self.lib.check("ncclCommGetAsyncError", state)
    }

    fn release(&self, destroy: bool) -> bool {
        if self
            .state
            .compare_exchange(COMM_LIVE, COMM_RELEASED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        let f = if destroy {
            self.lib.comm_destroy
        } else {
            self.lib.comm_abort
        };
        // SAFETY: the state change above makes this the only release of a
        // communicator that ncclCommInitRank returned. ncclCommAbort may run
        // while another thread waits on an operation of this communicator:
        // that is what it exists for (it stops the kernels in flight).
        let code = unsafe { f(self.ptr) };
        if code != NCCL_SUCCESS {
            tracing::warn!(code, error = %self.lib.error_string(code), destroy, "releasing an nccl communicator failed");
        }
        true
    }

    /// `ncclCommAbort`, unless already released. Returns whether it ran.
    pub(crate) fn abort(&self) -> bool {
        self.release(false)
    }

    /// `ncclCommDestroy` (waits for pending work), unless already released.
    pub(crate) fn destroy(&self) -> bool {
        self.release(true)
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
