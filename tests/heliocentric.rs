//! The barycentric correction (host/heliocentric.rs) against astropy's
//! `SkyCoord.radial_velocity_correction` and desispec 0.70.0's
//! `barycentric_velocity_multiplicative_corr`, computed by tests/heliocentric_reference.py on a
//! grid of 60 sky positions × 40 dates (2019–2030) from Kitt Peak.
//!
//! Needs `python3` with astropy and desispec (scripts/setup.sh installs both into the
//! PYTHONPATH it prints; scripts/test.sh exports it). Without them the test fails, unless
//! DESI_SKIP_DESISPEC=1 outside CI (then it is skipped with a notice; `common::may_skip_desispec`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use desi_extract::heliocentric::{velocity_correction, CorrectionKind, Site, SPEED_OF_LIGHT_M_S};
use serde::Deserialize;

/// The agreement required, m/s (the correction is ~30 km/s; 1 m/s is 3e-9 in wavelength).
const TOLERANCE_M_S: f64 = 1.0;

#[derive(Deserialize)]
struct Desispec {
    version: String,
    factor: Vec<f64>,
}

#[derive(Deserialize)]
struct Reference {
    astropy_version: String,
    barycentric_m_s: Vec<f64>,
    heliocentric_m_s: Vec<f64>,
    desispec: Option<Desispec>,
    notes: Vec<String>,
}

/// Whether `python3` can import `module` (PYTHONPATH as the environment has it).
fn importable(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// 60 directions spread evenly over the sphere (a Fibonacci lattice), (RA, Dec) in degrees.
fn sky_grid() -> Vec<(f64, f64)> {
    let n = 60;
    let golden_angle = 180.0 * (3.0 - 5f64.sqrt());
    (0..n)
        .map(|i| {
            let z = 1.0 - (2.0 * i as f64 + 1.0) / n as f64;
            let dec = z.asin().to_degrees();
            let ra = (i as f64 * golden_angle).rem_euclid(360.0);
            (ra, dec)
        })
        .collect()
}

/// 40 dates from 2019-01-01 (MJD 58484) to 2030-12-31 (MJD 62866), at varied times of the
/// night at Kitt Peak (UTC 02h to 13h), as MJD (UTC).
fn dates() -> Vec<f64> {
    let (first, last, n) = (58_484.0, 62_866.0, 40);
    (0..n)
        .map(|k| {
            let day = (first + (last - first) * k as f64 / (n - 1) as f64).floor();
            day + 0.09 + 0.46 * ((k * 7) % 11) as f64 / 10.0
        })
        .collect()
}

/// Runs tests/heliocentric_reference.py on `points` ([ra, dec, mjd]) from `site`.
fn reference(points: &[[f64; 3]], site: &Site) -> Reference {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/heliocentric_reference.py");
    let request = serde_json::json!({
        "site": [site.lon_deg, site.lat_deg, site.height_m],
        "points": points,
    });
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write the request to python3");
    let out = child.wait_with_output().expect("wait for python3");
    assert!(
        out.status.success(),
        "{} failed ({}):\n--- stderr:\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no valid answer ({e}):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The largest |ours − theirs| and where it is.
fn max_diff(ours: &[f64], theirs: &[f64], points: &[[f64; 3]]) -> (f64, [f64; 3]) {
    assert_eq!(ours.len(), theirs.len(), "one value per point");
    ours.iter()
        .zip(theirs)
        .zip(points)
        .map(|((a, b), p)| ((a - b).abs(), *p))
        .fold((0.0, [f64::NAN; 3]), |m, d| if d.0 > m.0 { d } else { m })
}

#[test]
fn matches_astropy_and_desispec_over_sky_and_dates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("scripts/setup.sh").is_file(),
        "scripts/setup.sh (which installs astropy and desispec) is missing"
    );
    if !importable("astropy") {
        let hint = "astropy is not importable by python3: run scripts/setup.sh and export the PYTHONPATH it prints (scripts/test.sh does), or set DESI_SKIP_DESISPEC=1 to skip this test outside CI";
        assert!(common::may_skip_desispec(), "{hint}");
        eprintln!("NOTICE: skipping the comparison with astropy: {hint}");
        return;
    }
    let site = Site::KPNO_DESISPEC;
    let points: Vec<[f64; 3]> = dates()
        .into_iter()
        .flat_map(|mjd| sky_grid().into_iter().map(move |(ra, dec)| [ra, dec, mjd]))
        .collect();
    assert_eq!(points.len(), 2400);
    let reference = reference(&points, &site);
    for note in &reference.notes {
        eprintln!("reference: {note}");
    }

    let ours = |kind| -> Vec<f64> {
        points
            .iter()
            .map(|&[ra, dec, mjd]| {
                velocity_correction(ra, dec, mjd, &site, kind)
                    .unwrap_or_else(|e| panic!("({ra}, {dec}, {mjd}): {e}"))
                    .velocity_m_s
            })
            .collect()
    };
    let bary = ours(CorrectionKind::Barycentric);
    let helio = ours(CorrectionKind::Heliocentric);
    let (db, at_b) = max_diff(&bary, &reference.barycentric_m_s, &points);
    let (dh, at_h) = max_diff(&helio, &reference.heliocentric_m_s, &points);
    eprintln!(
        "astropy {}: max |dv| barycentric {db:.2e} m/s at {at_b:?}, heliocentric {dh:.2e} m/s at {at_h:?}",
        reference.astropy_version
    );
    assert!(
        db <= TOLERANCE_M_S,
        "barycentric: |ours - astropy| = {db} m/s at (ra, dec, mjd) = {at_b:?}"
    );
    assert!(
        dh <= TOLERANCE_M_S,
        "heliocentric: |ours - astropy| = {dh} m/s at (ra, dec, mjd) = {at_h:?}"
    );
    // The grid spans the whole range of the correction (±30 km/s).
    let span = bary.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(span > 25_000.0, "largest correction {span} m/s");

    match &reference.desispec {
        Some(desi) => {
            // desispec's factor 1 + v/c, as the velocity it implies.
            let factors: Vec<f64> = points
                .iter()
                .map(|&[ra, dec, mjd]| {
                    velocity_correction(ra, dec, mjd, &site, CorrectionKind::Barycentric)
                        .expect("valid point")
                        .factor
                })
                .collect();
            let as_velocity = |f: &[f64]| -> Vec<f64> {
                f.iter().map(|f| (f - 1.0) * SPEED_OF_LIGHT_M_S).collect()
            };
            let (dd, at_d) = max_diff(&as_velocity(&factors), &as_velocity(&desi.factor), &points);
            eprintln!(
                "desispec {}: max |dv| of the factor {dd:.2e} m/s at {at_d:?}",
                desi.version
            );
            assert!(
                dd <= TOLERANCE_M_S,
                "desispec factor: |ours - desispec| = {dd} m/s at (ra, dec, mjd) = {at_d:?}"
            );
        }
        None => {
            let hint = "desispec.heliocentric is not importable by python3: scripts/setup.sh installs desispec==0.70.0 (without dependencies) into its PYTHONPATH (DESI_SKIP_DESISPEC=1 skips this outside CI)";
            assert!(
                common::may_skip_desispec(),
                "{hint} ({:?})",
                reference.notes
            );
            eprintln!("NOTICE: compared with astropy only: {hint}");
        }
    }
}
