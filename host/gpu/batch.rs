//! One batch of patches on the GPU: every per-patch kernel and the copies of the results to
//! page-locked host memory are enqueued on one stream without waiting ([`launch_batch`]); the
//! host waits for them only when it collects the batch ([`PendingBatch::collect`]). With two
//! batches in flight, the host unpacks and stitches one batch while the device solves the
//! next.

use super::context::{
    AssembleKernel, BandKernel, DriverContext, EighKernel, FactorKernel, GpuContext, GpuError,
    KernelMode, PinnedGuard,
};
use super::launch::{lanes, Launch};
use crate::patch::{ExtractionParams, PatchPlan};
use crate::solve::outliers::outliers_from_rows;
use crate::solve::{PatchIssue, PatchOutliers, PatchResult};
use crate::trace::Trace;
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream};
use desi_device::kernels::{
    AssembleArgs, CovarianceArgs, FactorSolveArgs, FrameCcd, FrameStamps, PatchBatch,
    PixelCoreArgs, PixelRowsArgs, RejectScanArgs, ResolutionArgs,
};
use desi_device::patch::assemble_warp::{MAX_PER_LANE, WARP_LANES};
use desi_device::patch::reject::hit_words;
use desi_device::patch::{PatchDesc, PATCH_DESC_WORDS};
use desi_device::psf::spot::StampCorner;
use desi_device::Status;
use rayon::prelude::*;
use std::time::Duration;

/// CUDA events that record timing.
pub(super) const TIMING_EVENT: cudarc::driver::sys::CUevent_flags =
    cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;

/// A planned patch with its GPU descriptor.
pub(super) struct Planned {
    /// The CPU path's plan.
    pub plan: PatchPlan,
    /// Bandwidth and buffer offsets (frame-wide; re-based per batch).
    pub desc: PatchDesc,
}

/// The frame's device buffers that every batch reads.
pub(super) struct FrameBuffers<'a> {
    /// Stamps of every (fiber, wavelength).
    pub stamps: &'a CudaSlice<f64>,
    /// Their corners.
    pub corners: &'a CudaSlice<i32>,
    /// Image, f64.
    pub image: &'a CudaSlice<f64>,
    /// Extraction weights, f64.
    pub weight: &'a CudaSlice<f64>,
    /// `(nrow, ncol)` of the CCD.
    pub ccd_shape: (usize, usize),
    /// `(ny, nx)` of a stamp.
    pub stamp_shape: (usize, usize),
}

impl<'a> FrameBuffers<'a> {
    /// The stamps and their corners as the kernels read them, in launch `l`.
    fn stamp_args<'l>(&self, l: &mut Launch<'l>) -> FrameStamps
    where
        'a: 'l,
    {
        let (ny, nx) = self.stamp_shape;
        FrameStamps {
            stamps: l.read(self.stamps),
            stamps_len: self.stamps.len(),
            corners: l.read(self.corners).cast::<StampCorner>(),
            ny,
            nx,
        }
    }

    /// The image and weights as the kernels read them, in launch `l`.
    fn ccd_args<'l>(&self, l: &mut Launch<'l>) -> FrameCcd
    where
        'a: 'l,
    {
        let (nrow, ncol) = self.ccd_shape;
        FrameCcd {
            image: l.read(self.image),
            weight: l.read(self.weight),
            nrow,
            ncol,
        }
    }
}

/// The batch's descriptors (`PATCH_DESC_WORDS` words each) and status codes as the kernels
/// see them, in launch `l`.
fn patch_batch<'l>(
    l: &mut Launch<'l>,
    descs: &'l CudaSlice<u64>,
    status: &'l mut CudaSlice<u32>,
    nwavetot: usize,
) -> PatchBatch {
    PatchBatch {
        descs: l.read(descs).cast::<PatchDesc>(),
        npatch: status.len(),
        status: l.write(status),
        nwavetot,
    }
}

/// Sizes shared by every batch of a frame.
#[derive(Clone, Copy)]
pub(super) struct BatchShape {
    /// Unknowns stride per patch.
    pub nmax: usize,
    /// Core spectra stride per patch.
    pub nspp_max: usize,
    /// Scratch of the per-thread covariance kernel, per core spectrum.
    pub cov_work: usize,
    /// Scratch of the per-thread Jacobi kernel, per core spectrum.
    pub eig_work: usize,
    /// PSF half height: Rdiags have `2·ndiag + 1` diagonals.
    pub ndiag: usize,
    /// The χ²_pix threshold `nsigma²` of the outlier test (`reject_scan`), when the job
    /// rejects outliers.
    pub reject_threshold: Option<f64>,
}

/// A batch whose kernels and result copies are enqueued on the context's stream.
pub(super) struct PendingBatch<'g> {
    results: PinnedGuard<'g, f64>,
    /// The status codes, then with the outlier test the hit masks `(np, max_rows, words)` and
    /// the tested weighted pixels `(np, max_rows)`.
    status: PinnedGuard<'g, u32>,
    /// `(max_rows, words)` of the outlier test's outputs, when it ran.
    scan: Option<(usize, usize)>,
    sizes: [usize; 5],
    /// `(stage, event at its start, host time of the enqueue)`, then the end event.
    marks: Vec<(&'static str, CudaEvent, Duration)>,
    /// Recorded on the download stream after the copies.
    done: CudaEvent,
    /// The batch's device buffers, freed once it is collected.
    buffers: BatchBuffers,
}

/// The device buffers of a batch, freed only after the batch is complete: a buffer's free
/// waits (on its allocation stream, `prepare`) for the kernels and copies that use it, and the
/// next batch's allocations, queued on that stream behind it, would wait too; a copy's source
/// freed on the main stream would hold up the next batch's kernels there.
#[derive(Default)]
struct BatchBuffers {
    f64s: Vec<CudaSlice<f64>>,
    u32s: Vec<CudaSlice<u32>>,
    u64s: Vec<CudaSlice<u64>>,
}

/// Records the start of a GPU stage on `stream`.
fn mark(
    marks: &mut Vec<(&'static str, CudaEvent, Duration)>,
    stream: &CudaStream,
    trace: &Trace,
    name: &'static str,
) -> Result<(), GpuError> {
    let event = stream.record_event(Some(TIMING_EVENT)).stage(name)?;
    marks.push((name, event, trace.now()));
    Ok(())
}

/// Enqueues every per-patch kernel of `chunk` on the context's stream, and the copies of the results into
/// download slot `slot` of the context's page-locked buffers; returns without waiting. With
/// `label`, every stage of the batch is timed under that one name (the outlier rejection's
/// re-solves), else under its own.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch_batch<'g>(
    gpu: &'g GpuContext,
    slot: usize,
    chunk: &[Planned],
    frame: &FrameBuffers,
    params: &ExtractionParams,
    shape: BatchShape,
    trace: &Trace,
    label: Option<&'static str>,
) -> Result<PendingBatch<'g>, GpuError> {
    let BatchShape {
        nmax,
        nspp_max,
        cov_work,
        eig_work,
        ndiag,
        reject_threshold,
    } = shape;
    let stream = &gpu.stream;
    // Every buffer of the batch is allocated (and cleared) on the context's `prepare` stream,
    // ahead of the kernels (cudarc's event tracking makes each kernel wait for its buffers'
    // clearing), and kept until the batch is collected.
    let alloc = &gpu.prepare;
    let mut keep = BatchBuffers::default();
    let mut marks = Vec::new();
    mark(&mut marks, stream, trace, label.unwrap_or("allocate"))?;
    let np = chunk.len();
    let kd_max = chunk.iter().map(|p| p.desc.kd as usize).max().unwrap_or(0);
    let nwavetot = params.nwavetot();
    let nwavestep = params.nwavestep;
    let pad = params.pad();
    // Re-base the band and pixel offsets to this batch.
    let band0 = chunk.first().map_or(0, |p| p.desc.band_offset);
    let pix0 = chunk.first().map_or(0, |p| p.desc.pixel_offset);
    let mut words = Vec::with_capacity(np * PATCH_DESC_WORDS);
    let (mut band_len, mut pixels_len) = (0usize, 0usize);
    for p in chunk {
        let mut d = p.desc;
        d.band_offset -= band0;
        d.pixel_offset -= pix0;
        band_len = band_len.max((d.band_offset as usize) + d.band_len(nwavetot));
        pixels_len = pixels_len.max(d.pixel_offset as usize + d.npix());
        words.extend_from_slice(&d.to_words());
    }
    let d_descs = alloc.clone_htod(&words).stage("copy patch descriptors")?;
    let mut d_band = alloc
        .alloc_zeros::<f64>(band_len.max(1))
        .stage("allocate band matrices")?;
    let mut d_rhs = alloc.alloc_zeros::<f64>(np * nmax).stage("allocate rhs")?;
    let mut d_fw = alloc
        .alloc_zeros::<f64>(np * nmax)
        .stage("allocate fluxweight")?;
    let mut d_xflux = alloc
        .alloc_zeros::<f64>(np * nmax)
        .stage("allocate xflux")?;
    let mut d_status = alloc.alloc_zeros::<u32>(np).stage("allocate status")?;
    let ncore = np * nspp_max;
    let block = nwavetot * nwavetot;
    let mut d_cov = alloc
        .alloc_zeros::<f64>(ncore * block)
        .stage("allocate covariance")?;
    let team = gpu.mode == KernelMode::Team;
    // The per-thread kernels need global scratch; the team kernels work in shared memory.
    let scratch = |len: usize| if team { 1 } else { len };
    let mut d_cov_work = alloc
        .alloc_zeros::<f64>(scratch(ncore * cov_work))
        .stage("allocate covariance scratch")?;
    let (sny, snx) = frame.stamp_shape;
    mark(&mut marks, stream, trace, label.unwrap_or("assemble"))?;
    {
        let mut l = Launch::on(stream);
        let args = AssembleArgs {
            batch: patch_batch(&mut l, &d_descs, &mut d_status, nwavetot),
            nmax,
            stamps: frame.stamp_args(&mut l),
            ccd: frame.ccd_args(&mut l),
            band: l.write(&mut d_band),
            band_len,
            rhs: l.write(&mut d_rhs),
            fluxweight: l.write(&mut d_fw),
        };
        // One warp per (patch, unknown) where the stamp fits the lanes' register cache.
        let (kernel, shape) = if team && sny * snx <= WARP_LANES * MAX_PER_LANE {
            let kernel = match gpu.assemble {
                AssembleKernel::Warp => &gpu.kernels.assemble_warp,
                AssembleKernel::WarpRs => &gpu.kernels.assemble_warp_rs,
            };
            (kernel, args.warp_shape())
        } else {
            (&gpu.kernels.assemble, args.shape())
        };
        // SAFETY: the buffers have the sizes AssembleArgs documents for these sizes (descs and
        // status np, band band_len, rhs and fluxweight np * nmax, the frame's stamps, corners,
        // image and weights); the shape is the kernel's.
        unsafe { l.run(kernel, shape, &args) }?;
    }
    mark(&mut marks, stream, trace, label.unwrap_or("cholesky"))?;
    {
        let mut l = Launch::on(stream);
        let args = FactorSolveArgs {
            batch: patch_batch(&mut l, &d_descs, &mut d_status, nwavetot),
            nmax,
            band: l.write(&mut d_band),
            band_len,
            rhs: l.read(&d_rhs),
            fluxweight: l.read(&d_fw),
            regularize: params.regularize,
            xflux: l.write(&mut d_xflux),
        };
        let (kernel, shape) = if team {
            let lanes = lanes("DESI_FACTOR_LANES", FactorSolveArgs::TEAM_LANES);
            let kernel = match gpu.factor {
                FactorKernel::Team => &gpu.kernels.factor_solve_team,
                FactorKernel::Blocked => &gpu.kernels.factor_solve_blocked,
            };
            (kernel, args.team_shape(lanes, kd_max))
        } else {
            (&gpu.kernels.factor_solve, args.shape())
        };
        // SAFETY: as for assemble (xflux np * nmax); the team shape gives the shared memory of
        // the batch's largest kd.
        unsafe { l.run(kernel, shape, &args) }?;
    }
    mark(&mut marks, stream, trace, label.unwrap_or("covariance"))?;
    {
        let mut l = Launch::on(stream);
        let args = CovarianceArgs {
            batch: patch_batch(&mut l, &d_descs, &mut d_status, nwavetot),
            nspp_max,
            band: l.read(&d_band),
            band_len,
            cov: l.write(&mut d_cov),
            work: l.write(&mut d_cov_work),
            work_stride: cov_work,
        };
        let band = gpu.band.covariance_for(nwavetot);
        let (kernel, shape) = if team && matches!(band, BandKernel::Mma | BandKernel::MmaLate) {
            let warps = lanes("DESI_COVARIANCE_MMA_LANES", 32 * CovarianceArgs::MMA_WARPS) / 32;
            let kernel = if band == BandKernel::Mma {
                &gpu.kernels.covariance_mma
            } else {
                &gpu.kernels.covariance_mma_late
            };
            (kernel, args.mma_shape(warps, kd_max))
        } else if team {
            let lanes = lanes("DESI_COVARIANCE_LANES", CovarianceArgs::TEAM_LANES);
            let kernel = if band == BandKernel::TeamLds {
                &gpu.kernels.covariance_team_lds
            } else {
                &gpu.kernels.covariance_team
            };
            (kernel, args.team_shape(lanes, kd_max))
        } else {
            (&gpu.kernels.covariance, args.shape())
        };
        // SAFETY: cov has ncore blocks of nwavetot², work ncore * cov_work values for the
        // per-thread kernel (one, unused, for the team and mma kernels); the rest as above;
        // covariance_mma only for nwavetot <= 80 (covariance_for), with 8..=16 warps
        // (mma_shape clamps).
        unsafe { l.run(kernel, shape, &args) }?;
    }
    mark(&mut marks, stream, trace, label.unwrap_or("eigh"))?;
    keep.f64s.extend([d_cov_work, d_band]);
    let ndiagonal = 2 * ndiag + 1;
    let mut d_q = alloc
        .alloc_zeros::<f64>(scratch(ncore * block))
        .stage("allocate Q")?;
    let mut d_eig_work = alloc
        .alloc_zeros::<f64>(scratch(ncore * eig_work))
        .stage("allocate Jacobi scratch")?;
    let mut d_flux = alloc
        .alloc_zeros::<f64>(ncore * nwavetot)
        .stage("allocate flux")?;
    let mut d_ivar = alloc
        .alloc_zeros::<f64>(ncore * nwavetot)
        .stage("allocate ivar")?;
    let mut d_rdiags = alloc
        .alloc_zeros::<f64>(ncore * ndiagonal * nwavestep)
        .stage("allocate Rdiags")?;
    // With DESI_EIGH_KERNEL=ns2 (default) or ns, resolution_ns2 or resolution_ns first; it
    // marks the blocks it solved, and resolution_team (timed as "eigh fallback") does the others.
    let ns = gpu.runs_newton_schulz(nwavetot);
    let mut d_state = alloc
        .alloc_zeros::<u32>(if ns { ncore.max(1) } else { 1 })
        .stage("allocate block states")?;
    if ns {
        let mut counts = gpu.ns_counts();
        let mut l = Launch::on(stream);
        let mut args = ResolutionArgs {
            batch: patch_batch(&mut l, &d_descs, &mut d_status, nwavetot),
            nspp_max,
            nmax,
            ndiag,
            pad,
            nwavestep,
            cov: l.read(&d_cov),
            xflux: l.read(&d_xflux),
            qbuf: l.write(&mut d_q),
            work: l.write(&mut d_eig_work),
            work_stride: eig_work,
            flux: l.write(&mut d_flux),
            ivar: l.write(&mut d_ivar),
            rdiags: l.write(&mut d_rdiags),
            block_state: std::ptr::null_mut(),
            ns_counts: std::ptr::null_mut(),
        };
        args.block_state = l.write(&mut d_state);
        args.ns_counts = l.write(&mut *counts);
        let kernel = if gpu.eigh == EighKernel::Ns2 {
            &gpu.kernels.resolution_ns2
        } else {
            &gpu.kernels.resolution_ns
        };
        // SAFETY: as for resolution_team below, with block_state ncore values and ns_counts
        // two; nwavetot <= 80; the shape is the kernel's (the same for both kernels).
        unsafe { l.run(kernel, args.ns_shape(), &args) }?;
        drop(counts);
        mark(&mut marks, stream, trace, label.unwrap_or("eigh fallback"))?;
    }
    {
        let mut l = Launch::on(stream);
        let mut args = ResolutionArgs {
            batch: patch_batch(&mut l, &d_descs, &mut d_status, nwavetot),
            nspp_max,
            nmax,
            ndiag,
            pad,
            nwavestep,
            cov: l.read(&d_cov),
            xflux: l.read(&d_xflux),
            qbuf: l.write(&mut d_q),
            work: l.write(&mut d_eig_work),
            work_stride: eig_work,
            flux: l.write(&mut d_flux),
            ivar: l.write(&mut d_ivar),
            rdiags: l.write(&mut d_rdiags),
            block_state: std::ptr::null_mut(),
            ns_counts: std::ptr::null_mut(),
        };
        if ns {
            // Only read by resolution_team.
            args.block_state = l.read(&d_state).cast_mut();
        }
        let (kernel, shape) = if team {
            let lanes = lanes("DESI_RESOLUTION_LANES", ResolutionArgs::TEAM_LANES);
            (&gpu.kernels.resolution_team, args.team_shape(lanes))
        } else {
            (&gpu.kernels.resolution, args.shape())
        };
        // SAFETY: flux and ivar have ncore * nwavetot values, rdiags ncore * ndiagonal *
        // nwavestep, qbuf and work the per-thread kernel's scratch (one value each, unused,
        // for the team kernel); block_state null or ncore values; the rest as above.
        unsafe { l.run(kernel, shape, &args) }?;
    }
    mark(&mut marks, stream, trace, label.unwrap_or("finalize"))?;
    keep.u32s.push(d_state);
    keep.f64s.extend([d_q, d_eig_work, d_cov]);
    let mut d_pixels = alloc
        .alloc_zeros::<f64>(pixels_len.max(1))
        .stage("allocate pixel windows")?;
    let mut d_chi2 = alloc
        .alloc_zeros::<f64>(ncore * nwavestep)
        .stage("allocate chi2pix")?;
    let mut d_pixmask = alloc
        .alloc_zeros::<f64>(ncore * nwavestep)
        .stage("allocate pixmask")?;
    // The warp kernels with the team kernels, unless DESI_FINALIZE_KERNELS=thread asks for the
    // one-thread-per-item ones (to compare the two on one machine).
    let warp_finalize = team && std::env::var("DESI_FINALIZE_KERNELS").as_deref() != Ok("thread");
    let max_rows = chunk
        .iter()
        .map(|p| (p.desc.row_max - p.desc.row_min).max(0) as usize)
        .max()
        .unwrap_or(0);
    {
        let mut l = Launch::on(stream);
        let args = PixelRowsArgs {
            batch: patch_batch(&mut l, &d_descs, &mut d_status, nwavetot),
            max_rows,
            nmax,
            stamps: frame.stamp_args(&mut l),
            ccd: frame.ccd_args(&mut l),
            xflux: l.read(&d_xflux),
            psferr: params.psferr,
            pixels: l.write(&mut d_pixels),
            pixels_len,
        };
        let (kernel, shape) = if warp_finalize {
            (&gpu.kernels.pixel_rows_warp, args.warp_shape())
        } else {
            (&gpu.kernels.pixel_rows, args.shape())
        };
        // SAFETY: pixels has pixels_len >= every patch's window end; the rest as above.
        unsafe { l.run(kernel, shape, &args) }?;
    }
    {
        let mut l = Launch::on(stream);
        let args = PixelCoreArgs {
            batch: patch_batch(&mut l, &d_descs, &mut d_status, nwavetot),
            nspp_max,
            pad,
            nwavestep,
            stamps: frame.stamp_args(&mut l),
            ccd: frame.ccd_args(&mut l),
            pixels: l.read(&d_pixels),
            pixels_len,
            chi2pix: l.write(&mut d_chi2),
            pixmask: l.write(&mut d_pixmask),
        };
        let (kernel, shape) = if warp_finalize {
            (&gpu.kernels.pixel_core_warp, args.warp_shape())
        } else {
            (&gpu.kernels.pixel_core, args.shape())
        };
        // SAFETY: chi2pix and pixmask have ncore * nwavestep values; the rest as above.
        unsafe { l.run(kernel, shape, &args) }?;
    }
    // The outlier test (docs/algorithm.md §4.11) on the windows just written: per window row
    // a bit mask of the tested pixels beyond the threshold and the count of tested pixels
    // with weight, copied back with the status codes (a few bytes per row).
    let max_width = chunk
        .iter()
        .map(|p| (p.desc.col_max - p.desc.col_min).max(0) as usize)
        .max()
        .unwrap_or(0);
    let scan = match reject_threshold {
        Some(threshold) => {
            mark(
                &mut marks,
                stream,
                trace,
                label.unwrap_or(super::frame::SCAN_STAGE),
            )?;
            let words = hit_words(max_width).max(1);
            let rows = np * max_rows.max(1);
            let mut d_hits = alloc
                .alloc_zeros::<u32>(rows * words)
                .stage("allocate outlier masks")?;
            let mut d_weighted = alloc
                .alloc_zeros::<u32>(rows)
                .stage("allocate outlier counts")?;
            {
                let mut l = Launch::on(stream);
                let args = RejectScanArgs {
                    batch: patch_batch(&mut l, &d_descs, &mut d_status, nwavetot),
                    max_rows: max_rows.max(1),
                    pad,
                    stamps: frame.stamp_args(&mut l),
                    ccd: frame.ccd_args(&mut l),
                    pixels: l.read(&d_pixels),
                    pixels_len,
                    threshold,
                    words,
                    hits: l.write(&mut d_hits),
                    weighted: l.write(&mut d_weighted),
                };
                // SAFETY: hits has np * max_rows * words u32 (words >= hit_words of every
                // window of the batch), weighted np * max_rows; pixels the windows of
                // pixel_rows of this batch; the rest as above.
                unsafe { l.run(&gpu.kernels.reject_scan, args.shape(), &args) }?;
            }
            Some((max_rows.max(1), words, d_hits, d_weighted))
        }
        None => None,
    };
    // The results come back on the download stream once the kernels are done, so that the
    // next batch's kernels (on `stream`) do not wait for the copies. The outputs land in
    // page-locked buffers (pageable copies ran at ~1.5 GB/s and would synchronize):
    // asynchronous copies, waited for in `collect`.
    let download = &gpu.download;
    download
        .join(stream)
        .stage("wait for the batch's kernels")?;
    mark(&mut marks, download, trace, label.unwrap_or("copy to host"))?;
    let scan_len = scan
        .as_ref()
        .map_or(0, |(_, _, hits, weighted)| hits.len() + weighted.len());
    let mut status = gpu.pinned_status(slot, np + scan_len)?;
    {
        let host = status.as_mut_slice().stage("map pinned buffer")?;
        let (status_h, rest) = host.split_at_mut(np);
        download
            .memcpy_dtoh(&d_status, status_h)
            .stage("copy status to host")?;
        if let Some((_, _, hits, weighted)) = &scan {
            let (hits_h, rest) = rest.split_at_mut(hits.len());
            download
                .memcpy_dtoh(hits, hits_h)
                .stage("copy outlier masks to host")?;
            download
                .memcpy_dtoh(weighted, &mut rest[..weighted.len()])
                .stage("copy outlier counts to host")?;
        }
    }
    let sizes = [
        d_flux.len(),
        d_ivar.len(),
        d_rdiags.len(),
        d_chi2.len(),
        d_pixmask.len(),
    ];
    let mut results = gpu.pinned_download(slot, sizes.iter().sum())?;
    let mut host = results.as_mut_slice().stage("map pinned buffer")?;
    for (src, len) in [
        (&d_flux, sizes[0]),
        (&d_ivar, sizes[1]),
        (&d_rdiags, sizes[2]),
        (&d_chi2, sizes[3]),
        (&d_pixmask, sizes[4]),
    ] {
        let (dst, rest) = host.split_at_mut(len);
        download
            .memcpy_dtoh(src, dst)
            .stage("copy results to host")?;
        host = rest;
    }
    let done = download
        .record_event(Some(TIMING_EVENT))
        .stage("record an event")?;
    keep.u32s.push(d_status);
    let scan = scan.map(|(rows, words, hits, weighted)| {
        keep.u32s.extend([hits, weighted]);
        (rows, words)
    });
    keep.f64s.extend([
        d_flux, d_ivar, d_rdiags, d_chi2, d_pixmask, d_pixels, d_rhs, d_fw, d_xflux,
    ]);
    keep.u64s.push(d_descs);
    Ok(PendingBatch {
        results,
        status,
        scan,
        sizes,
        marks,
        done,
        buffers: keep,
    })
}

impl PendingBatch<'_> {
    /// Waits for the batch, records its GPU stage times (CUDA events, placed at the device's
    /// time through `gpu`'s epoch) on the trace's `gpu` track and adds them to `detail`, and
    /// returns the core outputs of `chunk` (the batch's patches) in order; a failed patch comes
    /// back with [`PatchIssue::Failed`].
    pub(super) fn collect(
        mut self,
        gpu: &GpuContext,
        chunk: &[Planned],
        params: &ExtractionParams,
        shape: BatchShape,
        trace: &Trace,
        detail: &mut Vec<(&'static str, Duration)>,
    ) -> Result<Vec<PatchResult>, GpuError> {
        self.done.synchronize().stage("wait for a batch")?;
        drop(std::mem::take(&mut self.buffers));
        let ends = self.marks.iter().skip(1).map(|(_, e, _)| e);
        for ((name, start, _), end) in self
            .marks
            .iter()
            .zip(ends.chain(std::iter::once(&self.done)))
        {
            // On the GPU track at the time the device reached the stage (the host enqueued it
            // earlier, while the batch before ran).
            let gpu_time = gpu.record_device_span(trace, name, "gpu", start, end)?;
            match detail.iter_mut().find(|(n, _)| n == name) {
                Some((_, d)) => *d += gpu_time,
                None => detail.push((name, gpu_time)),
            }
        }
        let t_unpack = trace.now();
        let np = chunk.len();
        let status_all = &*self.status.as_mut_slice().stage("map pinned buffer")?;
        let (status, scan_out) = status_all.split_at(np);
        let scan = self.scan.map(|(rows, words)| {
            let (hits, rest) = scan_out.split_at(np * rows * words);
            Scan {
                rows,
                words,
                hits,
                weighted: &rest[..np * rows],
            }
        });
        let host = &*self.results.as_mut_slice().stage("map pinned buffer")?;
        let (flux, rest) = host.split_at(self.sizes[0]);
        let (ivar, rest) = rest.split_at(self.sizes[1]);
        let (rdiags, rest) = rest.split_at(self.sizes[2]);
        let (chi2, rest) = rest.split_at(self.sizes[3]);
        let pixmask = &rest[..self.sizes[4]];
        let out = unpack(
            chunk,
            status,
            [flux, ivar, rdiags, chi2, pixmask],
            scan,
            params,
            shape,
        );
        trace.record(
            "unpack",
            "host",
            t_unpack,
            trace.now().saturating_sub(t_unpack),
        );
        Ok(out)
    }
}

/// The outlier test's outputs of a batch as copied back (`reject_scan`).
#[derive(Clone, Copy)]
struct Scan<'a> {
    /// Rows per patch.
    rows: usize,
    /// Words per row.
    words: usize,
    /// `(np, rows, words)` hit masks.
    hits: &'a [u32],
    /// `(np, rows)` tested pixels with weight.
    weighted: &'a [u32],
}

impl Scan<'_> {
    /// The outliers of patch `i` of the batch (window `width` columns, `height` rows).
    fn outliers(&self, i: usize, width: usize, height: usize) -> PatchOutliers {
        let base = i * self.rows;
        outliers_from_rows(
            &self.hits[base * self.words..(base + self.rows) * self.words],
            &self.weighted[base..base + self.rows],
            self.words,
            width,
            height,
        )
    }
}

/// Splits the batch outputs (`[flux, ivar, rdiags, chi2pix, pixmask]` as copied from the
/// device, and the outlier test's when it ran) into one [`PatchResult`] per patch.
fn unpack(
    chunk: &[Planned],
    status: &[u32],
    [flux, ivar, rdiags, chi2, pixmask]: [&[f64]; 5],
    scan: Option<Scan>,
    params: &ExtractionParams,
    shape: BatchShape,
) -> Vec<PatchResult> {
    let (ndiag, nspp_max) = (shape.ndiag, shape.nspp_max);
    let ndiagonal = 2 * ndiag + 1;
    let (nwavetot, nwavestep, pad) = (params.nwavetot(), params.nwavestep, params.pad());
    chunk
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            let (nspp, keep) = (p.plan.nspp, p.plan.keep);
            if status[i] != 0 {
                return PatchResult::zeros(
                    nspp,
                    keep,
                    ndiag,
                    PatchIssue::Failed {
                        reason: format!("GPU status {:?}", Status::from_code(status[i])),
                    },
                );
            }
            // Filled by appending, core spectrum by core spectrum (no zero fill first):
            // `(nspp, keep)` and `(nspp, ndiagonal, keep)`.
            let bins = nspp * keep;
            let mut r = PatchResult {
                flux: Vec::with_capacity(bins),
                ivar: Vec::with_capacity(bins),
                rdiags: Vec::with_capacity(bins * ndiagonal),
                chi2pix: Vec::with_capacity(bins),
                pixmask_fraction: Vec::with_capacity(bins),
                outliers: None,
                issue: None,
            };
            for c in 0..nspp {
                let item = i * nspp_max + c;
                let src = item * nwavetot + pad;
                r.flux.extend_from_slice(&flux[src..src + keep]);
                r.ivar.extend_from_slice(&ivar[src..src + keep]);
                let src = item * nwavestep;
                r.chi2pix.extend_from_slice(&chi2[src..src + keep]);
                r.pixmask_fraction
                    .extend_from_slice(&pixmask[src..src + keep]);
                for d in 0..ndiagonal {
                    let src = (item * ndiagonal + d) * nwavestep;
                    r.rdiags.extend_from_slice(&rdiags[src..src + keep]);
                }
            }
            if let (Some(scan), Some(w)) = (scan, p.plan.window) {
                let width = (w.col_max - w.col_min) as usize;
                let height = (w.row_max - w.row_min) as usize;
                r.outliers = Some(scan.outliers(i, width, height));
            }
            r
        })
        .collect()
}
