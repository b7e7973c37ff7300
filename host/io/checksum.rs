//! Image data units encoded for FITS (big-endian) with their DATASUM in one parallel pass, so
//! that a frame's large HDUs are written without cfitsio converting, byte-swapping and then
//! reading the whole data unit back to sum it ([`super::fits::Fits::write_data_unit`]).
//!
//! The sum is the FITS 32-bit ones' complement checksum of the data's big-endian 32-bit words
//! (Seaman et al., the algorithm of cfitsio's `ffcsum`). Ones' complement addition is
//! associative and commutative, so pieces summed on different threads combine to the sum
//! cfitsio computes in one sequential pass, bit for bit (its fill bytes are zeros, which add
//! nothing).

use rayon::prelude::*;

/// Values encoded per parallel task (64 Ki values: 256-512 KB of output).
const PIECE: usize = 1 << 16;

/// Folds a sum of 32-bit words (taken as a plain integer) into the 32-bit ones' complement
/// sum: 0 only when the total is 0 (all words zero), else the value in `1..=u32::MAX`
/// congruent to it modulo 2^32 - 1, which is what cfitsio's end-around-carry loop leaves.
pub(crate) fn fold(mut total: u64) -> u32 {
    while total > u64::from(u32::MAX) {
        total = (total & u64::from(u32::MAX)) + (total >> 32);
    }
    total as u32
}

/// Ones' complement sum of two checksums.
pub(crate) fn add(a: u32, b: u32) -> u32 {
    fold(u64::from(a) + u64::from(b))
}

#[cfg(test)]
/// Ones' complement sum of the big-endian 32-bit words of `bytes` (its length a multiple of
/// 4, as every FITS image data unit of 4- or 8-byte elements is).
pub(crate) fn words_sum(bytes: &[u8]) -> u32 {
    // At most 2^32 words per fold keeps the u64 from overflowing.
    bytes
        .chunks(1 << 32)
        .map(|block| {
            fold(
                block
                    .chunks_exact(4)
                    .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
                    .sum(),
            )
        })
        .fold(0, add)
}

/// A value as stored in a FITS image data unit: `K` big-endian 32-bit words.
pub(crate) trait FitsWords<const K: usize>: Copy + Send + Sync {
    /// The stored words of `self`, most significant first.
    fn fits_words(self) -> [u32; K];
}

/// An f64 stored as an f32 image value (BITPIX -32), rounded with `as f32`.
#[derive(Clone, Copy)]
pub(crate) struct AsF32(pub f64);

impl FitsWords<1> for AsF32 {
    fn fits_words(self) -> [u32; 1] {
        [(self.0 as f32).to_bits()]
    }
}

/// An f64 image value (BITPIX -64).
#[derive(Clone, Copy)]
pub(crate) struct F64(pub f64);

impl FitsWords<2> for F64 {
    fn fits_words(self) -> [u32; 2] {
        let bits = self.0.to_bits();
        [(bits >> 32) as u32, bits as u32]
    }
}

/// A u32 stored as BITPIX 32 with BZERO = 2^31 (cfitsio's ULONG_IMG): the stored int32 is
/// `value - 2^31`, i.e. the value with its top bit flipped.
#[derive(Clone, Copy)]
pub(crate) struct Unsigned32(pub u32);

impl FitsWords<1> for Unsigned32 {
    fn fits_words(self) -> [u32; 1] {
        [self.0 ^ 0x8000_0000]
    }
}

/// Encodes `src` into `dst` (`4 K` bytes a value; `dst` holds exactly `src.len()` values) as
/// big-endian image data, in parallel pieces; the ones' complement sum of the bytes written.
pub(crate) fn encode_into<const K: usize, S, T>(
    src: &[S],
    dst: &mut [u8],
    to_words: impl Fn(S) -> T + Sync,
) -> u32
where
    S: Copy + Sync,
    T: FitsWords<K>,
{
    debug_assert_eq!(dst.len(), src.len() * 4 * K);
    dst.par_chunks_mut(PIECE * 4 * K)
        .zip(src.par_chunks(PIECE))
        .map(|(dst, src)| {
            let mut total = 0u64;
            for (d, &v) in dst.chunks_exact_mut(4 * K).zip(src) {
                for (k, w) in to_words(v).fits_words().into_iter().enumerate() {
                    total += u64::from(w);
                    d[4 * k..4 * k + 4].copy_from_slice(&w.to_be_bytes());
                }
            }
            // A piece has at most 2^19 words of at most 2^32 - 1: no overflow.
            fold(total)
        })
        .reduce(|| 0, add)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cfitsio's `ffcsum`, transcribed literally (16-bit halves, fold per 2880-byte record),
    /// as the independent reference.
    fn cfitsio_sum(data: &[u8], mut sum: u64) -> u64 {
        let mut padded = data.to_vec();
        padded.resize(data.len().div_ceil(2880) * 2880, 0);
        for record in padded.chunks(2880) {
            let shorts: Vec<u64> = record
                .chunks(2)
                .map(|s| u64::from(u16::from_be_bytes([s[0], s[1]])))
                .collect();
            let (mut hi, mut lo) = (sum >> 16, sum & 0xFFFF);
            for pair in shorts.chunks(2) {
                hi += pair[0];
                lo += pair[1];
            }
            let (mut hicarry, mut locarry) = (hi >> 16, lo >> 16);
            while hicarry | locarry != 0 {
                hi = (hi & 0xFFFF) + locarry;
                lo = (lo & 0xFFFF) + hicarry;
                hicarry = hi >> 16;
                locarry = lo >> 16;
            }
            sum = (hi << 16) + lo;
        }
        sum
    }

    /// A deterministic mix of values, with many words near 0xFFFFFFFF so carries happen.
    fn values(n: usize, seed: u64) -> Vec<u32> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 3 == 0 {
                    u32::MAX - (x >> 60) as u32
                } else {
                    (x >> 32) as u32
                }
            })
            .collect()
    }

    #[test]
    fn parallel_sums_equal_cfitsios_sequential_sum() {
        for (n, seed) in [(0, 1), (1, 2), (719, 3), (720, 4), (PIECE * 5 + 5, 5)] {
            let words = values(n, seed);
            let mut bytes = vec![0u8; 4 * n];
            let sum = encode_into(&words, &mut bytes, Unsigned32);
            assert_eq!(bytes.len(), 4 * n);
            let want = cfitsio_sum(&bytes, 0);
            assert_eq!(u64::from(sum), want, "{n} words");
            assert_eq!(words_sum(&bytes), sum);
        }
        // All-zero data sums to 0; a multiple of 2^32 - 1 to 0xFFFFFFFF (negative zero).
        let zeros = vec![0u8; 4 * 1000];
        assert_eq!((words_sum(&zeros), cfitsio_sum(&zeros, 0)), (0, 0));
        let ones = [0xFFu8; 8];
        assert_eq!(u64::from(words_sum(&ones)), cfitsio_sum(&ones, 0));
        assert_eq!(words_sum(&ones), u32::MAX);
    }

    #[test]
    fn encodings_are_the_fits_representations() {
        let enc = |values: &[f64], k: usize, f64s: bool| {
            let mut out = vec![0u8; 4 * k * values.len()];
            let sum = if f64s {
                encode_into(values, &mut out, F64)
            } else {
                encode_into(values, &mut out, AsF32)
            };
            (out, sum)
        };
        let (f, _) = enc(&[1.0f64, -2.5, f64::NAN, 1e300], 1, false);
        let want: Vec<u8> = [1.0f32, -2.5, f64::NAN as f32, f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        assert_eq!(f, want);
        let (d, sum) = enc(&[1.5f64, -0.0], 2, true);
        assert_eq!(d[..8], 1.5f64.to_be_bytes());
        assert_eq!(u64::from(sum), cfitsio_sum(&d, 0));
        let mut u = vec![0u8; 12];
        encode_into(&[0u32, 1, u32::MAX], &mut u, Unsigned32);
        // int32 = value - 2^31, big-endian.
        assert_eq!(u[..4], i32::MIN.to_be_bytes());
        assert_eq!(u[4..8], (i32::MIN + 1).to_be_bytes());
        assert_eq!(u[8..], i32::MAX.to_be_bytes());
    }
}
