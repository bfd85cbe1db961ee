//! Distance kernels and Qdrant's scoring conventions.
//!
//! Internally every score is "bigger is better": Cosine and Dot use the dot product
//! (Cosine vectors are normalised at insert and at query time), Euclid uses the negated
//! squared L2 distance and Manhattan the negated L1 distance. `to_reported` converts an
//! internal score into what the API reports (Euclid: the real distance).
//!
//! The kernels are SIMD (`simd.rs`), chosen at run time.

use crate::types::{Distance, SparseVector};

use crate::simd::kernels;

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2_squared)(a, b)
}

#[inline]
pub fn l1(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l1)(a, b)
}

/// Normalise in place to unit length (a zero vector stays zero).
/// Scale to unit length. The norm and the quotients are computed in f64 and rounded once,
/// so the stored values are the correctly rounded unit vector (within an ulp of what the
/// reference client's local mode stores), not a sum of f32 rounding errors over the dims.
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if n > f32::EPSILON as f64 {
        for x in v.iter_mut() {
            *x = (*x as f64 / n) as f32;
        }
    }
}

/// Prepare a stored or query vector for a distance (Cosine: normalise).
pub fn preprocess(distance: Distance, mut v: Vec<f32>) -> Vec<f32> {
    if distance == Distance::Cosine {
        normalize(&mut v);
    }
    v
}

/// [`score`] with the kernel resolved once, for loops that score many vectors (resolving
/// it per call was measured at ~10% of a graph search).
#[derive(Clone, Copy)]
pub struct Metric {
    kernel: crate::simd::Kernel,
    /// -1 for kernels that return a distance (smaller is better).
    sign: f32,
}

impl Metric {
    pub fn of(distance: Distance) -> Metric {
        let k = kernels();
        let (kernel, sign) = match distance {
            Distance::Cosine | Distance::Dot => (k.dot, 1.0),
            Distance::Euclid => (k.l2_squared, -1.0),
            Distance::Manhattan => (k.l1, -1.0),
        };
        Metric { kernel, sign }
    }

    /// Internal score, bigger is better (same as [`score`]).
    #[inline]
    pub fn score(&self, a: &[f32], b: &[f32]) -> f32 {
        self.sign * (self.kernel)(a, b)
    }
}

/// Internal score, bigger is better. Both inputs must already be preprocessed.
#[inline]
pub fn score(distance: Distance, a: &[f32], b: &[f32]) -> f32 {
    match distance {
        Distance::Cosine | Distance::Dot => dot(a, b),
        Distance::Euclid => -l2_squared(a, b),
        Distance::Manhattan => -l1(a, b),
    }
}

/// Convert an internal score to the score the API reports.
pub fn to_reported(distance: Distance, internal: f32) -> f32 {
    match distance {
        Distance::Cosine | Distance::Dot => internal,
        Distance::Euclid => (-internal).max(0.0).sqrt(),
        Distance::Manhattan => -internal,
    }
}

/// Convert a reported score threshold to the internal scale. Hits must be strictly better.
pub fn threshold_to_internal(distance: Distance, reported: f32) -> f32 {
    match distance {
        Distance::Cosine | Distance::Dot => reported,
        Distance::Euclid => -(reported * reported) * reported.signum(),
        Distance::Manhattan => -reported,
    }
}

/// Sparse dot product over shared indices; `None` when the vectors share no index.
pub fn sparse_dot(a: &SparseVector, b: &SparseVector) -> Option<f32> {
    let (mut i, mut j) = (0, 0);
    let mut s = 0f32;
    let mut overlap = false;
    while i < a.indices.len() && j < b.indices.len() {
        match a.indices[i].cmp(&b.indices[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                s += a.values[i] * b.values[j];
                overlap = true;
                i += 1;
                j += 1;
            }
        }
    }
    overlap.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(d: Distance, a: &[f32], b: &[f32]) -> f32 {
        match d {
            Distance::Cosine | Distance::Dot => a.iter().zip(b).map(|(x, y)| x * y).sum(),
            Distance::Euclid => -a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>(),
            Distance::Manhattan => -a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>(),
        }
    }

    #[test]
    fn kernels_agree_with_naive_for_all_lengths() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in 0..70 {
            let a: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
            for d in [Distance::Dot, Distance::Euclid, Distance::Manhattan] {
                let (x, y) = (score(d, &a, &b), naive(d, &a, &b));
                assert!((x - y).abs() < 1e-4, "len {len} {d:?}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn reported_scores_follow_qdrant_conventions() {
        let a = [0.0, 0.0];
        let b = [3.0, 4.0];
        assert_eq!(
            to_reported(Distance::Euclid, score(Distance::Euclid, &a, &b)),
            5.0
        );
        assert_eq!(
            to_reported(Distance::Manhattan, score(Distance::Manhattan, &a, &b)),
            7.0
        );
        let t = threshold_to_internal(Distance::Euclid, 5.0);
        assert_eq!(t, -25.0);
    }

    #[test]
    fn sparse_dot_requires_overlap() {
        let a = SparseVector {
            indices: vec![1, 3],
            values: vec![1.0, 2.0],
        };
        let b = SparseVector {
            indices: vec![3, 5],
            values: vec![4.0, 1.0],
        };
        let c = SparseVector {
            indices: vec![7],
            values: vec![1.0],
        };
        assert_eq!(sparse_dot(&a, &b), Some(8.0));
        assert_eq!(sparse_dot(&a, &c), None);
    }
}
