//! Names of temporary outputs and the sweep of stale ones.
//!
//! A temporary of `frame.fits.gz` is `frame.fits.gz.tmp<pid>@<host>.<random>.fits.gz`: the
//! final name, the process and host that write it, and the final extension (for tools that
//! look at suffixes). A process killed while writing (SIGKILL, power loss) leaves its
//! temporary behind; the next write of the same output removes those whose process is gone
//! (same host, pid no longer running). Temporaries of a running process, or of another host
//! sharing the file system, are never touched.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

/// The short host name, reduced to `[A-Za-z0-9-]` (at most 32 characters).
fn host_tag() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into the valid buffer `buf`.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let raw: &[u8] = if rc == 0 { &buf } else { b"host" };
        let name: String = raw
            .iter()
            .take_while(|&&b| b != 0 && b != b'.')
            .filter(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .take(32)
            .map(|&b| char::from(b))
            .collect();
        if name.is_empty() {
            "host".into()
        } else {
            name
        }
    })
}

/// The start of every temporary of `name` written by this process: `<name>.tmp<pid>@<host>.`.
pub(crate) fn prefix(name: &OsStr) -> OsString {
    let mut prefix = name.to_os_string();
    prefix.push(format!(".tmp{}@{}.", std::process::id(), host_tag()));
    prefix
}

/// The extension of a file name from its first dot (`.fits.gz` of `frame.fits.gz`; a leading
/// dot, as in `.hidden`, does not count), empty when there is none.
pub(crate) fn extension(name: &OsStr) -> OsString {
    let bytes = name.as_bytes();
    match bytes.iter().skip(1).position(|&b| b == b'.') {
        Some(i) => OsStr::from_bytes(&bytes[i + 1..]).to_os_string(),
        None => OsString::new(),
    }
}

/// The pid and host of a temporary of `name` (`None` if `entry` is not one). Temporaries of
/// earlier versions (`<name>.tmp<pid>.<random>...`, no host) count as this host's.
fn owner<'a>(name: &OsStr, entry: &'a OsStr) -> Option<(u32, Option<&'a [u8]>)> {
    let rest = entry.as_bytes().strip_prefix(name.as_bytes())?;
    let rest = rest.strip_prefix(b".tmp")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let pid: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = &rest[digits..];
    if let Some(host) = rest.strip_prefix(b"@") {
        let end = host.iter().position(|&b| b == b'.')?;
        Some((pid, Some(&host[..end])))
    } else if rest.starts_with(b".") {
        Some((pid, None))
    } else {
        None
    }
}

/// Whether process `pid` of this host is running (or exists but belongs to another user).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes the temporaries of `name` in `dir` left by processes of this host that are no
/// longer running. Best effort: an unreadable directory or a file that cannot be removed is
/// left as it is (the write itself reports real problems). Returns the names removed.
pub(crate) fn sweep_stale(dir: &Path, name: &OsStr) -> Vec<OsString> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    let (me, host) = (std::process::id(), host_tag().as_bytes());
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some((pid, owner_host)) = owner(name, &file) else {
            continue;
        };
        let here = owner_host.is_none_or(|h| h == host);
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if here && regular && pid != me && !alive(pid) && std::fs::remove_file(entry.path()).is_ok()
        {
            removed.push(file);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_keeps_every_suffix() {
        for (name, ext) in [
            ("frame.fits", ".fits"),
            ("frame.fits.gz", ".fits.gz"),
            ("qa.png", ".png"),
            ("README", ""),
            (".hidden", ""),
            (".hidden.json", ".json"),
        ] {
            assert_eq!(extension(OsStr::new(name)), OsStr::new(ext), "{name}");
        }
    }

    #[test]
    fn owners_are_parsed_from_names() {
        let name = OsStr::new("frame.fits.gz");
        assert_eq!(
            owner(name, OsStr::new("frame.fits.gz.tmp123@node7.Ab3x.fits.gz")),
            Some((123, Some(&b"node7"[..])))
        );
        assert_eq!(
            owner(name, OsStr::new("frame.fits.gz.tmp99.Ab3x.fits.gz")),
            Some((99, None))
        );
        for other in [
            "frame.fits.gz",
            "frame.fits.gz.tmp.x",
            "frame.fits.gz.tmpx1.y",
            "frame.fits.gz.tmp12@host",
            "other.fits.tmp12.x",
        ] {
            assert_eq!(owner(name, OsStr::new(other)), None, "{other}");
        }
        let mine = prefix(name);
        let mine = mine.to_string_lossy();
        assert!(
            mine.starts_with(&format!("frame.fits.gz.tmp{}@", std::process::id())),
            "{mine}"
        );
    }

    #[test]
    fn sweep_removes_only_dead_local_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has exited: its pid is free (unless reused at once, which the
        // assertion below would show as a kept file).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = host_tag();
        let me = std::process::id();
        let files = [
            format!("f.fits.tmp{dead}@{host}.a.fits"),
            format!("f.fits.tmp{dead}.b.fits"),
            format!("f.fits.tmp{me}@{host}.c.fits"),
            format!("f.fits.tmp{dead}@otherhost.d.fits"),
            format!("g.fits.tmp{dead}@{host}.e.fits"),
        ];
        for f in &files {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let mut removed = sweep_stale(dir.path(), OsStr::new("f.fits"));
        removed.sort();
        assert_eq!(removed, [&files[1], &files[0]].map(OsString::from));
        for kept in &files[2..] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }
}
