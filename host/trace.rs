//! Stage timing: NVTX ranges (so an Nsight Systems timeline reads like the pipeline) and our own
//! timeline of the same spans plus GPU kernel times, written as a Chrome/Perfetto trace JSON
//! (`chrome://tracing`, <https://ui.perfetto.dev>) that needs no Nsight.

use crate::io::atomic::write_file_atomically;
use crate::io::IoError;
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Stage name (docs/design.md §5.4, docs/algorithm.md §6: spots, assemble, cholesky, ...).
    pub name: String,
    /// Track: "host" for wall-clock stages, "gpu" for kernel times from CUDA events, "upload"
    /// for the image upload's copies and widening kernels (CUDA events).
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

    /// An empty trace whose origin is `origin` (spans of several traces made with one origin
    /// share a timeline).
    pub fn with_origin(origin: Instant) -> Self {
        Self {
            origin,
            spans: Mutex::new(Vec::new()),
        }
    }

    /// The time of `instant` on this trace (zero for an instant before the origin).
    pub fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.origin)
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
    /// GPU kernels on thread 2, the image upload's copies and widening on thread 3),
    /// atomically (a temporary beside `path`, renamed when complete).
    pub fn write_chrome(&self, path: &Path) -> Result<(), IoError> {
        let spans = self.spans();
        let thread = |tid, name| ChromeEvent {
            name: "thread_name",
            cat: None,
            ph: "M",
            pid: 1,
            tid,
            ts: None,
            dur: None,
            args: Some(ThreadName { name }),
        };
        let mut events = vec![
            thread(HOST_TID, "host stages"),
            thread(GPU_TID, "GPU kernels (CUDA events)"),
            thread(
                UPLOAD_TID,
                "image upload: copies and widening (CUDA events)",
            ),
        ];
        events.extend(spans.iter().map(|span| ChromeEvent {
            name: &span.name,
            cat: Some(span.track),
            ph: "X",
            pid: 1,
            tid: match span.track {
                "gpu" => GPU_TID,
                "upload" => UPLOAD_TID,
                _ => HOST_TID,
            },
            ts: Some(span.start.as_secs_f64() * 1e6),
            dur: Some(span.duration.as_secs_f64() * 1e6),
            args: None,
        }));
        let trace = ChromeTrace {
            display_time_unit: "ms",
            trace_events: events,
        };
        write_file_atomically(path, |out| {
            serde_json::to_writer(out, &trace).map_err(|e| IoError::Io {
                path: path.to_path_buf(),
                op: "write the trace JSON",
                source: e.into(),
            })
        })
    }
}

/// Chrome trace-event thread of the host stages.
const HOST_TID: u32 = 1;
/// Chrome trace-event thread of the GPU kernel times.
const GPU_TID: u32 = 2;
/// Chrome trace-event thread of the image upload's copies and widening kernels.
const UPLOAD_TID: u32 = 3;

/// A Chrome trace file (JSON object format).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChromeTrace<'a> {
    display_time_unit: &'static str,
    trace_events: Vec<ChromeEvent<'a>>,
}

/// One trace event: a complete event (`ph` X) or thread-name metadata (`ph` M).
#[derive(Serialize)]
struct ChromeEvent<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'a str>,
    ph: &'static str,
    pid: u32,
    tid: u32,
    /// Start, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    /// Duration, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<ThreadName>,
}

/// Arguments of a `thread_name` metadata event.
#[derive(Serialize)]
struct ThreadName {
    name: &'static str,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrome_trace_is_valid_json_with_every_span() {
        let trace = Trace::new();
        let v = trace.span("spots", || 41 + 1);
        assert_eq!(v, 42);
        trace.record(
            "assemble \"kernel\"\n\\ \u{1}",
            "gpu",
            Duration::from_micros(5),
            Duration::from_micros(7),
        );
        trace.record(
            "upload part",
            "upload",
            Duration::from_micros(1),
            Duration::from_micros(3),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        trace.write_chrome(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["t.json"], "no temporary left");
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["displayTimeUnit"], "ms");
        let events = json["traceEvents"].as_array().unwrap();
        // Thread names first (metadata events), then the spans in recording order.
        let meta: Vec<_> = events.iter().filter(|e| e["ph"] == "M").collect();
        assert_eq!(meta.len(), 3);
        for (e, (tid, name)) in meta.iter().zip([
            (1, "host stages"),
            (2, "GPU kernels (CUDA events)"),
            (3, "image upload: copies and widening (CUDA events)"),
        ]) {
            assert_eq!(e["name"], "thread_name");
            assert_eq!((e["pid"].as_u64(), e["tid"].as_u64()), (Some(1), Some(tid)));
            assert_eq!(e["args"]["name"], name);
            assert!(e.get("ts").is_none() && e.get("cat").is_none());
        }
        let spans: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0]["name"], "spots");
        assert_eq!(spans[0]["cat"], "host");
        assert_eq!(spans[0]["tid"], 1);
        assert_eq!(spans[1]["name"], "assemble \"kernel\"\n\\ \u{1}");
        assert_eq!(spans[1]["cat"], "gpu");
        assert_eq!(spans[1]["pid"], 1);
        assert_eq!(spans[1]["tid"], 2);
        assert!((spans[1]["ts"].as_f64().unwrap() - 5.0).abs() < 1e-9);
        assert!((spans[1]["dur"].as_f64().unwrap() - 7.0).abs() < 1e-9);
        assert_eq!(
            (&spans[2]["cat"], &spans[2]["tid"]),
            (&"upload".into(), &3.into())
        );
        assert!(spans.iter().all(|e| e.get("args").is_none()));
        let totals = trace.totals();
        assert_eq!(totals.len(), 3);

        // A directory that does not exist: an error naming the file, nothing written.
        let missing = dir.path().join("no-such-dir").join("t.json");
        let err = trace.write_chrome(&missing).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
