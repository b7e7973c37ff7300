/// `ptxas`: `$DESI_PTXAS` (an error if that is not a file), else the first one on `PATH`, else
/// the newest pip copy under `${XDG_CACHE_HOME:-~/.cache}/desi-extract/py/nvidia/cu*/bin`
/// (where scripts/setup.sh installs it); `Ok(None)` when there is none.
///
/// One lookup for build.rs (which compiles the sm_90 cubin) and tests/ptx.rs (which checks the
/// PTX), both of which `include!` this file.
fn find_ptxas() -> Result<Option<std::path::PathBuf>, String> {
    use std::path::{Path, PathBuf};
    if let Some(path) = std::env::var_os("DESI_PTXAS").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(Some(path))
        } else {
            Err(format!("DESI_PTXAS={} is not a file", path.display()))
        };
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("ptxas"))
            .find(|p| p.is_file())
    }) {
        return Ok(Some(found));
    }
    let Some(cache) = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
    else {
        return Ok(None);
    };
    let nvidia = cache.join("desi-extract").join("py").join("nvidia");
    let Ok(entries) = std::fs::read_dir(nvidia) else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path().join("bin").join("ptxas"))
        .filter(|path| path.is_file())
        .collect();
    found.sort();
    Ok(found.pop())
}
