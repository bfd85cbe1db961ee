//! Collection snapshots: one consistent checkpoint of a collection in a tar archive.
//!
//! Layout (format version 1; every entry a regular file):
//!
//! ```text
//! snapshot.json        Manifest: format, version, collection, seq of the checkpoint
//! collection.json      the collection's config and payload indexes
//! checkpoint/<file>    the files of the checkpoint at `seq` (with their CRC32C manifest)
//! ```
//!
//! Taking one writes a checkpoint (a consistent cut: every write up to `seq` and nothing
//! after it), then archives that checkpoint's files, which are immutable once complete,
//! while checkpoints of the collection are held off. Writes continue meanwhile; they only
//! wait for the checkpoint's in-memory copy. A restored collection is that checkpoint
//! with an empty log that continues at `seq + 1`, so it holds exactly a prefix of the
//! collection's history.
//!
//! The archive's SHA-256 is written beside it (`<name>.checksum`, hex), as Qdrant does.
//! Unpacking accepts only the entries above, as regular files with plain relative names:
//! absolute paths, `..`, links and devices are refused before anything is written outside
//! the staging directory, and the checkpoint's own checksums are verified by opening it.

use crate::collection::Collection;
use crate::error::{CResult, CollectionError};
use crate::operations::{read_batch, UpdateMode, UpdateOp};
use crate::storage::{validate_name, Storage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

pub const FORMAT: &str = "sextant-collection-snapshot";
pub const FORMAT_VERSION: u32 = 1;
/// File name suffix of snapshot archives.
pub const SUFFIX: &str = ".snapshot";
/// Suffix of the file holding an archive's SHA-256 (hex).
pub const CHECKSUM_SUFFIX: &str = ".checksum";
/// Entries an archive may hold, at most (a checkpoint has a handful of files).
const MAX_ENTRIES: usize = 10_000;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The collection the snapshot was taken of (it may be restored under another name).
    pub collection: String,
    /// The checkpoint's last operation (0: an empty collection without a checkpoint).
    pub seq: u64,
    /// The shards whose points it holds (a cluster peer's local shards); `None`: all.
    #[serde(default)]
    pub shards: Option<Vec<u32>>,
}

/// A snapshot file as the API lists it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub name: String,
    /// `YYYY-MM-DDTHH:MM:SS` (UTC), from the file's modification time.
    pub creation_time: Option<String>,
    pub size: u64,
    pub checksum: Option<String>,
}

/// Write a snapshot of `c` to `dir/name` (and its checksum beside it).
pub fn create(
    c: &Collection,
    dir: &Path,
    name: &str,
    shards: Option<Vec<u32>>,
) -> CResult<SnapshotInfo> {
    check_file_name(name)?;
    fs::create_dir_all(dir)?;
    // the archive is written while the checkpoint is pinned; it is published after
    c.with_checkpoint(|_, checkpoint, seq| archive(c, dir, name, seq, shards, checkpoint))?;
    publish(dir, name)
}

/// Write a snapshot of shard `shard` of `c` to `dir/name`: a checkpoint of that shard's
/// points only, without graphs (recovery installs them through the write path, which
/// indexes them), its manifest naming the shard.
pub fn create_shard(c: &Collection, dir: &Path, name: &str, shard: u32) -> CResult<SnapshotInfo> {
    check_file_name(name)?;
    fs::create_dir_all(dir)?;
    let work = dir.join(format!(".{name}.checkpoint"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir(&work)?;
    let n = c.config().params.shard_number.max(1);
    let written = c
        .write_shard_checkpoint(n, shard, &work)
        .and_then(|seq| archive(c, dir, name, seq, Some(vec![shard]), Some(&work)));
    let _ = fs::remove_dir_all(&work);
    written?;
    publish(dir, name)
}

/// The archive of one checkpoint of `c` (`None`: a collection that never had an
/// operation): the manifest, the collection's config, and the checkpoint's files.
fn archive(
    c: &Collection,
    dir: &Path,
    name: &str,
    seq: u64,
    shards: Option<Vec<u32>>,
    checkpoint: Option<&Path>,
) -> CResult<()> {
    write_archive(dir, name, |tar| {
        let manifest = Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            collection: c.name().into(),
            seq,
            shards,
        };
        let m = serde_json::to_vec_pretty(&manifest).expect("manifest encodes");
        append_bytes(tar, "snapshot.json", &m)?;
        append_bytes(
            tar,
            "collection.json",
            &fs::read(c.dir().join("collection.json"))?,
        )?;
        if let Some(ck) = checkpoint {
            append_checkpoint(tar, ck)?;
        }
        Ok(())
    })
}

/// Append every file of the checkpoint directory `ck` as `checkpoint/<file>`, by name.
fn append_checkpoint<W: Write>(tar: &mut tar::Builder<W>, ck: &Path) -> CResult<()> {
    let mut files: Vec<_> = fs::read_dir(ck)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .collect();
    files.sort_by_key(|e| e.file_name());
    for e in files {
        let n = e.file_name().to_string_lossy().to_string();
        append_file(tar, &format!("checkpoint/{n}"), &e.path())?;
    }
    Ok(())
}

/// Write the tar archive `fill` builds to `dir/.name.tmp`, fsync'd, and its SHA-256 to
/// `dir/.name.checksum.tmp`; [`publish`] then renames both into place.
fn write_archive(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(
        &mut tar::Builder<&mut HashingWriter<io::BufWriter<crate::fsutil::SyncEvery>>>,
    ) -> CResult<()>,
) -> CResult<()> {
    let file = crate::fsutil::SyncEvery::new(File::create(dir.join(format!(".{name}.tmp")))?);
    let mut out = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
    };
    {
        let mut tar = tar::Builder::new(&mut out);
        fill(&mut tar)?;
        tar.finish()?;
    }
    let HashingWriter { inner, hash } = out;
    inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .into_file()
        .sync_all()?;
    crate::fsutil::atomic_write(
        &dir.join(format!(".{name}{CHECKSUM_SUFFIX}.tmp")),
        hex(&hash.finalize()).as_bytes(),
    )?;
    Ok(())
}

/// Move an archive [`write_archive`] wrote into place: the archive first, then its
/// checksum file (a crash between the two leaves an archive without a checksum, which
/// lists with `checksum: null`).
fn publish(dir: &Path, name: &str) -> CResult<SnapshotInfo> {
    let path = dir.join(name);
    fs::rename(dir.join(format!(".{name}.tmp")), &path)?;
    fs::rename(
        dir.join(format!(".{name}{CHECKSUM_SUFFIX}.tmp")),
        dir.join(format!("{name}{CHECKSUM_SUFFIX}")),
    )?;
    crate::fsutil::sync_dir(dir)?;
    info(&path)
}

/// Append the file at `path` as entry `name`, streamed.
fn append_file<W: Write>(tar: &mut tar::Builder<W>, name: &str, path: &Path) -> io::Result<()> {
    let mut f = File::open(path)?;
    let mut h = tar::Header::new_gnu();
    h.set_size(f.metadata()?.len());
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, &mut f)
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, bytes)
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a file (hex), read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> CResult<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// A snapshot name is a plain file name: no separators, no `..`, not hidden.
pub fn check_file_name(name: &str) -> CResult<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255;
    if plain {
        Ok(())
    } else {
        Err(CollectionError::BadInput(format!(
            "Bad snapshot name {name:?}: it must be a plain file name"
        )))
    }
}

/// What the API lists for the snapshot file at `path`.
pub fn info(path: &Path) -> CResult<SnapshotInfo> {
    let meta = fs::metadata(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let checksum = fs::read_to_string(path.with_file_name(format!("{name}{CHECKSUM_SUFFIX}")))
        .ok()
        .map(|s| s.trim().to_string());
    let creation_time = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| utc_timestamp(d.as_secs()));
    Ok(SnapshotInfo {
        name,
        creation_time,
        size: meta.len(),
        checksum,
    })
}

/// The snapshots in `dir`, oldest first.
pub fn list(dir: &Path) -> CResult<Vec<SnapshotInfo>> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if n.ends_with(SUFFIX) && !n.starts_with('.') && e.path().is_file() {
            out.push(info(&e.path())?);
        }
    }
    out.sort_by(|a, b| (&a.creation_time, &a.name).cmp(&(&b.creation_time, &b.name)));
    Ok(out)
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (UTC).
pub fn utc_timestamp(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

/// `YYYY-MM-DD-HH-MM-SS` of a Unix time (UTC), as snapshot names carry it.
pub fn name_timestamp(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{s:02}")
}

/// Calendar date and time of a Unix time (UTC; days-from-civil inverted).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

fn bad(msg: impl std::fmt::Display) -> CollectionError {
    CollectionError::BadInput(format!("Bad snapshot: {msg}"))
}

/// Where an archive entry may go in the staging directory, or why it is refused.
fn entry_target(path: &Path) -> CResult<PathBuf> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().to_string()),
            Component::CurDir => {}
            _ => return Err(bad(format!("entry {path:?} is not a plain relative path"))),
        }
    }
    let ok = match parts.as_slice() {
        [f] => f == "snapshot.json" || f == "collection.json",
        [d, f] => d == "checkpoint" && !f.starts_with('.'),
        _ => false,
    };
    if !ok {
        return Err(bad(format!("unexpected entry {path:?}")));
    }
    Ok(parts.iter().collect())
}

/// Write every regular file of the tar at `archive` where `place` says (a path it checked;
/// an error refuses the archive). Directories are skipped; links, devices, a file that
/// appears twice, more than `MAX_ENTRIES` entries and a truncated archive are refused.
fn extract(archive: &Path, mut place: impl FnMut(&Path) -> CResult<PathBuf>) -> CResult<()> {
    let mut tar = tar::Archive::new(io::BufReader::with_capacity(1 << 20, File::open(archive)?));
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("unreadable archive: {e}")))?;
    for (seen, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| bad(format!("truncated or corrupted archive: {e}")))?;
        if seen >= MAX_ENTRIES {
            return Err(bad("too many entries"));
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .to_path_buf();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!(
                "entry {path:?} is a {kind:?}, not a regular file (links are refused)"
            )));
        }
        let to = place(&path)?;
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&to)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => bad(format!("entry {path:?} appears twice")),
                _ => e.into(),
            })?;
        io::copy(&mut entry, &mut out)
            .map_err(|e| bad(format!("truncated or corrupted archive at {path:?}: {e}")))?;
        out.sync_all()?;
    }
    Ok(())
}

/// Unpack the archive at `archive` into `staging` (created; must not exist) as a
/// collection directory, refusing anything but the snapshot's own entries. Returns the
/// manifest. The result still has to be opened (which verifies the checkpoint's checksums).
pub fn unpack(archive: &Path, staging: &Path) -> CResult<Manifest> {
    fs::create_dir(staging)?;
    extract(archive, |path| Ok(staging.join(entry_target(path)?)))?;
    let manifest: Manifest = serde_json::from_slice(
        &fs::read(staging.join("snapshot.json"))
            .map_err(|_| bad("no snapshot.json: not a Sextant snapshot"))?,
    )
    .map_err(|e| bad(format!("snapshot.json: {e}")))?;
    if manifest.format != FORMAT || manifest.version != FORMAT_VERSION {
        return Err(bad(format!(
            "format {} version {} (this build reads {FORMAT} version {FORMAT_VERSION})",
            manifest.format, manifest.version
        )));
    }
    if !staging.join("collection.json").is_file() {
        return Err(bad("no collection.json"));
    }
    let ck = staging.join("checkpoint");
    if ck.is_dir() {
        if manifest.seq == 0 {
            return Err(bad("checkpoint files in a snapshot of seq 0"));
        }
        fs::rename(
            &ck,
            staging.join(format!("checkpoint-{:020}", manifest.seq)),
        )?;
    }
    fs::remove_file(staging.join("snapshot.json"))?;
    wal::Wal::create_empty(&staging.join("wal"), manifest.seq + 1)
        .map_err(|e| CollectionError::Service(format!("creating the log: {e}")))?;
    crate::fsutil::sync_dir(staging)?;
    Ok(manifest)
}

// ------------------------------------------------------------------ full-storage snapshots

pub const FULL_FORMAT: &str = "sextant-full-snapshot";

/// `full-snapshot.json` of a full-storage snapshot: a tar of one collection snapshot per
/// collection (`collections/<name>.snapshot`, each as above) and the aliases.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FullManifest {
    pub format: String,
    pub version: u32,
    pub collections: Vec<String>,
    pub aliases: BTreeMap<String, String>,
}

fn part_entry(collection: &str) -> String {
    format!("collections/{collection}{SUFFIX}")
}

/// Write a snapshot of every collection of `storage` (each consistent on its own) and its
/// aliases to `dir/name`.
pub fn create_full(storage: &Storage, dir: &Path, name: &str) -> CResult<SnapshotInfo> {
    check_file_name(name)?;
    fs::create_dir_all(dir)?;
    let parts = dir.join(format!(".{name}.parts"));
    let _ = fs::remove_dir_all(&parts);
    fs::create_dir_all(&parts)?;
    let r = (|| {
        let mut names = Vec::new();
        for cname in storage.list() {
            let Ok(c) = storage.get(&cname) else { continue }; // deleted meanwhile
            create(&c, &parts, &format!("{cname}{SUFFIX}"), None)?;
            names.push(cname);
        }
        let manifest = FullManifest {
            format: FULL_FORMAT.into(),
            version: FORMAT_VERSION,
            collections: names.clone(),
            aliases: storage.aliases(None).into_iter().collect(),
        };
        write_archive(dir, name, |tar| {
            let m = serde_json::to_vec_pretty(&manifest).expect("manifest encodes");
            append_bytes(tar, "full-snapshot.json", &m)?;
            for cname in &names {
                append_file(
                    tar,
                    &part_entry(cname),
                    &parts.join(format!("{cname}{SUFFIX}")),
                )?;
            }
            Ok(())
        })?;
        publish(dir, name)
    })();
    let _ = fs::remove_dir_all(&parts);
    r
}

/// Unpack a full-storage snapshot's collection archives into `work` (created), refusing
/// anything else; each archive is then recovered like a collection snapshot.
pub fn unpack_full(archive: &Path, work: &Path) -> CResult<FullManifest> {
    fs::create_dir(work)?;
    extract(archive, |path| {
        let file = match path.to_str() {
            Some("full-snapshot.json") => "full-snapshot.json".to_string(),
            Some(p) => {
                let c = p
                    .strip_prefix("collections/")
                    .and_then(|x| x.strip_suffix(SUFFIX))
                    .filter(|c| validate_name(c).is_ok())
                    .ok_or_else(|| bad(format!("unexpected entry {path:?}")))?;
                format!("{c}{SUFFIX}")
            }
            None => return Err(bad(format!("unexpected entry {path:?}"))),
        };
        Ok(work.join(file))
    })?;
    let m: FullManifest = serde_json::from_slice(
        &fs::read(work.join("full-snapshot.json"))
            .map_err(|_| bad("no full-snapshot.json: not a Sextant full-storage snapshot"))?,
    )
    .map_err(|e| bad(format!("full-snapshot.json: {e}")))?;
    if m.format != FULL_FORMAT || m.version != FORMAT_VERSION {
        return Err(bad(format!(
            "format {} version {} (this build reads {FULL_FORMAT} version {FORMAT_VERSION})",
            m.format, m.version
        )));
    }
    for c in &m.collections {
        validate_name(c)?;
        if !work.join(format!("{c}{SUFFIX}")).is_file() {
            return Err(bad(format!("collection {c} is listed but missing")));
        }
    }
    Ok(m)
}

/// Verify `archive`'s SHA-256 against `want` (hex, any case).
pub fn verify_checksum(archive: &Path, want: Option<&str>) -> CResult<()> {
    if let Some(want) = want {
        let got = sha256_file(archive)?;
        if !got.eq_ignore_ascii_case(want.trim()) {
            return Err(CollectionError::BadInput(format!(
                "snapshot checksum mismatch: expected {}, got {got}",
                want.trim()
            )));
        }
    }
    Ok(())
}

/// Recover collection `name` from the collection snapshot at `archive` (checksum verified
/// first when given), replacing it if it exists.
pub fn recover(
    storage: &Storage,
    name: &str,
    archive: &Path,
    checksum: Option<&str>,
) -> CResult<()> {
    validate_name(name)?;
    verify_checksum(archive, checksum)?;
    let staging = storage.staging_dir(name);
    let r = unpack(archive, &staging).and_then(|_| storage.restore_collection(name, &staging));
    if r.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    r
}

/// Check that `snap` can be the source of shard `shard` of a collection (`target`) with
/// `shard_number` shards: the same shard count (a point's shard depends on it).
pub fn check_shard_source(
    snap: &Collection,
    target: &str,
    shard_number: u32,
    shard: u32,
) -> CResult<()> {
    let theirs = snap.config().params.shard_number.max(1);
    if theirs != shard_number {
        return Err(CollectionError::BadInput(format!(
            "the snapshot's collection has {theirs} shards, `{target}` has {shard_number}: its shard {shard} holds other points"
        )));
    }
    if shard >= shard_number {
        return Err(CollectionError::BadInput(format!(
            "shard {shard} does not exist in collection `{target}` ({shard_number} shards)"
        )));
    }
    Ok(())
}

/// The operations that make shard `shard` (of `shard_number`) of a collection hold exactly
/// `snap`'s points of that shard: a delete of the shard's points, then upserts of the
/// snapshot's in byte-bounded batches (read one at a time). Each is to be logged as a
/// reset of the shard (`OpMeta::fill`).
pub fn shard_install_ops(
    snap: &Collection,
    shard_number: u32,
    shard: u32,
) -> impl Iterator<Item = UpdateOp> + Send + '_ {
    let filter = segment::filter::shard_filter(shard_number, &[shard]);
    let mut after = None;
    let upserts = std::iter::from_fn(move || {
        let points = read_batch(&snap.read(), after, &filter);
        after = Some(points.last()?.id);
        Some(UpdateOp::Upsert {
            points,
            update_filter: None,
            mode: UpdateMode::Upsert,
        })
    });
    std::iter::once(UpdateOp::delete_shards(shard_number, &[shard])).chain(upserts)
}

/// Replace the points of `shard` in collection `name` with the snapshot's (`snap`, opened
/// from a shard or collection snapshot of a collection with the same shard count), through
/// the collection's write path ([`shard_install_ops`]), all or nothing
/// (`Collection::install_shard`): after a failure or a crash midway the shard is as it
/// was. Returns the points installed.
pub fn install_shard(
    storage: &Storage,
    name: &str,
    snap: &Collection,
    shard: u32,
) -> CResult<usize> {
    let c = storage.get(name)?;
    let n = c.config().params.shard_number.max(1);
    check_shard_source(snap, c.name(), n, shard)?;
    let r = c.install_shard(shard, shard_install_ops(snap, n, shard));
    if r.is_err() {
        // the store holds part of the install, the log none of it: reload from disk
        storage.reload(name);
    }
    r
}

/// Recover every collection of a full-storage snapshot (and its aliases). With `replace`
/// false, a collection that already exists is an error before anything changes.
pub fn recover_full(
    storage: &Storage,
    archive: &Path,
    work: &Path,
    replace: bool,
) -> CResult<Vec<String>> {
    let r = (|| {
        let m = unpack_full(archive, work)?;
        if !replace {
            if let Some(c) = m.collections.iter().find(|c| storage.exists(c)) {
                return Err(CollectionError::AlreadyExists(c.clone()));
            }
        }
        for c in &m.collections {
            recover(storage, c, &work.join(format!("{c}{SUFFIX}")), None)?;
        }
        let mut aliases: BTreeMap<String, String> = storage.aliases(None).into_iter().collect();
        for (a, c) in &m.aliases {
            if m.collections.contains(c) {
                aliases.insert(a.clone(), c.clone());
            }
        }
        storage.set_aliases(aliases)?;
        Ok(m.collections)
    })();
    let _ = fs::remove_dir_all(work);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(name_timestamp(1_796_558_399), "2026-12-06-11-59-59");
    }

    #[test]
    fn only_the_snapshots_own_entries_are_accepted() {
        for ok in [
            "snapshot.json",
            "collection.json",
            "checkpoint/points.bin",
            "./collection.json",
        ] {
            assert!(entry_target(Path::new(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "/etc/passwd",
            "../collection.json",
            "checkpoint/../../x",
            "checkpoint/.hidden",
            "wal/1.wal",
            "checkpoint/a/b",
            "other.json",
        ] {
            assert!(entry_target(Path::new(refused)).is_err(), "{refused}");
        }
        for bad_name in ["", ".x.snapshot", "a/b.snapshot", "..", "a\\b"] {
            assert!(check_file_name(bad_name).is_err(), "{bad_name:?}");
        }
    }
}
