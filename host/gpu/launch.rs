//! The one launch path of the GPU backend: a [`Kernel`] typed by its argument struct (defined
//! once in `desi_device::kernels`, for the host and the device), whose launches push that struct
//! by value as the kernel's single parameter ([`Launch::run`]).
//!
//! A launch collects the device addresses of its buffers with [`Launch::read`] and
//! [`Launch::write`] (which keep cudarc's stream ordering of the buffers, as `.arg(&slice)`
//! did), fills the argument struct with them, and runs the kernel with the struct's
//! [`LaunchShape`].

use super::context::{DriverContext, GpuError};
use cudarc::driver::{
    CudaFunction, CudaModule, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg, SyncOnDrop,
};
use desi_device::kernels::{Entry, KernelArgs, LaunchShape};
use std::marker::PhantomData;
use std::sync::Arc;

/// Dynamic shared memory a block may use without raising the kernel's limit (48 KiB).
const DEFAULT_SHARED_BYTES: usize = 48 * 1024;

/// A loaded kernel whose single parameter is the argument struct `A`.
#[derive(Debug)]
pub struct Kernel<A> {
    func: CudaFunction,
    name: &'static str,
    args: PhantomData<fn(A)>,
}

impl<A: KernelArgs> Kernel<A> {
    /// Finds `entry` in `module`.
    pub fn load(module: &Arc<CudaModule>, entry: Entry<A>) -> Result<Self, GpuError> {
        let name = entry.name();
        let func = module
            .load_function(name)
            .stage(&format!("find kernel {name}"))?;
        Ok(Self {
            func,
            name,
            args: PhantomData,
        })
    }

    /// The kernel's `.entry` name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// An argument struct as the bytes of a kernel parameter.
#[repr(transparent)]
struct Param<A>(A);

// SAFETY: `A: KernelArgs` is `#[repr(C)]`, `Copy` and made of 8-byte integers, floats and raw
// pointers only (the trait's contract), so its bytes are exactly the kernel's
// `.param .align 8 .b8 name[size_of::<A>()]` (checked against the PTX by tests/ptx.rs);
// `Param` is `repr(transparent)`.
unsafe impl<A: KernelArgs> DeviceRepr for Param<A> {}

/// One launch being prepared on a stream: the device addresses of its buffers, with the
/// stream-ordering records of cudarc (`SyncOnDrop`) held until the kernel is enqueued.
pub struct Launch<'a> {
    stream: &'a CudaStream,
    guards: Vec<SyncOnDrop<'a>>,
    /// Whether an empty buffer was passed: the kernels assume every address is a device
    /// allocation, never null (see `desi_device::kernels`), so such a launch is refused.
    empty_buffer: bool,
}

impl<'a> Launch<'a> {
    /// A launch on `stream`.
    pub fn on(stream: &'a CudaStream) -> Self {
        Self {
            stream,
            guards: Vec::new(),
            empty_buffer: false,
        }
    }

    /// The device address of a buffer the kernel reads.
    pub fn read<T, B: DevicePtr<T>>(&mut self, buf: &'a B) -> *const T {
        self.empty_buffer |= buf.len() == 0;
        let (ptr, guard) = buf.device_ptr(self.stream);
        self.guards.push(guard);
        ptr as usize as *const T
    }

    /// The device address of a buffer the kernel writes (and may read).
    pub fn write<T, B: DevicePtrMut<T>>(&mut self, buf: &'a mut B) -> *mut T {
        self.empty_buffer |= buf.len() == 0;
        let (ptr, guard) = buf.device_ptr_mut(self.stream);
        self.guards.push(guard);
        ptr as usize as *mut T
    }

    /// The device address `address` of memory this crate did not allocate (another library's
    /// array, e.g. CuPy's: [`crate::job::DevicePixels`]), which the kernel only reads. No
    /// stream ordering is recorded for it: the caller synchronized its producer first.
    pub fn external<T>(&mut self, address: u64) -> *const T {
        self.empty_buffer |= address == 0;
        address as usize as *const T
    }

    /// Enqueues `kernel` with `args` as its parameter and the grid, block and dynamic shared
    /// memory of `shape` (raising the kernel's shared-memory limit when `shape` asks for more
    /// than 48 KiB), then records the buffers' use on the stream. Refuses a launch with an
    /// empty buffer (whose address may be null).
    ///
    /// # Safety
    /// `args` satisfies the kernel's contract (`desi_device::kernels`): every pointer is an
    /// address from [`Launch::read`] (buffers the kernel only reads), [`Launch::external`]
    /// (memory of another library that is valid, on this device and not written meanwhile) or
    /// [`Launch::write`] of this launch, of a buffer at least as long as the kernel's documented size for the
    /// struct's sizes, and `shape` is the kernel's launch shape for `args`.
    pub unsafe fn run<A: KernelArgs>(
        self,
        kernel: &Kernel<A>,
        shape: LaunchShape,
        args: &A,
    ) -> Result<(), GpuError> {
        if self.empty_buffer {
            return Err(GpuError::Launch(format!(
                "{}: an empty device buffer (the kernels need allocations)",
                kernel.name
            )));
        }
        let cfg = launch_config(kernel.name, shape)?;
        if shape.shared_bytes > DEFAULT_SHARED_BYTES {
            kernel
                .func
                .set_attribute(
                    cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    cfg.shared_mem_bytes as i32,
                )
                .stage("set the dynamic shared memory size")?;
        }
        let param = Param(*args);
        let mut builder = self.stream.launch_builder(&kernel.func);
        builder.arg(&param);
        // SAFETY: the kernel's only parameter is `A` by value (`Kernel<A>` was loaded from the
        // `Entry<A>` of its definition); the caller guarantees the contract of `args` and
        // `shape`.
        unsafe { builder.launch(cfg) }.stage(&format!("launch {}", kernel.name))?;
        // The guards record the buffers' use after the launch.
        drop(self.guards);
        Ok(())
    }
}

/// `shape` as cudarc's launch configuration (fails for a shape beyond 32-bit launch
/// dimensions).
fn launch_config(name: &str, shape: LaunchShape) -> Result<LaunchConfig, GpuError> {
    let too_large = |what: &str| {
        GpuError::Launch(format!(
            "{name}: {what} of {shape:?} exceeds the 32-bit launch limits"
        ))
    };
    Ok(LaunchConfig {
        grid_dim: (
            u32::try_from(shape.blocks).map_err(|_| too_large("blocks"))?,
            1,
            1,
        ),
        block_dim: (
            u32::try_from(shape.threads).map_err(|_| too_large("threads"))?,
            1,
            1,
        ),
        shared_mem_bytes: u32::try_from(shape.shared_bytes)
            .ok()
            .filter(|&bytes| i32::try_from(bytes).is_ok())
            .ok_or_else(|| too_large("shared memory"))?,
    })
}

/// Thread-block size of a team kernel: `default`, or the tuning override in the environment
/// variable `name` (e.g. `DESI_RESOLUTION_LANES=128`), clamped to 32..=1024.
pub(super) fn lanes(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(default, |v| v.clamp(32, 1024))
}
