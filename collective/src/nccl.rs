//! NCCL for ranks on GPUs, from the `libnccl.so.2` that PyTorch's CUDA
//! wheel installs (and `libtorch_cuda.so` already loads), opened at run
//! time: the build needs neither CUDA nor NCCL.
//!
//! The engine is MPI's ([`MpiEngine`]) plus an NCCL communicator: rank 0
//! makes NCCL's unique id, MPI broadcasts it, every rank joins on the GPU
//! of its local rank. CUDA tensors are all-reduced and broadcast by NCCL in
//! place, one group of calls per list, on the default stream (the one tch
//! runs on), then the host waits for the stream under the watchdog, so a
//! lost peer stops this rank in bounded time instead of a kernel spinning
//! for ever. CPU tensors, gathers and barriers go through MPI.

use std::cell::{Cell, OnceCell};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};

use libloading::Library;
use tch::{Device, Kind, Tensor};

use crate::mpi_engine::MpiEngine;
use crate::{Collective, CollectiveError};

/// NCCL's unique id (`ncclUniqueId`: 128 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    /// The bytes.
    pub internal: [c_char; 128],
}

type Comm = *mut c_void;
type Stream = *mut c_void;

const SUM: c_int = 0; // ncclSum

/// NCCL's data type of a tensor kind (nccl.h's `ncclDataType_t`).
fn data_type(kind: Kind) -> Option<c_int> {
    Some(match kind {
        Kind::Int8 => 0,
        Kind::Uint8 | Kind::Bool => 1,
        Kind::Int => 2,
        Kind::Int64 => 4,
        Kind::Half => 6,
        Kind::Float => 7,
        Kind::Double => 8,
        Kind::BFloat16 => 9,
        _ => return None,
    })
}

fn error(operation: &'static str, message: impl Into<String>) -> CollectiveError {
    CollectiveError::Nccl {
        operation,
        message: message.into(),
    }
}

/// The NCCL functions the engine calls.
pub struct NcclLibrary {
    path: PathBuf,
    get_version: unsafe extern "C" fn(*mut c_int) -> c_int,
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> c_int,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> c_int,
    group_start: unsafe extern "C" fn() -> c_int,
    group_end: unsafe extern "C" fn() -> c_int,
    comm_abort: unsafe extern "C" fn(Comm) -> c_int,
    comm_destroy: unsafe extern "C" fn(Comm) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    // Kept loaded while the function pointers above are in use.
    _library: Library,
}

/// Where libnccl.so.2 may be: already loaded or on the search path by its
/// soname, else beside the PyTorch wheel's libtorch
/// (`site-packages/nvidia/nccl/lib`).
fn nccl_candidates() -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from("libnccl.so.2")];
    if let Some(torch_lib) = option_env!("SHORTCUT_LIBTORCH_LIB") {
        candidates.push(Path::new(torch_lib).join("../../nvidia/nccl/lib/libnccl.so.2"));
    }
    candidates
}

impl NcclLibrary {
    /// Opens libnccl.so.2 (see [`nccl_candidates`]).
    pub fn open() -> Result<NcclLibrary, CollectiveError> {
        let mut tried = Vec::new();
        for path in nccl_candidates() {
            // SAFETY: loading NCCL runs no initialiser with preconditions.
            match unsafe { Library::new(&path) } {
                Ok(library) => return Self::bind(library, path),
                Err(e) => tried.push(format!("{}: {e}", path.display())),
            }
        }
        Err(CollectiveError::Library {
            name: "libnccl.so.2",
            message: format!(
                "not found ({}); PyTorch's CUDA wheel installs it (nvidia-nccl)",
                tried.join("; ")
            ),
        })
    }

    fn bind(library: Library, path: PathBuf) -> Result<NcclLibrary, CollectiveError> {
        macro_rules! symbol {
            ($name:literal) => {
                // SAFETY: the types are nccl.h's signatures of these symbols.
                *unsafe { library.get(concat!($name, "\0").as_bytes()) }.map_err(|e| {
                    CollectiveError::Library {
                        name: "libnccl.so.2",
                        message: format!("{}: no {}: {e}", path.display(), $name),
                    }
                })?
            };
        }
        Ok(NcclLibrary {
            get_version: symbol!("ncclGetVersion"),
            get_unique_id: symbol!("ncclGetUniqueId"),
            comm_init_rank: symbol!("ncclCommInitRank"),
            all_reduce: symbol!("ncclAllReduce"),
            broadcast: symbol!("ncclBroadcast"),
            group_start: symbol!("ncclGroupStart"),
            group_end: symbol!("ncclGroupEnd"),
            comm_abort: symbol!("ncclCommAbort"),
            comm_destroy: symbol!("ncclCommDestroy"),
            error_string: symbol!("ncclGetErrorString"),
            path,
            _library: library,
        })
    }

    /// The file it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, operation: &'static str, code: c_int) -> Result<(), CollectiveError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static C string for any code.
        let text = unsafe { CStr::from_ptr((self.error_string)(code)) };
        Err(error(
            operation,
            format!("NCCL error {code}: {}", text.to_string_lossy()),
        ))
    }

    /// NCCL's version code (major * 10000 + minor * 100 + patch).
    pub fn version(&self) -> Result<i32, CollectiveError> {
        let mut version = 0;
        // SAFETY: writes one int.
        self.check("ncclGetVersion", unsafe {
            (self.get_version)(&mut version)
        })?;
        Ok(version)
    }

    /// A fresh unique id (rank 0 makes it; no GPU needed).
    pub fn unique_id(&self) -> Result<UniqueId, CollectiveError> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: writes the 128-byte id.
        self.check("ncclGetUniqueId", unsafe { (self.get_unique_id)(&mut id) })?;
        Ok(id)
    }
}

/// The CUDA runtime calls the engine needs (libcudart, loaded by libtorch).
struct CudaRuntime {
    set_device: unsafe extern "C" fn(c_int) -> c_int,
    device_count: unsafe extern "C" fn(*mut c_int) -> c_int,
    stream_synchronize: unsafe extern "C" fn(Stream) -> c_int,
    _library: Library,
}

impl CudaRuntime {
    fn open() -> Result<CudaRuntime, CollectiveError> {
        let mut last = String::new();
        for name in ["libcudart.so.13", "libcudart.so.12", "libcudart.so"] {
            // SAFETY: as for NCCL.
            let library = match unsafe { Library::new(name) } {
                Ok(library) => library,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let bind = |symbol: &[u8]| CollectiveError::Library {
                name: "libcudart",
                message: format!("{name}: no {}", String::from_utf8_lossy(symbol)),
            };
            // SAFETY: cuda_runtime_api.h's signatures.
            let set_device =
                *unsafe { library.get(b"cudaSetDevice\0") }.map_err(|_| bind(b"cudaSetDevice"))?;
            let stream_synchronize = *unsafe { library.get(b"cudaStreamSynchronize\0") }
                .map_err(|_| bind(b"cudaStreamSynchronize"))?;
            let device_count = *unsafe { library.get(b"cudaGetDeviceCount\0") }
                .map_err(|_| bind(b"cudaGetDeviceCount"))?;
            return Ok(CudaRuntime {
                set_device,
                device_count,
                stream_synchronize,
                _library: library,
            });
        }
        Err(CollectiveError::Library {
            name: "libcudart",
            message: format!("not found ({last}); GPU ranks need PyTorch with CUDA"),
        })
    }
}

/// MPI ranks whose CUDA tensors go through NCCL.
pub struct NcclEngine {
    mpi: MpiEngine,
    // Opened at the first collective on CUDA tensors: runs on CPUs need no NCCL.
    nccl: OnceCell<NcclLibrary>,
    cuda: OnceCell<CudaRuntime>,
    // Made at the first collective on CUDA tensors (every rank gets there together).
    comm: Cell<Comm>,
}

impl NcclEngine {
    /// NCCL over `mpi`'s ranks (the library and the communicator are
    /// opened when CUDA tensors first need them).
    pub fn new(mpi: MpiEngine) -> NcclEngine {
        NcclEngine {
            mpi,
            nccl: OnceCell::new(),
            cuda: OnceCell::new(),
            comm: Cell::new(std::ptr::null_mut()),
        }
    }

    fn nccl(&self) -> &NcclLibrary {
        self.nccl.get().expect("split opened NCCL")
    }

    fn comm(&self) -> Result<(Comm, &CudaRuntime), CollectiveError> {
        let cuda = self.cuda.get().expect("split opened the CUDA runtime");
        if !self.comm.get().is_null() {
            return Ok((self.comm.get(), cuda));
        }
        let mut id = if self.mpi.rank() == 0 {
            self.nccl().unique_id()?
        } else {
            UniqueId { internal: [0; 128] }
        };
        let mut bytes = Tensor::from_slice(&id.internal.map(|c| c as u8));
        self.mpi.broadcast(std::slice::from_mut(&mut bytes), 0)?;
        let received = Vec::<u8>::try_from(&bytes).map_err(|source| CollectiveError::Torch {
            operation: "ncclCommInitRank",
            source,
        })?;
        for (slot, byte) in id.internal.iter_mut().zip(received) {
            *slot = byte as c_char;
        }
        // The GPU of this rank's local rank among those it sees (as
        // DeviceChoice::resolve picks it for the tensors).
        let mut visible: c_int = 0;
        // SAFETY: writes one int.
        let code = unsafe { (cuda.device_count)(&mut visible) };
        if code != 0 || visible < 1 {
            return Err(error(
                "cudaGetDeviceCount",
                format!("CUDA error {code}: {visible} GPUs visible to this rank"),
            ));
        }
        let device = self.mpi.local_rank() as c_int % visible;
        // SAFETY: selects this rank's GPU for the communicator.
        let code = unsafe { (cuda.set_device)(device) };
        if code != 0 {
            return Err(error(
                "cudaSetDevice",
                format!("CUDA error {code} selecting GPU {device}"),
            ));
        }
        let mut comm: Comm = std::ptr::null_mut();
        {
            let _armed = self.mpi.watchdog().arm("ncclCommInitRank");
            // SAFETY: every rank joins with the same id and its own rank.
            self.nccl().check("ncclCommInitRank", unsafe {
                (self.nccl().comm_init_rank)(
                    &mut comm,
                    self.mpi.world_size() as c_int,
                    id,
                    self.mpi.rank() as c_int,
                )
            })?;
        }
        self.comm.set(comm);
        Ok((comm, cuda))
    }

    /// Runs `call` on each CUDA tensor (contiguous, its kind's NCCL type)
    /// in one group, then waits for the stream under the watchdog.
    fn on_gpu(
        &self,
        operation: &'static str,
        floats_only: bool,
        tensors: &mut [Tensor],
        call: impl Fn(&NcclLibrary, *mut c_void, usize, c_int, Comm) -> c_int,
    ) -> Result<(), CollectiveError> {
        if tensors.is_empty() {
            return Ok(());
        }
        let (comm, cuda) = self.comm()?;
        let nccl = self.nccl();
        let mut staged = Vec::with_capacity(tensors.len());
        for (index, tensor) in tensors.iter().enumerate() {
            let kind = tensor.kind();
            let float = matches!(
                kind,
                Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
            );
            let dtype =
                data_type(kind)
                    .filter(|_| float || !floats_only)
                    .ok_or(CollectiveError::Kind {
                        operation,
                        index,
                        kind,
                    })?;
            let work = if tensor.is_contiguous() {
                tensor.shallow_clone()
            } else {
                tensor.contiguous()
            };
            staged.push((work, dtype));
        }
        // The group (whose end may wait on the peers' connections) and the
        // wait for its kernels run under the watchdog.
        let code = self.mpi.timed(operation, || {
            // SAFETY: group calls bracket the per-tensor calls, which read
            // and write contiguous tensors of `numel` elements on this GPU;
            // the stream wait is on the default stream they were queued on.
            unsafe {
                let code = (nccl.group_start)();
                if code != 0 {
                    return Err(code);
                }
                for (work, dtype) in &staged {
                    let code = call(nccl, work.data_ptr(), work.numel(), *dtype, comm);
                    if code != 0 {
                        (nccl.group_end)();
                        return Err(code);
                    }
                }
                let code = (nccl.group_end)();
                if code != 0 {
                    return Err(code);
                }
                Ok((cuda.stream_synchronize)(std::ptr::null_mut()))
            }
        });
        match code {
            Err(code) => nccl.check(operation, code)?,
            Ok(0) => {}
            Ok(code) => {
                return Err(error(
                    operation,
                    format!("CUDA error {code} waiting for the stream"),
                ))
            }
        }
        let _guard = tch::no_grad_guard();
        for (tensor, (work, _)) in tensors.iter_mut().zip(&staged) {
            if !tensor.is_contiguous() {
                tensor
                    .f_copy_(work)
                    .map_err(|source| CollectiveError::Torch { operation, source })?;
            }
        }
        Ok(())
    }

    /// Splits `tensors` into CUDA ones and the rest (shallow handles: the
    /// same storage, so in-place results land in the caller's tensors).
    fn split(&self, tensors: &[Tensor]) -> Result<(Vec<Tensor>, Vec<Tensor>), CollectiveError> {
        let (gpu, cpu): (Vec<Tensor>, Vec<Tensor>) = tensors
            .iter()
            .map(Tensor::shallow_clone)
            .partition(|t| matches!(t.device(), Device::Cuda(_)));
        if !gpu.is_empty() && self.cuda.get().is_none() {
            let _ = self.nccl.set(NcclLibrary::open()?);
            let _ = self.cuda.set(CudaRuntime::open()?);
        }
        Ok((gpu, cpu))
    }
}

impl Drop for NcclEngine {
    fn drop(&mut self) {
        let comm = self.comm.get();
        if !comm.is_null() {
            // SAFETY: a finished run's communicator; no collective is queued
            // on it after the last stream wait.
            unsafe { (self.nccl().comm_destroy)(comm) };
        }
    }
}

impl Collective for NcclEngine {
    fn engine(&self) -> &'static str {
        "MPI, with NCCL for GPU tensors"
    }
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }
    fn local_rank(&self) -> usize {
        self.mpi.local_rank()
    }

    fn all_reduce_sum(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        let (mut gpu, mut cpu) = self.split(tensors)?;
        self.mpi.all_reduce_sum(&mut cpu)?;
        self.on_gpu(
            "ncclAllReduce",
            true,
            &mut gpu,
            |nccl, ptr, count, dtype, comm| {
                // SAFETY: in place on a contiguous CUDA tensor of `count` elements.
                unsafe {
                    (nccl.all_reduce)(ptr, ptr, count, dtype, SUM, comm, std::ptr::null_mut())
                }
            },
        )
    }

    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError> {
        crate::check_root("broadcast", root, self.world_size())?;
        let (mut gpu, mut cpu) = self.split(tensors)?;
        self.mpi.broadcast(&mut cpu, root)?;
        self.on_gpu(
            "ncclBroadcast",
            false,
            &mut gpu,
            |nccl, ptr, count, dtype, comm| {
                // SAFETY: in place: root's buffer is sent, the others' received.
                unsafe {
                    (nccl.broadcast)(
                        ptr,
                        ptr,
                        count,
                        dtype,
                        root as c_int,
                        comm,
                        std::ptr::null_mut(),
                    )
                }
            },
        )
    }

    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
        self.mpi.all_gather_u64(value)
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.mpi.barrier()
    }

    fn evaluation_barrier(&self) -> Result<(), CollectiveError> {
        self.mpi.evaluation_barrier()
    }

    /// MPI's time and the waits for NCCL's kernels (their queueing is not counted).
    fn seconds_communicating(&self) -> f64 {
        self.mpi.seconds_communicating()
    }

    fn abort(&self, code: i32) -> ! {
        let comm = self.comm.get();
        if !comm.is_null() {
            // SAFETY: abandons the communicator without waiting on peers.
            unsafe { (self.nccl().comm_abort)(comm) };
        }
        self.mpi.abort(code)
    }
}
