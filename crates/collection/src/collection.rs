//! One collection on this node: config, points, WAL and checkpoints.
//!
//! Directory layout (see docs/storage-format.md):
//! ```text
//! {name}/collection.json          config + payload index schema (atomic replace)
//! {name}/wal/{first_seq:020}.wal   write-ahead log segments
//! {name}/checkpoint-{seq:020}/     complete checkpoint covering ops <= seq
//!     points.msgpack               ids, versions, payloads, sparse vectors, dense presence
//!     dense-{k}.f32                raw little-endian f32 rows, one per point (mmap-able)
//!     manifest.json                seq, point count, dense vector names
//! ```
//! Write path: validate -> append to WAL -> apply to memory (both under the WAL lock, so the
//! in-memory order is the log order) -> for `wait=true`, group-commit fsync -> acknowledge.
//! Recovery: load the newest complete checkpoint, replay WAL records after its seq.

use crate::config::CollectionConfig;
use crate::error::{CResult, CollectionError};
use crate::fsutil::{checksummed_json, read_json, sync_dir, write_json, write_synced};
use crate::index_schema::IndexSchema;
use crate::operations::{LoggedOp, OpMeta, UpdateOp};
use parking_lot::{Mutex, RwLock};
use segment::store::{NamedVectors, PointStore};
use segment::{Payload, PointId, SparseVector, Vector};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal::{Flusher, Wal};

/// Take a checkpoint after this many logged operations...
pub const CHECKPOINT_EVERY_OPS: u64 = 20_000;
/// ...or this many bytes of logged operations (bounds WAL replay time at start)...
pub const CHECKPOINT_EVERY_WAL_BYTES: u64 = 256 << 20;
/// Values of an indexed payload field with fewer points get no payload-block graph (an
/// exact scan of that many vectors costs less than a few dozen microseconds).
pub const BLOCK_MIN_POINTS: u64 = 1_000;
/// A vector with a graph gets its unindexed tail indexed once it holds this many points
/// and no write came for [`IDLE_TAIL_MS`], even below `indexing_threshold`.
pub const IDLE_TAIL_POINTS: usize = 1_000;
pub const IDLE_TAIL_MS: u128 = 1_000;
/// Payload-block graphs built per maintenance round (bounds the vectors copied at once).
const BLOCK_JOBS_PER_ROUND: usize = 64;
/// Bytes of vectors a checkpoint copies per hold of the store's read lock (a few ms of
/// copying; writes wait at most that long), and the slots of sparse vectors per hold.
const CUT_CHUNK_BYTES: usize = 8 << 20;
const CUT_CHUNK: usize = 8_192;
/// ...or, once a graph build finished, when the last checkpoint is at least this old (so
/// a restart loads the graph instead of rebuilding it, without a full checkpoint per build).
pub const CHECKPOINT_AFTER_INDEX_SECS: u64 = 30;
/// Logged operations kept after a checkpoint covers them (history for WAL-delta
/// transfers)...
pub const WAL_RETAIN_OPS: u64 = 50_000;
/// ...within at most this many closed WAL segments.
pub const WAL_RETAIN_SEGMENTS: usize = 4;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectionMeta {
    pub config: CollectionConfig,
    /// field name -> field schema (`"keyword"` or `{"type": ...}`), canonical.
    #[serde(default)]
    pub payload_indexes: BTreeMap<String, IndexSchema>,
}

/// What a checkpoint is written from (see [`Collection::take_cut`]).
struct Cut {
    seq: u64,
    store: segment::store::StoreCut,
    graphs: Vec<segment::store::GraphExport>,
    blocks: Vec<segment::store::BlockExport>,
}

/// A checkpoint point as written: [`CheckpointPoint`]'s fields, the payload borrowed from
/// the cut (the same encoding).
#[derive(Serialize)]
struct CheckpointPointRef<'a> {
    id: PointId,
    version: u64,
    payload: &'a Payload,
    dense: Vec<u16>,
    sparse: BTreeMap<String, SparseVector>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointPoint {
    id: PointId,
    version: u64,
    payload: Payload,
    /// indices (into manifest.dense) of the dense vectors this point has
    dense: Vec<u16>,
    sparse: BTreeMap<String, SparseVector>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    seq: u64,
    points: usize,
    dense: Vec<(String, usize)>,
    /// HNSW graphs saved with the checkpoint (`graph-{dense index}.hnsw`).
    #[serde(default)]
    graphs: Vec<GraphMeta>,
    /// Payload-block graphs saved with the checkpoint (`block-{i}.bin`: the block's
    /// checkpoint slots as u32 LE, then its graph).
    #[serde(default)]
    blocks: Vec<BlockMeta>,
    /// CRC32C of every other file of the checkpoint, by file name (absent in checkpoints
    /// written before checksums: those files are not verified).
    #[serde(default)]
    checksums: BTreeMap<String, u32>,
}

/// A checkpoint file's bytes, verified against the manifest's checksum when it has one.
fn read_checked(dir: &Path, name: &str, sums: &BTreeMap<String, u32>) -> CResult<Vec<u8>> {
    let bytes = fs::read(dir.join(name))?;
    match sums.get(name) {
        Some(&want) if crc32c::crc32c(&bytes) != want => Err(CollectionError::Service(format!(
            "checkpoint {}: {name} fails its checksum (corrupted on disk)",
            dir.display()
        ))),
        _ => Ok(bytes),
    }
}

#[derive(Serialize, Deserialize)]
struct BlockMeta {
    /// Index into `dense`.
    dense: usize,
    field: String,
    /// The payload value (JSON string, integer or bool).
    value: Value,
    nodes: usize,
    /// `payload_m` and `ef_construct` in force when saved: a block built with others is
    /// not loaded.
    m: usize,
    ef_construct: usize,
}

/// A payload block read from a checkpoint, installed once the payload indexes exist.
struct SavedBlock {
    name: String,
    field: String,
    value: segment::filter::MatchValue,
    graph: segment::hnsw::Hnsw,
    slots: Vec<u32>,
    m: usize,
    ef_construct: usize,
}

fn match_value_json(v: &segment::filter::MatchValue) -> Value {
    use segment::filter::MatchValue as M;
    match v {
        M::Str(s) => Value::from(s.clone()),
        M::Int(i) => Value::from(*i),
        M::Bool(b) => Value::from(*b),
    }
}

fn match_value_from_json(v: &Value) -> Option<segment::filter::MatchValue> {
    use segment::filter::MatchValue as M;
    Some(match v {
        Value::String(s) => M::Str(s.clone()),
        Value::Bool(b) => M::Bool(*b),
        Value::Number(n) => M::Int(n.as_i64()?),
        _ => return None,
    })
}

#[derive(Serialize, Deserialize)]
struct GraphMeta {
    /// Index into `dense`.
    dense: usize,
    covered: usize,
    m: usize,
    ef_construct: usize,
}

/// Result of an update: the WAL sequence number it got.
#[derive(Clone, Copy, Debug)]
pub struct UpdateResult {
    pub operation_id: u64,
    pub completed: bool,
}

pub struct Collection {
    name: String,
    dir: PathBuf,
    meta: RwLock<CollectionMeta>,
    store: RwLock<PointStore>,
    wal: Mutex<Wal>,
    flusher: Arc<Flusher>,
    checkpoint_seq: AtomicU64,
    /// WAL bytes appended since the last checkpoint.
    wal_bytes: AtomicU64,
    /// A graph was installed after the last checkpoint.
    graphs_dirty: std::sync::atomic::AtomicBool,
    /// Set once the collection's directory was deleted or replaced: no write or checkpoint
    /// may touch the files at its old path any more.
    retired: std::sync::atomic::AtomicBool,
    last_checkpoint: Mutex<Instant>,
    last_seq: AtomicU64,
    checkpoint_lock: Mutex<()>,
    last_flush: Mutex<Instant>,
    /// When the last write was applied (idle detection for indexing the tail).
    last_write: Mutex<Instant>,
    /// Unique among the collections this process opened (see `content_version`).
    instance: u64,
}

/// `Collection::content_version`: (collection instance, next WAL seq).
pub type ContentVersion = (u64, u64);

/// Source of `Collection::instance` values.
static INSTANCES: AtomicU64 = AtomicU64::new(1);

fn wal_capacity(cfg: &CollectionConfig) -> u64 {
    cfg.wal_config.wal_capacity_mb.clamp(1, 4096) << 20
}

impl Collection {
    /// Create a new collection directory. Fails if it already exists.
    pub fn create(dir: &Path, name: &str, config: CollectionConfig) -> CResult<Collection> {
        fs::create_dir_all(dir.parent().expect("collections dir"))?;
        fs::create_dir(dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CollectionError::AlreadyExists(name.to_string())
            } else {
                e.into()
            }
        })?;
        let meta = CollectionMeta {
            config,
            payload_indexes: BTreeMap::new(),
        };
        write_json(&dir.join("collection.json"), &meta)?;
        sync_dir(dir.parent().expect("collections dir"))?;
        Self::open(dir, name)
    }

    /// Open an existing collection, recovering from checkpoint + WAL.
    pub fn open(dir: &Path, name: &str) -> CResult<Collection> {
        let meta: CollectionMeta = read_json(&dir.join("collection.json"))
            .map_err(|e| CollectionError::Service(format!("collection {name}: {e}")))?;
        let mut store =
            PointStore::with_vector_dir(meta.config.vector_schema(), Some(dir.join("vectors")));
        let mut checkpoint_seq = 0;
        let mut saved_blocks = Vec::new();
        if let Some((seq, _, path)) = latest_checkpoint(dir)? {
            saved_blocks = load_checkpoint(&path, &mut store, &|name| {
                let p = Self::hnsw_params(&meta.config, name);
                (p.m, p.ef_construct)
            })?;
            checkpoint_seq = seq;
        }
        let (wal, records) = Wal::open(&dir.join("wal"), wal_capacity(&meta.config))?;
        let committed = committed_installs(&records, checkpoint_seq)?;
        let mut last = checkpoint_seq;
        for (seq, bytes) in records {
            if seq <= checkpoint_seq {
                continue;
            }
            if seq != last + 1 {
                return Err(CollectionError::Service(format!("collection {name}: WAL gap after checkpoint {checkpoint_seq}: found seq {seq}, expected {}", last + 1)));
            }
            last = seq;
            let l = LoggedOp::decode(&bytes)?;
            if l.meta.install.is_some_and(|p| !committed.contains(&p.id)) {
                continue; // an install cut short: the shard stays as it was before it
            }
            let _ = l.op.apply(&mut store, seq); // per-point errors were reported at write time
        }
        if wal.next_seq() <= last {
            return Err(CollectionError::Service(format!(
                "collection {name}: WAL is behind its checkpoint"
            )));
        }
        // Leftovers of an interrupted checkpoint.
        for e in fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        for (field, schema) in &meta.payload_indexes {
            apply_index(&mut store, field, schema)?;
        }
        let (saved, mut imported) = (saved_blocks.len(), 0);
        for b in saved_blocks {
            let current = (
                Self::payload_m(&meta.config, &b.name),
                Self::hnsw_params(&meta.config, &b.name).ef_construct,
            );
            if current == (Some(b.m), b.ef_construct) {
                imported +=
                    store.import_block(&b.name, &b.field, b.value, b.graph, b.slots) as usize;
            }
        }
        if saved > 0 {
            tracing::info!(collection = %name, saved, imported, "payload-block graphs loaded from checkpoint");
        }
        let flusher = wal.flusher();
        crate::fsutil::release_free_memory();
        Ok(Collection {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            meta: RwLock::new(meta),
            store: RwLock::new(store),
            wal: Mutex::new(wal),
            flusher,
            checkpoint_seq: AtomicU64::new(checkpoint_seq),
            wal_bytes: AtomicU64::new(0),
            graphs_dirty: Default::default(),
            retired: Default::default(),
            last_checkpoint: Mutex::new(Instant::now()),
            last_seq: AtomicU64::new(last),
            checkpoint_lock: Mutex::new(()),
            last_flush: Mutex::new(Instant::now()),
            last_write: Mutex::new(Instant::now()),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// This collection's directory was renamed to `dir` before anyone else saw the
    /// instance (a recovered snapshot opened in its staging directory, then moved into
    /// place): later checkpoints, WAL segments and vector files go there.
    pub fn relocate(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
        self.wal.get_mut().relocate(&dir.join("wal"));
        self.store
            .get_mut()
            .set_vector_dir(Some(dir.join("vectors")));
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> CollectionConfig {
        self.meta.read().config.clone()
    }

    /// `hnsw_config.full_scan_threshold` (KB of vectors), without copying the config.
    pub fn full_scan_threshold_kb(&self) -> usize {
        self.meta.read().config.hnsw_config.full_scan_threshold as usize
    }

    pub fn payload_indexes(&self) -> BTreeMap<String, IndexSchema> {
        self.meta.read().payload_indexes.clone()
    }

    /// Read access to the points (for the query engine).
    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, PointStore> {
        self.store.read()
    }

    /// Read access to the points if no writer holds or waits for them (an async caller
    /// that must not block falls back to the blocking pool otherwise).
    pub fn try_read(&self) -> Option<parking_lot::RwLockReadGuard<'_, PointStore>> {
        self.store.try_read()
    }

    /// Validate, log and apply one operation. With `wait`, returns once it is durable.
    pub fn update(&self, op: UpdateOp, wait: bool) -> CResult<UpdateResult> {
        self.update_logged(op, wait, OpMeta::default())
    }

    /// [`Collection::update`] with replication metadata logged alongside.
    pub fn update_logged(&self, op: UpdateOp, wait: bool, meta: OpMeta) -> CResult<UpdateResult> {
        let (r, point_error) = self.update_logged_outcome(op, wait, meta)?;
        match point_error {
            Some(e) => Err(e),
            None => Ok(r),
        }
    }

    /// [`Self::update_logged`], telling apart an operation that was not applied (`Err`:
    /// invalid here, or the log failed) from one that was logged and applied but named
    /// points that do not exist (`Ok` with the per-point error, e.g. `PointNotFound`): a
    /// replica in the second case holds the write like every other replica.
    pub fn update_logged_outcome(
        &self,
        op: UpdateOp,
        wait: bool,
        meta: OpMeta,
    ) -> CResult<(UpdateResult, Option<CollectionError>)> {
        let op = op.prepare(&self.store.read())?;
        let logged = LoggedOp { op, meta };
        let bytes = logged.encode();
        let op = logged.op;
        let (seq, result) = {
            let mut wal = self.wal.lock();
            if self.retired.load(Ordering::Acquire) {
                return Err(CollectionError::Service(format!(
                    "collection {} was deleted or replaced meanwhile",
                    self.name
                )));
            }
            let seq = wal.append(&bytes)?;
            self.wal_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let result = op.apply(&mut self.store.write(), seq);
            self.last_seq.store(seq, Ordering::Release);
            *self.last_write.lock() = Instant::now();
            (seq, result)
        };
        if wait {
            self.flusher.flush_upto(seq)?;
        }
        let r = UpdateResult {
            operation_id: seq,
            completed: wait,
        };
        Ok((r, result.err()))
    }

    /// Wait until operation `seq` (an `operation_id` this collection returned) is durable.
    /// Concurrent waiters share one fsync (group commit).
    pub fn wait_durable(&self, seq: u64) -> CResult<()> {
        Ok(self.flusher.flush_upto(seq)?)
    }

    /// Replace the config (PATCH). Vector schema changes are not allowed here.
    pub fn set_config(&self, config: CollectionConfig) -> CResult<()> {
        let hnsw_changed = {
            let old = &self.meta.read().config;
            old.hnsw_config != config.hnsw_config || old.params.vectors != config.params.vectors
        };
        if hnsw_changed {
            self.reset_indexes();
        }
        {
            // on_disk / quantization changes take effect in place
            let schema = config.vector_schema();
            let mut store = self.store.write();
            for (name, p) in &schema.dense {
                if store.schema().dense.get(name) != Some(p) {
                    store.configure_vector(name, p.on_disk, p.quantization);
                }
            }
        }
        let mut meta = self.meta.write();
        let mut new = meta.clone();
        new.config = config;
        write_json(&self.dir.join("collection.json"), &new)?;
        *meta = new;
        Ok(())
    }

    pub fn set_payload_index(&self, field: &str, schema: Option<IndexSchema>) -> CResult<()> {
        let mut meta = self.meta.write();
        let mut new = meta.clone();
        match schema {
            Some(s) => {
                new.payload_indexes.insert(field.to_string(), s);
            }
            None => {
                new.payload_indexes.remove(field);
            }
        }
        write_json(&self.dir.join("collection.json"), &new)?;
        *meta = new;
        drop(meta);
        let mut store = self.store.write();
        match self.meta.read().payload_indexes.get(field) {
            Some(s) => apply_index(&mut store, field, s)?,
            None => store.drop_payload_index(field),
        }
        Ok(())
    }

    /// Periodic maintenance: flush the WAL every `flush_interval_sec` and checkpoint when
    /// enough operations accumulated.
    pub fn maintain(&self) -> CResult<()> {
        let interval = self.meta.read().config.optimizer_config.flush_interval_sec;
        {
            let mut lf = self.last_flush.lock();
            if lf.elapsed().as_secs() >= interval {
                self.flusher
                    .flush_upto(self.last_seq.load(Ordering::Acquire))?;
                *lf = Instant::now();
            }
        }
        let ops =
            self.last_seq.load(Ordering::Acquire) - self.checkpoint_seq.load(Ordering::Acquire);
        let index_due = self.graphs_dirty.load(Ordering::Acquire)
            && self.last_checkpoint.lock().elapsed().as_secs() >= CHECKPOINT_AFTER_INDEX_SECS;
        // (a checkpoint already running, or a shard install, holds the lock: next round)
        if (ops >= CHECKPOINT_EVERY_OPS
            || self.wal_bytes.load(Ordering::Acquire) >= CHECKPOINT_EVERY_WAL_BYTES
            || (ops > 0 && index_due))
            && !self.checkpoint_lock.is_locked()
        {
            self.checkpoint()?;
        }
        self.vacuum_if_needed();
        if !self.run_indexing()? {
            self.run_block_indexing();
        }
        Ok(())
    }

    /// `payload_m` for `name` (per-vector override, then collection): links per node of
    /// payload-block graphs; `None` = blocks off (`payload_m: 0`).
    fn payload_m(cfg: &CollectionConfig, name: &str) -> Option<usize> {
        let over =
            Self::hnsw_override(cfg, name).and_then(|o| o.get("payload_m").and_then(Value::as_u64));
        let m = over
            .or(cfg.hnsw_config.payload_m)
            .unwrap_or(cfg.hnsw_config.m);
        (m > 0).then_some(m.clamp(2, 512) as usize)
    }

    /// Build up to [`BLOCK_JOBS_PER_ROUND`] missing or stale payload-block graphs (values
    /// of keyword/uuid/integer/bool indexes with at least [`BLOCK_MIN_POINTS`] points), in
    /// parallel, without the store lock. Returns how many were installed.
    pub fn run_block_indexing(&self) -> usize {
        let cfg = self.config();
        let jobs = {
            let store = self.store.read();
            let mut jobs = Vec::new();
            for name in store.schema().dense.keys() {
                let Some(pm) = Self::payload_m(&cfg, name) else {
                    continue;
                };
                let mut params = Self::hnsw_params(&cfg, name);
                params.m = pm;
                params.threads = 1;
                jobs.extend(store.block_jobs(
                    name,
                    params,
                    BLOCK_MIN_POINTS,
                    BLOCK_JOBS_PER_ROUND - jobs.len(),
                ));
            }
            jobs
        };
        if jobs.is_empty() {
            return 0;
        }
        let started = Instant::now();
        let points: usize = jobs.iter().map(|j| j.points()).sum();
        let count = jobs.len();
        let built: Vec<_> = {
            use rayon::prelude::*;
            jobs.into_par_iter().map(|j| j.run()).collect()
        };
        let mut installed = 0;
        {
            let mut store = self.store.write();
            for b in built {
                installed += store.install_block(b) as usize;
            }
        }
        if installed > 0 {
            // saved with the next checkpoint, so a restart need not rebuild them
            self.graphs_dirty.store(true, Ordering::Release);
        }
        crate::fsutil::release_free_memory();
        tracing::info!(collection = %self.name, blocks = count, installed, points, secs = started.elapsed().as_secs_f64(), "payload-block graphs built");
        installed
    }

    /// Vacuum: compact the store when tombstones (deleted or moved points) exceed
    /// `deleted_threshold` of the slots and number at least `vacuum_min_vector_number`.
    /// Returns true if it compacted.
    pub fn vacuum_if_needed(&self) -> bool {
        let opt = self.meta.read().config.optimizer_config.clone();
        let (slots, live) = {
            let s = self.store.read();
            (s.slot_count(), s.len())
        };
        let dead = slots - live;
        if slots == 0
            || (dead as u64) < opt.vacuum_min_vector_number.max(1)
            || (dead as f64) / (slots as f64) < opt.deleted_threshold
        {
            return false;
        }
        // a checkpoint copying vectors by slot number must not see them renumbered
        let Some(_checkpoint) = self.checkpoint_lock.try_lock() else {
            return false;
        };
        let started = Instant::now();
        self.store.write().compact();
        tracing::info!(collection = %self.name, dead, live, secs = started.elapsed().as_secs_f64(), "vacuum: store compacted");
        true
    }

    /// Points of one vector name that must accumulate outside the graph before it is
    /// (re)built: `optimizer_config.indexing_threshold` KB of vectors. `None`: indexing off.
    /// Unindexed points of a vector that make it due for indexing: `indexing_threshold`, or,
    /// once it has a graph, a tail of [`IDLE_TAIL_POINTS`] when writes have paused for
    /// [`IDLE_TAIL_MS`] (or at any time for the status, `idle = true`). Qdrant leaves such a
    /// tail (up to the threshold: ~20k points of 128-d) unindexed, to be scanned exactly by
    /// every search — measured here at 4x the server CPU per query of a full graph.
    fn index_due_points(
        cfg: &CollectionConfig,
        dim: usize,
        has_graph: bool,
        idle: bool,
    ) -> Option<usize> {
        let t = Self::indexing_threshold_points(cfg, dim)?;
        Some(if has_graph && idle {
            t.min(IDLE_TAIL_POINTS)
        } else {
            t
        })
    }

    fn idle(&self) -> bool {
        self.last_write.lock().elapsed().as_millis() >= IDLE_TAIL_MS
    }

    fn indexing_threshold_points(cfg: &CollectionConfig, dim: usize) -> Option<usize> {
        let kb = cfg.optimizer_config.indexing_threshold.unwrap_or(10_000);
        if kb == 0 {
            return None;
        }
        Some(((kb as usize).saturating_mul(1024) / (dim.max(1) * 4)).max(1))
    }

    /// The `hnsw_config` given in vector `name`'s own params, if any.
    fn hnsw_override(cfg: &CollectionConfig, name: &str) -> Option<Value> {
        cfg.params
            .vectors
            .iter()
            .into_iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, p)| p.hnsw_config.clone())
    }

    fn hnsw_params(cfg: &CollectionConfig, name: &str) -> segment::hnsw::HnswParams {
        let base = &cfg.hnsw_config;
        let over = Self::hnsw_override(cfg, name);
        let get = |k: &str, d: u64| {
            over.as_ref()
                .and_then(|o| o.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(d)
        };
        segment::hnsw::HnswParams {
            m: get("m", base.m).clamp(2, 512) as usize,
            ef_construct: get("ef_construct", base.ef_construct).clamp(4, 10_000) as usize,
            seed: 0x5eed_5eed,
            threads: get("max_indexing_threads", base.max_indexing_threads) as usize,
        }
    }

    /// Collection status as Qdrant reports it: `green` when every vector's graph is up to
    /// date, `yellow` while points wait for indexing. Also returns indexed vector count.
    pub fn index_status(&self) -> (&'static str, usize) {
        let cfg = self.config();
        let store = self.store.read();
        let mut status = "green";
        let mut indexed = 0;
        for (name, p) in &store.schema().dense {
            let (inside, outside) = store.index_coverage(name);
            indexed += inside;
            // a tail the idle rule will index counts as pending work even while writes go on
            if Self::index_due_points(&cfg, p.size, inside > 0, true).is_some_and(|t| outside >= t)
            {
                status = "yellow";
            }
            // payload blocks are part of the index: still being built = still optimizing
            if Self::payload_m(&cfg, name).is_some() && store.blocks_pending(name, BLOCK_MIN_POINTS)
            {
                status = "yellow";
            }
        }
        (status, indexed)
    }

    /// Build or extend at most one vector's HNSW graph if enough points wait for it.
    /// The build runs without the store lock; searches stay exact-correct meanwhile.
    pub fn run_indexing(&self) -> CResult<bool> {
        let cfg = self.config();
        let job = {
            let store = self.store.read();
            let mut job = None;
            for (name, p) in &store.schema().dense {
                let (inside, outside) = store.index_coverage(name);
                let Some(t) = Self::index_due_points(&cfg, p.size, inside > 0, self.idle()) else {
                    continue;
                };
                if outside >= t {
                    job = store.index_job(name, Self::hnsw_params(&cfg, name));
                    if job.is_some() {
                        break;
                    }
                }
            }
            job
        };
        let Some(job) = job else { return Ok(false) };
        let started = Instant::now();
        let (name, n) = (job.name.clone(), job.new_points());
        let built = job.run();
        let installed = self.store.write().install_index(built);
        crate::fsutil::release_free_memory();
        if installed {
            self.graphs_dirty.store(true, Ordering::Release);
        }
        tracing::info!(collection = %self.name, vector = %name, points = n, secs = started.elapsed().as_secs_f64(), installed, "HNSW index extended");
        Ok(installed)
    }

    /// Forget built graphs (after an HNSW config change); maintenance rebuilds them.
    pub fn reset_indexes(&self) {
        self.store.write().drop_indexes();
    }

    /// Flush everything (used on shutdown).
    pub fn flush_all(&self) -> CResult<()> {
        self.wal.lock().flush()?;
        Ok(())
    }

    /// Replace the points of `shard` by applying `ops` (from
    /// `snapshot::shard_install_ops`: a delete of the shard, then upserts) as one unit:
    /// either all of them are in effect after a crash, or none. Each is logged with the
    /// install's id, the last one marked (and made durable); start-up skips the records of
    /// an install whose last record is missing. No checkpoint is taken meanwhile, so none
    /// holds part of it. Readers see the shard fill up as the install goes.
    ///
    /// On an error the store holds part of the install while the log says it never
    /// happened: this instance is retired (every later write or checkpoint fails), and the
    /// caller reopens the collection from disk (`Storage::install_shard`). Returns the
    /// points installed.
    pub fn install_shard(&self, shard: u32, ops: impl Iterator<Item = UpdateOp>) -> CResult<usize> {
        let _no_checkpoint = self.checkpoint_lock.lock();
        let id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ self.instance;
        let mut ops = ops.peekable();
        let mut count = 0;
        while let Some(op) = ops.next() {
            if let UpdateOp::Upsert { points, .. } = &op {
                count += points.len();
            }
            let last = ops.peek().is_none();
            let meta = OpMeta {
                fill: Some(shard),
                install: Some(crate::operations::InstallPart { id, last }),
                ..Default::default()
            };
            if let Err(e) = self.update_logged_outcome(op, last, meta) {
                let _wal = self.wal.lock();
                self.retired.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(count)
    }

    /// Stop every later write and checkpoint (waiting for one in progress): the directory
    /// is about to be deleted or replaced.
    pub fn retire(&self) {
        let _checkpoint = self.checkpoint_lock.lock();
        let _wal = self.wal.lock();
        self.retired.store(true, Ordering::Release);
    }

    /// Write a checkpoint, then run `f` on this collection's directory and the newest
    /// checkpoint (`None` for a collection that never had an operation) with its seq, while
    /// no other checkpoint can be written or removed. Writes are not held off.
    pub fn with_checkpoint<T>(
        &self,
        f: impl FnOnce(&Path, Option<&Path>, u64) -> CResult<T>,
    ) -> CResult<T> {
        self.checkpoint()?;
        let _guard = self.checkpoint_lock.lock();
        match latest_checkpoint(&self.dir)? {
            Some((seq, _, path)) => f(&self.dir, Some(&path), seq),
            None => f(&self.dir, None, 0),
        }
    }

    /// Write a checkpoint of the current state and drop WAL segments it covers.
    pub fn checkpoint(&self) -> CResult<()> {
        let _guard = self.checkpoint_lock.lock();
        if self.retired.load(Ordering::Acquire) {
            return Ok(());
        }
        let cfg = self.config();
        match self.take_cut() {
            Some(cut) => self.write_checkpoint(cut, &cfg),
            None => Ok(()),
        }
    }

    /// A checkpoint's cut, under the WAL lock: which points exist, their versions and
    /// (shared) payloads, and the graphs. It copies no vector, so writes wait only for a
    /// pass over the slots; the vectors are copied after it (see
    /// `segment::store::StoreCut`). `None`: nothing new since the last checkpoint (no op
    /// and no graph built after it).
    fn take_cut(&self) -> Option<Cut> {
        let started = Instant::now();
        let wal = self.wal.lock();
        let seq = wal.next_seq() - 1;
        if seq == self.checkpoint_seq.load(Ordering::Acquire)
            && !self.graphs_dirty.load(Ordering::Acquire)
        {
            return None;
        }
        let store = self.store.read();
        // installs (store write lock) and appends (WAL lock) after the cut count towards
        // the next checkpoint
        self.graphs_dirty.store(false, Ordering::Release);
        self.wal_bytes.store(0, Ordering::Release);
        let (graphs, blocks) = store.exports();
        let cut = Cut {
            seq,
            store: store.cut(),
            graphs,
            blocks,
        };
        let held = started.elapsed();
        if held > Duration::from_millis(50) {
            tracing::info!(collection = %self.name, points = cut.store.ids.len(), ms = held.as_millis() as u64, "checkpoint cut held writes");
        }
        Some(cut)
    }

    /// Write the checkpoint of `cut` (its vectors copied meanwhile), publish it, and drop
    /// older checkpoints and the WAL segments it covers. Runs under `checkpoint_lock`.
    fn write_checkpoint(&self, cut: Cut, cfg: &CollectionConfig) -> CResult<()> {
        let seq = cut.seq;
        // A newer checkpoint of the same seq (only graphs changed) gets the next generation:
        // a complete checkpoint directory is never replaced in place.
        let generation = match latest_checkpoint(&self.dir)? {
            Some((s, g, _)) if s == seq => g + 1,
            _ => 0,
        };
        let name = if generation == 0 {
            format!("checkpoint-{seq:020}")
        } else {
            format!("checkpoint-{seq:020}.{generation}")
        };
        let final_dir = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp)?;
        self.write_checkpoint_files(cut, cfg, &tmp)?;
        fs::rename(&tmp, &final_dir)?;
        sync_dir(&self.dir)?;
        self.checkpoint_seq.store(seq, Ordering::Release);
        *self.last_checkpoint.lock() = Instant::now();
        // Older checkpoints and covered WAL segments are now garbage.
        for e in fs::read_dir(&self.dir)?.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("checkpoint-") && !n.ends_with(".tmp") && e.path() != final_dir {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        self.wal
            .lock()
            .truncate_retaining(seq, WAL_RETAIN_OPS, WAL_RETAIN_SEGMENTS)?;
        tracing::debug!(collection = %self.name, seq, "checkpoint written");
        Ok(())
    }

    /// Write the files of the checkpoint of `cut` into the (empty) directory `tmp`,
    /// fsync'd, manifest last.
    fn write_checkpoint_files(&self, cut: Cut, cfg: &CollectionConfig, tmp: &Path) -> CResult<()> {
        let Cut {
            seq,
            store: cut,
            graphs,
            blocks,
        } = cut;
        let (dense_names, dense_rows, points) = self.copy_cut(&cut);
        let mut checksums = BTreeMap::new();
        let mut put = |name: String, bytes: &[u8]| -> CResult<()> {
            write_synced(&tmp.join(&name), bytes)?;
            checksums.insert(name, crc32c::crc32c(bytes));
            Ok(())
        };
        let mut graph_meta = Vec::new();
        for g in &graphs {
            let Some(k) = dense_names.iter().position(|(n, _)| *n == g.name) else {
                continue;
            };
            let Some(bytes) = g.encode() else { continue };
            put(format!("graph-{k}.hnsw"), &bytes)?;
            graph_meta.push(GraphMeta {
                dense: k,
                covered: g.covered,
                m: g.m(),
                ef_construct: g.ef_construct,
            });
        }
        let mut block_meta = Vec::new();
        for b in &blocks {
            let Some(k) = dense_names.iter().position(|(n, _)| *n == b.name) else {
                continue;
            };
            let mut bytes: Vec<u8> = b.slots.iter().flat_map(|s| s.to_le_bytes()).collect();
            bytes.extend(b.graph_bytes());
            put(format!("block-{}.bin", block_meta.len()), &bytes)?;
            block_meta.push(BlockMeta {
                dense: k,
                field: b.field.clone(),
                value: match_value_json(&b.value),
                nodes: b.slots.len(),
                m: b.m(),
                ef_construct: Self::hnsw_params(cfg, &b.name).ef_construct,
            });
        }
        put(
            "points.msgpack".into(),
            &rmp_serde::to_vec_named(&points)
                .map_err(|e| CollectionError::Service(e.to_string()))?,
        )?;
        for (k, row) in dense_rows.iter().enumerate() {
            put(format!("dense-{k}.f32"), row)?;
        }
        let manifest = Manifest {
            seq,
            points: points.len(),
            dense: dense_names,
            graphs: graph_meta,
            blocks: block_meta,
            checksums,
        };
        write_synced(&tmp.join("manifest.json"), &checksummed_json(&manifest)?)?;
        sync_dir(tmp)?;
        Ok(())
    }

    /// Write into the (empty) directory `dir` a checkpoint holding only the points of
    /// `shard` of `shard_number` as they are now, without graphs (a shard snapshot: its
    /// points are installed through the write path, which indexes them). Returns its seq.
    /// The collection's own checkpoints and log are not touched.
    pub fn write_shard_checkpoint(
        &self,
        shard_number: u32,
        shard: u32,
        dir: &Path,
    ) -> CResult<u64> {
        let _guard = self.checkpoint_lock.lock();
        let (seq, mut store) = {
            let wal = self.wal.lock();
            (wal.next_seq() - 1, self.store.read().cut())
        };
        store.retain(|id| segment::routing::shard_of(id, shard_number) == shard);
        let cut = Cut {
            seq,
            store,
            graphs: vec![],
            blocks: vec![],
        };
        self.write_checkpoint_files(cut, &self.config(), dir)?;
        Ok(seq)
    }

    /// The vectors of a checkpoint's cut, copied under the store's read lock a chunk at a
    /// time (`CUT_CHUNK_BYTES` of dense rows, `CUT_CHUNK` slots of sparse vectors; writes
    /// go on between chunks), and its points' records. Runs
    /// under `checkpoint_lock`, which keeps vacuum from renumbering slots meanwhile.
    #[allow(clippy::type_complexity)]
    fn copy_cut<'a>(
        &self,
        cut: &'a segment::store::StoreCut,
    ) -> (
        Vec<(String, usize)>,
        Vec<Vec<u8>>,
        Vec<CheckpointPointRef<'a>>,
    ) {
        let n = cut.slots.len();
        let dense_names: Vec<(String, usize)> =
            cut.dense.iter().map(|(n, d, _)| (n.clone(), *d)).collect();
        let mut rows: Vec<Vec<u8>> = Vec::with_capacity(cut.dense.len());
        for (name, dim, present) in &cut.dense {
            let mut out = Vec::with_capacity(n * dim * 4);
            let chunk = (CUT_CHUNK_BYTES / (dim * 4).max(1)).max(1);
            for (slots, present) in cut.slots.chunks(chunk).zip(present.chunks(chunk)) {
                self.store
                    .read()
                    .copy_dense_rows(name, slots, present, &mut out);
            }
            rows.push(out);
        }
        let mut sparse: Vec<BTreeMap<String, SparseVector>> = vec![BTreeMap::new(); n];
        for name in &cut.sparse {
            for (k, slots) in cut.slots.chunks(CUT_CHUNK).enumerate() {
                let got = self.store.read().copy_sparse(name, slots);
                for (i, v) in got.into_iter().enumerate() {
                    if let Some(v) = v {
                        sparse[k * CUT_CHUNK + i].insert(name.clone(), v);
                    }
                }
            }
        }
        let points = sparse
            .into_iter()
            .enumerate()
            .map(|(i, sparse)| CheckpointPointRef {
                id: cut.ids[i],
                version: cut.versions[i],
                payload: cut.payload(i),
                dense: (0..cut.dense.len())
                    .filter(|&k| cut.dense[k].2[i])
                    .map(|k| k as u16)
                    .collect(),
                sparse,
            })
            .collect();
        (dense_names, rows, points)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The version of this collection's content: changes with every write (the WAL's next
    /// seq, read under the WAL lock, which every write holds until it is applied to the
    /// store) and differs between collections this process opened (a re-created one
    /// too). The key of anything derived from the content: a value computed after reading
    /// the version is valid for that version.
    pub fn content_version(&self) -> ContentVersion {
        (self.instance, self.wal.lock().next_seq())
    }

    /// Ids of the newest `limit` client writes this log holds (oldest first) that describe
    /// the current copy of `shard`: only those after the last reset of the shard (a
    /// transfer filling it, or a dropped replica), since what came before was replaced.
    pub fn recent_op_ids(&self, limit: usize, shard: u32) -> CResult<Vec<u64>> {
        let records = {
            let wal = self.wal.lock();
            wal.read_from(wal.next_seq().saturating_sub(limit as u64))?
        };
        let mut ids = Vec::with_capacity(records.len());
        for (_, bytes) in records {
            let meta = LoggedOp::decode_meta(&bytes)?;
            if meta.fill == Some(shard) {
                ids.clear();
            }
            match meta.id {
                Some(id) if meta.covers(shard) => ids.push(id),
                _ => {}
            }
        }
        Ok(ids)
    }

    /// What a replica of `shard` whose log holds the client writes `known` is missing,
    /// judged by this log: every client write after the oldest record of `known` found
    /// here that is not in `known`, in this log's order. `None` when this log cannot tell —
    /// none of `known` is still here (truncated, or the replica is new), or a transfer
    /// refilled `shard` here after that point (this copy's history differs from its log).
    pub fn ops_missing_from(
        &self,
        known: &std::collections::HashSet<u64>,
        shard: u32,
    ) -> CResult<Option<Vec<(OpMeta, UpdateOp)>>> {
        if known.is_empty() {
            return Ok(None);
        }
        let records = self.wal.lock().read_from(0)?;
        let mut out = Vec::new();
        let mut found = false;
        for (_, bytes) in records {
            // only the writes to send are decoded whole
            let meta = LoggedOp::decode_meta(&bytes)?;
            if found && meta.fill == Some(shard) {
                return Ok(None);
            }
            match meta.id {
                Some(id) if known.contains(&id) => found = true,
                Some(_) if found && meta.covers(shard) => {
                    out.push((meta, LoggedOp::decode(&bytes)?.op))
                }
                _ => {}
            }
        }
        Ok(found.then_some(out))
    }

    /// The points that this log's client writes of `shard` missing from a replica whose log
    /// holds `known` may have changed (the writes of [`Collection::ops_missing_from`]);
    /// `None` when this log cannot tell.
    pub fn touched_missing_from(
        &self,
        known: &std::collections::HashSet<u64>,
        shard: u32,
    ) -> CResult<Option<crate::operations::Touched>> {
        let Some(ops) = self.ops_missing_from(known, shard)? else {
            return Ok(None);
        };
        let mut out = crate::operations::Touched::default();
        for (_, op) in ops {
            let (ids, by_filter) = op.touched_ids();
            out.ids.extend(ids);
            out.by_filter |= by_filter;
        }
        out.ids.sort_unstable();
        out.ids.dedup();
        Ok(Some(out))
    }
}

/// The shard installs whose last record is among `records` after `checkpoint_seq`.
fn committed_installs(
    records: &[(u64, Vec<u8>)],
    checkpoint_seq: u64,
) -> CResult<std::collections::HashSet<u64>> {
    let mut out = std::collections::HashSet::new();
    for (_, bytes) in records.iter().filter(|(seq, _)| *seq > checkpoint_seq) {
        if let Some(p) = LoggedOp::decode_meta(bytes)?.install.filter(|p| p.last) {
            out.insert(p.id);
        }
    }
    Ok(out)
}

/// Build the store-side index for a payload field schema.
fn apply_index(store: &mut PointStore, field: &str, schema: &IndexSchema) -> CResult<()> {
    store.create_payload_index(field, schema.kind().field_type())?;
    Ok(())
}

/// The newest complete checkpoint: `checkpoint-{seq}` or `checkpoint-{seq}.{generation}`
/// with the highest `(seq, generation)`; `.tmp` directories are incomplete.
fn latest_checkpoint(dir: &Path) -> CResult<Option<(u64, u64, PathBuf)>> {
    let mut best: Option<(u64, u64, PathBuf)> = None;
    for e in fs::read_dir(dir)?.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        let Some(rest) = n.strip_prefix("checkpoint-") else {
            continue;
        };
        let (seq, generation) = match rest.split_once('.') {
            None => (rest.parse::<u64>().ok(), Some(0)),
            Some((s, g)) => (s.parse::<u64>().ok(), g.parse::<u64>().ok()),
        };
        let (Some(seq), Some(generation)) = (seq, generation) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| (seq, generation) > (b.0, b.1)) {
            best = Some((seq, generation, e.path()));
        }
    }
    Ok(best)
}

/// Load a checkpoint into an empty store. Saved graphs are installed when they were built
/// with the parameters `params(name)` (= `(m, ef_construct)`) still configured; a graph
/// file that does not parse is ignored (the optimizer rebuilds it).
/// Load a checkpoint into `store`; returns its payload blocks, to be installed once the
/// payload indexes exist (an unreadable block is skipped: it is only rebuilt).
fn load_checkpoint(
    path: &Path,
    store: &mut PointStore,
    params: &dyn Fn(&str) -> (usize, usize),
) -> CResult<Vec<SavedBlock>> {
    let bad = |e: String| CollectionError::Service(format!("checkpoint {}: {e}", path.display()));
    let manifest: Manifest = read_json(&path.join("manifest.json")).map_err(bad)?;
    let sums = &manifest.checksums;
    let points: Vec<CheckpointPoint> =
        rmp_serde::from_slice(&read_checked(path, "points.msgpack", sums)?)
            .map_err(|e| bad(e.to_string()))?;
    if points.len() != manifest.points {
        return Err(bad("point count mismatch".into()));
    }
    let mut rows = Vec::new();
    for (k, (_, dim)) in manifest.dense.iter().enumerate() {
        let bytes = read_checked(path, &format!("dense-{k}.f32"), sums)?;
        if bytes.len() != points.len() * dim * 4 {
            return Err(bad(format!(
                "dense-{k}.f32 has {} bytes, expected {}",
                bytes.len(),
                points.len() * dim * 4
            )));
        }
        rows.push(bytes);
    }
    for (i, p) in points.into_iter().enumerate() {
        let mut v = NamedVectors::new();
        for &k in &p.dense {
            let (name, dim) = &manifest.dense[k as usize];
            let b = &rows[k as usize][i * dim * 4..(i + 1) * dim * 4];
            v.insert(
                name.clone(),
                Vector::Dense(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                ),
            );
        }
        for (n, s) in p.sparse {
            v.insert(n, Vector::Sparse(s));
        }
        store.upsert(p.id, p.version, &v, p.payload);
    }
    for g in &manifest.graphs {
        let Some((name, _)) = manifest.dense.get(g.dense) else {
            continue;
        };
        if params(name) != (g.m, g.ef_construct) {
            continue;
        }
        let file = path.join(format!("graph-{}.hnsw", g.dense));
        let loaded = read_checked(path, &format!("graph-{}.hnsw", g.dense), sums)
            .ok()
            .and_then(|b| segment::hnsw::Hnsw::from_bytes(&b));
        let installed =
            loaded.is_some_and(|h| store.import_graph(name, h, g.covered, g.ef_construct));
        if !installed {
            tracing::warn!(file = %file.display(), "saved HNSW graph unusable: it will be rebuilt");
        }
    }
    let mut blocks = Vec::new();
    for (i, b) in manifest.blocks.iter().enumerate() {
        let file = path.join(format!("block-{i}.bin"));
        let decoded = (|| {
            let (name, _) = manifest.dense.get(b.dense)?;
            let bytes = read_checked(path, &format!("block-{i}.bin"), sums).ok()?;
            let split = b.nodes.checked_mul(4).filter(|&s| s <= bytes.len())?;
            let slots = bytes[..split]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            Some(SavedBlock {
                name: name.clone(),
                field: b.field.clone(),
                value: match_value_from_json(&b.value)?,
                graph: segment::hnsw::Hnsw::from_bytes(&bytes[split..])?,
                slots,
                m: b.m,
                ef_construct: b.ef_construct,
            })
        })();
        match decoded {
            Some(d) => blocks.push(d),
            None => {
                tracing::warn!(file = %file.display(), "saved payload block unusable: it will be rebuilt")
            }
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CreateCollection;
    use crate::index_schema::IndexType;
    use crate::operations::*;
    use serde_json::json;

    fn cfg() -> CollectionConfig {
        serde_json::from_value::<CreateCollection>(
            json!({"vectors": {"size": 3, "distance": "Dot"}, "sparse_vectors": {"s": {}}}),
        )
        .unwrap()
        .into_config(&crate::config::CollectionDefaults::default())
        .unwrap()
    }

    fn upsert(ids: std::ops::Range<u64>) -> UpdateOp {
        UpdateOp::Upsert {
            points: ids
                .map(|i| PointInsert {
                    id: PointId::Num(i),
                    vectors: [("".into(), StoredVector::Dense(vec![i as f32, 1.0, 0.0]))].into(),
                    payload: Some(json!({"i": i}).as_object().unwrap().clone()),
                })
                .collect(),
            update_filter: None,
            mode: UpdateMode::Upsert,
        }
    }

    /// Every point of a store as (id, version, payload, vectors), by id.
    fn snapshot_of(s: &PointStore) -> Vec<(PointId, u64, String, String)> {
        let mut out: Vec<_> = s
            .iter_records()
            .map(|r| {
                let vectors: BTreeMap<_, _> = r.vectors.into_iter().collect();
                (
                    r.id,
                    r.version,
                    serde_json::to_string(&r.payload).unwrap(),
                    format!("{vectors:?}"),
                )
            })
            .collect();
        out.sort_by_key(|a| a.0);
        out
    }

    /// A checkpoint holds exactly the state at its cut, although its vectors are copied
    /// after the cut while writes go on: vectors replaced or deleted, payloads merged in
    /// place, overwritten or cleared, points deleted and added after the cut are all
    /// absent from it (it is loaded here without the WAL).
    #[test]
    fn checkpoint_is_the_state_at_its_cut_whatever_follows() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let c = Collection::create(&dir, "c", cfg()).unwrap();
        c.update(upsert(0..3000), true).unwrap();
        let sparse = |i: u32| {
            StoredVector::Sparse(SparseVector {
                indices: vec![i, i + 7],
                values: vec![0.5, i as f32],
            })
        };
        let with_sparse = |id: u64, x: f32| PointInsert {
            id: PointId::Num(id),
            vectors: [
                ("".into(), StoredVector::Dense(vec![x, 2.0, 3.0])),
                ("s".into(), sparse(id as u32)),
            ]
            .into(),
            payload: Some(
                json!({"doc": "d".repeat(4096), "n": id})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        };
        c.update(
            UpdateOp::Upsert {
                points: (3000..3040).map(|i| with_sparse(i, i as f32)).collect(),
                update_filter: None,
                mode: UpdateMode::Upsert,
            },
            true,
        )
        .unwrap();
        let at_cut = snapshot_of(&c.read());
        let cut = c.take_cut().unwrap();
        let ids = |v: &[u64]| Selector::Ids(v.iter().map(|i| PointId::Num(*i)).collect());
        let obj = |v: Value| v.as_object().unwrap().clone();
        for op in [
            UpdateOp::UpdateVectors {
                points: vec![(
                    PointId::Num(1),
                    [("".into(), StoredVector::Dense(vec![9.0, 9.0, 9.0]))].into(),
                )],
                update_filter: None,
            },
            UpdateOp::DeleteVectors {
                selector: ids(&[3001, 3002]),
                names: vec!["s".into()],
            },
            UpdateOp::DeleteVectors {
                selector: ids(&[3003]),
                names: vec!["".into()],
            },
            UpdateOp::SetPayload {
                selector: ids(&[3004, 5]),
                payload: obj(json!({"n": -1, "extra": true})),
                key: None,
            },
            UpdateOp::OverwritePayload {
                selector: ids(&[3005]),
                payload: obj(json!({"new": 1})),
            },
            UpdateOp::ClearPayload(ids(&[3006])),
            UpdateOp::DeletePayload {
                selector: ids(&[3007]),
                keys: vec!["doc".into()],
            },
            UpdateOp::Delete(ids(&[3008, 7])),
            upsert(2990..3100),
        ] {
            c.update(op, true).unwrap();
        }
        assert!(
            snapshot_of(&c.read()) != at_cut,
            "the writes changed the store"
        );
        c.write_checkpoint(cut, &c.config()).unwrap();
        let (_, _, path) = latest_checkpoint(&dir).unwrap().unwrap();
        let mut loaded = PointStore::with_vector_dir(c.config().vector_schema(), None);
        load_checkpoint(&path, &mut loaded, &|_| (16, 100)).unwrap();
        let got = snapshot_of(&loaded);
        assert_eq!(got.len(), at_cut.len(), "points in the checkpoint");
        if let Some((g, w)) = got.iter().zip(&at_cut).find(|(g, w)| g != w) {
            panic!(
                "point {:?} differs from the cut: {:.300} vs {:.300}",
                w.0,
                format!("{g:?}"),
                format!("{w:?}")
            );
        }
    }

    /// WAL delta bookkeeping: a replica's ids since its last reset of the shard, and what a
    /// source's log says it misses (in log order), including across a checkpoint.
    #[test]
    fn wal_delta_finds_exactly_the_missed_writes() {
        let dir = tempfile::tempdir().unwrap();
        let src = Collection::create(&dir.path().join("s"), "s", cfg()).unwrap();
        let dst = Collection::create(&dir.path().join("d"), "d", cfg()).unwrap();
        let id = |i: u64| OpMeta {
            id: Some(1000 + i),
            ..Default::default()
        };
        for i in 0..30 {
            src.update_logged(upsert(i..i + 1), false, id(i)).unwrap();
            if i < 20 {
                dst.update_logged(upsert(i..i + 1), false, id(i)).unwrap();
            }
        }
        src.checkpoint().unwrap(); // history is retained past the checkpoint
        let known: std::collections::HashSet<u64> =
            dst.recent_op_ids(100, 0).unwrap().into_iter().collect();
        assert_eq!(known.len(), 20);
        let missing = src.ops_missing_from(&known, 0).unwrap().unwrap();
        let got: Vec<u64> = missing.iter().map(|(m, _)| m.id.unwrap()).collect();
        assert_eq!(got, (1020..1030).collect::<Vec<_>>());
        // the points those writes changed (anti-entropy's per-point decision)
        let touched = src.touched_missing_from(&known, 0).unwrap().unwrap();
        assert_eq!(touched.ids, (20..30).map(PointId::Num).collect::<Vec<_>>());
        assert!(!touched.by_filter);
        assert!(
            touched.may_have_changed(PointId::Num(25))
                && !touched.may_have_changed(PointId::Num(5))
        );
        src.update_logged(
            UpdateOp::ClearPayload(crate::operations::Selector::Filter(serde_json::json!({}))),
            false,
            id(31),
        )
        .unwrap();
        let touched = src.touched_missing_from(&known, 0).unwrap().unwrap();
        assert!(touched.by_filter && touched.may_have_changed(PointId::Num(5)));
        // a reset of shard 0 on the replica voids its earlier history for that shard only
        let reset = OpMeta {
            fill: Some(0),
            ..Default::default()
        };
        dst.update_logged(UpdateOp::delete_shards(1, &[0]), false, reset.clone())
            .unwrap();
        assert!(dst.recent_op_ids(100, 0).unwrap().is_empty());
        assert_eq!(dst.recent_op_ids(100, 1).unwrap().len(), 20);
        // unknown history, or a source whose own copy was refilled since: no delta
        assert!(src
            .ops_missing_from(&Default::default(), 0)
            .unwrap()
            .is_none());
        let strangers: std::collections::HashSet<u64> = [7, 8].into();
        assert!(src.ops_missing_from(&strangers, 0).unwrap().is_none());
        // a write whose part on the replica was for another shard does not count for shard 0
        let other = OpMeta {
            id: Some(5000),
            shards: Some(vec![1]),
            ..Default::default()
        };
        dst.update_logged(upsert(60..61), false, other).unwrap();
        assert!(!dst.recent_op_ids(100, 0).unwrap().contains(&5000));
        assert!(dst.recent_op_ids(100, 1).unwrap().contains(&5000));
        src.update_logged(upsert(50..51), false, reset).unwrap();
        assert!(src.ops_missing_from(&known, 0).unwrap().is_none());
        assert!(src.ops_missing_from(&known, 1).unwrap().is_some());
    }

    /// A checkpoint at an unchanged seq (only graphs changed) is written as the next
    /// generation — the complete one is never replaced in place — and is the one loaded.
    #[test]
    fn same_seq_checkpoint_gets_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        {
            let c = Collection::create(&path, "g", cfg()).unwrap();
            c.update(upsert(0..10), true).unwrap();
            c.checkpoint().unwrap();
            c.checkpoint().unwrap(); // nothing new: no-op
            c.graphs_dirty.store(true, Ordering::Release);
            c.checkpoint().unwrap();
        }
        let names: Vec<String> = fs::read_dir(&path)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("checkpoint-"))
            .collect();
        assert_eq!(names, vec![format!("checkpoint-{:020}.1", 1)]);
        let c = Collection::open(&path, "g").unwrap();
        assert_eq!(c.read().len(), 10);
    }

    #[test]
    fn recovers_from_wal_and_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        {
            let c = Collection::create(&dir, "c", cfg()).unwrap();
            c.update(upsert(0..50), true).unwrap();
            c.checkpoint().unwrap();
            c.update(upsert(50..80), true).unwrap();
            c.update(
                UpdateOp::Delete(Selector::Filter(
                    json!({"must": [{"key": "i", "range": {"lt": 10}}]}),
                )),
                true,
            )
            .unwrap();
            c.update(
                UpdateOp::SetPayload {
                    selector: Selector::Ids(vec![PointId::Num(20)]),
                    payload: json!({"x": 1}).as_object().unwrap().clone(),
                    key: None,
                },
                true,
            )
            .unwrap();
        }
        let c = Collection::open(&dir, "c").unwrap();
        let s = c.read();
        assert_eq!(s.len(), 70);
        assert_eq!(s.payload(PointId::Num(20)).unwrap()["x"], json!(1));
        assert!(s.get(PointId::Num(5)).is_none());
        assert_eq!(
            s.get(PointId::Num(79)).unwrap().vectors[""],
            Vector::Dense(vec![79.0, 1.0, 0.0])
        );
    }

    #[test]
    fn corrupted_checkpoint_files_are_detected() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("k");
        {
            let c = Collection::create(&dir, "k", cfg()).unwrap();
            c.update(upsert(0..40), true).unwrap();
            c.checkpoint().unwrap();
        }
        let (_, _, ckpt) = latest_checkpoint(&dir).unwrap().unwrap();
        let flip = |name: &str| {
            let f = ckpt.join(name);
            let mut bytes = fs::read(&f).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40; // same length: only a checksum can tell
            fs::write(&f, bytes).unwrap();
        };
        flip("dense-0.f32");
        let e = Collection::open(&dir, "k")
            .err()
            .expect("a corrupted vector file must not load");
        assert!(
            e.to_string().contains("dense-0.f32 fails its checksum"),
            "{e}"
        );
        flip("dense-0.f32"); // restored
        let c = Collection::open(&dir, "k").unwrap();
        assert_eq!(c.read().len(), 40);
        drop(c);
        flip("points.msgpack");
        assert!(Collection::open(&dir, "k").is_err());
    }

    #[test]
    fn graphs_survive_a_restart() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("g");
        let cfg = serde_json::from_value::<CreateCollection>(json!({
            "vectors": {"size": 8, "distance": "Euclid"},
            "optimizers_config": {"indexing_threshold": 1}
        }))
        .unwrap()
        .into_config(&crate::config::CollectionDefaults::default())
        .unwrap();
        let point = |i: u64| PointInsert {
            id: PointId::Num(i),
            vectors: [(
                "".into(),
                StoredVector::Dense(
                    (0..8)
                        .map(|k| ((i * 2_654_435_761 + k * 40_503) % 10_007) as f32)
                        .collect(),
                ),
            )]
            .into(),
            payload: None,
        };
        let q = Vector::Dense((0..8).map(|k| k as f32 * 3.0).collect());
        let before;
        {
            let c = Collection::create(&dir, "g", cfg).unwrap();
            c.update(
                UpdateOp::Upsert {
                    points: (0..3000).map(point).collect(),
                    update_filter: None,
                    mode: UpdateMode::Upsert,
                },
                true,
            )
            .unwrap();
            // a few tombstones inside the graph's range (< 5%)
            c.update(
                UpdateOp::Delete(Selector::Ids((0..40).map(PointId::Num).collect())),
                true,
            )
            .unwrap();
            while c.run_indexing().unwrap() {}
            assert_eq!(c.read().index_coverage(""), (2960, 0));
            c.checkpoint().unwrap();
            // written after the checkpoint: replayed from the WAL, outside the graph
            c.update(
                UpdateOp::Upsert {
                    points: (5000..5010).map(point).collect(),
                    update_filter: None,
                    mode: UpdateMode::Upsert,
                },
                true,
            )
            .unwrap();
            let params = segment::store::SearchParams {
                exact: false,
                ..Default::default()
            };
            before = (
                c.read().search("", &q, None, 10, None).unwrap(),
                c.read()
                    .search_with("", &q, None, 10, None, &params)
                    .unwrap(),
            );
        }
        let c = Collection::open(&dir, "g").unwrap();
        let s = c.read();
        assert_eq!(
            s.index_coverage(""),
            (2960, 10),
            "the saved graph is used at once; only the replayed points wait for indexing"
        );
        let params = segment::store::SearchParams {
            exact: false,
            ..Default::default()
        };
        let approx = s.search_with("", &q, None, 10, None, &params).unwrap();
        let ids = |h: &[segment::Hit]| h.iter().map(|x| x.id).collect::<Vec<_>>();
        // the same graph: the same walk, hit for hit (the parallel build is not
        // deterministic under load, so the graph's recall is checked, not equality to exact)
        assert_eq!(
            ids(&approx),
            ids(&before.1),
            "graph search after restart equals graph search before"
        );
        let exact = ids(&before.0);
        let found = ids(&approx).iter().filter(|i| exact.contains(i)).count();
        assert!(found >= 8, "graph search recall {found}/10 against exact");
    }

    /// 4-d Euclid, small graphs (m 8, ef_construct 32), the given `indexing_threshold` (KB).
    fn small_graph_cfg(indexing_threshold_kb: u64) -> CollectionConfig {
        serde_json::from_value::<CreateCollection>(json!({
            "vectors": {"size": 4, "distance": "Euclid"},
            "optimizers_config": {"indexing_threshold": indexing_threshold_kb},
            "hnsw_config": {"m": 8, "ef_construct": 32}
        }))
        .unwrap()
        .into_config(&crate::config::CollectionDefaults::default())
        .unwrap()
    }

    /// Below `indexing_threshold`, a tail of >= IDLE_TAIL_POINTS is indexed once writes pause
    /// (only when the vector already has a graph); the status shows it as pending.
    #[test]
    fn idle_tail_is_indexed() {
        let root = tempfile::tempdir().unwrap();
        // 47 KB of 16-byte vectors: a threshold of 3,008 points
        let cfg = small_graph_cfg(47);
        let up = |c: &Collection, r: std::ops::Range<u64>| {
            let points = r
                .map(|i| PointInsert {
                    id: PointId::Num(i),
                    vectors: [(
                        "".into(),
                        StoredVector::Dense(vec![i as f32, (i % 7) as f32, 1.0, 0.0]),
                    )]
                    .into(),
                    payload: None,
                })
                .collect();
            c.update(
                UpdateOp::Upsert {
                    points,
                    update_filter: None,
                    mode: UpdateMode::Upsert,
                },
                true,
            )
            .unwrap();
        };
        let c = Collection::create(&root.path().join("t"), "t", cfg).unwrap();
        up(&c, 0..900);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(
            !c.run_indexing().unwrap(),
            "no graph yet: the threshold alone decides"
        );
        assert_eq!(c.index_status(), ("green", 0));
        up(&c, 900..5000);
        assert!(c.run_indexing().unwrap());
        assert_eq!(c.read().index_coverage(""), (5000, 0));
        up(&c, 5000..6500);
        assert_eq!(
            c.index_status().0,
            "yellow",
            "a tail the idle rule will index is pending"
        );
        assert!(!c.run_indexing().unwrap(), "writes just came: wait");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(c.run_indexing().unwrap(), "idle: the tail is indexed");
        assert_eq!(c.read().index_coverage(""), (6500, 0));
        assert_eq!(c.index_status(), ("green", 6500));
        up(&c, 6500..7000); // below IDLE_TAIL_POINTS: stays a scanned tail
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(!c.run_indexing().unwrap());
        assert_eq!(c.index_status(), ("green", 6500));
    }

    /// Payload blocks are saved with the checkpoint and installed at open: no rebuild, the
    /// same walks; a block holding a dead slot is left out and rebuilt.
    #[test]
    fn payload_blocks_survive_a_restart() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("b");
        let cfg = small_graph_cfg(1);
        // 5 tenants of 1,100 points (each a fifth of the collection: one block each)
        let point = |i: u64| PointInsert {
            id: PointId::Num(i),
            vectors: [(
                "".into(),
                StoredVector::Dense(
                    (0..4)
                        .map(|k| ((i * 2_654_435_761 + k * 40_503) % 10_007) as f32)
                        .collect(),
                ),
            )]
            .into(),
            payload: Some(
                json!({"t": format!("t{}", i % 5)})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        };
        let flt = |t: &str| {
            segment::filter::Filter::from_json(
                &json!({"must": [{"key": "t", "match": {"value": t}}]}),
            )
            .unwrap()
        };
        let q = Vector::Dense(vec![500.0, 9000.0, 20.0, 4000.0]);
        let params = segment::store::SearchParams {
            exact: false,
            full_scan_threshold: 0,
            ..Default::default()
        };
        let ids = |h: &[segment::Hit]| h.iter().map(|x| x.id).collect::<Vec<_>>();
        let mut before = Vec::new();
        {
            let c = Collection::create(&dir, "b", cfg).unwrap();
            c.set_payload_index("t", Some(IndexSchema::Type(IndexType::Keyword)))
                .unwrap();
            c.update(
                UpdateOp::Upsert {
                    points: (0..5500).map(point).collect(),
                    update_filter: None,
                    mode: UpdateMode::Upsert,
                },
                true,
            )
            .unwrap();
            while c.run_indexing().unwrap() {}
            assert_eq!(c.run_block_indexing(), 5);
            assert_eq!(c.read().block_stats(""), (5, 5500));
            // a dead member: t0's block holds a slot that is gone at checkpoint time
            c.update(UpdateOp::Delete(Selector::Ids(vec![PointId::Num(0)])), true)
                .unwrap();
            for t in ["t0", "t1", "t2", "t3", "t4"] {
                let f = flt(t);
                before.push(ids(&c
                    .read()
                    .search_with("", &q, Some(&f), 10, None, &params)
                    .unwrap()));
            }
            c.checkpoint().unwrap();
        }
        let c = Collection::open(&dir, "b").unwrap();
        assert_eq!(
            c.read().block_stats(""),
            (4, 4 * 1100),
            "four blocks loaded; t0's held a dead slot and was left out"
        );
        let used = segment::store::BLOCK_SEARCHES.load(Ordering::Relaxed);
        for (k, t) in ["t1", "t2", "t3", "t4"].iter().enumerate() {
            let f = flt(t);
            let got = ids(&c
                .read()
                .search_with("", &q, Some(&f), 10, None, &params)
                .unwrap());
            assert_eq!(got, before[k + 1], "{t}: the same block, the same walk");
        }
        assert!(segment::store::BLOCK_SEARCHES.load(Ordering::Relaxed) >= used + 4);
        assert_eq!(c.run_block_indexing(), 1, "only t0's block is rebuilt");
    }

    #[test]
    fn invalid_ops_are_rejected_before_logging() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let c = Collection::create(&dir, "c", cfg()).unwrap();
        let bad = UpdateOp::Upsert {
            points: vec![PointInsert {
                id: PointId::Num(1),
                vectors: [("".into(), StoredVector::Dense(vec![1.0]))].into(),
                payload: None,
            }],
            update_filter: None,
            mode: UpdateMode::Upsert,
        };
        assert!(matches!(
            c.update(bad, true),
            Err(CollectionError::BadInput(_))
        ));
        let r = c.update(upsert(0..1), true).unwrap();
        assert_eq!(r.operation_id, 1);
        let missing = c.update(
            UpdateOp::ClearPayload(Selector::Ids(vec![PointId::Num(0), PointId::Num(9)])),
            true,
        );
        assert!(matches!(missing, Err(CollectionError::PointNotFound(ref s)) if s == "9"));
        assert!(c.read().payload(PointId::Num(0)).unwrap().is_empty());
    }
}

#[cfg(test)]
mod vacuum_tests {
    use super::*;
    use crate::config::CreateCollection;
    use crate::index_schema::IndexType;
    use crate::operations::*;
    use serde_json::json;

    #[test]
    fn vacuum_compacts_tombstones_and_keeps_data() {
        let root = tempfile::tempdir().unwrap();
        let cfg = serde_json::from_value::<CreateCollection>(json!({"vectors": {"size": 2, "distance": "Dot"}, "optimizers_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 10}}))
            .unwrap()
            .into_config(&crate::config::CollectionDefaults::default())
            .unwrap();
        let c = Collection::create(&root.path().join("c"), "c", cfg).unwrap();
        c.set_payload_index("k", Some(IndexSchema::Type(IndexType::Integer)))
            .unwrap();
        let pts = |r: std::ops::Range<u64>| UpdateOp::Upsert {
            points: r
                .map(|i| PointInsert {
                    id: PointId::Num(i),
                    vectors: [("".into(), StoredVector::Dense(vec![i as f32, 1.0]))].into(),
                    payload: Some(json!({"k": i % 3}).as_object().unwrap().clone()),
                })
                .collect(),
            update_filter: None,
            mode: UpdateMode::Upsert,
        };
        c.update(pts(0..100), true).unwrap();
        assert!(!c.vacuum_if_needed());
        c.update(
            UpdateOp::Delete(Selector::Ids((0..50).map(PointId::Num).collect())),
            true,
        )
        .unwrap();
        assert!(c.vacuum_if_needed());
        let s = c.read();
        assert_eq!((s.len(), s.slot_count()), (50, 50));
        let f = segment::filter::Filter::from_json(
            &json!({"must": [{"key": "k", "match": {"value": 1}}]}),
        )
        .unwrap();
        assert_eq!(s.count(Some(&f)), (50..100).filter(|i| i % 3 == 1).count());
    }
}
