//! PSF evaluation on the real r0 PSF against the public Python reference values of
//! tests/data/reference-51060.json (docs/algorithm.md §12; acceptance tests A2, A3 of §10.2).

mod common;

use common::psf;
use desi_device::psf::spot::psf_point;
use serde_json::Value;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/reference-51060.json"
);

#[test]
fn spots_match_gpu_specter_reference() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(REFERENCE).unwrap()).unwrap();
    let psf = psf();
    let flat = psf.flatten();
    let tables = psf.tables(&flat);
    let spots = reference["spots"].as_array().unwrap();
    assert_eq!(spots.len(), 5);
    let ngh = (psf.ghdegx + 1) * (psf.ghdegy + 1);
    for spot in spots {
        let fiber = spot["fiber"].as_u64().unwrap() as usize;
        let wave = spot["wavelength"].as_f64().unwrap();
        let mut gh = vec![0.0; ngh];
        let point = psf_point(&tables, fiber, wave, &mut gh).unwrap();
        // Legendre series of degree <= 6 with O(1) terms: 1e-12 relative (numpy legval vs ours).
        let close = |got: f64, want: f64, what: &str| {
            let rel = (got - want).abs() / want.abs();
            assert!(
                rel < 1e-12,
                "fiber {fiber} {wave} A {what}: {got} vs {want} (rel {rel:e})"
            );
        };
        close(point.x, spot["X"].as_f64().unwrap(), "X");
        close(point.y, spot["Y"].as_f64().unwrap(), "Y");
        close(point.sigma_x, spot["GHSIGX"].as_f64().unwrap(), "GHSIGX");
        close(point.sigma_y, spot["GHSIGY"].as_f64().unwrap(), "GHSIGY");
        close(gh[0], spot["GH-0-0"].as_f64().unwrap(), "GH-0-0");
        close(
            gh[psf.ghdegx + 2],
            spot["GH-1-1"].as_f64().unwrap(),
            "GH-1-1",
        );

        let table = psf.spots(fiber, 1, &[wave]).unwrap();
        let corner = table.corner(0, 0);
        assert_eq!(
            corner.xc as i64,
            spot["xc"].as_i64().unwrap(),
            "fiber {fiber} {wave} A xc"
        );
        assert_eq!(
            corner.yc as i64,
            spot["yc"].as_i64().unwrap(),
            "fiber {fiber} {wave} A yc"
        );
        let stamp = table.stamp(0, 0);
        let rows = spot["stamp"].as_array().unwrap();
        assert_eq!(rows.len(), table.ny);
        let peak = stamp.iter().cloned().fold(0.0, f64::max);
        let sum: f64 = stamp.iter().sum();
        assert!((sum - 1.0).abs() < 1e-14, "stamp sum {sum}");
        for (r, row) in rows.iter().enumerate() {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), table.nx);
            for (i, want) in row.iter().enumerate() {
                let want = want.as_f64().unwrap();
                let got = stamp[r * table.nx + i];
                // docs/algorithm.md §10.2 A3: 1e-12 relative to the stamp peak (erf/exp
                // differences are ~1e-16).
                assert!(
                    (got - want).abs() < 1e-12 * peak,
                    "fiber {fiber} {wave} A pixel ({r},{i}): {got:e} vs {want:e}"
                );
            }
        }
    }
}
