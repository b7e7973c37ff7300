//! `desi_extract._native`: the compiled part of the Python package `desi_extract`.
//!
//! It exposes the library's one frame pipeline to Python and nothing else: a [`Psf`] (read by
//! the library's PSF reader), and a [`Job`] (a validated [`FrameJob`]: image, PSF, grid and
//! parameters) that runs [`extract_frame`] on one process, or [`extract_bundles`] on a share of
//! the bundles and [`assemble_frame`] on rank 0 when the Python layer spreads a frame over
//! mpi4py ranks. Between ranks the blocks travel as bytes in the library's wire format
//! ([`desi_extract::parallel::wire`]: floats as their exact bits), so the extension needs no
//! MPI library of its own and a frame over N ranks is bitwise that of one.
//!
//! gpu_specter's conventions (the image dict, the wavelength argument, the result dict) live
//! in the pure-Python modules (`python/desi_extract/`); the GIL is released while a frame is
//! extracted.

use std::path::PathBuf;
use std::sync::Arc;

use desi_extract::extract::{
    assemble_frame, extract_bundles, extract_frame, BundleBlock, ExtractError, Extraction,
};
use desi_extract::gpu::GpuContext;
use desi_extract::io::{self, PreprocImage};
use desi_extract::job::{DevicePixels, DevicePlane, FrameJob, PixelType};
use desi_extract::parallel::wire::{self, Incoming, Plane, PlaneRef, PlaneSpec, WireError};
use desi_extract::patch::{ExtractionParams, MaskRule, WavelengthGrid};
use desi_extract::psf::GaussHermitePsf;
use desi_extract::solve::{Backend, CpuBackend};
use desi_extract::trace::Trace;
use numpy::ndarray::Array;
use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// A bad request (the caller's input): `ValueError`.
fn value_error(message: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(message.to_string())
}

/// An extraction error: `ValueError` for bad input (the image, PSF or parameters), else
/// `RuntimeError`.
fn extract_error(err: ExtractError) -> PyErr {
    if err.is_input_error() {
        value_error(err)
    } else {
        PyRuntimeError::new_err(err.to_string())
    }
}

/// A GaussHermite PSF read by the library's reader (`desi_extract.io.read_psf` wraps it in
/// gpu_specter's dict interface). Pickles as its serialized tables, so that mpi4py can
/// broadcast it.
#[pyclass(module = "desi_extract._native", frozen)]
struct Psf {
    inner: Arc<GaussHermitePsf>,
}

#[pymethods]
impl Psf {
    /// Reads a specex GaussHermite PSF file (`ValueError` naming the file and the problem).
    #[staticmethod]
    fn read(path: PathBuf) -> PyResult<Self> {
        let psf = io::read_psf(&path).map_err(value_error)?;
        Ok(Self {
            inner: Arc::new(psf),
        })
    }

    /// The PSF from the bytes of [`Psf::to_bytes`].
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        let psf: GaussHermitePsf = wire::from_bytes(data, "PSF").map_err(value_error)?;
        Ok(Self {
            inner: Arc::new(psf),
        })
    }

    /// The PSF serialized (every table and keyword, exact bits).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = wire::to_bytes(&*self.inner).map_err(value_error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Pickle support: `Psf.from_bytes(self.to_bytes())`.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(PyObject, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        let from_bytes = slf.get_type().getattr("from_bytes")?.unbind();
        Ok((from_bytes, (slf.get().to_bytes(py)?,)))
    }

    /// File the PSF was read from.
    #[getter]
    fn path(&self) -> String {
        self.inner.path.display().to_string()
    }

    /// Number of fibers.
    #[getter]
    fn nspec(&self) -> usize {
        self.inner.nspec
    }

    /// FIBERMIN.
    #[getter]
    fn fibermin(&self) -> usize {
        self.inner.fibermin
    }

    /// WAVEMIN of the PSF HDU.
    #[getter]
    fn wavemin(&self) -> f64 {
        self.inner.sigma_x.wavemin
    }

    /// WAVEMAX of the PSF HDU.
    #[getter]
    fn wavemax(&self) -> f64 {
        self.inner.sigma_x.wavemax
    }

    /// PSFERR (0.01 when the file has none).
    #[getter]
    fn psferr(&self) -> f64 {
        self.inner.psferr
    }

    /// HSIZEX.
    #[getter]
    fn hsizex(&self) -> usize {
        self.inner.hsizex
    }

    /// HSIZEY (the resolution half-width).
    #[getter]
    fn hsizey(&self) -> usize {
        self.inner.hsizey
    }

    /// NPIX_X (CCD columns).
    #[getter]
    fn npix_x(&self) -> usize {
        self.inner.npix_x
    }

    /// NPIX_Y (CCD rows).
    #[getter]
    fn npix_y(&self) -> usize {
        self.inner.npix_y
    }

    /// IN_PSF of the file, if any.
    #[getter]
    fn in_psf(&self) -> Option<String> {
        self.inner.in_psf.clone()
    }
}

/// Checks what the preproc reader checks of a file: IVAR finite and >= 0, IMAGE finite where
/// IVAR > 0 (the message names the first bad pixel).
fn check_pixels(image: &[f32], ivar: &[f32], nx: usize) -> PyResult<()> {
    if let Some(i) = ivar
        .iter()
        .position(|&v| !(0.0..f32::INFINITY).contains(&v))
    {
        return Err(value_error(format!(
            "image['ivar'][{}, {}] = {} is not finite and >= 0",
            i / nx,
            i % nx,
            ivar[i]
        )));
    }
    if let Some(i) = (0..image.len()).find(|&i| ivar[i] > 0.0 && !image[i].is_finite()) {
        return Err(value_error(format!(
            "image['image'][{}, {}] = {} where ivar = {} > 0",
            i / nx,
            i % nx,
            image[i],
            ivar[i]
        )));
    }
    Ok(())
}

/// A 2-D array in CUDA device memory, as its `__cuda_array_interface__` describes it (the
/// Python layer reads the interface; `desi_extract.core._device_array`): the device address of
/// element `(0, 0)`, `typestr` (`'<f4'` or `'<f8'`), `shape` `(rows, columns)`, the bytes from
/// one row to the next, the producer's stream (None: nothing to wait for), and `owner`, the
/// array object itself, which a [`Job`] keeps alive while it may read the memory.
#[pyclass(module = "desi_extract._native", frozen)]
struct DeviceArray {
    plane: DevicePlane,
    shape: (usize, usize),
    stream: Option<u64>,
    owner: PyObject,
}

#[pymethods]
impl DeviceArray {
    /// Checks the description (`ValueError` for an unsupported type or a stream of 0, which
    /// the interface forbids).
    #[new]
    #[pyo3(signature = (address, typestr, shape, row_stride, stream, owner))]
    fn new(
        address: u64,
        typestr: &str,
        shape: (usize, usize),
        row_stride: usize,
        stream: Option<u64>,
        owner: PyObject,
    ) -> PyResult<Self> {
        let dtype = match typestr {
            "<f4" => PixelType::F32,
            "<f8" => PixelType::F64,
            other => {
                return Err(value_error(format!(
                    "device array of type {other:?}: expected '<f4' or '<f8'"
                )))
            }
        };
        if stream == Some(0) {
            return Err(value_error(
                "__cuda_array_interface__ stream 0 is not allowed (use 1 or 2 for a default stream)",
            ));
        }
        Ok(Self {
            plane: DevicePlane {
                address,
                dtype,
                row_stride,
            },
            shape,
            stream,
            owner,
        })
    }

    /// `(rows, columns)`.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        self.shape
    }
}

/// An image plane given to [`Job::new`]: a numpy float32 array, or a [`DeviceArray`].
#[derive(FromPyObject)]
enum PlaneArg<'py> {
    /// On the host.
    Host(PyReadonlyArray2<'py, f32>),
    /// In device memory.
    Device(Bound<'py, DeviceArray>),
}

impl PlaneArg<'_> {
    /// `(rows, columns)`.
    fn shape(&self) -> (usize, usize) {
        match self {
            PlaneArg::Host(a) => (a.shape()[0], a.shape()[1]),
            PlaneArg::Device(d) => d.get().shape,
        }
    }
}

/// One validated frame extraction request ([`FrameJob`]), built once per frame and process.
#[pyclass(module = "desi_extract._native", frozen)]
struct Job {
    psf: Arc<GaussHermitePsf>,
    image: PreprocImage,
    /// The pixels when they are in device memory (`image` then holds no pixels).
    device: Option<DevicePixels>,
    /// The device arrays behind `device`, kept alive as long as the job.
    _owners: Vec<PyObject>,
    grid: WavelengthGrid,
    params: ExtractionParams,
    want_model: bool,
}

impl Job {
    /// The library's request for this job.
    fn frame_job(&self) -> Result<FrameJob<'_>, ExtractError> {
        let job = FrameJob::new(&self.psf, &self.image, &self.grid, &self.params)?
            .with_model(self.want_model);
        match self.device {
            Some(pixels) => job.with_device_pixels(pixels),
            None => Ok(job),
        }
    }

    /// Runs `work` on the CPU backend, or on GPU `gpu_device` (opened for this call and closed
    /// when it returns, its memory pool trimmed first: desispec's next steps need the memory),
    /// with the GIL released.
    fn with_backend<T: Send>(
        &self,
        py: Python<'_>,
        gpu_device: Option<usize>,
        work: impl FnOnce(&FrameJob, &dyn Backend) -> Result<T, ExtractError> + Send,
    ) -> PyResult<T> {
        py.allow_threads(|| {
            let job = self.frame_job().map_err(extract_error)?;
            match gpu_device {
                None => work(&job, &CpuBackend).map_err(extract_error),
                Some(ordinal) => {
                    let gpu = GpuContext::new(ordinal)
                        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
                    let result = work(&job, &gpu).map_err(extract_error);
                    let released = gpu.release_memory();
                    drop(gpu);
                    let value = result?;
                    released.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
                    Ok(value)
                }
            }
        })
    }
}

#[pymethods]
impl Job {
    /// A request: `image`/`ivar` `(ny, nx)` float32 numpy arrays (mask already applied to
    /// `ivar`), or both [`DeviceArray`]s (the GPU then reads them where they are: such a job
    /// runs only with a `gpu_device`), the output grid `wave` with the `wmin, wmax, dw` it was
    /// made from, and gpu_specter's extraction parameters (`psferr` None: the PSF's).
    #[new]
    #[pyo3(signature = (image, ivar, psf, wave, wmin, wmax, dw, specmin, nspec, bundlesize,
        nsubbundles, nwavestep, wavepad, wavepad_frac, pixpad_frac, regularize, psferr, model,
        name = "<image dict>", camera = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        image: PlaneArg<'_>,
        ivar: PlaneArg<'_>,
        psf: &Psf,
        wave: PyReadonlyArray1<'_, f64>,
        wmin: f64,
        wmax: f64,
        dw: f64,
        specmin: usize,
        nspec: usize,
        bundlesize: usize,
        nsubbundles: usize,
        nwavestep: usize,
        wavepad: usize,
        wavepad_frac: f64,
        pixpad_frac: f64,
        regularize: f64,
        psferr: Option<f64>,
        model: bool,
        name: &str,
        camera: Option<&str>,
    ) -> PyResult<Self> {
        let (ny, nx) = image.shape();
        if ivar.shape() != image.shape() {
            return Err(value_error(format!(
                "image['ivar'] has shape {:?} but image['image'] {:?}",
                ivar.shape(),
                image.shape()
            )));
        }
        let (image_values, ivar_values, device, owners) = match (image, ivar) {
            (PlaneArg::Host(image), PlaneArg::Host(ivar)) => {
                let image_values = image.as_array().iter().copied().collect::<Vec<f32>>();
                let ivar_values = ivar.as_array().iter().copied().collect::<Vec<f32>>();
                check_pixels(&image_values, &ivar_values, nx)?;
                (image_values, ivar_values, None, Vec::new())
            }
            (PlaneArg::Device(image), PlaneArg::Device(ivar)) => {
                let py = image.py();
                let (image, ivar) = (image.get(), ivar.get());
                if image.stream != ivar.stream {
                    return Err(value_error(
                        "image['image'] and image['ivar'] come from different CUDA streams",
                    ));
                }
                // SAFETY: the job keeps both arrays alive (`owners`) for as long as it exists;
                // the GPU backend checks with the driver that each address is device memory of
                // its device holding the whole plane; the caller (desi_extract.core, which
                // documents it) does not write the arrays while the job runs.
                let pixels = unsafe { DevicePixels::new(image.plane, ivar.plane, image.stream) };
                let owners = vec![image.owner.clone_ref(py), ivar.owner.clone_ref(py)];
                (Vec::new(), Vec::new(), Some(pixels), owners)
            }
            _ => {
                return Err(value_error(
                    "image['image'] and image['ivar'] must both be on the host or both on the GPU",
                ))
            }
        };
        let wave = wave.as_array().to_vec();
        if wave.is_empty() || wave.iter().any(|w| !w.is_finite()) {
            return Err(value_error(
                "the wavelength grid must be finite and not empty",
            ));
        }
        let psf = Arc::clone(&psf.inner);
        let params = ExtractionParams {
            specmin,
            nspec,
            bundlesize,
            nsubbundles,
            nwavestep,
            wavepad,
            wavepad_frac,
            pixpad_frac,
            regularize,
            psferr: psferr.unwrap_or(psf.psferr),
            // Unused by gpu_specter's interface (its `specmask` is `specivar == 0` and desispec
            // computes MASK itself); desispec main's rule as the CLI's default.
            mask_rule: MaskRule::default(),
        };
        let job = Self {
            image: PreprocImage {
                path: PathBuf::from(name),
                nx,
                ny,
                image: image_values,
                ivar: ivar_values,
                // The caller's ivar already carries the mask (gpu_specter's convention); none
                // for device pixels, whose job reads no host pixels.
                mask: if device.is_some() {
                    Vec::new()
                } else {
                    vec![0; nx * ny]
                },
                // The image's CAMERA (from its `meta` header) is checked against the PSF's;
                // without one there is nothing to check.
                camera: camera.map(|c| c.trim().to_lowercase()).unwrap_or_default(),
                header: Vec::new(),
                readnoise: None,
                fibermap: None,
            },
            psf,
            device,
            _owners: owners,
            grid: WavelengthGrid {
                wmin,
                wmax,
                dw,
                wave,
            },
            params,
            want_model: model,
        };
        job.frame_job().map_err(extract_error)?;
        Ok(job)
    }

    /// Number of bundles of the frame.
    #[getter]
    fn nbundle(&self) -> usize {
        self.params.bundle_starts().len()
    }

    /// Extracts the whole frame on this process ([`extract_frame`]; `gpu_device` None: the
    /// CPU) and returns its arrays (see `frame_dict`).
    #[pyo3(signature = (gpu_device = None))]
    fn extract_frame<'py>(
        &self,
        py: Python<'py>,
        gpu_device: Option<usize>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ex = self.with_backend(py, gpu_device, |job, backend| {
            extract_frame(job, backend, &|_, _| {}, &Trace::new())
        })?;
        self.frame_dict(py, ex)
    }

    /// Extracts the bundles `bundles` ([`extract_bundles`]) and returns their finished blocks
    /// as bytes for [`Job::assemble`] on rank 0 (the library's wire format).
    #[pyo3(signature = (bundles, gpu_device = None))]
    fn extract_bundles<'py>(
        &self,
        py: Python<'py>,
        bundles: Vec<usize>,
        gpu_device: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let set = self.with_backend(py, gpu_device, |job, backend| {
            extract_bundles(job, backend, &bundles, &|_, _| {}, &Trace::new())
        })?;
        let bytes = encode_blocks(&set.blocks).map_err(value_error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The frame from every rank's [`Job::extract_bundles`] bytes ([`assemble_frame`]).
    fn assemble<'py>(&self, py: Python<'py>, shares: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyDict>> {
        let mut blocks = Vec::new();
        for share in &shares {
            blocks.extend(decode_blocks(share).map_err(value_error)?);
        }
        let model_shape = self.want_model.then_some((self.image.ny, self.image.nx));
        let ex = py
            .allow_threads(|| {
                assemble_frame(
                    &self.grid,
                    &self.params,
                    self.psf.hsizey,
                    blocks,
                    model_shape,
                )
            })
            .map_err(extract_error)?;
        self.frame_dict(py, ex)
    }
}

impl Job {
    /// The arrays of a finished extraction, in gpu_specter's shapes: `specflux`, `specivar`,
    /// `pixmask_fraction`, `chi2pix` `(nspec, nwave)` float64 (flux and ivar per Angstrom),
    /// `Rdiags` `(nspec, 2*ndiag+1, nwave)`, `modelimage` `(ny, nx)` or None; plus `mask` (the
    /// desispec spectrum mask of the library, uint32), `npatch` and `reports` (one line per
    /// patch with an issue).
    fn frame_dict<'py>(&self, py: Python<'py>, ex: Extraction) -> PyResult<Bound<'py, PyDict>> {
        let a = ex.arrays;
        let (nspec, nwave, ndiagonal) = (a.nspec, a.nwave, 2 * a.ndiag + 1);
        let shape_err = |e: numpy::ndarray::ShapeError| PyRuntimeError::new_err(e.to_string());
        let plane = |values: Vec<f64>| Array::from_shape_vec((nspec, nwave), values);
        let dict = PyDict::new(py);
        dict.set_item(
            "specflux",
            plane(a.flux).map_err(shape_err)?.into_pyarray(py),
        )?;
        dict.set_item(
            "specivar",
            plane(a.ivar).map_err(shape_err)?.into_pyarray(py),
        )?;
        dict.set_item(
            "Rdiags",
            Array::from_shape_vec((nspec, ndiagonal, nwave), a.rdiags)
                .map_err(shape_err)?
                .into_pyarray(py),
        )?;
        dict.set_item(
            "pixmask_fraction",
            plane(a.pixmask_fraction)
                .map_err(shape_err)?
                .into_pyarray(py),
        )?;
        dict.set_item(
            "chi2pix",
            plane(a.chi2pix).map_err(shape_err)?.into_pyarray(py),
        )?;
        dict.set_item(
            "mask",
            Array::from_shape_vec((nspec, nwave), ex.mask)
                .map_err(shape_err)?
                .into_pyarray(py),
        )?;
        match ex.model {
            Some(model) => dict.set_item(
                "modelimage",
                Array::from_shape_vec((self.image.ny, self.image.nx), model)
                    .map_err(shape_err)?
                    .into_pyarray(py),
            )?,
            None => dict.set_item("modelimage", py.None())?,
        }
        dict.set_item("npatch", ex.npatch)?;
        let reports: Vec<String> = ex
            .reports
            .iter()
            .map(|r| {
                format!(
                    "bundle {} patch {} (spectra {}.., bin {}..): {:?}",
                    r.site.bundle, r.site.patch, r.site.ispec, r.site.iwave, r.issue
                )
            })
            .collect();
        dict.set_item("reports", PyList::new(py, reports)?)?;
        Ok(dict)
    }
}

/// Blocks as one byte string: the wire message's envelope length (u64 LE), the envelope, then
/// each plane's values little-endian, in order.
fn encode_blocks(blocks: &[BundleBlock]) -> Result<Vec<u8>, WireError> {
    let message = wire::blocks::share_message(Ok(blocks))?;
    let envelope = message.envelope();
    let mut bytes = Vec::with_capacity(8 + envelope.len());
    bytes.extend((envelope.len() as u64).to_le_bytes());
    bytes.extend_from_slice(envelope);
    for plane in message.planes() {
        match plane {
            PlaneRef::F64(v) => v.iter().for_each(|x| bytes.extend(x.to_le_bytes())),
            PlaneRef::F32(v) => v.iter().for_each(|x| bytes.extend(x.to_le_bytes())),
            PlaneRef::I32(v) => v.iter().for_each(|x| bytes.extend(x.to_le_bytes())),
        }
    }
    Ok(bytes)
}

/// Decodes [`encode_blocks`].
fn decode_blocks(bytes: &[u8]) -> Result<Vec<BundleBlock>, WireError> {
    let short = || WireError("truncated block bytes".into());
    let (len, rest) = bytes.split_first_chunk::<8>().ok_or_else(short)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| short())?;
    if rest.len() < len {
        return Err(short());
    }
    let (envelope, mut rest) = rest.split_at(len);
    let message = Incoming::receive(envelope.to_vec(), |spec| {
        let (count, width) = match spec {
            PlaneSpec::F64(n) => (n, 8),
            PlaneSpec::F32(n) | PlaneSpec::I32(n) => (n, 4),
        };
        let size = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(width))
            .filter(|&size| size <= rest.len())
            .ok_or_else(short)?;
        let (data, tail) = rest.split_at(size);
        rest = tail;
        Ok(match spec {
            PlaneSpec::F64(_) => Plane::F64(
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            PlaneSpec::F32(_) => Plane::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            PlaneSpec::I32(_) => Plane::I32(
                data.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
        })
    })?;
    if !rest.is_empty() {
        return Err(WireError(format!("{} bytes left over", rest.len())));
    }
    wire::blocks::read_share(message)?.map_err(WireError)
}

/// Number of CUDA devices the driver sees (an error where there is no driver).
#[pyfunction]
fn gpu_device_count() -> PyResult<usize> {
    GpuContext::device_count().map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Psf>()?;
    m.add_class::<Job>()?;
    m.add_class::<DeviceArray>()?;
    m.add_function(wrap_pyfunction!(gpu_device_count, m)?)?;
    Ok(())
}
