//! Stage timing: NVTX ranges (so an Nsight Systems timeline reads like the pipeline) and our own
//! timeline of the same spans plus GPU kernel times, written as a Chrome/Perfetto trace JSON
//! (`chrome://tracing`, <https://ui.perfetto.dev>) that needs no Nsight.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Stage name (docs/design.md §5.4, docs/algorithm.md §6: spots, assemble, cholesky, ...).
    pub name: String,
    /// Track: "host" for wall-clock stages, "gpu" for kernel times from CUDA events.
    pub track: &'static str,
    /// Start, from the trace's origin.
    pub start: Duration,
    /// Duration.
    pub duration: Duration,
}

/// A timeline of stage spans, shared by threads.
#[derive(Debug)]
pub struct Trace {
    origin: Instant,
    spans: Mutex<Vec<Span>>,
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

impl Trace {
    /// An empty trace starting now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            spans: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` inside an NVTX range and a host span named `name`.
    pub fn span<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        let _nvtx = nvtx::LocalRange::new(nvtx_name(name).as_c_str());
        let start = self.origin.elapsed();
        let out = f();
        let end = self.origin.elapsed();
        self.push(Span {
            name: name.to_string(),
            track: "host",
            start,
            duration: end.saturating_sub(start),
        });
        out
    }

    /// Records a span measured elsewhere (e.g. a kernel's CUDA-event time) on `track`,
    /// starting at `start` after the origin.
    pub fn record(&self, name: &str, track: &'static str, start: Duration, duration: Duration) {
        self.push(Span {
            name: name.to_string(),
            track,
            start,
            duration,
        });
    }

    /// Time since the origin.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn push(&self, span: Span) {
        if let Ok(mut spans) = self.spans.lock() {
            spans.push(span);
        }
    }

    /// A copy of the spans so far, in recording order.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Total time per (track, name), in first-seen order.
    pub fn totals(&self) -> Vec<(String, &'static str, Duration)> {
        let mut out: Vec<(String, &'static str, Duration)> = Vec::new();
        for span in self.spans() {
            match out
                .iter_mut()
                .find(|(n, t, _)| *n == span.name && *t == span.track)
            {
                Some(entry) => entry.2 += span.duration,
                None => out.push((span.name, span.track, span.duration)),
            }
        }
        out
    }

    /// Writes the Chrome trace-event JSON (complete events, microseconds; host on thread 1,
    /// GPU kernels on thread 2).
    pub fn write_chrome(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            writeln!(out, "{{\"displayTimeUnit\":\"ms\",\"traceEvents\":[")?;
            writeln!(
                out,
                "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":1,\"args\":{{\"name\":\"host stages\"}}}},"
            )?;
            write!(
                out,
                "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":2,\"args\":{{\"name\":\"GPU kernels (CUDA events)\"}}}}"
            )?;
            for span in self.spans() {
                let tid = if span.track == "gpu" { 2 } else { 1 };
                write!(
                    out,
                    ",\n{{\"name\":{},\"cat\":\"{}\",\"ph\":\"X\",\"pid\":1,\"tid\":{tid},\"ts\":{:.3},\"dur\":{:.3}}}",
                    json_string(&span.name),
                    span.track,
                    span.start.as_secs_f64() * 1e6,
                    span.duration.as_secs_f64() * 1e6
                )?;
            }
            writeln!(out, "\n]}}")?;
            out.flush()?;
        }
        std::fs::rename(&tmp, path)
    }
}

/// An NVTX range over the whole process (ended when dropped), for stages that begin and end
/// in different places.
pub fn nvtx_range(name: &str) -> nvtx::Range {
    nvtx::Range::new(nvtx_name(name).as_c_str())
}

/// `name` as a C string (interior NULs, which stage names never have, become spaces).
fn nvtx_name(name: &str) -> std::ffi::CString {
    std::ffi::CString::new(name.replace('\0', " ")).unwrap_or_default()
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrome_trace_is_valid_json_with_every_span() {
        let trace = Trace::new();
        let v = trace.span("spots", || 41 + 1);
        assert_eq!(v, 42);
        trace.record(
            "assemble \"kernel\"",
            "gpu",
            Duration::from_micros(5),
            Duration::from_micros(7),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        trace.write_chrome(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let events = json["traceEvents"].as_array().unwrap();
        let spans: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1]["name"], "assemble \"kernel\"");
        assert_eq!(spans[1]["tid"], 2);
        assert!((spans[1]["dur"].as_f64().unwrap() - 7.0).abs() < 1e-9);
        let totals = trace.totals();
        assert_eq!(totals.len(), 2);
    }
}
