//! `assemble_normal_equations` (the CPU's whole-patch assembly, `patch::assemble_cpu`) against
//! (1) a dense `AᵀWA`, `AᵀWp`, `Aᵀw` formed from the explicit projection matrix (every
//! CCD pixel of the kept rows, one column of A per unknown) and (2) `assemble_unknown` (one GPU
//! thread per unknown), on the DESI-like patches of `common::patch`: 11 × 17 stamps, kept rows
//! cutting the first and last stamps, masked pixels, several kd; and the `BadShape` cases.

mod common;

use common::patch::{build_patch, Geometry, Patch};
use desi_device::patch::assemble_cpu::MAX_SHIFTED_STAMPS;
use desi_device::patch::{assemble_normal_equations, assemble_unknown, patch_bandwidth};
use desi_device::team::Shared;
use desi_device::Status;

/// Relative tolerance against `assemble_unknown` (same products, another order of the sums:
/// a few ulp per term over at most 187 terms; 1e-13 leaves a factor ~100).
const RTOL: f64 = 1e-13;

/// Outputs of one assembly (NaN where not written).
struct Assembly {
    band: Vec<f64>,
    rhs: Vec<f64>,
    fluxweight: Vec<f64>,
    status: Status,
}

fn fast(patch: &Patch, kd: usize) -> Assembly {
    let n = patch.n();
    let mut out = Assembly {
        band: vec![f64::NAN; n * (kd + 1)],
        rhs: vec![f64::NAN; n],
        fluxweight: vec![f64::NAN; n],
        status: Status::Ok,
    };
    out.status = assemble_normal_equations(
        &patch.view(),
        &patch.ccd(),
        &patch.shape,
        kd,
        &mut out.band,
        &mut out.rhs,
        &mut out.fluxweight,
    );
    out
}

fn per_unknown(patch: &Patch, kd: usize) -> Assembly {
    let n = patch.n();
    let mut out = Assembly {
        band: vec![f64::NAN; n * (kd + 1)],
        rhs: vec![f64::NAN; n],
        fluxweight: vec![f64::NAN; n],
        status: Status::Ok,
    };
    for q1 in 0..n {
        let status = assemble_unknown(
            &patch.view(),
            &patch.ccd(),
            &patch.shape,
            kd,
            q1,
            Shared::new(&mut out.band),
            Shared::new(&mut out.rhs),
            Shared::new(&mut out.fluxweight),
        );
        if status != Status::Ok {
            out.status = status;
            break;
        }
    }
    out
}

/// Dense `(M (n, n), y, fw)` from the explicit A over the kept rows and all CCD columns.
fn dense(patch: &Patch) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, ns, ny, nx, ncol) = (
        patch.n(),
        patch.shape.nspecpad,
        patch.ny,
        patch.nx,
        patch.ncol,
    );
    let (row_min, row_max) = (patch.shape.row_min as usize, patch.shape.row_max as usize);
    let npix = (row_max - row_min) * ncol;
    let mut a = vec![0.0; npix * n];
    for q in 0..n {
        let (s, k) = (q % ns, q / ns);
        let c = patch.corners[s * patch.fiber_stride + k];
        let st = &patch.stamps[(s * patch.fiber_stride + k) * ny * nx..][..ny * nx];
        for r in 0..ny {
            let row = c.yc as usize + r;
            if row < row_min || row >= row_max {
                continue;
            }
            for i in 0..nx {
                a[((row - row_min) * ncol + c.xc as usize + i) * n + q] = st[r * nx + i];
            }
        }
    }
    let (mut m, mut y, mut fw) = (vec![0.0; n * n], vec![0.0; n], vec![0.0; n]);
    for p in 0..npix {
        let pix = row_min * ncol + p;
        let (w, img) = (patch.weight[pix], patch.image[pix]);
        let ap = &a[p * n..(p + 1) * n];
        for i in 0..n {
            if ap[i] == 0.0 {
                continue;
            }
            y[i] += w * ap[i] * img;
            fw[i] += w * ap[i];
            for j in 0..n {
                m[i * n + j] += w * ap[i] * ap[j];
            }
        }
    }
    (m, y, fw)
}

fn close(a: f64, b: f64, scale: f64, rtol: f64) -> bool {
    (a - b).abs() <= rtol * scale.max(f64::MIN_POSITIVE)
}

/// Checks the fast assembly of `patch` with half-bandwidth `kd` against both references;
/// returns the number of non-zero band entries.
fn check(label: &str, patch: &Patch, kd: usize) -> usize {
    let n = patch.n();
    let got = fast(patch, kd);
    let expected = per_unknown(patch, kd);
    assert_eq!(got.status, Status::Ok, "{label}");
    assert_eq!(expected.status, Status::Ok, "{label}");
    for q in 0..n {
        for (what, g, e) in [
            ("rhs", got.rhs[q], expected.rhs[q]),
            ("fluxweight", got.fluxweight[q], expected.fluxweight[q]),
        ] {
            assert!(close(g, e, e.abs(), RTOL), "{label}: {what} {q} {g} vs {e}");
        }
    }
    let (m, y, fw) = dense(patch);
    let mdiag_max = (0..n).map(|i| m[i * n + i]).fold(0.0, f64::max);
    let mut nonzero = 0;
    for q2 in 0..n {
        for q1 in q2.saturating_sub(kd)..=q2 {
            let slot = q2 * (kd + 1) + (q1 + kd - q2);
            let (g, e) = (got.band[slot], expected.band[slot]);
            assert!(g.is_finite(), "{label}: M[{q2}][{q1}] not written");
            // Exact zeros where the stamps share no kept pixel, as assemble_unknown.
            assert_eq!(g == 0.0, e == 0.0, "{label}: M[{q2}][{q1}] {g} vs {e}");
            assert!(
                close(g, e, e.abs(), RTOL),
                "{label}: M[{q2}][{q1}] {g} vs assemble_unknown {e}"
            );
            // The dense reference sums every pixel in another order again.
            assert!(
                close(g, m[q2 * n + q1], mdiag_max, 1e-13),
                "{label}: M[{q2}][{q1}] {g} vs dense {}",
                m[q2 * n + q1]
            );
            nonzero += usize::from(g != 0.0);
        }
        // Every coupling of the dense matrix lies inside the band.
        for q1 in 0..q2.saturating_sub(kd) {
            assert_eq!(
                m[q2 * n + q1],
                0.0,
                "{label}: M[{q2}][{q1}] outside kd {kd}"
            );
        }
    }
    let ymax = y.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let fwmax = fw.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    for q in 0..n {
        assert!(close(got.rhs[q], y[q], ymax, 1e-13), "{label}: rhs {q}");
        assert!(
            close(got.fluxweight[q], fw[q], fwmax, 1e-13),
            "{label}: fw {q}"
        );
    }
    nonzero
}

#[test]
fn matches_dense_and_per_unknown_assembly_on_desi_like_patches() {
    for (seed, geometry) in [
        (1, Geometry::desi(7, 74)),
        (2, Geometry::desi(6, 74)),
        (
            3,
            Geometry {
                cut: 0,
                ..Geometry::desi(7, 30)
            },
        ),
        (
            4,
            Geometry {
                cut: 8,
                spacing: 6.8,
                rate: 1.1,
                ..Geometry::desi(6, 40)
            },
        ),
        // Stamp widths with 0, 1, 2 and 3 columns past the last 4-wide chunk, and one of
        // fewer than 4 columns.
        (
            5,
            Geometry {
                nx: 16,
                ..Geometry::desi(5, 20)
            },
        ),
        (
            6,
            Geometry {
                nx: 13,
                ny: 9,
                ..Geometry::desi(5, 20)
            },
        ),
        (
            7,
            Geometry {
                nx: 19,
                ny: 7,
                ..Geometry::desi(4, 20)
            },
        ),
        (
            8,
            Geometry {
                nx: 3,
                ny: 5,
                spacing: 2.5,
                ..Geometry::desi(4, 20)
            },
        ),
    ] {
        let patch = build_patch(geometry, seed);
        let n = patch.n();
        let bandwidth = patch_bandwidth(&patch.view(), &patch.shape);
        for kd in [bandwidth, bandwidth + 9] {
            let label = format!("{geometry:?} seed {seed} kd {kd}");
            let nonzero = check(&label, &patch, kd);
            assert!(nonzero > n * 2, "{label}: only {nonzero} non-zero entries");
        }
    }
}

#[test]
fn wide_stamps_fall_back_to_the_per_unknown_assembly() {
    // (2 nx - 1) ny nx above the stack buffer: assemble_unknown per unknown, bitwise.
    let geometry = Geometry {
        nx: 41,
        ny: 19,
        spacing: 12.0,
        ..Geometry::desi(3, 12)
    };
    assert!((2 * geometry.nx - 1) * geometry.ny * geometry.nx > MAX_SHIFTED_STAMPS);
    let patch = build_patch(geometry, 9);
    let kd = patch_bandwidth(&patch.view(), &patch.shape);
    let got = fast(&patch, kd);
    let expected = per_unknown(&patch, kd);
    assert_eq!(got.status, Status::Ok);
    for (g, e) in got.band.iter().zip(&expected.band) {
        assert_eq!(g.to_bits(), e.to_bits());
    }
    check("wide", &patch, kd);
}

#[test]
fn bad_shapes_are_refused() {
    let geometry = Geometry::desi(7, 24);
    let base = build_patch(geometry, 7);
    let n = base.n();
    let bandwidth = patch_bandwidth(&base.view(), &base.shape);
    // kd too small for an overlapping pair.
    assert_eq!(fast(&base, bandwidth - 1).status, Status::BadShape);
    assert_eq!(per_unknown(&base, bandwidth - 1).status, Status::BadShape);
    // A stamp leaving the CCD on the left.
    let mut patch = build_patch(geometry, 7);
    patch.corners[3 * patch.fiber_stride + 5].xc = -1;
    assert_eq!(fast(&patch, bandwidth + 20).status, Status::BadShape);
    // Kept rows beyond the CCD.
    let mut patch = build_patch(geometry, 7);
    patch.shape.row_max = patch.nrow as i32 + 1;
    assert_eq!(fast(&patch, bandwidth).status, Status::BadShape);
    // Short outputs.
    let mut band = vec![0.0; n * (bandwidth + 1) - 1];
    let (mut rhs, mut fw) = (vec![0.0; n], vec![0.0; n]);
    let status = assemble_normal_equations(
        &base.view(),
        &base.ccd(),
        &base.shape,
        bandwidth,
        &mut band,
        &mut rhs,
        &mut fw,
    );
    assert_eq!(status, Status::BadShape);
}
