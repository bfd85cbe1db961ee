//! Small durable-file helpers.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("path has a parent");
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Allocator settings for a long-running server holding a few very large arrays (call
/// once, before other threads start). glibc raises its mmap threshold each time a large
/// mapped block is freed (up to 32 MiB), after which arrays of that size come from the
/// heap and, once freed, stay resident behind long-lived neighbours; a fixed threshold
/// keeps every allocation of 1 MiB or more in its own mapping, returned on free. Each
/// thread's arena also retains freed memory: at most 4 arenas (2 cores here). No-op on
/// other allocators / platforms; `SEXTANT_MALLOC_TUNING=0` skips it.
pub fn tune_allocator() {
    if std::env::var("SEXTANT_MALLOC_TUNING").is_ok_and(|v| v == "0") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

static RELEASE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// How the process's global allocator returns freed memory to the kernel (the binary picks
/// the allocator, so it says how; set once at start-up).
pub fn set_memory_release(f: fn()) {
    let _ = RELEASE_HOOK.set(f);
}

/// Give freed heap memory back to the kernel. Loading a checkpoint or building a graph
/// frees many small temporaries between long-lived allocations, and allocators keep those
/// pages (resident) until asked: the global allocator's hook ([`set_memory_release`]),
/// and glibc's `malloc_trim` for what C code allocated.
pub fn release_free_memory() {
    if let Some(f) = RELEASE_HOOK.get() {
        f();
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
