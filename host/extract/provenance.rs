//! Provenance in the frame header as desispec records it: input paths shortened by
//! `desispec.io.shorten_filename` and the `DEPNAMnn`/`DEPVERnn` cards of
//! `desiutil.depend.add_dependencies`.
//!
//! desispec records the Python modules it has loaded (python, numpy, astropy, fitsio,
//! desiutil, desispec, gpu_specter, ...) and every DESI environment variable of
//! `desiutil.depend.possible_envvars` (its value, or `NOT_SET`). desi-extract records what is
//! true for it: itself and its version, the cfitsio it writes with, and the same environment
//! variables in the same way. Cards already in the input header (the preproc's provenance) are
//! kept; a name already recorded gets the new version in place, as `setdep` does.

use crate::io::{card_name, Keyword, KeywordValue};

/// The environment variables `desiutil.depend.add_dependencies` records, in its order.
pub const DESI_ENVVARS: [&str; 8] = [
    "DESI_ROOT",
    "DESI_SPECTRO_DATA",
    "DESI_SPECTRO_REDUX",
    "SPECPROD",
    "DESI_SPECTRO_CALIB",
    "DESI_BASIS_TEMPLATES",
    "DESI_TARGET",
    "DESIMODEL",
];

/// `desispec.io.shorten_filename` with the environment `env`: a path under
/// `$DESI_SPECTRO_CALIB` starts `SPCALIB` instead, one under `$DESI_SPECTRO_REDUX/$SPECPROD`
/// (or its read-only twin under `$DESI_ROOT_READONLY`) starts `SPECPROD`; otherwise the path is
/// returned as given. Prefixes are compared as strings, as desispec does.
pub fn shorten_filename_with(
    filename: &str,
    env: &dyn Fn(&str) -> Option<String>,
    path_exists: &dyn Fn(&str) -> bool,
) -> String {
    if let Some(calib) = env("DESI_SPECTRO_CALIB") {
        if let Some(rest) = filename.strip_prefix(calib.as_str()) {
            return format!("SPCALIB{rest}");
        }
    }
    if let Some(specprod) = specprod_root(env) {
        if let Some(rest) = filename.strip_prefix(specprod.as_str()) {
            return format!("SPECPROD{rest}");
        }
        let readonly = readonly_path(&specprod, env, path_exists);
        if let Some(rest) = filename.strip_prefix(readonly.as_str()) {
            return format!("SPECPROD{rest}");
        }
    }
    filename.to_string()
}

/// [`shorten_filename_with`] in this process's environment.
pub fn shorten_filename(filename: &str) -> String {
    shorten_filename_with(filename, &|name| std::env::var(name).ok(), &|path| {
        std::path::Path::new(path).exists()
    })
}

/// `os.path.join` of two parts (no separator added after one that ends with `/`).
fn join(a: &str, b: &str) -> String {
    if a.is_empty() || a.ends_with('/') {
        format!("{a}{b}")
    } else {
        format!("{a}/{b}")
    }
}

/// `desispec.io.specprod_root()`: `$SPECPROD` if it contains `/`, else
/// `$DESI_SPECTRO_REDUX/$SPECPROD`, else `$DESI_ROOT/spectro/redux/$SPECPROD`; None where
/// desispec raises KeyError.
fn specprod_root(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let specprod = env("SPECPROD")?;
    if specprod.contains('/') {
        return Some(specprod);
    }
    match env("DESI_SPECTRO_REDUX") {
        Some(redux) => Some(join(&redux, &specprod)),
        None => Some(join(
            &join(&join(&env("DESI_ROOT")?, "spectro"), "redux"),
            &specprod,
        )),
    }
}

/// `desispec.io.meta.get_readonly_filepath`: `$DESI_ROOT` replaced by `$DESI_ROOT_READONLY`
/// when the latter is set and exists.
fn readonly_path(
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    path_exists: &dyn Fn(&str) -> bool,
) -> String {
    let Some(root) = env("DESI_ROOT") else {
        return path.to_string();
    };
    let readonly = env("DESI_ROOT_READONLY")
        .filter(|r| path_exists(r))
        .unwrap_or_else(|| root.clone());
    match path.strip_prefix(root.as_str()) {
        Some(rest) if root != readonly => format!("{readonly}{rest}"),
        _ => path.to_string(),
    }
}

/// The (name, version) pairs of the `DEPNAMnn`/`DEPVERnn` cards of `header`, by index.
fn header_dependencies(header: &[String]) -> Vec<(String, String)> {
    let value = |key: &str| {
        header
            .iter()
            .filter(|c| card_name(c) == key)
            .find_map(|c| Keyword::from_card(c))
            .map(|k| match k.value {
                KeywordValue::Str(s) => s,
                other => format!("{other:?}"),
            })
    };
    let mut deps = Vec::new();
    for i in 0..100 {
        let Some(name) = value(&format!("DEPNAM{i:02}")) else {
            break;
        };
        deps.push((name, value(&format!("DEPVER{i:02}")).unwrap_or_default()));
    }
    deps
}

/// `desiutil.depend.setdep`: replaces the version of `name` or appends it.
fn setdep(deps: &mut Vec<(String, String)>, name: &str, version: &str) {
    match deps.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = version.to_string(),
        None => deps.push((name.to_string(), version.to_string())),
    }
}

/// The DEPNAMnn/DEPVERnn keywords of a frame extracted from an image with `header`: its own
/// cards, then desi-extract and its version, cfitsio and its version, and every
/// [`DESI_ENVVARS`] entry (`env`'s value or `NOT_SET`). At most 100 pairs (desiutil's limit);
/// extra ones are dropped.
pub fn dependency_keywords_with(
    header: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Keyword> {
    let mut deps = header_dependencies(header);
    setdep(&mut deps, "desi-extract", env!("CARGO_PKG_VERSION"));
    setdep(&mut deps, "cfitsio", &crate::io::cfitsio_version());
    for name in DESI_ENVVARS {
        let value = env(name).unwrap_or_else(|| "NOT_SET".to_string());
        setdep(&mut deps, name, &value);
    }
    deps.iter()
        .take(100)
        .enumerate()
        .flat_map(|(i, (name, version))| {
            [
                Keyword::str(&format!("DEPNAM{i:02}"), name, ""),
                Keyword::str(&format!("DEPVER{i:02}"), version, ""),
            ]
        })
        .collect()
}

/// [`dependency_keywords_with`] in this process's environment.
pub fn dependency_keywords(header: &[String]) -> Vec<Keyword> {
    dependency_keywords_with(header, &|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn shortens_as_desispec() {
        let exists = |_: &str| true;
        let env = env_of(&[
            ("DESI_SPECTRO_CALIB", "/calib"),
            ("DESI_SPECTRO_REDUX", "/redux"),
            ("SPECPROD", "daily"),
        ]);
        assert_eq!(
            shorten_filename_with("/calib/psf.fits", &env, &exists),
            "SPCALIB/psf.fits"
        );
        assert_eq!(
            shorten_filename_with("/redux/daily/preproc/x.fits", &env, &exists),
            "SPECPROD/preproc/x.fits"
        );
        assert_eq!(
            shorten_filename_with("rel/x.fits", &env, &exists),
            "rel/x.fits"
        );
        // No SPECPROD: no substitution (desispec's KeyError path).
        let env = env_of(&[("DESI_ROOT", "/desi")]);
        assert_eq!(
            shorten_filename_with("/desi/spectro/redux/p/x", &env, &exists),
            "/desi/spectro/redux/p/x"
        );
        // $DESI_ROOT/spectro/redux/$SPECPROD and its read-only twin.
        let env = env_of(&[
            ("DESI_ROOT", "/desi"),
            ("DESI_ROOT_READONLY", "/ro"),
            ("SPECPROD", "p"),
        ]);
        assert_eq!(
            shorten_filename_with("/desi/spectro/redux/p/x", &env, &exists),
            "SPECPROD/x"
        );
        assert_eq!(
            shorten_filename_with("/ro/spectro/redux/p/x", &env, &exists),
            "SPECPROD/x"
        );
        assert_eq!(
            shorten_filename_with("/ro/spectro/redux/p/x", &env, &|_| false),
            "/ro/spectro/redux/p/x"
        );
    }

    #[test]
    fn dependencies_extend_the_input_cards() {
        let header = vec![
            "DEPNAM00= 'python  '".to_string(),
            "DEPVER00= '3.10.4  '".to_string(),
            "DEPNAM01= 'SPECPROD'".to_string(),
            "DEPVER01= 'old     '".to_string(),
        ];
        let env = env_of(&[("SPECPROD", "daily")]);
        let kws = dependency_keywords_with(&header, &env);
        let get = |name: &str| {
            kws.iter()
                .find(|k| k.name == name)
                .map(|k| k.value.clone())
                .expect(name)
        };
        assert_eq!(get("DEPNAM00"), KeywordValue::Str("python".into()));
        assert_eq!(get("DEPVER01"), KeywordValue::Str("daily".into()));
        assert_eq!(get("DEPNAM02"), KeywordValue::Str("desi-extract".into()));
        assert_eq!(get("DEPNAM03"), KeywordValue::Str("cfitsio".into()));
        assert_eq!(get("DEPNAM04"), KeywordValue::Str("DESI_ROOT".into()));
        assert_eq!(get("DEPVER04"), KeywordValue::Str("NOT_SET".into()));
        // 2 from the header + 2 + 8 variables, SPECPROD already present: 11 pairs.
        assert_eq!(kws.len(), 2 * 11);
    }
}
