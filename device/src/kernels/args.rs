//! The typed kernel interface: one `#[repr(C)]` argument struct per kernel family, passed by
//! value as the kernel's only parameter, compiled for the host and for nvptx64 from this one
//! definition (so both sides agree on every field, its type and its offset).
//!
//! Conventions of every struct here:
//! - device buffers are raw pointers (`*const T` read, `*mut T` written) holding device
//!   addresses; on the host they are only stored, never dereferenced. Every pointer a kernel
//!   dereferences must be the address of a device allocation (global memory, never null): the
//!   kernels tell the compiler so, to get the global loads and stores that pointer parameters
//!   get (see `assume_global!` in `kernels/mod.rs`);
//! - sizes and strides are `usize` (64-bit), floating point values `f64`: every field is 8 bytes
//!   wide and 8-byte aligned, so the structs have no padding and the same layout on both
//!   targets (`tests/ptx.rs` checks the PTX `.param` of every kernel against `size_of` and
//!   `align_of` on the host);
//! - arrays are row-major, the last index fastest; shapes are written `(slow, ..., fast)`.
//!
//! Each kernel's entry point is an [`Entry`] constant typed by its struct, and each struct
//! says how to launch its kernels ([`LaunchShape`]: grid, block and dynamic shared memory).

use core::marker::PhantomData;

use crate::linalg::{banded_mma, banded_team, jacobi_team, newton_schulz};
use crate::patch::{CcdView, PatchDesc, StampView};
use crate::psf::spot::{PsfTables, SpotGeometry, StampCorner};
use crate::psf::spot_team::spot_team_scratch_len;

/// Marker of a kernel argument struct.
///
/// # Safety
/// An implementor is `#[repr(C)]` and `Copy`, made only of integers, floats, raw pointers and
/// other such structs, all 8 bytes wide (no padding, no references, no invariants beyond its
/// fields' values): its bytes can be copied as they are into a kernel parameter.
pub unsafe trait KernelArgs: Copy {}

/// A kernel entry point of the PTX module: its `.entry` name, typed by its argument struct `A`.
pub struct Entry<A> {
    name: &'static str,
    args: PhantomData<fn(A)>,
}

impl<A> Clone for Entry<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for Entry<A> {}

impl<A> core::fmt::Debug for Entry<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Entry").field(&self.name).finish()
    }
}

impl<A: KernelArgs> Entry<A> {
    pub(crate) const fn new(name: &'static str) -> Self {
        Self {
            name,
            args: PhantomData,
        }
    }

    /// The `.entry` name.
    #[inline]
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The name with the size and alignment of the kernel's single by-value parameter.
    #[inline]
    pub const fn param(&self) -> EntryParam {
        EntryParam {
            name: self.name,
            size: core::mem::size_of::<A>(),
            align: core::mem::align_of::<A>(),
        }
    }
}

/// A kernel's name and the layout of its one parameter (its argument struct), as compiled for
/// the target that evaluates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryParam {
    /// `.entry` name.
    pub name: &'static str,
    /// `size_of` the argument struct, bytes.
    pub size: usize,
    /// `align_of` the argument struct, bytes.
    pub align: usize,
}

/// `smoke_axpy`: the launch-path smoke test.
pub const SMOKE_AXPY: Entry<SmokeAxpyArgs> = Entry::new("smoke_axpy");
/// `spots`: PSF stamps of a frame, one thread per `(ispec, iwave)`.
pub const SPOTS: Entry<SpotsArgs> = Entry::new("spots");
/// `spots_team`: the same stamps, one warp per `(ispec, iwave)`.
pub const SPOTS_TEAM: Entry<SpotsArgs> = Entry::new("spots_team");
/// `spots_team16`: the same stamps, one team of 16 lanes per `(ispec, iwave)`.
pub const SPOTS_TEAM16: Entry<SpotsArgs> = Entry::new("spots_team16");
/// `spots_team8`: the same stamps, one team of 8 lanes per `(ispec, iwave)`.
pub const SPOTS_TEAM8: Entry<SpotsArgs> = Entry::new("spots_team8");
/// `widen_f32`: f32 -> f64 of the uploaded image and weights.
pub const WIDEN_F32: Entry<WidenArgs> = Entry::new("widen_f32");
/// `screen_pixels`: the pixel rule applied to an image already in device memory.
pub const SCREEN_PIXELS: Entry<ScreenPixelsArgs> = Entry::new("screen_pixels");
/// `assemble`: normal equations, one thread per (patch, unknown).
pub const ASSEMBLE: Entry<AssembleArgs> = Entry::new("assemble");
/// `assemble_warp`: normal equations, one warp per (patch, unknown).
pub const ASSEMBLE_WARP: Entry<AssembleArgs> = Entry::new("assemble_warp");
/// `assemble_warp_rs`: `assemble_warp` with the band column reduced by a reduce-scatter of 16
/// entries (bitwise the same results, the same launch).
pub const ASSEMBLE_WARP_RS: Entry<AssembleArgs> = Entry::new("assemble_warp_rs");
/// `factor_solve`: regularization, banded Cholesky and solve, one thread per patch.
pub const FACTOR_SOLVE: Entry<FactorSolveArgs> = Entry::new("factor_solve");
/// `factor_solve_team`: the same, one thread block per patch.
pub const FACTOR_SOLVE_TEAM: Entry<FactorSolveArgs> = Entry::new("factor_solve_team");
/// `factor_solve_blocked`: the same with the blocked back substitution (8 unknowns per phase).
pub const FACTOR_SOLVE_BLOCKED: Entry<FactorSolveArgs> = Entry::new("factor_solve_blocked");
/// `covariance`: covariance blocks of the core spectra, one thread per core spectrum.
pub const COVARIANCE: Entry<CovarianceArgs> = Entry::new("covariance");
/// `covariance_team`: the same, one thread block per core spectrum.
pub const COVARIANCE_TEAM: Entry<CovarianceArgs> = Entry::new("covariance_team");
/// `covariance_team_lds`: `covariance_team` with 32-bit shared-memory addressing in its phase
/// loop (bitwise the same results, the same launch).
pub const COVARIANCE_TEAM_LDS: Entry<CovarianceArgs> = Entry::new("covariance_team_lds");
/// `covariance_mma`: the same with its products on FP64 tensor cores, one thread block of
/// warps per core spectrum.
pub const COVARIANCE_MMA: Entry<CovarianceArgs> = Entry::new("covariance_mma");
/// `covariance_mma_late`: the same with `L` staged at the end of each phase.
pub const COVARIANCE_MMA_LATE: Entry<CovarianceArgs> = Entry::new("covariance_mma_late");
/// `resolution`: Jacobi inverse square root, R, flux, ivar, diagonals, one thread per core
/// spectrum.
pub const RESOLUTION: Entry<ResolutionArgs> = Entry::new("resolution");
/// `resolution_team`: the same, one thread block per core spectrum.
pub const RESOLUTION_TEAM: Entry<ResolutionArgs> = Entry::new("resolution_team");
/// `resolution_ns`: the same by Newton–Schulz on FP64 tensor cores, one thread block per core
/// spectrum (blocks it cannot solve are left to `resolution_team`).
pub const RESOLUTION_NS: Entry<ResolutionArgs> = Entry::new("resolution_ns");
/// `resolution_ns2`: `resolution_ns` with the `ns2` iteration (register-blocked products,
/// fewer barriers, optimistic first schedule); the same launch ([`ResolutionArgs::ns_shape`]).
pub const RESOLUTION_NS2: Entry<ResolutionArgs> = Entry::new("resolution_ns2");
/// `mma_check`: one DMMA (`mma.m8n8k4.f64`) of one warp, to check the fragment layout.
pub const MMA_CHECK: Entry<MmaCheckArgs> = Entry::new("mma_check");
/// `pixel_rows`: χ² of every kept window row.
pub const PIXEL_ROWS: Entry<PixelRowsArgs> = Entry::new("pixel_rows");
/// `pixel_core`: chi2pix and pixmask_fraction of the core unknowns.
pub const PIXEL_CORE: Entry<PixelCoreArgs> = Entry::new("pixel_core");
/// `pixel_rows_warp`: the same as `pixel_rows`, one warp per window row.
pub const PIXEL_ROWS_WARP: Entry<PixelRowsArgs> = Entry::new("pixel_rows_warp");
/// `pixel_core_warp`: the same as `pixel_core`, one warp per core unknown.
pub const PIXEL_CORE_WARP: Entry<PixelCoreArgs> = Entry::new("pixel_core_warp");

/// Every kernel of the PTX module with the layout of its parameter (`tests/ptx.rs` checks
/// this list against the `.entry` directives both ways).
pub const ENTRIES: &[EntryParam] = &[
    SMOKE_AXPY.param(),
    SPOTS.param(),
    SPOTS_TEAM.param(),
    SPOTS_TEAM16.param(),
    SPOTS_TEAM8.param(),
    WIDEN_F32.param(),
    SCREEN_PIXELS.param(),
    ASSEMBLE.param(),
    ASSEMBLE_WARP.param(),
    ASSEMBLE_WARP_RS.param(),
    FACTOR_SOLVE.param(),
    FACTOR_SOLVE_TEAM.param(),
    FACTOR_SOLVE_BLOCKED.param(),
    COVARIANCE.param(),
    COVARIANCE_TEAM.param(),
    COVARIANCE_TEAM_LDS.param(),
    COVARIANCE_MMA.param(),
    COVARIANCE_MMA_LATE.param(),
    RESOLUTION.param(),
    RESOLUTION_TEAM.param(),
    RESOLUTION_NS.param(),
    RESOLUTION_NS2.param(),
    MMA_CHECK.param(),
    PIXEL_ROWS.param(),
    PIXEL_CORE.param(),
    PIXEL_ROWS_WARP.param(),
    PIXEL_CORE_WARP.param(),
    super::reject_args::REJECT_SCAN.param(),
    super::reject_args::REJECT_MASK.param(),
    super::reject_args::REJECT_BINS.param(),
];

/// Threads per block of the one-thread-per-item kernels.
pub const THREADS_PER_BLOCK: usize = 128;

/// Threads of an NVIDIA warp.
pub const WARP_THREADS: usize = 32;

/// Shape of a 1-D launch: `(blocks, 1, 1)` blocks of `(threads, 1, 1)` threads with
/// `shared_bytes` of dynamic shared memory per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchShape {
    /// Thread blocks (`gridDim.x`), at least 1.
    pub blocks: usize,
    /// Threads per block (`blockDim.x`).
    pub threads: usize,
    /// Dynamic shared memory per block, bytes.
    pub shared_bytes: usize,
}

impl LaunchShape {
    /// One thread per item, [`THREADS_PER_BLOCK`] per block, no shared memory (extra threads
    /// of the last block return).
    #[inline]
    pub const fn per_thread(items: usize) -> Self {
        Self {
            blocks: max1(items.div_ceil(THREADS_PER_BLOCK)),
            threads: THREADS_PER_BLOCK,
            shared_bytes: 0,
        }
    }

    /// One warp per item, blocks of `block` threads (a multiple of [`WARP_THREADS`]), no
    /// shared memory (the extra warps of the last block return).
    #[inline]
    pub const fn per_warp(items: usize, block: usize) -> Self {
        Self {
            blocks: max1(items.div_ceil(block / WARP_THREADS)),
            threads: block,
            shared_bytes: 0,
        }
    }

    /// One block of `lanes` threads per item, `shared_bytes` of dynamic shared memory each.
    #[inline]
    pub const fn per_block(items: usize, lanes: usize, shared_bytes: usize) -> Self {
        Self {
            blocks: max1(items),
            threads: lanes,
            shared_bytes,
        }
    }
}

/// `max(n, 1)` in a `const fn`.
const fn max1(n: usize) -> usize {
    if n == 0 {
        1
    } else {
        n
    }
}

/// Arguments of `smoke_axpy`: `y[i] = a * x[i] + y[i]` for `i < n`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SmokeAxpyArgs {
    /// Number of elements.
    pub n: usize,
    /// Scale factor.
    pub a: f64,
    /// Shape `(n,)`, read.
    pub x: *const f64,
    /// Shape `(n,)`, read and written in place.
    pub y: *mut f64,
}

// SAFETY: #[repr(C)], Copy, four 8-byte fields (integers, a float, raw pointers).
unsafe impl KernelArgs for SmokeAxpyArgs {}

impl SmokeAxpyArgs {
    /// One thread per element.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.n)
    }
}

/// Arguments of `widen_f32`: `dst[i] = src[i] as f64` for `i < n` (exact).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WidenArgs {
    /// Number of values.
    pub n: usize,
    /// Shape `(n,)` f32, read.
    pub src: *const f32,
    /// Shape `(n,)` f64, written; must not overlap `src`.
    pub dst: *mut f64,
}

// SAFETY: #[repr(C)], Copy, three 8-byte fields (an integer, raw pointers).
unsafe impl KernelArgs for WidenArgs {}

impl WidenArgs {
    /// One thread per value.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.n)
    }
}

/// Arguments of `screen_pixels`: the pixel rule ([`crate::pixel::screen_pixel`], no mask
/// bits: the inverse variance carries the mask) applied to an image and inverse variance that
/// are already in device memory (another library's arrays), written as the f64 value and
/// weight planes the solves read, with the input check of [`crate::pixel::valid_input_pixel`].
///
/// Each input plane is `(nrow, ncol)` row-major with its own element type (f32 or f64, given by
/// its element size) and row stride in bytes (elements of a row are contiguous); f64 values are
/// rounded to f32 first (as a host caller converts them), so both element types give what the
/// host path gives.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScreenPixelsArgs {
    /// Rows.
    pub nrow: usize,
    /// Columns.
    pub ncol: usize,
    /// Shape `(nrow, ncol)` of f32 or f64 pixel values (electrons), read.
    pub image: *const u8,
    /// Bytes per element of `image`: 4 (f32) or 8 (f64).
    pub image_element: usize,
    /// Bytes from one row of `image` to the next (a multiple of `image_element`).
    pub image_row_stride: usize,
    /// Shape `(nrow, ncol)` of f32 or f64 inverse variances, read.
    pub ivar: *const u8,
    /// Bytes per element of `ivar`: 4 (f32) or 8 (f64).
    pub ivar_element: usize,
    /// Bytes from one row of `ivar` to the next (a multiple of `ivar_element`).
    pub ivar_row_stride: usize,
    /// Largest |value| used (electrons).
    pub max_abs_value: f64,
    /// Largest inverse variance used.
    pub max_ivar: f64,
    /// Shape `(nrow, ncol)` f64, written: the values the solves use.
    pub value: *mut f64,
    /// Shape `(nrow, ncol)` f64, written: the extraction weights.
    pub weight: *mut f64,
    /// Shape `(2,)` u64, updated atomically: the number of invalid input pixels (add) and the
    /// flat index `row * ncol + col` of the first one (min); the host sets them to 0 and
    /// `u64::MAX` before the launch.
    pub invalid: *mut u64,
}

// SAFETY: #[repr(C)], Copy, thirteen 8-byte fields (integers, floats, raw pointers).
unsafe impl KernelArgs for ScreenPixelsArgs {}

impl ScreenPixelsArgs {
    /// One thread per pixel.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.nrow * self.ncol)
    }
}

/// The PSF coefficient tables of the spot kernels in device memory (the fields of
/// [`PsfTables`], each slice as pointer + length in `f64`s, each domain as two fields).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PsfTablesArgs {
    /// Stamp geometry (stamps are `ny = 2·hsizey+1` rows by `nx = 2·hsizex+1` columns).
    pub geometry: SpotGeometry,
    /// Number of fibers of the tables (and of the spot grid).
    pub nspec: usize,
    /// Shape `(nspec, ntrace)`: Legendre coefficients of X(wave), CCD columns.
    pub xtrace: *const f64,
    /// Length of `xtrace` in f64.
    pub xtrace_len: usize,
    /// Shape `(nspec, ntrace)`: Legendre coefficients of Y(wave), CCD rows.
    pub ytrace: *const f64,
    /// Length of `ytrace` in f64.
    pub ytrace_len: usize,
    /// Coefficients per fiber of the traces.
    pub ntrace: usize,
    /// WAVEMIN of XTRACE, Angstrom.
    pub xtrace_wavemin: f64,
    /// WAVEMAX of XTRACE, Angstrom.
    pub xtrace_wavemax: f64,
    /// WAVEMIN of YTRACE, Angstrom.
    pub ytrace_wavemin: f64,
    /// WAVEMAX of YTRACE, Angstrom.
    pub ytrace_wavemax: f64,
    /// Shape `(2 + (ghdegx+1)·(ghdegy+1), nspec, nparam_coeff)`: GHSIGX, GHSIGY, then GH-i-j.
    pub params: *const f64,
    /// Length of `params` in f64.
    pub params_len: usize,
    /// LEGDEG + 1.
    pub nparam_coeff: usize,
    /// WAVEMIN of the PSF parameter HDU, Angstrom.
    pub param_wavemin: f64,
    /// WAVEMAX of the PSF parameter HDU, Angstrom.
    pub param_wavemax: f64,
}

impl PsfTablesArgs {
    /// The device copy of `tables`: the same shapes and domains, the three coefficient
    /// arrays at the device addresses `xtrace`, `ytrace` and `params` (each a copy of the
    /// corresponding slice of `tables`).
    #[inline]
    pub fn new(
        tables: &PsfTables,
        xtrace: *const f64,
        ytrace: *const f64,
        params: *const f64,
    ) -> Self {
        Self {
            geometry: tables.geometry,
            nspec: tables.nspec,
            xtrace,
            xtrace_len: tables.xtrace.len(),
            ytrace,
            ytrace_len: tables.ytrace.len(),
            ntrace: tables.ntrace,
            xtrace_wavemin: tables.xtrace_domain.0,
            xtrace_wavemax: tables.xtrace_domain.1,
            ytrace_wavemin: tables.ytrace_domain.0,
            ytrace_wavemax: tables.ytrace_domain.1,
            params,
            params_len: tables.params.len(),
            nparam_coeff: tables.nparam_coeff,
            param_wavemin: tables.param_domain.0,
            param_wavemax: tables.param_domain.1,
        }
    }

    /// The tables as slices.
    ///
    /// # Safety
    /// Each table pointer must be valid for reads of its length and not written while the
    /// tables are in use.
    #[inline(always)]
    pub unsafe fn tables<'a>(&self) -> PsfTables<'a> {
        // SAFETY: guaranteed by the caller.
        unsafe {
            PsfTables {
                geometry: self.geometry,
                nspec: self.nspec,
                xtrace: core::slice::from_raw_parts(self.xtrace, self.xtrace_len),
                ytrace: core::slice::from_raw_parts(self.ytrace, self.ytrace_len),
                ntrace: self.ntrace,
                xtrace_domain: (self.xtrace_wavemin, self.xtrace_wavemax),
                ytrace_domain: (self.ytrace_wavemin, self.ytrace_wavemax),
                params: core::slice::from_raw_parts(self.params, self.params_len),
                nparam_coeff: self.nparam_coeff,
                param_domain: (self.param_wavemin, self.param_wavemax),
            }
        }
    }
}

/// Arguments of `spots` and `spots_team`: one pixel-integrated stamp per `(ispec, iwave)` of
/// the grid `(tables.nspec, nwave)`, with its corner on the CCD and its [`crate::Status`]
/// code (on failure the corner is `(0, 0)` and the stamp unspecified: check `status` first).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SpotsArgs {
    /// The PSF tables (read; not written during the launch).
    pub tables: PsfTablesArgs,
    /// Shape `(nwave,)`: wavelengths in Angstrom, shared by every fiber (read).
    pub wave: *const f64,
    /// Number of wavelengths.
    pub nwave: usize,
    /// Shape `(nspec, nwave, ny, nx)`: the stamps (written).
    pub stamps: *mut f64,
    /// Shape `(nspec, nwave, 2)` i32: `(xc, yc)` of each stamp's first column and row, CCD
    /// pixels (written).
    pub corners: *mut i32,
    /// Shape `(nspec, nwave)` u32: [`crate::Status`] codes, 0 = ok (written).
    pub status: *mut u32,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers, floats and raw pointers only (PsfTablesArgs and
// SpotGeometry are #[repr(C)] structs of the same).
unsafe impl KernelArgs for SpotsArgs {}

impl SpotsArgs {
    /// Warps per block of `spots_team` (one warp per spot; measured on an H100 with one spot
    /// per block of 32 / 64 / 128 lanes: 19.4 / 28.5 / 46.7 ms per frame).
    pub const TEAM_WARPS: usize = 4;

    /// Spots of the grid, `nspec · nwave`.
    #[inline]
    pub const fn items(&self) -> usize {
        self.tables.nspec * self.nwave
    }

    /// `spots`: one thread per spot.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.items())
    }

    /// The `spots_team` kernels: one team of `team_lanes` lanes (32: `spots_team`, 16:
    /// `spots_team16`, 8: `spots_team8`) per spot, `warps` warps per block, each team with
    /// [`spot_team_scratch_len`] f64 of dynamic shared memory (5,696 bytes for DESI's 17×11
    /// stamps with 7×7 coefficients). `team_lanes` is clamped to a power of two in 1..=32.
    #[inline]
    pub fn team_shape(&self, warps: usize, team_lanes: usize) -> LaunchShape {
        let warps = if warps == 0 { 1 } else { warps };
        let teams = warps * (WARP_THREADS / Self::team_lanes(team_lanes));
        LaunchShape::per_block(
            self.items().div_ceil(teams),
            WARP_THREADS * warps,
            8 * teams * spot_team_scratch_len(&self.tables.geometry),
        )
    }

    /// `lanes` as a team width of the `spots_team` kernels: the largest power of two at most
    /// `lanes`, within 1..=32.
    #[inline]
    pub const fn team_lanes(lanes: usize) -> usize {
        let mut width = WARP_THREADS;
        while width > 1 && width > lanes {
            width /= 2;
        }
        width
    }
}

/// The patches of one batch: descriptors and status codes, shared by every per-patch kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PatchBatch {
    /// Shape `(npatch,)`: where each patch lives in the batch buffers (read).
    pub descs: *const PatchDesc,
    /// Shape `(npatch,)` u32: [`crate::Status`] codes, 0 = ok (read and written: a kernel
    /// skips patches that an earlier stage marked failed and records its own failures; threads
    /// of one patch may race to write different non-zero codes, any of which is a failure).
    pub status: *mut u32,
    /// Patches in the batch.
    pub npatch: usize,
    /// Padded bins per spectrum (`nwavestep + 2·pad`).
    pub nwavetot: usize,
}

/// The frame's spot stamps as the per-patch kernels read them (the output of the spot
/// kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrameStamps {
    /// Shape `(nfiber, nwave, ny, nx)`: stamps (read).
    pub stamps: *const f64,
    /// Length of `stamps` in f64.
    pub stamps_len: usize,
    /// Shape `(nfiber, nwave)`: stamp corners (read).
    pub corners: *const StampCorner,
    /// Stamp rows.
    pub ny: usize,
    /// Stamp columns.
    pub nx: usize,
}

impl FrameStamps {
    /// The stamps of patch `d`: the view starts at its first stamp (`d.stamp_offset`), with
    /// its fiber stride.
    ///
    /// # Safety
    /// `stamps` must be valid for `stamps_len` reads and `corners` for `stamps_len / (ny·nx)`,
    /// not written while the view is used; `d.stamp_offset` at most that many corners.
    #[inline(always)]
    pub unsafe fn patch_view<'a>(&self, d: &PatchDesc) -> StampView<'a> {
        let (ny, nx) = (self.ny, self.nx);
        let first = d.stamp_offset as usize;
        let ncorner = self.stamps_len / (ny * nx);
        // SAFETY: guaranteed by the caller; the view starts at the patch's first stamp.
        unsafe {
            StampView {
                stamps: core::slice::from_raw_parts(
                    self.stamps.add(first * ny * nx),
                    self.stamps_len - first * ny * nx,
                ),
                corners: core::slice::from_raw_parts(self.corners.add(first), ncorner - first),
                fiber_stride: d.fiber_stride as usize,
                ny,
                nx,
            }
        }
    }
}

/// The CCD image and extraction weights in device memory.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrameCcd {
    /// Shape `(nrow, ncol)`: pixel values, electrons (read).
    pub image: *const f64,
    /// Shape `(nrow, ncol)`: weights, IVAR where `(MASK & 0x2FF) == 0`, else 0 (read).
    pub weight: *const f64,
    /// CCD rows (NPIX_Y).
    pub nrow: usize,
    /// CCD columns (NPIX_X).
    pub ncol: usize,
}

impl FrameCcd {
    /// The image and weights as slices.
    ///
    /// # Safety
    /// `image` and `weight` must be valid for `nrow · ncol` reads each, not written while the
    /// view is used.
    #[inline(always)]
    pub unsafe fn view<'a>(&self) -> CcdView<'a> {
        let (nrow, ncol) = (self.nrow, self.ncol);
        // SAFETY: guaranteed by the caller.
        unsafe {
            CcdView {
                image: core::slice::from_raw_parts(self.image, nrow * ncol),
                weight: core::slice::from_raw_parts(self.weight, nrow * ncol),
                nrow,
                ncol,
            }
        }
    }
}

/// Arguments of `assemble` and `assemble_warp`: the normal equations of every patch
/// ([`crate::patch::assemble_unknown`], [`crate::patch::assemble_warp::assemble_unknown_lane`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AssembleArgs {
    /// The batch (status: `BadShape` for a band matrix beyond `band_len`; `TooLarge` from
    /// `assemble_warp` for stamps of more than 256 pixels, use `assemble`).
    pub batch: PatchBatch,
    /// Stride of the vectors of unknowns per patch (f64).
    pub nmax: usize,
    /// The frame's stamps.
    pub stamps: FrameStamps,
    /// The CCD.
    pub ccd: FrameCcd,
    /// Band matrices `(n, kd + 1)` of each patch at its `band_offset` (written).
    pub band: *mut f64,
    /// Length of `band` in f64.
    pub band_len: usize,
    /// Shape `(npatch, nmax)`: `y = AᵀWp` (written).
    pub rhs: *mut f64,
    /// Shape `(npatch, nmax)`: `Aᵀw` (written).
    pub fluxweight: *mut f64,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers and raw pointers only (nested #[repr(C)] structs
// of the same).
unsafe impl KernelArgs for AssembleArgs {}

impl AssembleArgs {
    /// Threads per block of `assemble_warp` (4 warps, i.e. 4 unknowns, per block).
    pub const WARP_BLOCK: usize = 128;

    /// `assemble`: one thread per `(patch, unknown)`, `npatch · nmax` items.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.batch.npatch * self.nmax)
    }

    /// `assemble_warp`: one warp per `(patch, unknown)`, [`Self::WARP_BLOCK`] threads per
    /// block, no shared memory.
    #[inline]
    pub const fn warp_shape(&self) -> LaunchShape {
        let warps = Self::WARP_BLOCK / WARP_THREADS;
        LaunchShape {
            blocks: max1((self.batch.npatch * self.nmax).div_ceil(warps)),
            threads: Self::WARP_BLOCK,
            shared_bytes: 0,
        }
    }
}

/// Arguments of `factor_solve` and `factor_solve_team`: regularization, banded Cholesky
/// factorization and solve of every patch.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FactorSolveArgs {
    /// The batch.
    pub batch: PatchBatch,
    /// Stride of the vectors of unknowns per patch (f64).
    pub nmax: usize,
    /// Band matrices of each patch at its `band_offset`, factored in place (read, written).
    pub band: *mut f64,
    /// Length of `band` in f64.
    pub band_len: usize,
    /// Shape `(npatch, nmax)`: `y = AᵀWp` (read).
    pub rhs: *const f64,
    /// Shape `(npatch, nmax)`: `Aᵀw` (read).
    pub fluxweight: *const f64,
    /// Regularization α (dimensionless, as `ExtractionParams::regularize`).
    pub regularize: f64,
    /// Shape `(npatch, nmax)`: the deconvolved flux `M⁻¹ y` (written).
    pub xflux: *mut f64,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers, a float and raw pointers only.
unsafe impl KernelArgs for FactorSolveArgs {}

impl FactorSolveArgs {
    /// Lanes of `factor_solve_team` (>= kd + 1 keeps every lane busy in a column phase).
    pub const TEAM_LANES: usize = 64;

    /// `factor_solve`: one thread per patch.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.batch.npatch)
    }

    /// `factor_solve_team` and `factor_solve_blocked`: one block of `lanes` per patch, with
    /// [`band_factor_team_window_len`](banded_team::band_factor_team_window_len)`(kd_max) +
    /// nmax` f64 of dynamic shared memory (`kd_max` the largest `kd` of the batch; 35,912 bytes
    /// for `kd = 58`, `nmax = 518`).
    #[inline]
    pub fn team_shape(&self, lanes: usize, kd_max: usize) -> LaunchShape {
        LaunchShape::per_block(
            self.batch.npatch,
            lanes,
            8 * (banded_team::band_factor_team_window_len(kd_max) + self.nmax),
        )
    }
}

/// Arguments of `covariance` and `covariance_team`: the covariance blocks `C_bb` of the core
/// spectra of every patch.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CovarianceArgs {
    /// The batch.
    pub batch: PatchBatch,
    /// Stride of the core spectra per patch.
    pub nspp_max: usize,
    /// Factored band matrices of each patch at its `band_offset` (read).
    pub band: *const f64,
    /// Length of `band` in f64.
    pub band_len: usize,
    /// Shape `(npatch, nspp_max, nwavetot, nwavetot)`: `C_bb` (written).
    pub cov: *mut f64,
    /// Shape `(npatch, nspp_max, work_stride)`: scratch of `covariance` (unused by
    /// `covariance_team`, may be a 1-element buffer).
    pub work: *mut f64,
    /// Scratch per core spectrum (f64), at least
    /// [`band_covariance_blocks_work_len`](crate::linalg::banded::band_covariance_blocks_work_len)
    /// of every patch for `covariance`.
    pub work_stride: usize,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers and raw pointers only.
unsafe impl KernelArgs for CovarianceArgs {}

impl CovarianceArgs {
    /// Lanes of `covariance_team` (one per `C_bb` column, plus the update tasks).
    pub const TEAM_LANES: usize = 128;

    /// `covariance`: one thread per `(patch, core spectrum)`, `npatch · nspp_max` items.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.batch.npatch * self.nspp_max)
    }

    /// `covariance_team`: one block of `lanes` per `(patch, core spectrum)`, with
    /// [`covariance_block_team_ring_len`](banded_team::covariance_block_team_ring_len)`(nwavetot,
    /// kd_max, 1)` f64 of dynamic shared memory (47,528 bytes for `nwavetot = 74`,
    /// `kd_max = 58`).
    #[inline]
    pub fn team_shape(&self, lanes: usize, kd_max: usize) -> LaunchShape {
        LaunchShape::per_block(
            self.batch.npatch * self.nspp_max,
            lanes,
            8 * banded_team::covariance_block_team_ring_len(self.batch.nwavetot, kd_max, 1),
        )
    }

    /// Warps of `covariance_mma` (the fewest its per-warp tile slots allow: 256 threads, 1–2
    /// column tiles and 6–7 `C_bb` tiles per warp for `nwavetot = 74`).
    pub const MMA_WARPS: usize = banded_mma::COV_MMA_WARPS;

    /// `covariance_mma` and `covariance_mma_late`: one block of `warps` warps (clamped to
    /// `COV_MMA_WARPS..=COV_MMA_MAX_WARPS`) per `(patch, core spectrum)`, with
    /// [`covariance_block_mma_smem_len`](banded_mma::covariance_block_mma_smem_len)`(nwavetot,
    /// kd_max, 1, warps)` f64 of dynamic shared memory (56,960 bytes for `nwavetot = 74`,
    /// `kd_max = 58`, 8 warps).
    #[inline]
    pub fn mma_shape(&self, warps: usize, kd_max: usize) -> LaunchShape {
        let warps = warps.clamp(banded_mma::COV_MMA_WARPS, banded_mma::COV_MMA_MAX_WARPS);
        LaunchShape::per_block(
            self.batch.npatch * self.nspp_max,
            32 * warps,
            8 * banded_mma::covariance_block_mma_smem_len(self.batch.nwavetot, kd_max, 1, warps),
        )
    }
}

/// Arguments of `resolution` and `resolution_team`: `Q = C_bb^(-1/2)`, `R = Q / rowsum`, ivar,
/// flux and the stored diagonals of the core spectra of every patch.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ResolutionArgs {
    /// The batch.
    pub batch: PatchBatch,
    /// Stride of the core spectra per patch.
    pub nspp_max: usize,
    /// Stride of the vectors of unknowns per patch (f64).
    pub nmax: usize,
    /// PSF half height: `2·ndiag + 1` stored diagonals.
    pub ndiag: usize,
    /// Padding bins on each side of the core bins.
    pub pad: usize,
    /// Core bins per patch (stride of the outputs' last axis).
    pub nwavestep: usize,
    /// Shape `(npatch, nspp_max, nwavetot, nwavetot)`: `C_bb` (read).
    pub cov: *const f64,
    /// Shape `(npatch, nmax)`: the deconvolved flux (read).
    pub xflux: *const f64,
    /// Shape like `cov`: scratch `Q` of `resolution` (unused by `resolution_team`).
    pub qbuf: *mut f64,
    /// Shape `(npatch, nspp_max, work_stride)`: scratch of `resolution` (unused by
    /// `resolution_team`).
    pub work: *mut f64,
    /// Scratch per core spectrum (f64), at least
    /// [`inverse_sqrt_work_len`](crate::linalg::jacobi::inverse_sqrt_work_len)`(nwavetot)` for
    /// `resolution`.
    pub work_stride: usize,
    /// Shape `(npatch, nspp_max, nwavetot)`: deconvolved flux (written).
    pub flux: *mut f64,
    /// Shape `(npatch, nspp_max, nwavetot)`: inverse variance (written).
    pub ivar: *mut f64,
    /// Shape `(npatch, nspp_max, 2·ndiag + 1, nwavestep)`: resolution diagonals (written).
    pub rdiags: *mut f64,
    /// Shape `(npatch, nspp_max)`, or null: `resolution_ns` writes 1 for a block it solved (or
    /// whose patch had already failed) and 0 for one it leaves to the Jacobi; `resolution_team`
    /// then skips the blocks marked 1. Null: no Newton–Schulz pass (every block is the team's).
    pub block_state: *mut u32,
    /// Shape `(2,)`, or null: `resolution_ns` adds its blocks solved (`[0]`) and left to the
    /// Jacobi (`[1]`).
    pub ns_counts: *mut u32,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers and raw pointers only.
unsafe impl KernelArgs for ResolutionArgs {}

impl ResolutionArgs {
    /// Lanes of `resolution_team` (37 pairs × 2 lanes per pair; measured on an H100 after the
    /// index arithmetic clean-up: 96 lanes 144 ms, 128: 167, 160: 155; before it: 128 lanes
    /// 251 ms per frame, 96: 281, 160: 281, 256: 333, 64: 409, 512: 564).
    pub const TEAM_LANES: usize = 96;

    /// `resolution_ns`: one block of [`NS_WARPS`](newton_schulz::NS_WARPS) warps per
    /// `(patch, core spectrum)` with [`NS_SHARED_LEN`](newton_schulz::NS_SHARED_LEN) f64 of
    /// dynamic shared memory (157,952 bytes: one block of 512 threads per H100 SM).
    #[inline]
    pub fn ns_shape(&self) -> LaunchShape {
        LaunchShape::per_block(
            self.batch.npatch * self.nspp_max,
            newton_schulz::NS_WARPS * WARP_THREADS,
            8 * newton_schulz::NS_SHARED_LEN,
        )
    }

    /// `resolution`: one thread per `(patch, core spectrum)`, `npatch · nspp_max` items.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.batch.npatch * self.nspp_max)
    }

    /// `resolution_team`: one block of `lanes` per `(patch, core spectrum)`, with
    /// [`resolution_team_shared_len`](jacobi_team::resolution_team_shared_len)`(nwavetot,
    /// lanes)` f64 of dynamic shared memory (49,136 bytes for 74×74 at 96 lanes).
    #[inline]
    pub fn team_shape(&self, lanes: usize) -> LaunchShape {
        LaunchShape::per_block(
            self.batch.npatch * self.nspp_max,
            lanes,
            8 * jacobi_team::resolution_team_shared_len(self.batch.nwavetot, lanes),
        )
    }
}

/// Arguments of `mma_check`: `D = A·B + C` by one `mma.m8n8k4.row.col.f64` of one warp, each
/// lane loading its fragment elements by the layout of the PTX ISA (the layout
/// `newton_schulz::SerialMmaTeam` emulates).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmaCheckArgs {
    /// Shape `(8, 4)`: A (read).
    pub a: *const f64,
    /// Shape `(4, 8)`: B (read).
    pub b: *const f64,
    /// Shape `(8, 8)`: C (read).
    pub c: *const f64,
    /// Shape `(8, 8)`: D (written).
    pub d: *mut f64,
}

// SAFETY: #[repr(C)], Copy, raw pointers only.
unsafe impl KernelArgs for MmaCheckArgs {}

impl MmaCheckArgs {
    /// One warp.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_block(1, WARP_THREADS, 0)
    }
}

/// Arguments of `pixel_rows`: χ²_pix of every row of each patch's kept window.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PixelRowsArgs {
    /// The batch.
    pub batch: PatchBatch,
    /// Rows per patch of the launch (the largest window height of the batch).
    pub max_rows: usize,
    /// Stride of the vectors of unknowns per patch (f64).
    pub nmax: usize,
    /// The frame's stamps.
    pub stamps: FrameStamps,
    /// The CCD.
    pub ccd: FrameCcd,
    /// Shape `(npatch, nmax)`: the deconvolved flux (read).
    pub xflux: *const f64,
    /// PSF error fraction added to the model variance (dimensionless).
    pub psferr: f64,
    /// Each patch's window `(rows, cols)` at its `pixel_offset` (written).
    pub pixels: *mut f64,
    /// Length of `pixels` in f64.
    pub pixels_len: usize,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers, a float and raw pointers only.
unsafe impl KernelArgs for PixelRowsArgs {}

impl PixelRowsArgs {
    /// One thread per `(patch, window row)`, `npatch · max_rows` items.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.batch.npatch * self.max_rows)
    }

    /// `pixel_rows_warp`: one warp per `(patch, window row)`, [`THREADS_PER_BLOCK`] threads
    /// per block.
    #[inline]
    pub const fn warp_shape(&self) -> LaunchShape {
        LaunchShape::per_warp(self.batch.npatch * self.max_rows, THREADS_PER_BLOCK)
    }
}

/// Arguments of `pixel_core`: chi2pix and pixmask_fraction of every core unknown, from the
/// windows of `pixel_rows`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PixelCoreArgs {
    /// The batch.
    pub batch: PatchBatch,
    /// Stride of the core spectra per patch.
    pub nspp_max: usize,
    /// Padding bins on each side of the core bins.
    pub pad: usize,
    /// Core bins per patch (stride of the outputs' last axis).
    pub nwavestep: usize,
    /// The frame's stamps.
    pub stamps: FrameStamps,
    /// The CCD.
    pub ccd: FrameCcd,
    /// The windows of `pixel_rows` (read).
    pub pixels: *const f64,
    /// Length of `pixels` in f64.
    pub pixels_len: usize,
    /// Shape `(npatch, nspp_max, nwavestep)`: χ² per pixel (written).
    pub chi2pix: *mut f64,
    /// Shape `(npatch, nspp_max, nwavestep)`: masked pixel fraction (written).
    pub pixmask: *mut f64,
}

// SAFETY: #[repr(C)], Copy, 8-byte integers and raw pointers only.
unsafe impl KernelArgs for PixelCoreArgs {}

impl PixelCoreArgs {
    /// One thread per `(patch, core spectrum, core bin)`, `npatch · nspp_max · nwavestep`
    /// items.
    #[inline]
    pub const fn shape(&self) -> LaunchShape {
        LaunchShape::per_thread(self.batch.npatch * self.nspp_max * self.nwavestep)
    }

    /// `pixel_core_warp`: one warp per `(patch, core spectrum, core bin)`,
    /// [`THREADS_PER_BLOCK`] threads per block.
    #[inline]
    pub const fn warp_shape(&self) -> LaunchShape {
        LaunchShape::per_warp(
            self.batch.npatch * self.nspp_max * self.nwavestep,
            THREADS_PER_BLOCK,
        )
    }
}
