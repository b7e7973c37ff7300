//! desispec-style log lines on stderr (`LEVEL:desi-extract:COMMAND: message`, with desiutil's
//! level names), behind the `log` facade so the library can log too.
//!
//! The level is INFO, or `$DESI_LOGLEVEL` (DEBUG, INFO, WARNING, ERROR, CRITICAL, as desiutil
//! reads it); `extract -v` lowers it to DEBUG.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARNING",
            Level::Info => "INFO",
            Level::Debug | Level::Trace => "DEBUG",
        };
        // The module path's last part names the stage: cli::extract -> extract.
        let target = record
            .target()
            .rsplit("::")
            .next()
            .unwrap_or("desi-extract");
        eprintln!("{level}:desi-extract:{target}: {}", record.args());
    }

    fn flush(&self) {}
}

/// The level `$DESI_LOGLEVEL` asks for (INFO when unset or unknown).
fn env_level() -> LevelFilter {
    match std::env::var("DESI_LOGLEVEL")
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase()
        .as_str()
    {
        "DEBUG" => LevelFilter::Debug,
        "WARNING" | "WARN" => LevelFilter::Warn,
        "ERROR" | "CRITICAL" => LevelFilter::Error,
        _ => LevelFilter::Info,
    }
}

/// Installs the logger at `$DESI_LOGLEVEL`'s level (once; later calls only keep it).
pub fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(env_level());
    }
}

/// Lowers the level to DEBUG (`-v/--verbose`).
pub fn verbose() {
    log::set_max_level(LevelFilter::Debug);
}
