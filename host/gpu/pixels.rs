//! Pixels already in device memory ([`DevicePixels`], e.g. CuPy arrays): checked with the
//! driver, screened on the device by the same per-pixel rule as the host's upload (the
//! `screen_pixels` kernel, `desi_device::pixel`) into the frame's f64 image and weights, and
//! checked as the preproc reader checks a file, all without a copy of the image to the host.

use super::context::{DriverContext, GpuContext, GpuError};
use super::launch::Launch;
use crate::job::{DevicePixels, DevicePlane, FrameJob};
use crate::trace::Trace;
use cudarc::driver::{sys, CudaSlice, CudaStream};
use desi_device::kernels::ScreenPixelsArgs;
use std::sync::Arc;

/// Screens the job's device pixels into new f64 image and weight buffers on `stream` and
/// returns them once the kernel is done.
///
/// The producer's stream is synchronized first (`__cuda_array_interface__` v3), and each
/// plane's address is checked with the driver: device memory of this context's device, inside
/// one allocation that holds the whole plane.
///
/// # Errors
/// [`GpuError::Input`] for planes that are not such memory, or for pixels that the preproc
/// reader would refuse (IVAR not finite and >= 0, or a non-finite value where IVAR > 0; the
/// message names the first one); [`GpuError::Driver`] for a failed driver call.
pub(super) fn screen_device_pixels(
    gpu: &GpuContext,
    stream: &Arc<CudaStream>,
    pixels: &DevicePixels,
    job: &FrameJob,
    trace: &Trace,
) -> Result<(CudaSlice<f64>, CudaSlice<f64>), GpuError> {
    let start = trace.now();
    let _range = crate::trace::nvtx_range("screen device pixels");
    let (nrow, ncol) = (job.image.ny, job.image.nx);
    let name = job.image.path.display().to_string();
    gpu.ctx.bind_to_thread().stage("bind the context")?;
    for (label, plane) in [("image", pixels.image()), ("ivar", pixels.ivar())] {
        check_plane(gpu, plane, nrow, ncol)
            .map_err(|problem| GpuError::Input(format!("{name}: {label} {problem}")))?;
    }
    if let Some(handle) = pixels.stream() {
        // SAFETY: `handle` is the producer's stream (a live `CUstream`, or 1/2, the legacy and
        // per-thread default streams, which the driver accepts as handles), a plain call.
        unsafe { sys::cuStreamSynchronize(handle as usize as sys::CUstream) }
            .result()
            .stage("synchronize the arrays' stream")?;
    }
    let npix = nrow * ncol;
    let mut d_image = stream.alloc_zeros::<f64>(npix).stage("allocate image")?;
    let mut d_weight = stream.alloc_zeros::<f64>(npix).stage("allocate weights")?;
    let mut d_invalid = stream
        .clone_htod(&[0, u64::MAX])
        .stage("allocate the pixel check")?;
    let (image, ivar) = (pixels.image(), pixels.ivar());
    {
        let mut l = Launch::on(stream);
        let args = ScreenPixelsArgs {
            nrow,
            ncol,
            image: l.external(image.address),
            image_element: image.dtype.size(),
            image_row_stride: image.row_stride,
            ivar: l.external(ivar.address),
            ivar_element: ivar.dtype.size(),
            ivar_row_stride: ivar.row_stride,
            max_abs_value: job.pixel_limits.max_abs_value,
            max_ivar: job.pixel_limits.max_ivar,
            value: l.write(&mut d_image),
            weight: l.write(&mut d_weight),
            invalid: l.write(&mut d_invalid),
        };
        // SAFETY: the input planes were checked above to lie in device allocations of this
        // device holding (nrow, ncol) elements of their size at their row stride (aligned:
        // `FrameJob::with_device_pixels`), and `DevicePixels::new`'s contract keeps them valid
        // and unwritten for the job; the outputs are new allocations of npix f64 and 2 u64.
        unsafe { l.run(&gpu.kernels.screen_pixels, args.shape(), &args) }?;
    }
    let invalid = stream
        .clone_dtoh(&d_invalid)
        .stage("copy the pixel check to host")?;
    if let [count, first] = invalid[..] {
        if count == 0 {
            trace.record(
                "screen device pixels",
                "host",
                start,
                trace.now().saturating_sub(start),
            );
            return Ok((d_image, d_weight));
        }
        let index = usize::try_from(first).unwrap_or(usize::MAX);
        let (row, col) = (index / ncol.max(1), index % ncol.max(1));
        let value = read_element(image, row, col)?;
        let inverse_variance = read_element(ivar, row, col)?;
        let problem = if !(0.0..f32::INFINITY).contains(&inverse_variance) {
            format!("IVAR[{row}, {col}] = {inverse_variance} is not finite and >= 0")
        } else {
            format!("IMAGE[{row}, {col}] = {value} where IVAR = {inverse_variance} > 0")
        };
        return Err(GpuError::Input(format!(
            "{name}: {problem} ({count} such pixels in device memory)"
        )));
    }
    Err(GpuError::Internal(
        "the pixel check did not come back".into(),
    ))
}

/// Checks with the driver that `plane` is device memory of `gpu`'s device and that one
/// allocation holds its `(nrow, ncol)` elements; the problem otherwise.
fn check_plane(
    gpu: &GpuContext,
    plane: DevicePlane,
    nrow: usize,
    ncol: usize,
) -> Result<(), String> {
    let address = plane.address as sys::CUdeviceptr;
    let mut memory_type: u32 = 0;
    let mut ordinal: i32 = -1;
    // SAFETY: out-pointers to a u32 (`CUmemorytype`) and an i32 (an ordinal), as the two
    // attributes write; the driver checks `address` itself.
    let known = unsafe {
        sys::cuPointerGetAttribute(
            (&mut memory_type as *mut u32).cast(),
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            address,
        )
        .result()
        .and_then(|()| {
            sys::cuPointerGetAttribute(
                (&mut ordinal as *mut i32).cast(),
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                address,
            )
            .result()
        })
    };
    if known.is_err() || memory_type != sys::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32 {
        return Err(format!("at {:#x} is not CUDA device memory", plane.address));
    }
    if usize::try_from(ordinal).ok() != Some(gpu.ordinal) {
        return Err(format!(
            "is on CUDA device {ordinal}, but the extraction runs on device {}",
            gpu.ordinal
        ));
    }
    let (mut base, mut size): (sys::CUdeviceptr, usize) = (0, 0);
    // SAFETY: out-pointers to a `CUdeviceptr` and a `usize`; a plain query.
    unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, address) }
        .result()
        .map_err(|e| format!("at {:#x}: no allocation ({e})", plane.address))?;
    let needed = nrow
        .checked_sub(1)
        .and_then(|r| r.checked_mul(plane.row_stride))
        .and_then(|b| b.checked_add(ncol * plane.dtype.size()));
    let available = (base + size as u64).saturating_sub(plane.address);
    match needed {
        Some(needed) if needed as u64 <= available => Ok(()),
        _ => Err(format!(
            "at {:#x}: its allocation ends {available} bytes further, short of the {nrow}x{ncol} \
             plane at row stride {} bytes",
            plane.address, plane.row_stride
        )),
    }
}

/// Element `(row, col)` of `plane` (checked by [`check_plane`]) as the kernel read it (f64
/// rounded to f32), copied to the host (for an error message: one value, not the image).
fn read_element(plane: DevicePlane, row: usize, col: usize) -> Result<f32, GpuError> {
    let size = plane.dtype.size();
    let offset = (row * plane.row_stride + col * size) as u64;
    let mut bytes = [0u8; 8];
    // SAFETY: the element lies inside the plane, which `check_plane` found inside one device
    // allocation; `bytes` holds 8 >= `size` bytes.
    unsafe {
        sys::cuMemcpyDtoH_v2(
            bytes.as_mut_ptr().cast(),
            (plane.address + offset) as sys::CUdeviceptr,
            size,
        )
    }
    .result()
    .stage("copy a pixel to host")?;
    Ok(match plane.dtype {
        crate::job::PixelType::F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        crate::job::PixelType::F64 => f64::from_le_bytes(bytes) as f32,
    })
}
