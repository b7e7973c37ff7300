//! Barycentric (and heliocentric) radial-velocity correction of an exposure, as desispec
//! applies it to the extraction wavelength grid (docs/algorithm.md §13).
//!
//! desispec's `desi_proc` extracts every SCIENCE and SKY exposure with
//! `--barycentric-correction`. `desispec.scripts.extract` then reads the sky position and the
//! time from the preproc header ([`ExposurePointing`]), calls
//! `desispec.heliocentric.barycentric_velocity_multiplicative_corr(ra, dec, mjd)`, which is
//! `1 + v/c` with `v = SkyCoord(ra, dec, frame='icrs').radial_velocity_correction(
//! kind='barycentric', obstime=Time(mjd, format='mjd'), location=kpno)` (astropy, UTC, its
//! builtin ERFA ephemeris), and records the factor as header keyword HELIOCOR. The wavelengths
//! handed to the extraction are the nominal grid divided by the factor; the frame's WAVELENGTH
//! HDU is the nominal grid (see [`VelocityCorrection::factor`]).
//!
//! [`velocity_correction`] computes the same quantity as astropy, step by step:
//!
//! 1. **Time scales.** UTC → TAI with the leap-second table ([`tai_minus_utc_s`]), TT = TAI +
//!    32.184 s, TDB = TT + (TDB − TT) from the Fairhead & Bretagnon (1990) series as SOFA's
//!    `dtdb` evaluates it for a geocentric observer (astropy's choice for a `Time` without a
//!    location). UT1 is taken equal to UTC (|UT1 − UTC| < 0.9 s: < 0.03 m/s here).
//! 2. **Earth.** Barycentric (and heliocentric) position and velocity of the geocentre at TDB
//!    from SOFA's `epv00`: P. T. Wallace's Poisson series fitted to JPL DE405 (a simplified
//!    VSOP2000, Moisson & Bretagnon 2001), BCRS axes, velocity errors ≤ 4.9 mm/s over
//!    1900–2100. astropy's builtin ephemeris is this same series (ERFA).
//! 3. **Site.** ITRS position from the WGS84 geodetic coordinates (`gd2gc`), rotated to the
//!    celestial intermediate frame by the Earth rotation angle (IAU 2000, Capitaine et al.
//!    2000) with polar motion neglected (< 1 mm/s), then to the GCRS by the IAU 2006/2000A
//!    precession-nutation (CIO-based matrix `c2i06a`, IERS Conventions 2010). Its velocity is
//!    Ω × r with Ω = 1.00273781191135448 turns per UT1 day about the pole (astropy's
//!    `EarthLocation.get_gcrs_posvel`).
//! 4. **Projection.** Barycentric kind: the redshift of Wright & Eastman (2014, PASP 126, 838)
//!    eq. 28 without the Shapiro delay or the star's motion, as astropy's
//!    `radial_velocity_correction` evaluates it: `zb = γ (1 + β·n) / (1 + Φ/c)`, β the site's
//!    barycentric velocity over c, n the ICRS unit vector of (RA, Dec) (no aberration, no light
//!    deflection), `Φ = −Σ GM/(c d)` the gravitational redshift at the site from the Sun,
//!    Jupiter (`plan94`), the Moon (`moon98`, distances from the geocentre) and the Earth
//!    (distance from its centre); `v = (zb − 1) c`. Heliocentric kind: `v = n · (v_earth,helio +
//!    v_site)`, no relativistic terms (astropy's choice too).
//!
//! The SOFA routines named above come from the pure-Rust port in the `sofars` crate (MIT; the
//! algorithms are SOFA's: this module uses routines and computations derived from software
//! provided by SOFA under licence and is not itself SOFA software).
//!
//! Accuracy: tests/heliocentric.rs compares 60 sky positions × 40 dates in 2019–2030 with
//! astropy 7.2 and with desispec 0.70.0's own function: max |Δv| = 7 mm/s, all of it astropy's
//! UT1 − UTC from its IERS tables (0.6 mm/s with astropy's UT1 set to UTC); it requires 1 m/s.

use crate::io::{card_name, find_keyword, KeywordValue, PreprocImage};
use crate::patch::{GridError, WavelengthGrid};
use sofars::coords::gd2gc;
use sofars::eph::{epv00, moon98, plan94};
use sofars::erst::era00;
use sofars::pnp::c2i06a;
use sofars::ts::dtdb;
use thiserror::Error;

/// Speed of light in vacuum, m/s (exact, SI; astropy's `constants.c`).
pub const SPEED_OF_LIGHT_M_S: f64 = 299_792_458.0;

/// Astronomical unit, m (IAU 2012, exact).
const AU_M: f64 = 149_597_870_700.0;
/// Seconds per day.
const DAY_S: f64 = 86_400.0;
/// Julian Date of MJD 0.
const MJD_ZERO_JD: f64 = 2_400_000.5;
/// TT − TAI, s.
const TT_MINUS_TAI_S: f64 = 32.184;
/// Earth's rotation rate, rad/s: 1.00273781191135448 turns per UT1 day (astropy's
/// `OMEGA_EARTH`, the rate of the IAU 2000 Earth rotation angle; the published digits).
#[allow(clippy::excessive_precision)]
const OMEGA_EARTH_RAD_S: f64 = 1.002_737_811_911_354_48 * std::f64::consts::TAU / DAY_S;
/// Heliocentric gravitational constant, m³/s² (IAU 2015 nominal; astropy's `GM_sun`).
const GM_SUN: f64 = 1.327_124_4e20;
/// Jupiter's, m³/s² (IAU 2015 nominal; astropy's `GM_jup`).
const GM_JUPITER: f64 = 1.266_865_3e17;
/// Geocentric, m³/s² (IAU 2015 nominal; astropy's `GM_earth`).
const GM_EARTH: f64 = 3.986_004e14;
/// The Moon's, m³/s²: G (CODATA 2018) × 7.34767309e22 kg, as astropy's
/// `EarthLocation.gravitational_redshift` takes it.
const GM_MOON: f64 = 6.674_30e-11 * 7.347_673_09e22;
/// `plan94`'s index of Jupiter.
const PLAN94_JUPITER: i32 = 5;
/// `gd2gc`'s identifier of the WGS84 ellipsoid.
const WGS84: i32 = 1;

/// First MJD (UTC) accepted: 1972-01-01, the start of the integer-second leap-second era.
pub const MJD_UTC_MIN: f64 = 41_317.0;
/// MJD (UTC) accepted up to, excluded: 2100-01-01, the end of `epv00`'s range.
pub const MJD_UTC_MAX: f64 = 88_069.0;

/// TAI − UTC (s) from the MJD (UTC, 0h) where each value starts (IERS Bulletin C). The last
/// change is 2017-01-01: the IERS leap-second file that astropy bundles (astropy-iers-data
/// 0.2026.11.16, valid until 2027-06-28) has none after it. Later dates take 37 s, as astropy
/// does past the end of its table.
const LEAP_SECONDS: [(f64, f64); 28] = [
    (41_317.0, 10.0), // 1972-01-01
    (41_499.0, 11.0), // 1972-07-01
    (41_683.0, 12.0), // 1973-01-01
    (42_048.0, 13.0), // 1974-01-01
    (42_413.0, 14.0), // 1975-01-01
    (42_778.0, 15.0), // 1976-01-01
    (43_144.0, 16.0), // 1977-01-01
    (43_509.0, 17.0), // 1978-01-01
    (43_874.0, 18.0), // 1979-01-01
    (44_239.0, 19.0), // 1980-01-01
    (44_786.0, 20.0), // 1981-07-01
    (45_151.0, 21.0), // 1982-07-01
    (45_516.0, 22.0), // 1983-07-01
    (46_247.0, 23.0), // 1985-07-01
    (47_161.0, 24.0), // 1988-01-01
    (47_892.0, 25.0), // 1990-01-01
    (48_257.0, 26.0), // 1991-01-01
    (48_804.0, 27.0), // 1992-07-01
    (49_169.0, 28.0), // 1993-07-01
    (49_534.0, 29.0), // 1994-07-01
    (50_083.0, 30.0), // 1996-01-01
    (50_630.0, 31.0), // 1997-07-01
    (51_179.0, 32.0), // 1999-01-01
    (53_736.0, 33.0), // 2006-01-01
    (54_832.0, 34.0), // 2009-01-01
    (56_109.0, 35.0), // 2012-07-01
    (57_204.0, 36.0), // 2015-07-01
    (57_754.0, 37.0), // 2017-01-01
];

/// What can go wrong computing a correction.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum HeliocentricError {
    /// RA not finite, or Dec not finite or outside [−90°, 90°].
    #[error("sky position RA = {ra_deg} deg, Dec = {dec_deg} deg: RA must be finite and Dec finite within [-90, 90] deg")]
    BadDirection {
        /// Right ascension given, degrees.
        ra_deg: f64,
        /// Declination given, degrees.
        dec_deg: f64,
    },
    /// The date is not finite or outside [[`MJD_UTC_MIN`], [`MJD_UTC_MAX`]).
    #[error("MJD {mjd_utc} (UTC) is outside the supported range [{MJD_UTC_MIN}, {MJD_UTC_MAX}) (1972-01-01 to 2100-01-01)")]
    DateOutOfRange {
        /// The MJD given (UTC).
        mjd_utc: f64,
    },
    /// Site coordinates not finite, or latitude outside [−90°, 90°].
    #[error("site longitude {lon_deg} deg, latitude {lat_deg} deg, height {height_m} m: must be finite, latitude within [-90, 90] deg")]
    BadSite {
        /// East longitude, degrees.
        lon_deg: f64,
        /// Geodetic latitude, degrees.
        lat_deg: f64,
        /// Height above the WGS84 ellipsoid, m.
        height_m: f64,
    },
    /// A SOFA routine refused its input (should not happen within the supported range).
    #[error("{routine} failed with status {status} at MJD {mjd_utc} (UTC)")]
    Ephemeris {
        /// The routine (`epv00`, `plan94`, `gd2gc`).
        routine: &'static str,
        /// Its status code.
        status: i32,
        /// The MJD (UTC) of the computation.
        mjd_utc: f64,
    },
    /// None of the header keywords that give a quantity is present.
    #[error("no {quantity} in the header (looked for {})", keywords.join(", "))]
    MissingKeyword {
        /// What was looked for ("RA", "Dec", "MJD").
        quantity: &'static str,
        /// The keywords tried, in desispec's order of preference.
        keywords: &'static [&'static str],
    },
    /// A header keyword is present but has no numeric value.
    #[error("header keyword {keyword} has no numeric value ({value})")]
    BadKeyword {
        /// The keyword.
        keyword: &'static str,
        /// What its card holds, as far as it parses.
        value: String,
    },
    /// Neither the image header nor the fibermap header has RA or TARGTRA.
    #[error(
        "the barycentric correction needs RA or TARGTRA in the image header or the fibermap header"
    )]
    NoPointing,
}

/// An observatory: WGS84 geodetic coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Site {
    /// East longitude, degrees.
    pub lon_deg: f64,
    /// Geodetic latitude (WGS84), degrees.
    pub lat_deg: f64,
    /// Height above the WGS84 ellipsoid, m.
    pub height_m: f64,
}

impl Site {
    /// Kitt Peak as desispec 0.70.0 defines it (`desispec.heliocentric.kpno`:
    /// `EarthLocation.from_geodetic(lat=31.96403, lon=-111.59989, height=2097 m)`, the Mayall
    /// telescope). The site of desispec's correction.
    pub const KPNO_DESISPEC: Site = Site {
        lon_deg: -111.59989,
        lat_deg: 31.96403,
        height_m: 2097.0,
    };

    /// Kitt Peak as astropy's site registry gives it (`EarthLocation.of_site('kpno')`, from the
    /// IRAF observatory database: 248.4° E, 31.96333…° N, 2120 m). About 100 m from
    /// [`Site::KPNO_DESISPEC`]; the corrections differ by less than 0.01 m/s.
    pub const KPNO_ASTROPY: Site = Site {
        lon_deg: 248.4,
        lat_deg: 31.963_333_333_333_33,
        height_m: 2120.0,
    };

    /// ITRS (geocentric, Earth-fixed) position of the site, m.
    ///
    /// # Errors
    /// [`HeliocentricError::BadSite`] for non-finite coordinates or a latitude beyond ±90°.
    pub fn itrs_m(&self) -> Result<[f64; 3], HeliocentricError> {
        let bad = HeliocentricError::BadSite {
            lon_deg: self.lon_deg,
            lat_deg: self.lat_deg,
            height_m: self.height_m,
        };
        if !(self.lon_deg.is_finite()
            && self.height_m.is_finite()
            && self.lat_deg.is_finite()
            && self.lat_deg.abs() <= 90.0)
        {
            return Err(bad);
        }
        gd2gc(
            WGS84,
            self.lon_deg.to_radians(),
            self.lat_deg.to_radians(),
            self.height_m,
        )
        .map_err(|_| bad)
    }
}

/// Which rest frame the correction goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorrectionKind {
    /// The solar-system barycentre, with astropy's relativistic formula (what desispec's
    /// extraction applies).
    Barycentric,
    /// The Sun's centre, first order in v/c (desispec's `heliocentric_velocity_corr_kms`).
    Heliocentric,
}

/// A radial-velocity correction and the wavelength factor desispec derives from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VelocityCorrection {
    /// The correction, m/s, with astropy's sign: added to a measured radial velocity it gives
    /// the velocity in the chosen rest frame. Positive when the observer moves towards the
    /// source.
    pub velocity_m_s: f64,
    /// `1 + velocity_m_s / c` (dimensionless): desispec's `*_multiplicative_corr`, written as
    /// header keyword HELIOCOR. Wavelengths measured at the telescope times this factor are
    /// wavelengths in the chosen rest frame. So desispec extracts on the grid
    /// `nominal / factor` (observed wavelengths) and writes the nominal grid as the frame's
    /// WAVELENGTH (rest-frame wavelengths of the same bins).
    pub factor: f64,
}

/// Time scales of one instant, as MJDs.
#[derive(Clone, Copy, Debug)]
struct Epoch {
    utc: f64,
    tt: f64,
    tdb: f64,
}

/// TAI − UTC in seconds at `mjd_utc` (integer leap seconds, 1972 onwards; the value changes at
/// 0h UTC of the date in the table). Dates after the last entry take its value (37 s).
///
/// # Errors
/// [`HeliocentricError::DateOutOfRange`] outside [[`MJD_UTC_MIN`], [`MJD_UTC_MAX`]).
pub fn tai_minus_utc_s(mjd_utc: f64) -> Result<f64, HeliocentricError> {
    if !(mjd_utc.is_finite() && (MJD_UTC_MIN..MJD_UTC_MAX).contains(&mjd_utc)) {
        return Err(HeliocentricError::DateOutOfRange { mjd_utc });
    }
    let day = mjd_utc.floor();
    Ok(LEAP_SECONDS
        .iter()
        .rev()
        .find(|(start, _)| *start <= day)
        .map_or(LEAP_SECONDS[0].1, |&(_, dat)| dat))
}

fn epoch(mjd_utc: f64) -> Result<Epoch, HeliocentricError> {
    let tai_utc = tai_minus_utc_s(mjd_utc)?;
    let tt = mjd_utc + (tai_utc + TT_MINUS_TAI_S) / DAY_S;
    // TDB − TT for a geocentric observer; the UT argument is the fraction of the UTC day.
    let ut = mjd_utc - mjd_utc.floor();
    let tdb = tt + dtdb(MJD_ZERO_JD, tt, ut, 0.0, 0.0, 0.0) / DAY_S;
    Ok(Epoch {
        utc: mjd_utc,
        tt,
        tdb,
    })
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn scale(s: f64, a: [f64; 3]) -> [f64; 3] {
    [s * a[0], s * a[1], s * a[2]]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// `mᵀ v`.
fn transpose_times(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [
        m[0][0] * v[0] + m[1][0] * v[1] + m[2][0] * v[2],
        m[0][1] * v[0] + m[1][1] * v[1] + m[2][1] * v[2],
        m[0][2] * v[0] + m[1][2] * v[1] + m[2][2] * v[2],
    ]
}

/// GCRS velocity (m/s) of a site (ITRS position `itrs`, m) at `epoch`: ITRS → CIRS by the
/// Earth rotation angle (UT1 = UTC, no polar motion), velocity Ω × r about the celestial
/// intermediate pole, CIRS → GCRS by the transposed IAU 2006/2000A celestial-to-intermediate
/// matrix.
fn site_gcrs_velocity(itrs: [f64; 3], epoch: &Epoch) -> [f64; 3] {
    let era = era00(MJD_ZERO_JD, epoch.utc);
    let (s, c) = era.sin_cos();
    // CIRS = R3(−ERA) · ITRS.
    let cirs = [
        c * itrs[0] - s * itrs[1],
        s * itrs[0] + c * itrs[1],
        itrs[2],
    ];
    let cirs_vel = scale(OMEGA_EARTH_RAD_S, [-cirs[1], cirs[0], 0.0]);
    let gcrs_to_cirs = c2i06a(MJD_ZERO_JD, epoch.tt);
    transpose_times(&gcrs_to_cirs, cirs_vel)
}

/// ICRS unit vector towards (RA, Dec).
fn direction(ra_deg: f64, dec_deg: f64) -> Result<[f64; 3], HeliocentricError> {
    if !(ra_deg.is_finite() && dec_deg.is_finite() && dec_deg.abs() <= 90.0) {
        return Err(HeliocentricError::BadDirection { ra_deg, dec_deg });
    }
    let (sa, ca) = ra_deg.to_radians().sin_cos();
    let (sd, cd) = dec_deg.to_radians().sin_cos();
    Ok([cd * ca, cd * sa, sd])
}

/// The radial-velocity correction towards ICRS (`ra_deg`, `dec_deg`) for an observer at
/// `site` at `mjd_utc`, as astropy's `SkyCoord.radial_velocity_correction(kind, obstime=
/// Time(mjd_utc, format='mjd', scale='utc'), location=site)` computes it (module docs).
///
/// `ra_deg`, `dec_deg`: ICRS right ascension and declination in degrees (a direction: no
/// distance, no proper motion). `mjd_utc`: Modified Julian Date in UTC, e.g. desispec's
/// `MJD-OBS + EXPTIME/2` ([`ExposurePointing::mjd_mid_utc`]). Returns the velocity in m/s and
/// the factor `1 + v/c`.
///
/// # Errors
/// [`HeliocentricError::BadDirection`], [`HeliocentricError::DateOutOfRange`] (outside
/// 1972-01-01 .. 2100-01-01) or [`HeliocentricError::BadSite`] for invalid inputs.
pub fn velocity_correction(
    ra_deg: f64,
    dec_deg: f64,
    mjd_utc: f64,
    site: &Site,
    kind: CorrectionKind,
) -> Result<VelocityCorrection, HeliocentricError> {
    let n = direction(ra_deg, dec_deg)?;
    let epoch = epoch(mjd_utc)?;
    let itrs = site.itrs_m()?;
    let sofa_err = |routine, status| HeliocentricError::Ephemeris {
        routine,
        status,
        mjd_utc,
    };
    let (earth_helio, earth_bary) = epv00(MJD_ZERO_JD, epoch.tdb).ok_or(sofa_err("epv00", 1))?;
    let site_vel = site_gcrs_velocity(itrs, &epoch);
    let au_per_day = AU_M / DAY_S;
    let velocity_m_s = match kind {
        CorrectionKind::Heliocentric => dot(n, add(scale(au_per_day, earth_helio[1]), site_vel)),
        CorrectionKind::Barycentric => {
            let beta = scale(
                1.0 / SPEED_OF_LIGHT_M_S,
                add(scale(au_per_day, earth_bary[1]), site_vel),
            );
            let gamma = 1.0 / (1.0 - dot(beta, beta)).sqrt();
            // Distances from the geocentre: the Sun (−heliocentric Earth), Jupiter
            // (heliocentric Jupiter − heliocentric Earth), the Moon (geocentric); the Earth's
            // from its centre.
            let (jupiter, _) = plan94(MJD_ZERO_JD, epoch.tdb, PLAN94_JUPITER)
                .map_err(|s| sofa_err("plan94", s))?;
            let moon = moon98(MJD_ZERO_JD, epoch.tdb);
            let sun_d = norm(earth_helio[0]) * AU_M;
            let jupiter_d = norm(add(jupiter[0], scale(-1.0, earth_helio[0]))) * AU_M;
            let moon_d = norm(moon[0]) * AU_M;
            // Summed small to large, as astropy does (Earth, Moon, Jupiter, Sun).
            let potential =
                GM_EARTH / norm(itrs) + GM_MOON / moon_d + GM_JUPITER / jupiter_d + GM_SUN / sun_d;
            let grav_m_s = -potential / SPEED_OF_LIGHT_M_S;
            let zb = gamma * (1.0 + dot(beta, n)) / (1.0 + grav_m_s / SPEED_OF_LIGHT_M_S);
            (zb - 1.0) * SPEED_OF_LIGHT_M_S
        }
    };
    Ok(VelocityCorrection {
        velocity_m_s,
        factor: 1.0 + velocity_m_s / SPEED_OF_LIGHT_M_S,
    })
}

/// The barycentric correction desispec's extraction applies
/// (`desispec.heliocentric.barycentric_velocity_multiplicative_corr`):
/// [`velocity_correction`] with [`CorrectionKind::Barycentric`].
///
/// # Errors
/// As [`velocity_correction`].
pub fn barycentric_correction(
    ra_deg: f64,
    dec_deg: f64,
    mjd_utc: f64,
    site: &Site,
) -> Result<VelocityCorrection, HeliocentricError> {
    velocity_correction(ra_deg, dec_deg, mjd_utc, site, CorrectionKind::Barycentric)
}

/// Sky position and mid-exposure time of an exposure, read from header keywords as
/// desispec's `barycentric_correction_multiplicative_factor(header)` reads them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExposurePointing {
    /// Right ascension, degrees: TARGTRA, else SKYRA, else TELRA, else RA.
    pub ra_deg: f64,
    /// Declination, degrees: TARGTDEC, else SKYDEC, else TELDEC, else DEC.
    pub dec_deg: f64,
    /// Middle of the exposure, MJD (UTC): MJD-OBS (else MJD) + EXPTIME/2 (EXPTIME in s,
    /// 0 when absent).
    pub mjd_mid_utc: f64,
}

const RA_KEYS: &[&str] = &["TARGTRA", "SKYRA", "TELRA", "RA"];
const DEC_KEYS: &[&str] = &["TARGTDEC", "SKYDEC", "TELDEC", "DEC"];
const MJD_KEYS: &[&str] = &["MJD-OBS", "MJD"];

fn has_keyword(cards: &[String], name: &str) -> bool {
    cards.iter().any(|c| card_name(c) == name)
}

/// The numeric value of `name` (an integer or a float), or `BadKeyword`.
fn numeric_keyword(cards: &[String], name: &'static str) -> Result<f64, HeliocentricError> {
    match find_keyword(cards, name) {
        Some(KeywordValue::Float(v)) if v.is_finite() => Ok(v),
        Some(KeywordValue::Int(v)) => Ok(v as f64),
        other => Err(HeliocentricError::BadKeyword {
            keyword: name,
            value: match other {
                Some(v) => format!("{v:?}"),
                None => "no parsable value".to_string(),
            },
        }),
    }
}

/// The first of `keys` present in `cards`, as a number.
fn first_of(
    cards: &[String],
    quantity: &'static str,
    keys: &'static [&'static str],
) -> Result<f64, HeliocentricError> {
    let key = keys.iter().copied().find(|k| has_keyword(cards, k)).ok_or(
        HeliocentricError::MissingKeyword {
            quantity,
            keywords: keys,
        },
    )?;
    numeric_keyword(cards, key)
}

impl ExposurePointing {
    /// Reads one header (raw cards, as [`crate::io::PreprocImage::header`] keeps them) with
    /// desispec's keyword preferences (see the fields).
    ///
    /// # Errors
    /// [`HeliocentricError::MissingKeyword`] when no keyword of a quantity is present,
    /// [`HeliocentricError::BadKeyword`] when the chosen one is not a number.
    pub fn from_header(cards: &[String]) -> Result<Self, HeliocentricError> {
        let ra_deg = first_of(cards, "RA", RA_KEYS)?;
        let dec_deg = first_of(cards, "Dec", DEC_KEYS)?;
        let mjd = first_of(cards, "MJD", MJD_KEYS)?;
        let exptime_s = if has_keyword(cards, "EXPTIME") {
            numeric_keyword(cards, "EXPTIME")?
        } else {
            0.0
        };
        Ok(ExposurePointing {
            ra_deg,
            dec_deg,
            // desispec's expression, operation for operation.
            mjd_mid_utc: mjd + exptime_s / 2.0 / 3600.0 / 24.0,
        })
    }

    /// desispec's choice of header: the image (preproc) header when it has RA or TARGTRA,
    /// else the fibermap's when it has one of them (early commissioning data).
    ///
    /// # Errors
    /// [`HeliocentricError::NoPointing`] when neither has RA nor TARGTRA; otherwise as
    /// [`ExposurePointing::from_header`] on the chosen header.
    pub fn from_headers(
        image_header: &[String],
        fibermap_header: Option<&[String]>,
    ) -> Result<Self, HeliocentricError> {
        let has_pointing =
            |cards: &[String]| has_keyword(cards, "RA") || has_keyword(cards, "TARGTRA");
        if has_pointing(image_header) {
            Self::from_header(image_header)
        } else {
            match fibermap_header {
                Some(cards) if has_pointing(cards) => Self::from_header(cards),
                _ => Err(HeliocentricError::NoPointing),
            }
        }
    }

    /// [`barycentric_correction`] at this pointing, from `site`.
    ///
    /// # Errors
    /// As [`velocity_correction`].
    pub fn barycentric_correction(
        &self,
        site: &Site,
    ) -> Result<VelocityCorrection, HeliocentricError> {
        barycentric_correction(self.ra_deg, self.dec_deg, self.mjd_mid_utc, site)
    }
}

/// The barycentric correction factor of a preproc image as desispec's extraction computes it
/// (`--barycentric-correction`): the pointing and time from the image header, else from the
/// fibermap's ([`ExposurePointing::from_headers`]), at Kitt Peak ([`Site::KPNO_DESISPEC`]).
///
/// # Errors
/// No pointing in either header, a keyword that is not a number, or a date or position outside
/// the supported range.
pub fn preproc_factor(image: &PreprocImage) -> Result<f64, HeliocentricError> {
    let fibermap = image.fibermap.as_ref().map(|table| table.cards.as_slice());
    let pointing = ExposurePointing::from_headers(&image.header, fibermap)?;
    Ok(pointing
        .barycentric_correction(&Site::KPNO_DESISPEC)?
        .factor)
}

/// The grid desispec extracts on for a barycentric `factor`: the nominal `(wmin, wmax, dw)`
/// divided by the factor, built by numpy's `arange` rule. The frame's WAVELENGTH stays the
/// nominal grid (docs/algorithm.md §13), so both must have the same length.
///
/// # Errors
/// A factor that is not finite and positive, or a corrected grid whose length differs from the
/// nominal one.
pub fn corrected_grid(grid: &WavelengthGrid, factor: f64) -> Result<WavelengthGrid, GridError> {
    let invalid = |reason: &str| GridError::Invalid {
        wmin: grid.wmin,
        wmax: grid.wmax,
        dw: grid.dw,
        reason: reason.to_string(),
    };
    if !(factor.is_finite() && factor > 0.0) {
        return Err(invalid(
            "the barycentric factor must be finite and positive",
        ));
    }
    let corrected =
        WavelengthGrid::arange(grid.wmin / factor, grid.wmax / factor, grid.dw / factor)?;
    if corrected.nwave() != grid.nwave() {
        return Err(invalid(
            "divided by the barycentric factor it has another number of wavelengths",
        ));
    }
    Ok(corrected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(name: &str, value: &str) -> String {
        format!("{name:<8}= {value:>20}")
    }

    #[test]
    fn leap_seconds_match_sofa_dat() {
        // SOFA's own table (sofars::ts::dat), at the first day of each month 1972-2026.
        for year in 1972..=2026 {
            for month in 1..=12 {
                let (jd0, mjd) = sofars::cal::cal2jd(year, month, 1).expect("valid date");
                assert_eq!(jd0, MJD_ZERO_JD);
                let sofa = sofars::ts::dat(year, month, 1, 0.5).expect("SOFA dat");
                for t in [mjd, mjd + 0.5, mjd + 0.999] {
                    assert_eq!(tai_minus_utc_s(t), Ok(sofa), "{year}-{month:02}-01 MJD {t}");
                }
                // The day before still has the previous value (changes happen at 0h UTC).
                if mjd - 1.0 >= MJD_UTC_MIN {
                    let (y, m, d, _) = sofars::cal::jd2cal(MJD_ZERO_JD, mjd - 1.0).expect("date");
                    let before = sofars::ts::dat(y, m, d, 0.5).expect("SOFA dat");
                    assert_eq!(tai_minus_utc_s(mjd - 0.1), Ok(before), "MJD {}", mjd - 0.1);
                }
            }
        }
        assert_eq!(tai_minus_utc_s(57_753.999), Ok(36.0));
        assert_eq!(tai_minus_utc_s(57_754.0), Ok(37.0));
        assert_eq!(tai_minus_utc_s(70_000.0), Ok(37.0));
    }

    #[test]
    fn rejects_bad_inputs() {
        let kp = Site::KPNO_DESISPEC;
        for mjd in [f64::NAN, f64::INFINITY, 41_316.9, MJD_UTC_MAX, 1e9] {
            assert!(matches!(
                barycentric_correction(10.0, 10.0, mjd, &kp),
                Err(HeliocentricError::DateOutOfRange { .. })
            ));
        }
        for (ra, dec) in [
            (f64::NAN, 0.0),
            (0.0, 90.5),
            (0.0, f64::NAN),
            (f64::INFINITY, 0.0),
        ] {
            assert!(matches!(
                barycentric_correction(ra, dec, 60_000.0, &kp),
                Err(HeliocentricError::BadDirection { .. })
            ));
        }
        let bad_site = Site {
            lat_deg: 91.0,
            ..kp
        };
        assert!(matches!(
            barycentric_correction(10.0, 10.0, 60_000.0, &bad_site),
            Err(HeliocentricError::BadSite { .. })
        ));
        // RA wraps; the poles are valid.
        let a = barycentric_correction(10.0, 20.0, 60_000.0, &kp).expect("valid");
        let b = barycentric_correction(370.0, 20.0, 60_000.0, &kp).expect("valid");
        assert!((a.velocity_m_s - b.velocity_m_s).abs() < 1e-6);
        assert!(barycentric_correction(0.0, -90.0, 60_000.0, &kp).is_ok());
    }

    #[test]
    fn kpno_itrs_matches_astropy() {
        // astropy 7.2: EarthLocation.from_geodetic(lat=31.96403, lon=-111.59989, height=2097).
        let p = Site::KPNO_DESISPEC.itrs_m().expect("valid site");
        let want = [
            -1_994_470.690_392_931_2,
            -5_037_486.192_957_255,
            3_358_158.381_122_242_7,
        ];
        for (got, want) in p.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
    }

    #[test]
    fn velocity_is_physical() {
        // Earth's orbital speed ≈ 29.8 km/s: towards the ecliptic poles the correction is at most
        // the diurnal and small terms; in the ecliptic plane it reaches ~±30 km/s over a year.
        let kp = Site::KPNO_DESISPEC;
        let mut max = 0.0f64;
        for k in 0..24 {
            let mjd = 60_000.0 + 15.25 * f64::from(k);
            let v = barycentric_correction(90.0, 23.44, mjd, &kp).expect("valid");
            max = max.max(v.velocity_m_s.abs());
            // Ecliptic north pole: RA 270°, Dec 66.56°.
            let p = barycentric_correction(270.0, 66.56, mjd, &kp).expect("valid");
            assert!(p.velocity_m_s.abs() < 1000.0, "{mjd}: {p:?}");
            assert!((v.factor - 1.0 - v.velocity_m_s / SPEED_OF_LIGHT_M_S).abs() < 1e-16);
        }
        assert!((29_000.0..31_000.0).contains(&max), "{max}");
        // Heliocentric and barycentric differ by the Sun's barycentric motion (≲ 15 m/s) plus
        // the relativistic terms (a few m/s).
        for k in 0..10 {
            let mjd = 59_000.0 + 400.0 * f64::from(k);
            let b = velocity_correction(33.0, -12.0, mjd, &kp, CorrectionKind::Barycentric)
                .expect("valid");
            let h = velocity_correction(33.0, -12.0, mjd, &kp, CorrectionKind::Heliocentric)
                .expect("valid");
            assert!(
                (b.velocity_m_s - h.velocity_m_s).abs() < 25.0,
                "{b:?} {h:?}"
            );
        }
    }

    #[test]
    fn pointing_follows_desispec_keywords() {
        let cards = vec![
            card("RA", "10.5"),
            card("DEC", "-5.25"),
            card("TELRA", "11.0"),
            card("MJD-OBS", "60000.25"),
            card("MJD", "59999.0"),
            card("EXPTIME", "900"),
        ];
        let p = ExposurePointing::from_header(&cards).expect("pointing");
        assert_eq!(p.ra_deg, 11.0); // TELRA before RA
        assert_eq!(p.dec_deg, -5.25);
        assert_eq!(p.mjd_mid_utc, 60000.25 + 900.0 / 2.0 / 3600.0 / 24.0);
        let mut with_target = cards.clone();
        with_target.push(card("TARGTRA", "12.0"));
        with_target.push(card("TARGTDEC", "1.0"));
        with_target.retain(|c| card_name(c) != "EXPTIME" && card_name(c) != "MJD-OBS");
        let p = ExposurePointing::from_header(&with_target).expect("pointing");
        assert_eq!((p.ra_deg, p.dec_deg, p.mjd_mid_utc), (12.0, 1.0, 59999.0));

        let no_dec = vec![card("RA", "1.0"), card("MJD-OBS", "60000.0")];
        assert!(matches!(
            ExposurePointing::from_header(&no_dec),
            Err(HeliocentricError::MissingKeyword {
                quantity: "Dec",
                ..
            })
        ));
        let text_ra = vec![card("RA", "'abc'"), card("DEC", "1"), card("MJD", "60000")];
        assert!(matches!(
            ExposurePointing::from_header(&text_ra),
            Err(HeliocentricError::BadKeyword { keyword: "RA", .. })
        ));

        // Image header first when it has RA or TARGTRA, else the fibermap's.
        let image = vec![card("EXPID", "12")];
        assert_eq!(
            ExposurePointing::from_headers(&image, None),
            Err(HeliocentricError::NoPointing)
        );
        let p = ExposurePointing::from_headers(&image, Some(&cards)).expect("fibermap pointing");
        assert_eq!(p.ra_deg, 11.0);
        let p = ExposurePointing::from_headers(&with_target, Some(&cards)).expect("image pointing");
        assert_eq!(p.ra_deg, 12.0);
        assert!(p.barycentric_correction(&Site::KPNO_DESISPEC).is_ok());
    }

    #[test]
    fn corrected_grid_divides_the_nominal_triple() {
        let grid = WavelengthGrid::arange(5760.0, 7620.0, 0.8).unwrap();
        let factor = 1.000_075;
        let corrected = corrected_grid(&grid, factor).unwrap();
        let expected =
            WavelengthGrid::arange(5760.0 / factor, 7620.0 / factor, 0.8 / factor).unwrap();
        assert_eq!(corrected, expected);
        assert_eq!(corrected.nwave(), grid.nwave());
        assert!(corrected_grid(&grid, f64::NAN).is_err());
        assert!(corrected_grid(&grid, 0.0).is_err());
        // The bin count is scale invariant (only rounding could change it; that is refused).
        assert_eq!(corrected_grid(&grid, 1.3).unwrap().nwave(), grid.nwave());
    }
}
