//! `Storage`: the table of collections and aliases on this node.
//!
//! Layout under `storage_path`: `collections/{name}/...` (see `collection.rs`) and
//! `aliases.json` (alias -> collection, atomic replace). A collection directory without a
//! readable `collection.json` is a creation interrupted by a crash and is removed at start.

use crate::collection::Collection;
use crate::config::{CollectionConfig, CollectionDefaults, CreateCollection};
use crate::error::{CResult, CollectionError};
use crate::fsutil::{read_json, sync_dir, write_json};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest collection or alias name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

pub struct Storage {
    root: PathBuf,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    aliases: RwLock<BTreeMap<String, String>>,
    /// Serialises create/delete/alias changes.
    meta_lock: Mutex<()>,
    defaults: CollectionDefaults,
    stop: AtomicBool,
}

/// One element of `POST /collections/aliases` `actions` (also a Raft entry's typed form:
/// it encodes in the API's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasAction {
    CreateAlias {
        collection_name: String,
        alias_name: String,
    },
    DeleteAlias {
        alias_name: String,
    },
    RenameAlias {
        old_alias_name: String,
        new_alias_name: String,
    },
}

/// Collection names are directory names: refuse anything that could escape or confuse a path.
pub fn validate_name(name: &str) -> CResult<()> {
    const FORBIDDEN: &[char] = &['<', '>', ':', '"', '/', '\\', '|', '?', '*', '\0'];
    if name.is_empty() {
        return Err(CollectionError::Validation(
            "collection name must not be empty".into(),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(CollectionError::Validation(format!(
            "collection name must be at most {MAX_NAME_LEN} bytes"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| FORBIDDEN.contains(c) || c.is_control())
    {
        return Err(CollectionError::Validation(format!(
            "collection name cannot contain \"{}\" char",
            c.escape_default()
        )));
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return Err(CollectionError::Validation(format!(
            "collection name cannot be {name:?} or start with a dot"
        )));
    }
    Ok(())
}

/// The previous copy of a collection while a snapshot recovery replaces it.
const REPLACED_PREFIX: &str = ".replaced-";

impl Storage {
    pub fn open(root: &Path, defaults: CollectionDefaults) -> CResult<Arc<Storage>> {
        Self::open_with(root, defaults, false)
    }

    /// Open the storage. A collection that cannot be opened (a file missing, truncated or
    /// failing its checksum) fails the whole start, unless `quarantine` (cluster mode: its
    /// replicas can be rebuilt from other peers): then its directory is moved under
    /// `quarantine/` (kept for inspection, never served) and the collection is absent.
    pub fn open_with(
        root: &Path,
        defaults: CollectionDefaults,
        quarantine: bool,
    ) -> CResult<Arc<Storage>> {
        let cdir = root.join("collections");
        fs::create_dir_all(&cdir)?;
        let mut collections = BTreeMap::new();
        // A snapshot recovery interrupted between moving the old copy aside and moving the
        // new one in: the old copy comes back (see `restore_collection`).
        for e in fs::read_dir(&cdir)?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(orig) = name.strip_prefix(REPLACED_PREFIX) {
                if !cdir.join(orig).exists() {
                    tracing::warn!(
                        collection = orig,
                        "interrupted snapshot recovery: keeping the previous data"
                    );
                    fs::rename(e.path(), cdir.join(orig))?;
                    sync_dir(&cdir)?;
                }
            }
        }
        for e in fs::read_dir(&cdir)?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !e.path().is_dir() {
                continue;
            }
            if name.starts_with('.') || !e.path().join("collection.json").exists() {
                tracing::warn!(dir = %e.path().display(), "removing incomplete collection directory");
                fs::remove_dir_all(e.path())?;
                continue;
            }
            let c = match Collection::open(&e.path(), &name) {
                Ok(c) => c,
                Err(err) if quarantine => {
                    let stamp = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let to = root.join("quarantine").join(format!("{name}-{stamp}"));
                    fs::create_dir_all(root.join("quarantine"))?;
                    fs::rename(e.path(), &to)?;
                    sync_dir(&cdir)?;
                    tracing::error!(collection = %name, error = %err, moved_to = %to.display(), "collection cannot be opened: quarantined; its replicas will be rebuilt from other peers");
                    continue;
                }
                Err(err) => {
                    return Err(CollectionError::Service(format!(
                        "collection `{name}` cannot be opened: {err}"
                    )))
                }
            };
            tracing::info!(collection = %name, points = c.read().len(), "collection loaded");
            collections.insert(name, Arc::new(c));
        }
        let aliases_path = root.join("aliases.json");
        let aliases: BTreeMap<String, String> = if aliases_path.exists() {
            read_json(&aliases_path).map_err(CollectionError::Service)?
        } else {
            BTreeMap::new()
        };
        Ok(Arc::new(Storage {
            root: root.to_path_buf(),
            collections: RwLock::new(collections),
            aliases: RwLock::new(aliases),
            meta_lock: Mutex::new(()),
            defaults,
            stop: AtomicBool::new(false),
        }))
    }

    fn collection_dir(&self, name: &str) -> PathBuf {
        self.root.join("collections").join(name)
    }

    pub fn list(&self) -> Vec<String> {
        self.collections.read().keys().cloned().collect()
    }

    /// Resolve a collection name or alias.
    pub fn get(&self, name: &str) -> CResult<Arc<Collection>> {
        if let Some(c) = self.collections.read().get(name) {
            return Ok(c.clone());
        }
        if let Some(target) = self.aliases.read().get(name) {
            if let Some(c) = self.collections.read().get(target) {
                return Ok(c.clone());
            }
        }
        Err(CollectionError::CollectionNotFound(name.to_string()))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    pub fn create_collection(&self, name: &str, req: CreateCollection) -> CResult<()> {
        validate_name(name)?;
        let config = self.resolve(req)?;
        self.create_with_config(name, config)
    }

    /// The full config of a create request under this node's defaults (validated).
    pub fn resolve(&self, req: CreateCollection) -> CResult<CollectionConfig> {
        req.into_config(&self.defaults)
    }

    /// Create `name` with exactly `config` (cluster mode: the config the proposer resolved).
    pub fn create_with_config(&self, name: &str, config: CollectionConfig) -> CResult<()> {
        validate_name(name)?;
        let _g = self.meta_lock.lock();
        if self.collections.read().contains_key(name) {
            return Err(CollectionError::AlreadyExists(name.to_string()));
        }
        if self.aliases.read().contains_key(name) {
            return Err(CollectionError::BadInput(format!(
                "Alias with name {name} already exists"
            )));
        }
        let c = Collection::create(&self.collection_dir(name), name, config)?;
        self.collections
            .write()
            .insert(name.to_string(), Arc::new(c));
        Ok(())
    }

    /// Delete a collection and its aliases. Returns false when it did not exist.
    pub fn delete_collection(&self, name: &str) -> CResult<bool> {
        validate_name(name)?;
        let _g = self.meta_lock.lock();
        let Some(c) = self.collections.write().remove(name) else {
            return Ok(false);
        };
        let mut aliases = self.aliases.read().clone();
        let before = aliases.len();
        aliases.retain(|_, target| target != name);
        if aliases.len() != before {
            self.save_aliases(&aliases)?;
            *self.aliases.write() = aliases;
        }
        // Rename first (atomic: the collection is gone from the next start), then remove.
        let trash = self.root.join("collections").join(format!(
            ".deleted-{}-{}",
            name,
            uuid::Uuid::new_v4()
        ));
        c.retire();
        fs::rename(c.dir(), &trash)?;
        sync_dir(&self.root.join("collections"))?;
        drop(c);
        let _ = fs::remove_dir_all(&trash);
        Ok(true)
    }

    /// A new staging directory for a collection being restored (removed at the next
    /// start if the restore does not complete).
    pub fn staging_dir(&self, name: &str) -> PathBuf {
        self.root
            .join("collections")
            .join(format!(".recover-{name}-{}", uuid::Uuid::new_v4()))
    }

    /// Install the collection directory `staging` (an unpacked snapshot, see
    /// `crate::snapshot::unpack`) as collection `name`, replacing the current one if any.
    /// The staging copy is opened first (verifying its checksums): a snapshot that does not
    /// open changes nothing. That instance, relocated, is the one installed: the copy is
    /// loaded once. Crash analysis: until the old directory is renamed aside,
    /// nothing changed (the staging directory is removed at the next start); between the
    /// two renames the next start moves the old copy back; after the second rename the new
    /// copy is the collection.
    pub fn restore_collection(&self, name: &str, staging: &Path) -> CResult<()> {
        validate_name(name)?;
        // a copy that does not open is a bad snapshot, not a failure of this node
        let mut staged = Collection::open(staging, name).map_err(|e| match e {
            CollectionError::Service(m) => CollectionError::BadInput(format!("Bad snapshot: {m}")),
            other => other,
        })?;
        let _g = self.meta_lock.lock();
        if self.aliases.read().contains_key(name) {
            return Err(CollectionError::BadInput(format!(
                "Alias with name {name} already exists"
            )));
        }
        let cdir = self.root.join("collections");
        let dir = self.collection_dir(name);
        let aside = cdir.join(format!("{REPLACED_PREFIX}{name}"));
        let old = self.collections.write().remove(name);
        if let Some(o) = &old {
            if let Err(e) = o.flush_all() {
                // nothing moved: the current copy stays the collection
                self.collections.write().insert(name.to_string(), o.clone());
                return Err(e);
            }
            o.retire();
            let aside_done = fs::rename(&dir, &aside).and_then(|()| sync_dir(&cdir));
            if let Err(e) = aside_done {
                // the current copy stays the collection (the retired instance no longer
                // checkpoints: reopened)
                self.reinstate(name, &cdir, &dir, &aside);
                return Err(e.into());
            }
        }
        let installed = fs::rename(staging, &dir)
            .map_err(CollectionError::from)
            .and_then(|()| Ok(sync_dir(&cdir)?))
            .map(|()| {
                staged.relocate(&dir);
                staged
            });
        match installed {
            Ok(c) => {
                self.collections
                    .write()
                    .insert(name.to_string(), Arc::new(c));
                drop(old);
                let _ = fs::remove_dir_all(&aside);
                Ok(())
            }
            Err(e) => {
                // put the previous copy back, once the new one is out of its place
                if old.is_some() {
                    let _ = fs::rename(&dir, staging);
                    if !dir.exists() {
                        self.reinstate(name, &cdir, &dir, &aside);
                    }
                }
                Err(e)
            }
        }
    }

    /// Open `name` again from its directory, replacing the instance in memory (after a
    /// failed shard install, whose instance holds what its log does not).
    pub fn reload(&self, name: &str) {
        let _g = self.meta_lock.lock();
        let Some(old) = self.collections.write().remove(name) else {
            return;
        };
        old.retire();
        drop(old);
        if let Err(e) = self.open_in_place(name, &self.collection_dir(name)) {
            tracing::error!(collection = name, error = %e, "collection cannot be reopened after a failed install: restart the node");
        }
    }

    /// Open collection `name` from `dir` and serve it.
    fn open_in_place(&self, name: &str, dir: &Path) -> CResult<()> {
        let c = Collection::open(dir, name)?;
        self.collections
            .write()
            .insert(name.to_string(), Arc::new(c));
        Ok(())
    }

    /// Serve the previous copy of `name` again after a failed restore: moved back from
    /// `aside` to `dir` if it is no longer at `dir`, then reopened.
    fn reinstate(&self, name: &str, cdir: &Path, dir: &Path, aside: &Path) {
        if !dir.exists() {
            if fs::rename(aside, dir).is_err() {
                return;
            }
            let _ = sync_dir(cdir);
        }
        let _ = self.open_in_place(name, dir);
    }

    fn save_aliases(&self, aliases: &BTreeMap<String, String>) -> CResult<()> {
        write_json(&self.root.join("aliases.json"), aliases)?;
        Ok(())
    }

    /// Apply alias actions atomically: all succeed or none is applied.
    pub fn update_aliases(&self, actions: Vec<AliasAction>) -> CResult<()> {
        let _g = self.meta_lock.lock();
        let mut aliases = self.aliases.read().clone();
        let collections = self.collections.read();
        for a in actions {
            match a {
                AliasAction::CreateAlias {
                    collection_name,
                    alias_name,
                } => {
                    validate_name(&alias_name)?;
                    if !collections.contains_key(&collection_name) {
                        return Err(CollectionError::CollectionNotFound(collection_name));
                    }
                    if collections.contains_key(&alias_name) {
                        return Err(CollectionError::Conflict(format!(
                            "Collection with name {alias_name} already exists"
                        )));
                    }
                    aliases.insert(alias_name, collection_name);
                }
                AliasAction::DeleteAlias { alias_name } => {
                    if aliases.remove(&alias_name).is_none() {
                        return Err(CollectionError::BadInput(format!(
                            "Alias {alias_name} does not exists!"
                        )));
                    }
                }
                AliasAction::RenameAlias {
                    old_alias_name,
                    new_alias_name,
                } => {
                    validate_name(&new_alias_name)?;
                    let target = aliases.remove(&old_alias_name).ok_or_else(|| {
                        CollectionError::BadInput(format!(
                            "Alias {old_alias_name} does not exists!"
                        ))
                    })?;
                    aliases.insert(new_alias_name, target);
                }
            }
        }
        drop(collections);
        self.save_aliases(&aliases)?;
        *self.aliases.write() = aliases;
        Ok(())
    }

    /// Create `name` unless it exists (cluster effects are idempotent).
    pub fn ensure_collection(&self, name: &str, req: CreateCollection) -> CResult<bool> {
        let config = self.resolve(req)?;
        self.ensure_collection_config(name, config)
    }

    /// Create `name` with exactly `config` unless it exists.
    pub fn ensure_collection_config(&self, name: &str, config: CollectionConfig) -> CResult<bool> {
        match self.create_with_config(name, config) {
            Ok(()) => Ok(true),
            Err(CollectionError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replace the whole alias table (cluster mode: the agreed table).
    pub fn set_aliases(&self, aliases: BTreeMap<String, String>) -> CResult<()> {
        let _g = self.meta_lock.lock();
        if *self.aliases.read() == aliases {
            return Ok(());
        }
        self.save_aliases(&aliases)?;
        *self.aliases.write() = aliases;
        Ok(())
    }

    /// All aliases, optionally only those of one collection: (alias, collection).
    pub fn aliases(&self, collection: Option<&str>) -> Vec<(String, String)> {
        self.aliases
            .read()
            .iter()
            .filter(|(_, c)| collection.is_none_or(|x| x == c.as_str()))
            .map(|(a, c)| (a.clone(), c.clone()))
            .collect()
    }

    /// Run periodic maintenance (WAL flush, checkpoints) on a background thread until `shutdown`.
    pub fn start_maintenance(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || {
                while !me.stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(500));
                    let cols: Vec<_> = me.collections.read().values().cloned().collect();
                    for c in cols {
                        if let Err(e) = c.maintain() {
                            tracing::error!(collection = %c.name(), error = %e, "maintenance failed");
                        }
                    }
                }
            })
            .expect("spawn maintenance thread")
    }

    /// Stop maintenance and flush nothing: what a crash leaves behind (in-process crash
    /// tests, after which the caller drops everything that ran on this storage).
    pub fn halt(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Flush every WAL and stop maintenance.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        for c in self.collections.read().values() {
            if let Err(e) = c.flush_all() {
                tracing::error!(collection = %c.name(), error = %e, "flush on shutdown failed");
            }
            // a checkpoint makes the next start load graphs instead of replaying the WAL
            // and rebuilding them; if it is cut short, the WAL still has everything
            if let Err(e) = c.checkpoint() {
                tracing::warn!(collection = %c.name(), error = %e, "checkpoint on shutdown failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req() -> CreateCollection {
        serde_json::from_value(json!({"vectors": {"size": 2, "distance": "Dot"}})).unwrap()
    }

    /// A restore that cannot move the current copy aside leaves it the collection, still
    /// served and still holding its points (it used to drop out until the next start).
    #[test]
    fn a_failed_restore_keeps_the_current_collection() {
        let root = tempfile::tempdir().unwrap();
        let s = Storage::open(root.path(), CollectionDefaults::default()).unwrap();
        s.create_collection("c", req()).unwrap();
        let upsert = |ids| upsert_dim(ids, 2);
        s.get("c").unwrap().update(upsert(0..10), true).unwrap();
        // a snapshot of 10 points, unpacked: what a recovery installs
        let snaps = root.path().join("snaps");
        crate::snapshot::create(&s.get("c").unwrap(), &snaps, "c.snapshot", None).unwrap();
        let staging = s.staging_dir("c");
        crate::snapshot::unpack(&snaps.join("c.snapshot"), &staging).unwrap();
        s.get("c").unwrap().update(upsert(10..25), true).unwrap();
        // the place the current copy would be moved aside to is taken (a non-empty directory)
        let aside = root
            .path()
            .join("collections")
            .join(format!("{REPLACED_PREFIX}c"));
        fs::create_dir_all(aside.join("x")).unwrap();
        assert!(s.restore_collection("c", &staging).is_err());
        let c = s.get("c").expect("the collection is still served");
        assert_eq!(c.read().len(), 25);
        c.update(upsert(25..30), true).unwrap();
        assert_eq!(c.read().len(), 30);
    }

    fn upsert_dim(ids: std::ops::Range<u64>, dim: usize) -> crate::operations::UpdateOp {
        crate::operations::UpdateOp::Upsert {
            points: ids
                .map(|i| crate::operations::PointInsert {
                    id: segment::PointId::Num(i),
                    vectors: [(
                        "".into(),
                        crate::operations::StoredVector::Dense(vec![i as f32; dim]),
                    )]
                    .into(),
                    payload: None,
                })
                .collect(),
            update_filter: None,
            mode: crate::operations::UpdateMode::Upsert,
        }
    }

    /// Ids per shard (of 3) of collection `name`.
    fn by_shard(s: &Storage, name: &str) -> Vec<Vec<segment::PointId>> {
        let mut out = vec![Vec::new(); 3];
        for id in s.get(name).unwrap().read().matching_ids(None) {
            out[segment::routing::shard_of(id, 3) as usize].push(id);
        }
        out.iter_mut().for_each(|v| v.sort());
        out
    }

    /// A shard install takes effect whole or not at all: one that fails midway (a
    /// snapshot whose vectors do not fit) leaves the shard's points, and so does one cut
    /// short by a crash (its records without the last one in the log).
    #[test]
    fn a_shard_install_is_all_or_nothing() {
        let root = tempfile::tempdir().unwrap();
        let s = Storage::open(root.path(), CollectionDefaults::default()).unwrap();
        let create = |name: &str, dim: usize| {
            let req = json!({"vectors": {"size": dim, "distance": "Dot"}, "shard_number": 3});
            s.create_collection(name, serde_json::from_value(req).unwrap())
                .unwrap();
        };
        create("c", 2);
        create("src", 2);
        create("wide", 3);
        s.get("c")
            .unwrap()
            .update(upsert_dim(0..60, 2), true)
            .unwrap();
        s.get("src")
            .unwrap()
            .update(upsert_dim(100..130, 2), true)
            .unwrap();
        s.get("wide")
            .unwrap()
            .update(upsert_dim(200..230, 3), true)
            .unwrap();
        let before = by_shard(&s, "c");
        assert!(before.iter().all(|ids| !ids.is_empty()));

        // a complete install: shard 1 holds exactly the source's shard 1
        let src = s.get("src").unwrap();
        let n = crate::snapshot::install_shard(&s, "c", &src, 1).unwrap();
        let after = by_shard(&s, "c");
        assert_eq!(after[1], by_shard(&s, "src")[1]);
        assert_eq!(n, after[1].len());
        assert_eq!((&after[0], &after[2]), (&before[0], &before[2]));

        // a failed install (3-d vectors into a 2-d collection) changes nothing, in memory
        // and on disk
        let wide = s.get("wide").unwrap();
        assert!(crate::snapshot::install_shard(&s, "c", &wide, 0).is_err());
        assert_eq!(by_shard(&s, "c"), after);
        s.get("c")
            .unwrap()
            .update(upsert_dim(1000..1001, 2), true)
            .unwrap();
        let mut expected = after.clone();
        expected[segment::routing::shard_of(segment::PointId::Num(1000), 3) as usize]
            .push(segment::PointId::Num(1000));
        expected.iter_mut().for_each(|v| v.sort());
        assert_eq!(by_shard(&s, "c"), expected);

        // a crash midway: the shard's delete and one batch are logged, the last record is not
        let c = s.get("c").unwrap();
        let part = |last| crate::operations::OpMeta {
            fill: Some(2),
            install: Some(crate::operations::InstallPart { id: 77, last }),
            ..Default::default()
        };
        let delete = crate::operations::UpdateOp::delete_shards(3, &[2]);
        c.update_logged(delete, true, part(false)).unwrap();
        c.update_logged(upsert_dim(300..301, 2), true, part(false))
            .unwrap();
        assert!(by_shard(&s, "c")[2].len() <= 1, "the install is under way");
        s.halt();
        drop((c, src, wide, s));
        let s = Storage::open(root.path(), CollectionDefaults::default()).unwrap();
        assert_eq!(
            by_shard(&s, "c"),
            expected,
            "after the crash, as before the install"
        );
    }

    /// A restored collection is the instance opened to verify the snapshot, moved with its
    /// directory: its writes, checkpoints and a reopen all find the collection's place.
    #[test]
    fn a_restored_collection_lives_in_its_own_directory() {
        let root = tempfile::tempdir().unwrap();
        let s = Storage::open(root.path(), CollectionDefaults::default()).unwrap();
        s.create_collection("c", req()).unwrap();
        s.get("c")
            .unwrap()
            .update(upsert_dim(0..10, 2), true)
            .unwrap();
        let snaps = root.path().join("snaps");
        crate::snapshot::create(&s.get("c").unwrap(), &snaps, "c.snapshot", None).unwrap();
        let staging = s.staging_dir("c");
        crate::snapshot::unpack(&snaps.join("c.snapshot"), &staging).unwrap();
        s.restore_collection("c", &staging).unwrap();
        assert!(!staging.exists());
        let c = s.get("c").unwrap();
        c.update(upsert_dim(10..15, 2), true).unwrap();
        c.checkpoint().unwrap();
        c.update(upsert_dim(15..20, 2), true).unwrap();
        assert!(!staging.exists(), "nothing is written at the staging path");
        s.halt();
        drop((c, s));
        let s = Storage::open(root.path(), CollectionDefaults::default()).unwrap();
        assert_eq!(s.get("c").unwrap().read().len(), 20);
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "x\0y"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("ok-name_1.2").unwrap();
    }

    #[test]
    fn collections_and_aliases_survive_reopen() {
        let root = tempfile::tempdir().unwrap();
        {
            let s = Storage::open(root.path(), CollectionDefaults::default()).unwrap();
            s.create_collection("a", req()).unwrap();
            assert!(matches!(
                s.create_collection("a", req()),
                Err(CollectionError::AlreadyExists(_))
            ));
            s.update_aliases(vec![AliasAction::CreateAlias {
                collection_name: "a".into(),
                alias_name: "al".into(),
            }])
            .unwrap();
            assert!(s
                .update_aliases(vec![
                    AliasAction::RenameAlias {
                        old_alias_name: "al".into(),
                        new_alias_name: "al2".into()
                    },
                    AliasAction::DeleteAlias {
                        alias_name: "nope".into()
                    }
                ])
                .is_err());
            assert_eq!(s.aliases(None), vec![("al".to_string(), "a".to_string())]);
        }
        let s = Storage::open(root.path(), CollectionDefaults::default()).unwrap();
        assert_eq!(s.get("al").unwrap().name(), "a");
        assert!(s.delete_collection("a").unwrap());
        assert!(s.aliases(None).is_empty());
        assert!(!s.delete_collection("a").unwrap());
    }
}
