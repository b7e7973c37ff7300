//! Small statistics shared by the library, the command line, the tests and the benches.

/// The median as numpy's `median` computes it: the middle value of an odd count, the mean of
/// the two middle values of an even count, NaN for no values.
///
/// Values are ordered by [`f64::total_cmp`]: a (positive) NaN sorts above `+inf`, so a few
/// NaNs only shift the median up, and it is NaN when they are at least half of the values
/// (numpy returns NaN for any NaN). Callers that want finite values only filter them first.
/// Runs in linear time (selection, no full sort); `values` is reordered.
pub fn median(mut values: Vec<f64>) -> f64 {
    median_in_place(&mut values)
}

/// [`median`] of a slice, reordering it (no copy).
pub fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let (below, &mut upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return upper;
    }
    // The lower middle value is the largest of those below the upper one.
    let lower = below
        .iter()
        .copied()
        .max_by(|a, b| a.total_cmp(b))
        .unwrap_or(upper);
    0.5 * (lower + upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The median through a full sort, as numpy defines it (reference for the selection).
    fn sorted_median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    }

    #[test]
    fn median_matches_numpy() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(median(vec![-1.0, 5.0]), 2.0);
        assert_eq!(median(vec![2.0, 2.0, 1.0, 2.0]), 2.0);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn nans_sort_last() {
        // One NaN of five: the median of the ordered 1, 2, 3, 4, NaN.
        assert_eq!(median(vec![f64::NAN, 4.0, 1.0, 3.0, 2.0]), 3.0);
        // Even count: 1, 2, 3, NaN -> (2 + 3) / 2.
        assert_eq!(median(vec![3.0, f64::NAN, 1.0, 2.0]), 2.5);
        // Infinities are ordinary values.
        assert_eq!(median(vec![f64::INFINITY, 0.0, f64::NEG_INFINITY]), 0.0);
        // Half or more NaN: NaN.
        assert!(median(vec![1.0, f64::NAN]).is_nan());
        assert!(median(vec![f64::NAN, f64::NAN, 1.0]).is_nan());
    }

    #[test]
    fn selection_equals_sorting() {
        // Deterministic pseudo-random values with repeats, odd and even lengths.
        let mut x = 12345u64;
        for n in 1..60 {
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % 17) as f64 - 8.0
                })
                .collect();
            assert_eq!(median(v.clone()), sorted_median(v), "n = {n}");
        }
    }
}
