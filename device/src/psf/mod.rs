//! The PSF stage: Legendre series in wavelength ([`legendre`]), pixel-integrated
//! Gauss-Hermite spots one thread per spot ([`spot`]) and one team of lanes per spot
//! ([`spot_team`]).

pub mod legendre;
pub mod spot;
pub mod spot_team;
