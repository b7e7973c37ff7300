//! Device memory of the GPU backend: the caller's cap (`--gpu-memory-limit`, or
//! [`MEMORY_LIMIT_ENV`] for ranks sharing a GPU under MPS), the batch plan that respects it, and
//! the device memory pool's counters (what a run actually used and still holds).
//!
//! The cap bounds what one [`super::GpuContext`] allocates for a frame: the frame's own buffers
//! (PSF stamps and corners, image and weights, the upload staging while it lasts) plus the
//! batches in flight, each estimated per patch from above (docs/design.md §5.2). The CUDA
//! context itself (a few hundred MB of driver state, kernels and stacks) is not counted.

use super::context::GpuError;
use std::ops::Range;

/// Environment variable with the device memory cap of every GPU context the process opens
/// (e.g. `DESI_GPU_MEMORY_LIMIT=20GiB` for each of four ranks sharing an 80 GB GPU under MPS);
/// a `--gpu-memory-limit` flag overrides it.
pub const MEMORY_LIMIT_ENV: &str = "DESI_GPU_MEMORY_LIMIT";

/// Share of the free device memory the batches may take when no cap is set (the rest is left
/// for the pool's rounding, other contexts and the driver).
const FREE_FRACTION: f64 = 0.7;

/// Parses a memory size: a number (decimals allowed) with an optional unit, `B`, `K`/`KB`,
/// `M`/`MB`, `G`/`GB`, `T`/`TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of
/// 1024), case-insensitive, spaces allowed before the unit: `8GiB`, `500 MB`, `1.5G`, `1048576`.
///
/// # Errors
/// Text that is not such a size, or a size of zero bytes or beyond `u64`.
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        format!(
            "{text:?} is not a memory size (a number with an optional unit: B, KB, MB, GB, TB, \
             KiB, MiB, GiB, TiB; e.g. 8GiB)"
        )
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = (value * scale).floor();
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?}: a memory cap must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// The cap set by [`MEMORY_LIMIT_ENV`], if any.
///
/// # Errors
/// The variable is set but is not a memory size ([`GpuError::MemoryLimit`]).
pub fn memory_limit_from_env() -> Result<Option<u64>, GpuError> {
    match std::env::var(MEMORY_LIMIT_ENV) {
        Ok(text) if !text.trim().is_empty() => parse_memory_size(&text)
            .map(Some)
            .map_err(|e| GpuError::MemoryLimit(format!("{MEMORY_LIMIT_ENV}: {e}"))),
        _ => Ok(None),
    }
}

/// Bytes as people read them (`1.50 GiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// What one frame asks of the device, for [`plan_batches`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMemory {
    /// Patches to solve.
    pub npatch: usize,
    /// Upper bound of the device bytes of one patch in a batch.
    pub per_patch: u64,
    /// Device bytes the frame holds while its batches run (stamps, corners, image, weights).
    pub fixed: u64,
    /// Batches in flight at once.
    pub in_flight: usize,
    /// Fewest batches a frame is cut into (`DESI_GPU_BATCHES`).
    pub min_batches: usize,
}

/// The batches of a frame: consecutive ranges of its patches, and the device bytes the frame
/// may take at most with them (its own buffers plus the batches in flight).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    /// Patch ranges, in order, covering every patch once.
    pub ranges: Vec<Range<usize>>,
    /// Patches per batch (the last may have fewer).
    pub batch: usize,
    /// Upper bound of the frame's device bytes: `fixed + in_flight * batch * per_patch`.
    pub peak_bytes: u64,
}

/// Cuts a frame's patches into batches: a batch holds at most [`FREE_FRACTION`] of `free`
/// device bytes divided by the batches in flight, at most `limit - fixed` divided by them when
/// the caller set a cap, and a frame has at least `min_batches` batches.
///
/// # Errors
/// [`GpuError::MemoryLimit`] when the cap cannot hold the frame's own buffers and one patch
/// per batch in flight; [`GpuError::Memory`] when the free memory cannot.
pub fn plan_batches(
    frame: FrameMemory,
    free: u64,
    limit: Option<u64>,
) -> Result<BatchPlan, GpuError> {
    let FrameMemory {
        npatch,
        per_patch,
        fixed,
        in_flight,
        min_batches,
    } = frame;
    let in_flight = in_flight.max(1) as u64;
    let per_patch = per_patch.max(1);
    let one_patch_each = per_patch.saturating_mul(in_flight);
    if let Some(limit) = limit {
        let need = fixed.saturating_add(one_patch_each);
        if limit < need {
            return Err(GpuError::MemoryLimit(format!(
                "the GPU memory cap {} ({limit} bytes) is too small for this frame: its PSF \
                 stamps, image and weights take {} and each of the {in_flight} batches in \
                 flight at least one patch of {}, {} ({need} bytes) in all",
                format_bytes(limit),
                format_bytes(fixed),
                format_bytes(per_patch),
                format_bytes(need),
            )));
        }
    }
    if free < one_patch_each {
        return Err(GpuError::Memory(format!(
            "{free} bytes free, one patch needs {per_patch} with {in_flight} batches in flight"
        )));
    }
    let by_free = (free as f64 * FREE_FRACTION) as u64 / one_patch_each;
    let by_limit = limit.map_or(u64::MAX, |l| (l - fixed) / one_patch_each);
    let memory_batch = usize::try_from(by_free.min(by_limit)).unwrap_or(usize::MAX);
    let batch = memory_batch.min(npatch.div_ceil(min_batches.max(1))).max(1);
    let ranges = (0..npatch)
        .step_by(batch)
        .map(|start| start..(start + batch).min(npatch))
        .collect();
    let peak_bytes = fixed.saturating_add(one_patch_each.saturating_mul(batch as u64));
    Ok(BatchPlan {
        ranges,
        batch,
        peak_bytes,
    })
}

/// The counters of a device's default memory pool (where every allocation of the GPU backend
/// lives), in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Bytes allocated now.
    pub used: u64,
    /// Most bytes allocated at once since the last reset.
    pub used_high: u64,
    /// Bytes the pool holds from the driver now (allocated or kept for reuse).
    pub reserved: u64,
    /// Most bytes held since the last reset.
    pub reserved_high: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_bad_ones_are_refused() {
        let gib = 1024 * 1024 * 1024;
        for (text, want) in [
            ("1048576", 1_048_576),
            ("8GiB", 8 * gib),
            ("8 gib", 8 * gib),
            ("500MB", 500_000_000),
            ("1.5G", 1_500_000_000),
            ("2t", 2_000_000_000_000),
            ("64KiB", 65_536),
            (" 3 B ", 3),
        ] {
            assert_eq!(parse_memory_size(text), Ok(want), "{text}");
        }
        for text in [
            "", "GiB", "8 GiBs", "-1G", "0", "0.1", "1e3", "8 PB", "1.2.3G",
        ] {
            let err = parse_memory_size(text).expect_err(text);
            assert!(err.contains("memory"), "{text}: {err}");
        }
    }

    #[test]
    fn bytes_format_in_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }

    fn frame(npatch: usize) -> FrameMemory {
        FrameMemory {
            npatch,
            per_patch: 1_000,
            fixed: 10_000,
            in_flight: 2,
            min_batches: 2,
        }
    }

    fn covers(plan: &BatchPlan, npatch: usize) {
        let mut next = 0;
        for r in &plan.ranges {
            assert_eq!(r.start, next);
            assert!(r.end > r.start && r.end - r.start <= plan.batch);
            next = r.end;
        }
        assert_eq!(next, npatch);
    }

    #[test]
    fn without_a_cap_the_free_memory_and_the_batch_count_bound_the_batches() {
        // Plenty of memory: the frame's 4700 patches in the 2 batches it asks for at least.
        let plan = plan_batches(frame(4700), u64::MAX / 4, None).unwrap();
        assert_eq!((plan.batch, plan.ranges.len()), (2350, 2));
        covers(&plan, 4700);
        // 0.7 of 1 MB free over 2 batches of 1000-byte patches: 350 per batch.
        let plan = plan_batches(frame(4700), 1_000_000, None).unwrap();
        assert_eq!((plan.batch, plan.ranges.len()), (350, 14));
        covers(&plan, 4700);
    }

    #[test]
    fn a_cap_bounds_the_frame_and_its_batches() {
        for limit in [12_000u64, 12_999, 15_500, 60_000, 1_000_000, 10_000_000] {
            let plan = plan_batches(frame(4700), u64::MAX / 4, Some(limit)).unwrap();
            covers(&plan, 4700);
            assert!(plan.peak_bytes <= limit, "limit {limit}: {plan:?}");
            // The largest batch under the cap (unless the frame's two batches fit anyway).
            let next = 10_000 + 2 * 1_000 * (plan.batch as u64 + 1);
            assert!(
                plan.batch == 2350 || next > limit,
                "limit {limit}: {plan:?}"
            );
        }
        assert_eq!(
            plan_batches(frame(4700), u64::MAX / 4, Some(12_000))
                .unwrap()
                .batch,
            1
        );
        // The free memory still bounds the batches under a generous cap.
        let plan = plan_batches(frame(4700), 1_000_000, Some(u64::MAX / 2)).unwrap();
        assert_eq!(plan.batch, 350);
    }

    #[test]
    fn a_cap_too_small_for_one_patch_is_a_clear_error() {
        let err = plan_batches(frame(4700), u64::MAX / 4, Some(11_999)).unwrap_err();
        assert!(matches!(err, GpuError::MemoryLimit(_)));
        let text = err.to_string();
        assert!(
            text.contains("too small") && text.contains("11999 bytes"),
            "{text}"
        );
        let err = plan_batches(frame(4700), 1_999, None).unwrap_err();
        assert!(matches!(err, GpuError::Memory(_)), "{err}");
    }
}
