//! `spot_team` (the cooperative GPU spot evaluation) against `spot_at` (the CPU path): the same
//! stamps, corners and errors bit for bit, for several team sizes (the serial emulation runs
//! the GPU algorithm's phases and indexing exactly).

use desi_device::psf::spot::{spot_at, PsfTables, SpotGeometry, StampCorner};
use desi_device::psf::spot_team::{spot_team, spot_team_scratch_len};
use desi_device::team::{SerialTeam, Shared};
use desi_device::Status;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// DESI r-camera geometry: 17×11 stamps, 7×7 Gauss-Hermite coefficients.
const DESI: SpotGeometry = SpotGeometry {
    hsizex: 8,
    hsizey: 5,
    ghdegx: 6,
    ghdegy: 6,
};

/// Team sizes: one lane, fewer lanes than any loop, the sub-warp teams of `spots_team8` and
/// `spots_team16`, a warp, the GPU default, more lanes than any loop.
const LANES: [usize; 7] = [1, 7, 8, 16, 32, 64, 256];

/// A DESI-like PSF of `nspec` fibers: traces 7.4 px apart, 4,000 rows over the domain, σ
/// about 1 px, GH-0-0 = 1 and small higher coefficients varying with wavelength.
struct Psf {
    geometry: SpotGeometry,
    nspec: usize,
    xtrace: Vec<f64>,
    ytrace: Vec<f64>,
    params: Vec<f64>,
}

impl Psf {
    const NTRACE: usize = 7;
    const NCOEFF: usize = 4;

    fn new(geometry: SpotGeometry, nspec: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut xtrace = Vec::new();
        let mut ytrace = Vec::new();
        for s in 0..nspec {
            let mut x = vec![0.0; Self::NTRACE];
            let mut y = vec![0.0; Self::NTRACE];
            x[0] = 100.0 + 7.4 * s as f64;
            x[1] = rng.random_range(-3.0..3.0);
            x[2] = rng.random_range(-1.0..1.0);
            y[0] = 2000.0;
            y[1] = 1950.0;
            y[2] = rng.random_range(-5.0..5.0);
            xtrace.extend(x);
            ytrace.extend(y);
        }
        let ngh = geometry.ngh();
        let mut params = Vec::new();
        for p in 0..2 + ngh {
            for _ in 0..nspec {
                let mut row = vec![0.0; Self::NCOEFF];
                row[0] = match p {
                    0 | 1 => rng.random_range(0.9..1.2),
                    2 => 1.0,
                    _ => rng.random_range(-0.05..0.05),
                };
                for c in row.iter_mut().skip(1) {
                    *c = rng.random_range(-0.02..0.02);
                }
                params.extend(row);
            }
        }
        Psf {
            geometry,
            nspec,
            xtrace,
            ytrace,
            params,
        }
    }

    fn tables(&self) -> PsfTables<'_> {
        PsfTables {
            geometry: self.geometry,
            nspec: self.nspec,
            xtrace: &self.xtrace,
            ytrace: &self.ytrace,
            ntrace: Self::NTRACE,
            xtrace_domain: (5500.0, 7800.0),
            ytrace_domain: (5500.0, 7800.0),
            params: &self.params,
            nparam_coeff: Self::NCOEFF,
            param_domain: (5500.0, 7800.0),
        }
    }
}

/// `spot_team` on a serial team of `lanes` lanes: the corner or error, and the stamp.
fn team_spot(
    tables: &PsfTables,
    lanes: usize,
    ispec: usize,
    wave: f64,
) -> (Result<StampCorner, Status>, Vec<f64>) {
    let mut scratch = vec![f64::NAN; spot_team_scratch_len(&tables.geometry)];
    let mut stamp = vec![f64::NAN; tables.geometry.stamp_len()];
    let result = spot_team(
        &SerialTeam { lanes },
        tables,
        ispec,
        wave,
        Shared::new(&mut scratch),
        Shared::new(&mut stamp),
    );
    (result, stamp)
}

/// `spot_at`: the corner or error, and the stamp.
fn reference_spot(
    tables: &PsfTables,
    ispec: usize,
    wave: f64,
) -> (Result<StampCorner, Status>, Vec<f64>) {
    let mut stamp = vec![f64::NAN; tables.geometry.stamp_len()];
    let result = spot_at(tables, ispec, wave, &mut stamp);
    (result, stamp)
}

/// Asserts the same result and, when it is a stamp, the same bits.
fn assert_same(tables: &PsfTables, ispec: usize, wave: f64, lanes: usize) -> bool {
    let (expected, reference) = reference_spot(tables, ispec, wave);
    let (actual, stamp) = team_spot(tables, lanes, ispec, wave);
    assert_eq!(actual, expected, "fiber {ispec} at {wave} A, {lanes} lanes");
    if expected.is_ok() {
        for (p, (a, b)) in stamp.iter().zip(&reference).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "fiber {ispec} at {wave} A, {lanes} lanes, pixel {p}: {a} vs {b}"
            );
        }
    }
    expected.is_ok()
}

#[test]
fn team_spots_are_spot_at_bit_for_bit() {
    let psf = Psf::new(DESI, 4, 1);
    let tables = psf.tables();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut valid = 0;
    for lanes in LANES {
        for ispec in 0..psf.nspec {
            for _ in 0..20 {
                let wave = rng.random_range(5400.0..7900.0);
                valid += usize::from(assert_same(&tables, ispec, wave, lanes));
            }
        }
    }
    assert!(valid >= 380, "only {valid} of 400 spots were valid");
}

#[test]
fn other_geometries_match_too() {
    for geometry in [
        SpotGeometry {
            hsizex: 2,
            hsizey: 1,
            ghdegx: 1,
            ghdegy: 0,
        },
        SpotGeometry {
            hsizex: 12,
            hsizey: 12,
            ghdegx: 8,
            ghdegy: 8,
        },
        SpotGeometry {
            hsizex: 3,
            hsizey: 7,
            ghdegx: 0,
            ghdegy: 4,
        },
    ] {
        let psf = Psf::new(geometry, 2, 3);
        let tables = psf.tables();
        for lanes in LANES {
            for (ispec, wave) in [(0, 6000.0), (1, 7000.5), (1, 5600.25)] {
                assert!(assert_same(&tables, ispec, wave, lanes), "{geometry:?}");
            }
        }
    }
}

#[test]
fn errors_are_those_of_spot_at() {
    let psf = Psf::new(DESI, 2, 4);
    // A non-finite GH coefficient, a negative sigma, a corner beyond i32.
    let mut nan_gh = Psf::new(DESI, 2, 4);
    nan_gh.params[(5 * 2 + 1) * Psf::NCOEFF] = f64::NAN;
    let mut negative_sigma = Psf::new(DESI, 2, 4);
    negative_sigma.params[0] = -1.0;
    let mut far = Psf::new(DESI, 2, 4);
    far.xtrace[0] = 1e12;
    for (case, expected) in [
        (&nan_gh, Status::NonFinite),
        (&negative_sigma, Status::NonFinite),
        (&far, Status::TooLarge),
    ] {
        let tables = case.tables();
        for lanes in LANES {
            let ispec = if std::ptr::eq(case, &nan_gh) { 1 } else { 0 };
            assert_eq!(reference_spot(&tables, ispec, 6500.0).0, Err(expected));
            assert_same(&tables, ispec, 6500.0, lanes);
        }
    }
    // A negative stamp everywhere (clipped to 0, total 0): NonFinite on both.
    let mut negative = Psf::new(DESI, 2, 4);
    let gh_start = 2 * 2 * Psf::NCOEFF;
    negative.params[gh_start..].fill(0.0);
    for s in 0..2 {
        negative.params[(2 * 2 + s) * Psf::NCOEFF] = -1.0;
    }
    let tables = negative.tables();
    assert_eq!(reference_spot(&tables, 0, 6500.0).0, Err(Status::NonFinite));
    for lanes in LANES {
        assert_same(&tables, 0, 6500.0, lanes);
    }
    // Shapes: fiber out of range, a short scratch, a wrong stamp length.
    let tables = psf.tables();
    assert_eq!(team_spot(&tables, 64, 2, 6500.0).0, Err(Status::BadShape));
    let mut short = vec![0.0; spot_team_scratch_len(&DESI) - 1];
    let mut stamp = vec![0.0; DESI.stamp_len()];
    let team = SerialTeam { lanes: 64 };
    let status = spot_team(
        &team,
        &tables,
        0,
        6500.0,
        Shared::new(&mut short),
        Shared::new(&mut stamp),
    );
    assert_eq!(status, Err(Status::BadShape));
    let mut scratch = vec![0.0; spot_team_scratch_len(&DESI)];
    let mut long_stamp = vec![0.0; DESI.stamp_len() + 1];
    let status = spot_team(
        &team,
        &tables,
        0,
        6500.0,
        Shared::new(&mut scratch),
        Shared::new(&mut long_stamp),
    );
    assert_eq!(status, Err(Status::BadShape));
}
