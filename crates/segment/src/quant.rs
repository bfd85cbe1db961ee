//! Scalar (int8) quantization: every vector component becomes one byte.
//!
//! Training picks a value range `[lo, hi]` (all values, or the central `quantile` of a
//! sample) and maps it linearly onto the codes `0..=255`: `x ≈ lo + scale·c`. Distances
//! between two coded vectors are computed on the bytes with integer SIMD and mapped back:
//!
//! * dot / cosine: `x·y ≈ d·lo² + lo·scale·(Σcx + Σcy) + scale²·Σ cx·cy` — the per-vector
//!   terms are precomputed (`corr`), so a score is one integer dot product and two adds;
//! * euclid: `|x−y|² ≈ scale²·Σ (cx−cy)²`;  manhattan: `|x−y|₁ ≈ scale·Σ |cx−cy|`.
//!
//! The query is coded the same way (symmetric), which keeps the inner loop at 16 or 32
//! components per instruction. Codes take a quarter of the memory of f32 vectors, so a
//! memory-bound scan or graph walk reads four times fewer cache lines; the search then
//! re-scores the best `limit × oversampling` candidates with the original vectors.
//!
//! Useful for: large collections whose vectors do not fit in RAM, scattered scans.
//! Not useful for: exact scores (always rescore, or search with `exact`).

use crate::hnsw::{prefetch_all, QueryScorer};
use crate::types::Distance;
use std::sync::OnceLock;

/// Values sampled to find the quantile range.
const TRAIN_SAMPLE_VALUES: usize = 1 << 20;

/// The linear map between f32 components and byte codes of one vector name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalarQuantizer {
    pub lo: f32,
    pub scale: f32,
    pub dim: usize,
    pub distance: Distance,
}

impl ScalarQuantizer {
    /// Fit the range to `rows` (each `dim` long). `quantile` in `[0.5, 1]` keeps that central
    /// share of the values (outliers are clamped); `None` keeps the whole range.
    pub fn train<'a>(
        dim: usize,
        distance: Distance,
        rows: impl Iterator<Item = &'a [f32]> + Clone,
        quantile: Option<f32>,
    ) -> ScalarQuantizer {
        assert!(dim > 0, "quantizer needs a dimension");
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut count = 0usize;
        for r in rows.clone() {
            for &x in r {
                lo = lo.min(x);
                hi = hi.max(x);
            }
            count += r.len();
        }
        if count == 0 {
            (lo, hi) = (-1.0, 1.0);
        }
        if let Some(q) = quantile.filter(|q| *q < 1.0 && count > 0) {
            let q = q.clamp(0.5, 1.0) as f64;
            let step = count.div_ceil(TRAIN_SAMPLE_VALUES).max(1);
            let mut sample: Vec<f32> = rows.flat_map(|r| r.iter().copied()).step_by(step).collect();
            let n = sample.len();
            let tail = ((1.0 - q) / 2.0 * n as f64) as usize;
            let lo_i = tail.min(n - 1);
            let hi_i = (n - 1).saturating_sub(tail).max(lo_i);
            lo = *sample.select_nth_unstable_by(lo_i, f32::total_cmp).1;
            hi = *sample.select_nth_unstable_by(hi_i, f32::total_cmp).1;
        }
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        ScalarQuantizer {
            lo,
            scale,
            dim,
            distance,
        }
    }

    /// Code `v` into `out` (`dim` bytes); returns the vector's correction term.
    pub fn encode(&self, v: &[f32], out: &mut [u8]) -> f32 {
        debug_assert_eq!(v.len(), self.dim);
        let inv = 1.0 / self.scale;
        let mut sum = 0u64;
        for (o, &x) in out.iter_mut().zip(v) {
            let c = ((x - self.lo) * inv).round().clamp(0.0, 255.0) as u8;
            *o = c;
            sum += c as u64;
        }
        match self.distance {
            Distance::Dot | Distance::Cosine => {
                self.lo * self.scale * sum as f32 + self.dim as f32 * self.lo * self.lo / 2.0
            }
            Distance::Euclid | Distance::Manhattan => 0.0,
        }
    }

    /// Approximate internal score (bigger is better) of two coded vectors.
    #[inline]
    pub fn score(&self, a: &[u8], ca: f32, b: &[u8], cb: f32) -> f32 {
        let k = kernels();
        match self.distance {
            Distance::Dot | Distance::Cosine => {
                self.scale * self.scale * (k.dot)(a, b) as f32 + ca + cb
            }
            Distance::Euclid => -(self.scale * self.scale * (k.l2)(a, b) as f32),
            Distance::Manhattan => -(self.scale * (k.l1)(a, b) as f32),
        }
    }
}

/// The codes of every slot of one vector arena (`dim` bytes per slot, plus one correction
/// per slot for dot / cosine; Euclid and Manhattan need none).
#[derive(Clone, Debug)]
pub struct QuantizedVectors {
    pub quantizer: ScalarQuantizer,
    codes: Vec<u8>,
    corr: Vec<f32>,
    slots: usize,
}

impl QuantizedVectors {
    /// Back the codes with huge pages (see [`crate::mem`]).
    pub fn advise_huge_pages(&self) {
        crate::mem::advise_huge_pages(&self.codes);
    }

    pub fn new(quantizer: ScalarQuantizer) -> Self {
        QuantizedVectors {
            quantizer,
            codes: Vec::new(),
            corr: Vec::new(),
            slots: 0,
        }
    }

    fn has_corr(&self) -> bool {
        matches!(self.quantizer.distance, Distance::Dot | Distance::Cosine)
    }

    #[inline]
    fn corr_of(&self, off: usize) -> f32 {
        self.corr.get(off).copied().unwrap_or(0.0)
    }

    /// Code `v` into slot `off` (growing the arrays as needed).
    pub fn set(&mut self, off: u32, v: &[f32]) {
        let (o, d) = (off as usize, self.quantizer.dim);
        if self.slots <= o {
            self.slots = o + 1;
            self.codes.resize((o + 1) * d, 0);
            if self.has_corr() {
                self.corr.resize(o + 1, 0.0);
            }
        }
        let c = self
            .quantizer
            .encode(v, &mut self.codes[o * d..(o + 1) * d]);
        if let Some(x) = self.corr.get_mut(o) {
            *x = c;
        }
    }

    #[inline]
    fn row(&self, off: u32) -> &[u8] {
        let (o, d) = (off as usize, self.quantizer.dim);
        &self.codes[o * d..(o + 1) * d]
    }

    /// Slots coded so far.
    pub fn len(&self) -> usize {
        self.slots
    }

    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    /// Heap bytes held by the codes.
    pub fn bytes(&self) -> usize {
        self.codes.capacity() + self.corr.capacity() * 4
    }

    /// A query (already preprocessed, e.g. normalised for cosine) ready to score slots.
    pub fn query(&self, q: &[f32]) -> QuantQuery<'_> {
        let mut code = vec![0u8; self.quantizer.dim];
        let corr = self.quantizer.encode(q, &mut code);
        QuantQuery {
            qv: self,
            code,
            corr,
        }
    }
}

/// A coded query; scores slots of its [`QuantizedVectors`].
pub struct QuantQuery<'a> {
    qv: &'a QuantizedVectors,
    code: Vec<u8>,
    corr: f32,
}

impl QuantQuery<'_> {
    /// Approximate score of slot `off`; `None` if the slot was never coded.
    #[inline]
    pub fn try_score(&self, off: u32) -> Option<f32> {
        if off as usize >= self.qv.slots {
            return None;
        }
        let c = self.qv.corr_of(off as usize);
        Some(
            self.qv
                .quantizer
                .score(&self.code, self.corr, self.qv.row(off), c),
        )
    }

    #[inline]
    pub fn prefetch_slot(&self, off: u32) {
        if (off as usize) < self.qv.slots {
            prefetch_all(self.qv.row(off));
        }
    }
}

impl QueryScorer for QuantQuery<'_> {
    #[inline]
    fn score(&self, i: u32) -> f32 {
        self.try_score(i).unwrap_or(f32::NEG_INFINITY)
    }
    #[inline]
    fn prefetch(&self, i: u32) {
        self.prefetch_slot(i);
    }
}

// ---- byte kernels -------------------------------------------------------------------------

type ByteKernel = fn(&[u8], &[u8]) -> u64;

/// Σ a·b, Σ (a−b)², Σ |a−b| over bytes, for one instruction-set path.
#[derive(Clone, Copy)]
pub struct ByteKernels {
    pub name: &'static str,
    pub dot: ByteKernel,
    pub l2: ByteKernel,
    pub l1: ByteKernel,
}

static BYTE_KERNELS: OnceLock<ByteKernels> = OnceLock::new();

/// The fastest byte path this CPU supports (`SEXTANT_SIMD=scalar` forces the fallback).
pub fn kernels() -> &'static ByteKernels {
    BYTE_KERNELS.get_or_init(|| {
        let all = available();
        if std::env::var("SEXTANT_SIMD").is_ok_and(|v| v == "scalar") {
            return all[0];
        }
        *all.last().expect("scalar is always available")
    })
}

/// Every byte path usable here, slowest first.
pub fn available() -> Vec<ByteKernels> {
    let mut v = vec![ByteKernels {
        name: "scalar",
        dot: scalar::dot,
        l2: scalar::l2,
        l1: scalar::l1,
    }];
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        v.push(ByteKernels {
            name: "avx2",
            dot: x86::dot,
            l2: x86::l2,
            l1: x86::l1,
        });
    }
    v
}

mod scalar {
    pub fn dot(a: &[u8], b: &[u8]) -> u64 {
        a.iter().zip(b).map(|(&x, &y)| x as u64 * y as u64).sum()
    }
    pub fn l2(a: &[u8], b: &[u8]) -> u64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| {
                let d = x as i64 - y as i64;
                (d * d) as u64
            })
            .sum()
    }
    pub fn l1(a: &[u8], b: &[u8]) -> u64 {
        a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y) as u64).sum()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Elements per i32-accumulator flush: a 16-element step adds at most 2·255² to a
    /// lane, so a lane overflows after ~16,500 steps; flush every 8,192 steps.
    const FLUSH: usize = 16 * 8192;

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum_epi32(v: __m256i) -> u64 {
        let mut out = [0u32; 8];
        // SAFETY: `out` has room for 8 u32; unaligned store.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, v) };
        out.iter().map(|&x| x as u64).sum()
    }

    macro_rules! madd_kernel {
        ($name:ident, $inner:ident, |$va:ident, $vb:ident| $e:expr, $tail:path) => {
            pub fn $name(a: &[u8], b: &[u8]) -> u64 {
                // SAFETY: only installed after `is_x86_feature_detected!("avx2")`.
                unsafe { $inner(a, b) }
            }
            #[target_feature(enable = "avx2")]
            unsafe fn $inner(a: &[u8], b: &[u8]) -> u64 {
                let n = a.len().min(b.len());
                let mut total = 0u64;
                let mut i = 0;
                while i + 16 <= n {
                    let end = (i + FLUSH).min(n - n % 16);
                    let mut acc = _mm256_setzero_si256();
                    while i < end {
                        // SAFETY: i + 16 <= n for both slices.
                        let $va = _mm256_cvtepu8_epi16(unsafe {
                            _mm_loadu_si128(a.as_ptr().add(i) as *const __m128i)
                        });
                        let $vb = _mm256_cvtepu8_epi16(unsafe {
                            _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i)
                        });
                        acc = _mm256_add_epi32(acc, $e);
                        i += 16;
                    }
                    total += hsum_epi32(acc);
                }
                total + $tail(&a[i..n], &b[i..n])
            }
        };
    }

    madd_kernel!(
        dot,
        dot_avx2,
        |va, vb| _mm256_madd_epi16(va, vb),
        super::scalar::dot
    );
    madd_kernel!(
        l2,
        l2_avx2,
        |va, vb| {
            let d = _mm256_sub_epi16(va, vb);
            _mm256_madd_epi16(d, d)
        },
        super::scalar::l2
    );

    pub fn l1(a: &[u8], b: &[u8]) -> u64 {
        // SAFETY: only installed after `is_x86_feature_detected!("avx2")`.
        unsafe { l1_avx2(a, b) }
    }
    #[target_feature(enable = "avx2")]
    unsafe fn l1_avx2(a: &[u8], b: &[u8]) -> u64 {
        let n = a.len().min(b.len());
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n for both slices.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(i) as *const __m256i),
                    _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i),
                )
            };
            acc = _mm256_add_epi64(acc, _mm256_sad_epu8(va, vb));
            i += 32;
        }
        let mut out = [0u64; 4];
        // SAFETY: `out` has room for 4 u64; unaligned store.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, acc) };
        out.iter().sum::<u64>() + super::scalar::l1(&a[i..n], &b[i..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_byte_path_agrees_with_scalar() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100, 128, 769, 4096] {
            let a: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            for k in available() {
                assert_eq!((k.dot)(&a, &b), scalar::dot(&a, &b), "{} dot {len}", k.name);
                assert_eq!((k.l2)(&a, &b), scalar::l2(&a, &b), "{} l2 {len}", k.name);
                assert_eq!((k.l1)(&a, &b), scalar::l1(&a, &b), "{} l1 {len}", k.name);
            }
        }
        // extremes: all 255 against all 0 / all 255
        let (hi, lo) = (vec![255u8; 1000], vec![0u8; 1000]);
        for k in available() {
            assert_eq!((k.dot)(&hi, &hi), 255 * 255 * 1000);
            assert_eq!((k.l2)(&hi, &lo), 255 * 255 * 1000);
            assert_eq!((k.l1)(&hi, &lo), 255 * 1000);
        }
    }

    #[test]
    fn quantized_scores_track_exact_scores() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let dim = 64;
        let rows: Vec<Vec<f32>> = (0..500)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0f32)).collect())
            .collect();
        for d in [
            Distance::Dot,
            Distance::Cosine,
            Distance::Euclid,
            Distance::Manhattan,
        ] {
            let rows: Vec<Vec<f32>> = rows
                .iter()
                .map(|r| distance::preprocess(d, r.clone()))
                .collect();
            let q = ScalarQuantizer::train(dim, d, rows.iter().map(|r| r.as_slice()), None);
            let mut qv = QuantizedVectors::new(q);
            for (i, r) in rows.iter().enumerate() {
                qv.set(i as u32, r);
            }
            let query = &rows[0];
            let qq = qv.query(query);
            let mut worst = 0f32;
            for (i, r) in rows.iter().enumerate() {
                let exact = distance::score(d, query, r);
                let approx = qq.try_score(i as u32).unwrap();
                worst = worst.max((exact - approx).abs() / exact.abs().max(1.0));
            }
            assert!(worst < 0.05, "{d:?}: relative error {worst}");
            assert!(qq.try_score(500).is_none());
        }
    }

    #[test]
    fn quantile_clamps_outliers() {
        let mut rows: Vec<Vec<f32>> = (0..1000).map(|i| vec![(i % 100) as f32 / 100.0]).collect();
        rows.push(vec![1000.0]);
        let full = ScalarQuantizer::train(1, Distance::Euclid, rows.iter().map(|r| &r[..]), None);
        let q99 =
            ScalarQuantizer::train(1, Distance::Euclid, rows.iter().map(|r| &r[..]), Some(0.99));
        assert_eq!(full.lo + full.scale * 255.0, 1000.0);
        assert!(q99.lo + q99.scale * 255.0 < 1.0, "{q99:?}");
        let mut c = [0u8];
        q99.encode(&[1000.0], &mut c);
        assert_eq!(c[0], 255);
    }
}
