//! Memory placement hints for the large arrays a search walks at random (vectors, graph
//! links, quantized codes).
//!
//! A graph search touches a few hundred vectors scattered over the whole arena; with 4 KiB
//! pages nearly every one is a TLB miss (a page walk before the cache miss). Backing the
//! arrays with 2 MiB transparent huge pages removes most of those walks. The kernel here
//! runs THP in `madvise` mode, so the arrays ask for it: `MADV_HUGEPAGE` for pages faulted
//! in later, and `MADV_COLLAPSE` (Linux 6.1+) to convert what is already resident now.
//! Both are hints: failure (older kernel, THP disabled, no contiguous memory) changes speed,
//! never results.

const HUGE: usize = 2 << 20;

/// `SEXTANT_HUGE_PAGES=0` turns the hints off (for A/B measurements).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SEXTANT_HUGE_PAGES").map_or(true, |v| v != "0"))
}

/// Ask for huge pages under the 2 MiB-aligned interior of `s`. Returns whether the
/// kernel accepted the collapse (false also when `s` is too small to hold a huge page).
pub fn advise_huge_pages<T>(s: &[T]) -> bool {
    let start = s.as_ptr() as usize;
    let end = start + std::mem::size_of_val(s);
    let lo = start.div_ceil(HUGE) * HUGE;
    let hi = end / HUGE * HUGE;
    if hi <= lo || !enabled() {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        const MADV_COLLAPSE: libc::c_int = 25;
        let p = lo as *mut libc::c_void;
        // SAFETY: [lo, hi) lies inside the live allocation `s`; madvise with these advice
        // values only changes how the kernel backs the pages, never their contents.
        unsafe {
            libc::madvise(p, hi - lo, libc::MADV_HUGEPAGE);
            libc::madvise(p, hi - lo, MADV_COLLAPSE) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    false
}
