//! f32 distance kernels with `std::arch` SIMD, chosen once at run time.
//!
//! Paths: AVX-512F, AVX2+FMA, and a portable scalar fallback (8 independent accumulators so
//! LLVM vectorises it with the baseline SSE2). `kernels()` resolves the best path once;
//! the tests check every available path against the scalar one.

use std::sync::OnceLock;

pub type Kernel = fn(&[f32], &[f32]) -> f32;

/// The three kernels of one instruction-set path.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub name: &'static str,
    pub dot: Kernel,
    pub l2_squared: Kernel,
    pub l1: Kernel,
}

static KERNELS: OnceLock<Kernels> = OnceLock::new();

/// The fastest path this CPU supports. Set `SEXTANT_SIMD=scalar|avx2|avx512` to force one.
pub fn kernels() -> &'static Kernels {
    KERNELS.get_or_init(|| {
        let forced = std::env::var("SEXTANT_SIMD").ok();
        let all = available();
        if let Some(f) = forced {
            if let Some(k) = all.iter().find(|k| k.name == f) {
                return *k;
            }
        }
        *all.last().expect("scalar is always available")
    })
}

/// Every path usable on this CPU, slowest first.
pub fn available() -> Vec<Kernels> {
    let mut v = vec![Kernels {
        name: "scalar",
        dot: scalar::dot,
        l2_squared: scalar::l2_squared,
        l1: scalar::l1,
    }];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Kernels {
                name: "avx2",
                dot: x86::dot_avx2,
                l2_squared: x86::l2_avx2,
                l1: x86::l1_avx2,
            });
        }
        if is_x86_feature_detected!("avx512f") {
            v.push(Kernels {
                name: "avx512",
                dot: x86::dot_avx512,
                l2_squared: x86::l2_avx512,
                l1: x86::l1_avx512,
            });
        }
    }
    v
}

pub mod scalar {
    const LANES: usize = 8;

    macro_rules! reduce {
        ($a:expr, $b:expr, |$x:ident, $y:ident| $e:expr) => {{
            let (a, b) = ($a, $b);
            let n = a.len().min(b.len());
            let (a, b) = (&a[..n], &b[..n]);
            let mut acc = [0f32; LANES];
            let ca = a.chunks_exact(LANES);
            let cb = b.chunks_exact(LANES);
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (xa, xb) in ca.zip(cb) {
                for i in 0..LANES {
                    let ($x, $y) = (xa[i], xb[i]);
                    acc[i] += $e;
                }
            }
            let mut s: f32 = acc.iter().sum();
            for (&$x, &$y) in ra.iter().zip(rb) {
                s += $e;
            }
            s
        }};
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        reduce!(a, b, |x, y| x * y)
    }
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        reduce!(a, b, |x, y| (x - y) * (x - y))
    }
    pub fn l1(a: &[f32], b: &[f32]) -> f32 {
        reduce!(a, b, |x, y| (x - y).abs())
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline]
    fn hsum256(v: __m256) -> f32 {
        let mut out = [0f32; 8];
        // SAFETY: `out` has room for 8 f32; unaligned store.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        out.iter().sum()
    }

    macro_rules! avx2_kernel {
        ($name:ident, $inner:ident, |$acc:ident, $va:ident, $vb:ident| $step:expr, |$x:ident, $y:ident| $tail:expr) => {
            pub fn $name(a: &[f32], b: &[f32]) -> f32 {
                // SAFETY: only installed in the kernel table after avx2+fma were detected.
                unsafe { $inner(a, b) }
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $inner(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let mut acc0 = _mm256_setzero_ps();
                let mut acc1 = _mm256_setzero_ps();
                let mut i = 0;
                // SAFETY (all loads): i + 16 <= n (or i + 8 <= n) keeps every load in bounds.
                while i + 16 <= n {
                    {
                        let $acc = acc0;
                        let $va = _mm256_loadu_ps(pa.add(i));
                        let $vb = _mm256_loadu_ps(pb.add(i));
                        acc0 = $step;
                    }
                    {
                        let $acc = acc1;
                        let $va = _mm256_loadu_ps(pa.add(i + 8));
                        let $vb = _mm256_loadu_ps(pb.add(i + 8));
                        acc1 = $step;
                    }
                    i += 16;
                }
                while i + 8 <= n {
                    let $acc = acc0;
                    let $va = _mm256_loadu_ps(pa.add(i));
                    let $vb = _mm256_loadu_ps(pb.add(i));
                    acc0 = $step;
                    i += 8;
                }
                let mut s = hsum256(_mm256_add_ps(acc0, acc1));
                while i < n {
                    let ($x, $y) = (*pa.add(i), *pb.add(i));
                    s += $tail;
                    i += 1;
                }
                s
            }
        };
    }

    avx2_kernel!(
        dot_avx2,
        dot_avx2_impl,
        |acc, a, b| _mm256_fmadd_ps(a, b, acc),
        |x, y| x * y
    );
    avx2_kernel!(
        l2_avx2,
        l2_avx2_impl,
        |acc, a, b| {
            let d = _mm256_sub_ps(a, b);
            _mm256_fmadd_ps(d, d, acc)
        },
        |x, y| (x - y) * (x - y)
    );
    avx2_kernel!(
        l1_avx2,
        l1_avx2_impl,
        |acc, a, b| {
            let d = _mm256_sub_ps(a, b);
            _mm256_add_ps(acc, _mm256_andnot_ps(_mm256_set1_ps(-0.0), d))
        },
        |x, y| (x - y).abs()
    );

    macro_rules! avx512_kernel {
        ($name:ident, $inner:ident, |$acc:ident, $va:ident, $vb:ident| $step:expr, |$x:ident, $y:ident| $tail:expr) => {
            pub fn $name(a: &[f32], b: &[f32]) -> f32 {
                // SAFETY: only installed in the kernel table after avx512f was detected.
                unsafe { $inner(a, b) }
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn $inner(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let mut acc0 = _mm512_setzero_ps();
                let mut acc1 = _mm512_setzero_ps();
                let mut i = 0;
                // SAFETY (all loads): bounds checked by the loop conditions.
                while i + 32 <= n {
                    {
                        let $acc = acc0;
                        let $va = _mm512_loadu_ps(pa.add(i));
                        let $vb = _mm512_loadu_ps(pb.add(i));
                        acc0 = $step;
                    }
                    {
                        let $acc = acc1;
                        let $va = _mm512_loadu_ps(pa.add(i + 16));
                        let $vb = _mm512_loadu_ps(pb.add(i + 16));
                        acc1 = $step;
                    }
                    i += 32;
                }
                while i + 16 <= n {
                    let $acc = acc0;
                    let $va = _mm512_loadu_ps(pa.add(i));
                    let $vb = _mm512_loadu_ps(pb.add(i));
                    acc0 = $step;
                    i += 16;
                }
                if i < n {
                    // masked tail: lanes past n load as 0 and contribute 0 to every kernel
                    let m: __mmask16 = (1u32 << (n - i)) as u16 - 1;
                    let $acc = acc1;
                    let $va = _mm512_maskz_loadu_ps(m, pa.add(i));
                    let $vb = _mm512_maskz_loadu_ps(m, pb.add(i));
                    acc1 = $step;
                    let _ = |$x: f32, $y: f32| $tail;
                }
                _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
            }
        };
    }

    avx512_kernel!(
        dot_avx512,
        dot_avx512_impl,
        |acc, a, b| _mm512_fmadd_ps(a, b, acc),
        |x, y| x * y
    );
    avx512_kernel!(
        l2_avx512,
        l2_avx512_impl,
        |acc, a, b| {
            let d = _mm512_sub_ps(a, b);
            _mm512_fmadd_ps(d, d, acc)
        },
        |x, y| (x - y) * (x - y)
    );
    avx512_kernel!(
        l1_avx512,
        l1_avx512_impl,
        |acc, a, b| _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(a, b))),
        |x, y| (x - y).abs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_path_agrees_with_scalar() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let paths = available();
        assert!(!paths.is_empty());
        for len in (0..140).chain([255, 256, 257, 768, 1536]) {
            let a: Vec<f32> = (0..len).map(|_| rng.random_range(-2.0..2.0)).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.random_range(-2.0..2.0)).collect();
            let want = [
                scalar::dot(&a, &b),
                scalar::l2_squared(&a, &b),
                scalar::l1(&a, &b),
            ];
            for k in &paths {
                let got = [(k.dot)(&a, &b), (k.l2_squared)(&a, &b), (k.l1)(&a, &b)];
                for (g, w) in got.iter().zip(want) {
                    let tol = 1e-4 * (1.0 + w.abs());
                    assert!((g - w).abs() <= tol, "{} len {len}: {g} vs {w}", k.name);
                }
            }
        }
    }

    #[test]
    fn unaligned_slices_work() {
        let v: Vec<f32> = (0..100).map(|i| i as f32 * 0.01).collect();
        for k in available() {
            let (a, b) = (&v[1..70], &v[3..72]);
            assert!(
                ((k.dot)(a, b) - scalar::dot(a, b)).abs() < 1e-3,
                "{}",
                k.name
            );
        }
    }
}
