//! The typed kernel interface (`desi_device::kernels`): the launch shapes and shared-memory
//! sizes of the argument structs against the formulas the host used before they moved to the
//! device crate, and the layout of the structs (no padding; the PTX side is checked by the
//! root crate's tests/ptx.rs).

use desi_device::kernels::{
    AssembleArgs, CovarianceArgs, FactorSolveArgs, FrameCcd, FrameStamps, LaunchShape,
    MmaCheckArgs, PatchBatch, PixelCoreArgs, PixelRowsArgs, PsfTablesArgs, RejectBinsArgs,
    RejectMaskArgs, RejectScanArgs, ResolutionArgs, ScreenPixelsArgs, SmokeAxpyArgs, SpotsArgs,
    WidenArgs, ENTRIES, THREADS_PER_BLOCK,
};
use desi_device::linalg::{banded_team, jacobi_team};
use desi_device::psf::spot::{PsfTables, SpotGeometry};
use desi_device::psf::spot_team::spot_team_scratch_len;
use std::mem::{align_of, size_of};
use std::ptr::{null, null_mut};

fn batch(npatch: usize, nwavetot: usize) -> PatchBatch {
    PatchBatch {
        descs: null(),
        status: null_mut(),
        npatch,
        nwavetot,
    }
}

fn stamps() -> FrameStamps {
    FrameStamps {
        stamps: null(),
        stamps_len: 0,
        corners: null(),
        ny: 17,
        nx: 11,
    }
}

fn ccd() -> FrameCcd {
    FrameCcd {
        image: null(),
        weight: null(),
        nrow: 4128,
        ncol: 4114,
    }
}

/// The one-thread-per-item grid of the host before the move: `⌈items / 128⌉`, at least 1.
fn old_grid(items: usize) -> LaunchShape {
    LaunchShape {
        blocks: (items as u32).div_ceil(128).max(1) as usize,
        threads: 128,
        shared_bytes: 0,
    }
}

#[test]
fn one_thread_per_item_shapes() {
    for items in [0, 1, 127, 128, 129, 20_000, 1 << 24] {
        assert_eq!(
            LaunchShape::per_thread(items),
            old_grid(items),
            "{items} items"
        );
    }
    assert_eq!(THREADS_PER_BLOCK, 128);
    let args = SmokeAxpyArgs {
        n: 1000,
        a: 2.0,
        x: null(),
        y: null_mut(),
    };
    assert_eq!(args.shape(), old_grid(1000));
    let args = WidenArgs {
        n: 4128 * 4114,
        src: null(),
        dst: null_mut(),
    };
    assert_eq!(args.shape(), old_grid(4128 * 4114));
}

#[test]
fn patch_kernel_shapes_match_the_former_host_formulas() {
    let (np, nmax, nspp_max, nwavetot, kd_max) = (37, 518, 5, 74, 58);
    let assemble = AssembleArgs {
        batch: batch(np, nwavetot),
        nmax,
        stamps: stamps(),
        ccd: ccd(),
        band: null_mut(),
        band_len: 0,
        rhs: null_mut(),
        fluxweight: null_mut(),
    };
    assert_eq!(assemble.shape(), old_grid(np * nmax));
    // 4 warps per block of 128 threads.
    assert_eq!(
        assemble.warp_shape(),
        LaunchShape {
            blocks: ((np * nmax) as u32).div_ceil(128 / 32).max(1) as usize,
            threads: 128,
            shared_bytes: 0,
        }
    );

    let factor = FactorSolveArgs {
        batch: batch(np, nwavetot),
        nmax,
        band: null_mut(),
        band_len: 0,
        rhs: null(),
        fluxweight: null(),
        regularize: 0.0,
        xflux: null_mut(),
    };
    assert_eq!(factor.shape(), old_grid(np));
    let team = factor.team_shape(64, kd_max);
    assert_eq!(
        team,
        LaunchShape {
            blocks: np,
            threads: 64,
            shared_bytes: 8 * (banded_team::band_factor_team_window_len(kd_max) + nmax),
        }
    );
    // The documented 35,912 bytes for kd = 58, nmax = 518.
    assert_eq!(team.shared_bytes, 35_912);

    let cov = CovarianceArgs {
        batch: batch(np, nwavetot),
        nspp_max,
        band: null(),
        band_len: 0,
        cov: null_mut(),
        work: null_mut(),
        work_stride: 0,
    };
    assert_eq!(cov.shape(), old_grid(np * nspp_max));
    for kd in [0, 3, 8, 40, 58, 90] {
        // The hand-written formula the host used, 8 (nwavetot + 16) (max(kd, 8) + 8), plus
        // one value of alignment slack for the 16-byte loads of the staged L.
        let shape = cov.team_shape(128, kd);
        assert_eq!(
            shape.shared_bytes,
            8 * ((nwavetot + 16) * (kd.max(8) + 8) + 1),
            "kd = {kd}"
        );
        assert_eq!((shape.blocks, shape.threads), (np * nspp_max, 128));
    }
    assert_eq!(cov.team_shape(128, kd_max).shared_bytes, 47_528);

    let res = ResolutionArgs {
        batch: batch(np, nwavetot),
        nspp_max,
        nmax,
        ndiag: 5,
        pad: 10,
        nwavestep: 54,
        cov: null(),
        xflux: null(),
        qbuf: null_mut(),
        work: null_mut(),
        work_stride: 0,
        flux: null_mut(),
        ivar: null_mut(),
        rdiags: null_mut(),
        block_state: null_mut(),
        ns_counts: null_mut(),
    };
    assert_eq!(res.shape(), old_grid(np * nspp_max));
    assert_eq!(
        res.ns_shape(),
        LaunchShape {
            blocks: np * nspp_max,
            threads: 512,
            shared_bytes: 157_952,
        }
    );
    for lanes in [32, 96, 128, 256] {
        assert_eq!(
            res.team_shape(lanes),
            LaunchShape {
                blocks: np * nspp_max,
                threads: lanes,
                shared_bytes: 8 * jacobi_team::resolution_team_shared_len(nwavetot, lanes),
            }
        );
    }

    let rows = PixelRowsArgs {
        batch: batch(np, nwavetot),
        max_rows: 80,
        nmax,
        stamps: stamps(),
        ccd: ccd(),
        xflux: null(),
        psferr: 0.01,
        pixels: null_mut(),
        pixels_len: 0,
    };
    assert_eq!(rows.shape(), old_grid(np * 80));
    // One warp per (patch, row): 4 warps per 128-thread block.
    assert_eq!(
        rows.warp_shape(),
        LaunchShape {
            blocks: (np * 80).div_ceil(4),
            threads: 128,
            shared_bytes: 0,
        }
    );
    let core = PixelCoreArgs {
        batch: batch(np, nwavetot),
        nspp_max,
        pad: 10,
        nwavestep: 54,
        stamps: stamps(),
        ccd: ccd(),
        pixels: null(),
        pixels_len: 0,
        chi2pix: null_mut(),
        pixmask: null_mut(),
    };
    assert_eq!(core.shape(), old_grid(np * nspp_max * 54));
    assert_eq!(
        core.warp_shape(),
        LaunchShape {
            blocks: (np * nspp_max * 54).div_ceil(4),
            threads: 128,
            shared_bytes: 0,
        }
    );
}

#[test]
fn spot_kernel_shapes_match_the_former_host_formulas() {
    let geometry = SpotGeometry {
        hsizex: 5,
        hsizey: 8,
        ghdegx: 6,
        ghdegy: 6,
    };
    let (xtrace, ytrace, params) = (
        vec![0.0; 500 * 6],
        vec![0.0; 500 * 6],
        vec![0.0; 51 * 500 * 4],
    );
    let tables = PsfTables {
        geometry,
        nspec: 500,
        xtrace: &xtrace,
        ytrace: &ytrace,
        ntrace: 6,
        xtrace_domain: (3500.0, 10000.0),
        ytrace_domain: (3600.0, 9900.0),
        params: &params,
        nparam_coeff: 4,
        param_domain: (3550.0, 9950.0),
    };
    let t = PsfTablesArgs::new(&tables, null(), null(), null());
    assert_eq!(
        (t.xtrace_len, t.ytrace_len, t.params_len),
        (xtrace.len(), ytrace.len(), params.len())
    );
    assert_eq!(
        (t.xtrace_wavemin, t.ytrace_wavemax, t.param_wavemin),
        (3500.0, 9900.0, 3550.0)
    );
    let nwave = 2400;
    let args = SpotsArgs {
        tables: t,
        wave: null(),
        nwave,
        stamps: null_mut(),
        corners: null_mut(),
        status: null_mut(),
    };
    let nitem = 500 * nwave;
    assert_eq!(args.shape(), old_grid(nitem));
    for warps in [1, 2, 4, 8] {
        assert_eq!(
            args.team_shape(warps, 32),
            LaunchShape {
                blocks: nitem.div_ceil(warps).max(1),
                threads: 32 * warps,
                shared_bytes: 8 * warps * spot_team_scratch_len(&geometry),
            }
        );
        // Teams of 16 and 8 lanes: 2 and 4 spots per warp, each with its own scratch.
        for (lanes, per_warp) in [(16, 2), (8, 4)] {
            let teams = warps * per_warp;
            assert_eq!(
                args.team_shape(warps, lanes),
                LaunchShape {
                    blocks: nitem.div_ceil(teams),
                    threads: 32 * warps,
                    shared_bytes: 8 * teams * spot_team_scratch_len(&geometry),
                }
            );
        }
    }
    assert_eq!(SpotsArgs::TEAM_WARPS, 4);
    // Team widths: powers of two in 1..=32, rounded down.
    for (asked, width) in [
        (0, 1),
        (1, 1),
        (8, 8),
        (12, 8),
        (16, 16),
        (31, 16),
        (32, 32),
        (64, 32),
    ] {
        assert_eq!(SpotsArgs::team_lanes(asked), width, "{asked}");
    }
}

/// Every argument struct is 8-byte fields only: its size is 8 times its field count (no
/// padding) and its alignment 8, the `.param .align 8 .b8 [size]` of its kernels.
#[test]
fn argument_structs_have_no_padding() {
    let geometry = 4;
    let tables = geometry + 15;
    let patch = 4;
    let stamps = 5;
    let ccd = 4;
    let sizes = [
        ("smoke_axpy", size_of::<SmokeAxpyArgs>(), 4),
        ("widen_f32", size_of::<WidenArgs>(), 3),
        ("screen_pixels", size_of::<ScreenPixelsArgs>(), 13),
        ("spots", size_of::<SpotsArgs>(), tables + 5),
        (
            "assemble",
            size_of::<AssembleArgs>(),
            patch + 1 + stamps + ccd + 4,
        ),
        ("factor_solve", size_of::<FactorSolveArgs>(), patch + 7),
        ("covariance", size_of::<CovarianceArgs>(), patch + 6),
        ("resolution", size_of::<ResolutionArgs>(), patch + 15),
        ("mma_check", size_of::<MmaCheckArgs>(), 4),
        (
            "pixel_rows",
            size_of::<PixelRowsArgs>(),
            patch + 2 + stamps + ccd + 4,
        ),
        (
            "pixel_core",
            size_of::<PixelCoreArgs>(),
            patch + 3 + stamps + ccd + 4,
        ),
        (
            "reject_scan",
            size_of::<RejectScanArgs>(),
            patch + 2 + stamps + ccd + 6,
        ),
        ("reject_mask", size_of::<RejectMaskArgs>(), 4),
        ("reject_bins", size_of::<RejectBinsArgs>(), stamps + 10),
    ];
    for (name, size, fields) in sizes {
        assert_eq!(size, 8 * fields, "{name}: {size} bytes for {fields} fields");
    }
    assert_eq!(align_of::<AssembleArgs>(), 8);
    for entry in ENTRIES {
        assert_eq!(entry.align, 8, "{}", entry.name);
        assert_eq!(entry.size % 8, 0, "{}", entry.name);
    }
    assert_eq!(ENTRIES.len(), 30);
}
