#!/usr/bin/env python3
"""Reference radial-velocity corrections from astropy (and desispec, when importable).

Usage: python3 tests/heliocentric_reference.py < request.json > reference.json

The request is {"site": [lon_deg, lat_deg, height_m], "points": [[ra_deg, dec_deg, mjd_utc],
...]}. The answer has, for every point, astropy's
SkyCoord(ra, dec, frame='icrs').radial_velocity_correction(kind, obstime=Time(mjd,
format='mjd'), location=EarthLocation.from_geodetic(lon, lat, height)) in m/s for kind
'barycentric' and 'heliocentric', and desispec's own
desispec.heliocentric.barycentric_velocity_multiplicative_corr(ra, dec, mjd) (its 1 + v/c,
with its own Kitt Peak location) when desispec can be imported, else null and the reason.

Works offline: IERS downloads are off, astropy uses the IERS-A/B tables bundled with
astropy-iers-data, and dates past their end use the last predictions (degraded accuracy:
UT1 - UTC and polar motion enter the correction at the mm/s level only). Run by
tests/heliocentric.rs.
"""

import json
import sys
import warnings

from astropy.utils import iers

iers.conf.auto_download = False
iers.conf.auto_max_age = None
iers.conf.iers_degraded_accuracy = "warn"

import astropy  # noqa: E402
import astropy.units as u  # noqa: E402
import numpy as np  # noqa: E402
from astropy.coordinates import EarthLocation, SkyCoord  # noqa: E402
from astropy.time import Time  # noqa: E402


def main():
    request = json.load(sys.stdin)
    lon, lat, height = request["site"]
    points = np.asarray(request["points"], dtype=float).reshape(-1, 3)
    ra, dec, mjd = points[:, 0], points[:, 1], points[:, 2]
    site = EarthLocation.from_geodetic(lon=lon * u.deg, lat=lat * u.deg, height=height * u.m)
    notes = []
    with warnings.catch_warnings():
        # ERFA's "dubious year" (dates past the leap-second file) and IERS extrapolation.
        warnings.simplefilter("ignore")
        coords = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
        obstime = Time(mjd, format="mjd")
        bary = coords.radial_velocity_correction("barycentric", obstime=obstime, location=site)
        helio = coords.radial_velocity_correction("heliocentric", obstime=obstime, location=site)
        table = iers.earth_orientation_table.get()
        notes.append(
            f"IERS table {type(table).__name__} MJD {float(table['MJD'][0].value):.0f}"
            f"..{float(table['MJD'][-1].value):.0f} (no download)"
        )
        desispec = None
        try:
            import desispec
            from desispec.heliocentric import barycentric_velocity_multiplicative_corr

            factor = barycentric_velocity_multiplicative_corr(ra, dec, mjd)
            desispec = {
                "version": desispec.__version__,
                "factor": np.asarray(factor, dtype=float).tolist(),
            }
        except Exception as exc:  # noqa: BLE001 - any import or run failure is reported
            notes.append(f"desispec not usable: {type(exc).__name__}: {exc}")
    json.dump(
        {
            "astropy_version": astropy.__version__,
            "barycentric_m_s": bary.to_value(u.m / u.s).tolist(),
            "heliocentric_m_s": helio.to_value(u.m / u.s).tolist(),
            "desispec": desispec,
            "notes": notes,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
