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

/// Write `data` to `path` as checksummed JSON, atomically: `{"crc32c": n, "data": ...}`,
/// where `n` is the CRC-32C of `data`'s compact JSON. Read it back with [`read_json`].
pub fn write_json<T: serde::Serialize>(path: &Path, data: &T) -> std::io::Result<()> {
    atomic_write(path, &checksummed_json(data)?)
}

/// The bytes [`write_json`] writes, for a file made durable another way (a checkpoint's
/// manifest, inside a directory renamed into place).
pub fn checksummed_json<T: serde::Serialize>(data: &T) -> std::io::Result<Vec<u8>> {
    let data = serde_json::to_value(data).map_err(std::io::Error::other)?;
    let crc = crc32c::crc32c(&serde_json::to_vec(&data).map_err(std::io::Error::other)?);
    let file = serde_json::json!({"crc32c": crc, "data": data});
    serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)
}

/// Read a JSON file [`write_json`] wrote, verifying its checksum; a file of an earlier
/// version (the bare JSON, no checksum) is read as it is. The error names the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let data = match v {
        // unambiguous: nothing stored bare has a numeric `crc32c` beside `data` alone (an
        // alias maps to a string)
        serde_json::Value::Object(mut m)
            if m.len() == 2
                && m.get("crc32c").is_some_and(|c| c.is_u64())
                && m.contains_key("data") =>
        {
            let want = m["crc32c"].as_u64().unwrap_or_default();
            let data = m.remove("data").unwrap_or_default();
            let got = crc32c::crc32c(&serde_json::to_vec(&data).map_err(|e| e.to_string())?);
            if u64::from(got) != want {
                return Err(format!(
                    "{}: fails its checksum (crc32c {got:#010x}, recorded {want:#010x})",
                    path.display()
                ));
            }
            data
        }
        bare => bare,
    };
    serde_json::from_value(data).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes written between two `fdatasync`s of a large file (checkpoint files, snapshot
/// archives): its writeback goes in pieces this size, so a concurrent WAL fsync (each
/// `wait=true` write) never queues behind hundreds of MB of dirty pages.
pub const SYNC_EVERY_BYTES: u64 = 8 << 20;

pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = SyncEvery::new(File::create(path)?);
    f.write_all(bytes)?;
    f.into_file().sync_all()
}

/// A file writer that syncs its data every [`SYNC_EVERY_BYTES`].
pub struct SyncEvery {
    file: File,
    unsynced: u64,
}

impl SyncEvery {
    pub fn new(file: File) -> SyncEvery {
        SyncEvery { file, unsynced: 0 }
    }

    pub fn into_file(self) -> File {
        self.file
    }
}

impl Write for SyncEvery {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = (SYNC_EVERY_BYTES - self.unsynced) as usize;
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn checksummed_json_round_trips_and_catches_a_flipped_digit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collection.json");
        let mut data: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        data.insert("size".into(), serde_json::json!(1536));
        data.insert("ratio".into(), serde_json::json!(0.1 + 0.2));
        data.insert("name".into(), serde_json::json!("ünïcode"));
        write_json(&path, &data).unwrap();
        assert_eq!(
            read_json::<BTreeMap<String, serde_json::Value>>(&path).unwrap(),
            data
        );

        // still valid JSON, a different config: only the checksum can tell
        let text = fs::read_to_string(&path).unwrap().replace("1536", "1537");
        fs::write(&path, text).unwrap();
        let e = read_json::<BTreeMap<String, serde_json::Value>>(&path).unwrap_err();
        assert!(e.contains("fails its checksum"), "{e}");

        // a file of an earlier version (bare JSON) is read as it is, an alias map included
        let mut aliases = BTreeMap::new();
        aliases.insert("crc32c".to_string(), "c".to_string());
        aliases.insert("data".to_string(), "d".to_string());
        fs::write(&path, serde_json::to_vec(&aliases).unwrap()).unwrap();
        assert_eq!(
            read_json::<BTreeMap<String, String>>(&path).unwrap(),
            aliases
        );
    }
}
