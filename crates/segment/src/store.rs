//! `PointStore`: all points of one shard in memory, with exact (brute-force) search.
//!
//! Layout: points live in slots addressed by a `u32` offset; dense vectors of one name sit
//! in one contiguous arena (`dim` floats per slot), so a scan is a linear walk over memory.
//! The id map is a `BTreeMap`, so scrolling by id is an ordered range walk.
//!
//! Slots are append-only and a slot's vectors never change once written: replacing a
//! point's vectors moves it to a new slot and leaves a tombstone. This is what lets an HNSW
//! graph (built in the background over a copy of the arena) stay valid: graph nodes below
//! `covered` are searched through the graph, newer slots exactly, and tombstones are
//! traversed but never returned. Tombstones are dropped when the store is rebuilt from a
//! checkpoint (restart).

use crate::distance;
use crate::filter::{Filter, MatchValue, PointView};
use crate::hnsw::{self, Hnsw, HnswParams};
use crate::json_path::{merge_payload, JsonPath};
use crate::payload_index::{FieldIndex, FieldType};
use crate::quant::{QuantizedVectors, ScalarQuantizer};
use crate::types::*;
use crate::vector_file::VectorFile;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

/// Parameters of one dense vector name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseParams {
    pub size: usize,
    pub distance: Distance,
    /// Keep the f32 vectors in a file (mapped) instead of RAM.
    #[serde(default)]
    pub on_disk: bool,
    /// int8 scalar quantization of this vector (codes are always kept in RAM).
    #[serde(default)]
    pub quantization: Option<ScalarConfig>,
}

impl DenseParams {
    pub fn new(size: usize, distance: Distance) -> DenseParams {
        DenseParams {
            size,
            distance,
            on_disk: false,
            quantization: None,
        }
    }
}

/// `quantization_config.scalar` (type `int8`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalarConfig {
    /// Central share of values the code range covers (`None`: all values).
    pub quantile: Option<f32>,
}

/// Which vectors a collection has. The unnamed vector is stored under `DEFAULT_VECTOR`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VectorSchema {
    pub dense: BTreeMap<String, DenseParams>,
    pub sparse: BTreeMap<String, SparseParams>,
}

/// A sparse vector's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseParams {
    /// `modifier: idf`: query values are weighted by each index's inverse document
    /// frequency among the live points that have this vector.
    pub idf: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("Wrong input: Vector dimension error: expected dim: {expected}, got {got}")]
    Dimension { expected: usize, got: usize },
    #[error("Wrong input: Not existing vector name error: {0}")]
    UnknownVector(String),
    #[error("Wrong input: {0}")]
    Invalid(String),
}

/// The vectors of one point, by name. Dense vectors are stored preprocessed (Cosine: unit).
pub type NamedVectors = BTreeMap<String, Vector>;

/// The vectors of one dense name, `dim` floats per slot: in RAM, or (`on_disk`) in a file
/// mapped read-only (see [`crate::vector_file`]).
#[derive(Debug, Default)]
struct Arena {
    dim: usize,
    rows: Rows,
    present: Vec<bool>,
}

#[derive(Debug)]
enum Rows {
    Ram(Vec<f32>),
    Disk(VectorFile),
}

impl Default for Rows {
    fn default() -> Self {
        Rows::Ram(Vec::new())
    }
}

impl Arena {
    fn new(dim: usize, on_disk: bool, dir: Option<&std::path::Path>) -> Arena {
        let rows = if on_disk {
            match VectorFile::create(dim, dir) {
                Ok(f) => Rows::Disk(f),
                Err(_) => Rows::Ram(Vec::new()), // no usable directory: stay in RAM
            }
        } else {
            Rows::Ram(Vec::new())
        };
        Arena {
            dim,
            rows,
            present: Vec::new(),
        }
    }

    /// Every slot's floats (`dim` per slot, zeros where absent); at least `slots()` rows.
    fn data(&self) -> &[f32] {
        match &self.rows {
            Rows::Ram(v) => v,
            Rows::Disk(f) => f.data(),
        }
    }

    fn on_disk(&self) -> bool {
        matches!(self.rows, Rows::Disk(_))
    }

    fn get(&self, off: u32) -> Option<&[f32]> {
        let o = off as usize;
        if *self.present.get(o)? {
            Some(&self.data()[o * self.dim..(o + 1) * self.dim])
        } else {
            None
        }
    }

    fn set(&mut self, off: u32, v: &[f32]) {
        let o = off as usize;
        if self.present.len() <= o {
            self.present.resize(o + 1, false);
        }
        let failed = match &mut self.rows {
            Rows::Ram(data) => {
                if data.len() < (o + 1) * self.dim {
                    data.resize((o + 1) * self.dim, 0.0);
                }
                data[o * self.dim..(o + 1) * self.dim].copy_from_slice(v);
                false
            }
            Rows::Disk(f) => f.write(off, v).is_err(),
        };
        if failed {
            // the file cannot grow (disk full, I/O error): keep serving from RAM
            let mut data = self.data().to_vec();
            data.resize(self.present.len() * self.dim, 0.0);
            data[o * self.dim..(o + 1) * self.dim].copy_from_slice(v);
            self.rows = Rows::Ram(data);
        }
        self.present[o] = true;
    }

    /// Row `off` for a few scattered reads (rescoring): in RAM the stored slice; on disk a
    /// `pread` into `buf`, so the process's RSS does not grow (the mapping if that fails).
    fn read_row<'a>(&'a self, off: u32, buf: &'a mut Vec<f32>) -> Option<&'a [f32]> {
        let v = self.get(off)?;
        match &self.rows {
            Rows::Disk(f) if f.read_row(off, buf).is_ok() => Some(buf.as_slice()),
            _ => Some(v),
        }
    }

    /// Let the kernel reclaim file pages a bulk read (index build, training) brought in.
    /// After a graph build or load: on disk, drop the mapped pages the bulk pass brought
    /// in; in RAM, back the rows with huge pages (searches read them at random).
    fn settle_pages(&mut self) {
        match &mut self.rows {
            Rows::Disk(f) => f.release(),
            Rows::Ram(v) => {
                crate::mem::advise_huge_pages(v);
            }
        }
    }

    /// Move the rows to RAM or to a file.
    fn set_on_disk(&mut self, on_disk: bool, dir: Option<&std::path::Path>) {
        if on_disk == self.on_disk() {
            return;
        }
        let mut fresh = Arena::new(self.dim, on_disk, dir);
        for off in 0..self.present.len() as u32 {
            if let Some(v) = self.get(off) {
                fresh.set(off, v);
            }
        }
        fresh.present.resize(self.present.len(), false);
        *self = fresh;
    }
}

/// A stored point as returned to readers.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: PointId,
    pub version: u64,
    pub payload: Payload,
    pub vectors: NamedVectors,
}

/// Search-time knobs (Qdrant's `params` plus the collection's planner threshold).
#[derive(Clone, Copy, Debug)]
pub struct SearchParams {
    pub exact: bool,
    pub hnsw_ef: Option<usize>,
    pub indexed_only: bool,
    /// Below this many (estimated) filtered points, search exactly instead of the graph.
    pub full_scan_threshold: usize,
    /// `params.quantization`: how a quantized vector is searched.
    pub quantization: QuantSearch,
}

/// Oversampling of a quantized search that does not set one (see `search_with`).
pub const DEFAULT_OVERSAMPLING: f64 = 2.0;

/// `params.quantization` of a search request.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantSearch {
    /// Search the f32 vectors even though codes exist.
    pub ignore: bool,
    /// Re-score the preselected candidates with the f32 vectors (default: yes).
    pub rescore: Option<bool>,
    /// Preselect `limit × oversampling` candidates by code (≥ 1).
    pub oversampling: Option<f64>,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            exact: false,
            hnsw_ef: None,
            indexed_only: false,
            full_scan_threshold: 10_000,
            quantization: QuantSearch::default(),
        }
    }
}

/// An HNSW graph over slots `0..covered` of one dense vector arena.
struct GraphIndex {
    graph: Arc<Hnsw>,
    covered: usize,
    ef_construct: usize,
}

/// A graph to persist with a checkpoint (see [`PointStore::graph_exports`]).
pub struct GraphExport {
    pub name: String,
    graph: Arc<Hnsw>,
    map: Arc<Vec<Option<u32>>>,
    new_n: usize,
    nodes: usize,
    /// Slots `0..covered` of the checkpointed store are in the graph.
    pub covered: usize,
    pub ef_construct: usize,
}

impl GraphExport {
    /// The graph renumbered to the checkpoint's slots, serialized; `None` if unusable.
    pub fn encode(&self) -> Option<Vec<u8>> {
        self.graph
            .remap(&self.map, self.new_n, self.nodes)
            .map(|g| g.to_bytes())
    }

    pub fn m(&self) -> usize {
        self.graph.m()
    }
}

/// A payload block as saved with a checkpoint (see [`PointStore::block_exports`]).
pub struct BlockExport {
    pub name: String,
    pub field: String,
    pub value: MatchValue,
    /// Graph node `i` is checkpoint slot `slots[i]`.
    pub slots: Vec<u32>,
    block: Arc<BlockGraph>,
}

impl BlockExport {
    /// The block's graph, serialized (its node numbers are the block's own).
    pub fn graph_bytes(&self) -> Vec<u8> {
        self.block.graph.to_bytes()
    }

    pub fn m(&self) -> usize {
        self.block.graph.m()
    }
}

/// A background index build: everything needed to extend a graph without the store lock.
pub struct IndexJob {
    pub name: String,
    base: Arc<Hnsw>,
    data: Vec<f32>,
    dim: usize,
    distance: Distance,
    new_nodes: Vec<u32>,
    covered: usize,
    params: HnswParams,
}

/// A finished build, ready for `PointStore::install_index`.
pub struct BuiltIndex {
    name: String,
    base: Arc<Hnsw>,
    graph: Hnsw,
    covered: usize,
    ef_construct: usize,
}

impl IndexJob {
    pub fn new_points(&self) -> usize {
        self.new_nodes.len()
    }

    /// Run the build (CPU heavy; call without holding the store lock).
    pub fn run(self) -> BuiltIndex {
        let arena = hnsw::Arena {
            data: &self.data,
            dim: self.dim,
            distance: self.distance,
        };
        let graph = self.base.extend(arena, &self.new_nodes, self.params);
        BuiltIndex {
            name: self.name,
            base: self.base,
            graph,
            covered: self.covered,
            ef_construct: self.params.ef_construct,
        }
    }
}

/// The part of a filter answered by payload indexes (see [`PointStore::plan_filter`]).
pub struct FilterPlan {
    /// Live slots passing every indexed top-level `must` condition.
    pub set: RoaringBitmap,
    /// Whether other conditions remain to be checked against payloads.
    pub residual: bool,
}

/// Payloads by slot; an empty payload costs one pointer (most points of large vector
/// collections have small or no payloads, and a `Payload` map is 72 bytes inline). Kept in
/// shared chunks of [`PAYLOAD_CHUNK`] slots, copied on write: a checkpoint's cut
/// ([`PointStore::cut`]) takes a reference to every chunk (a few hundred for 1M points)
/// instead of touching every payload; a chunk changed after the cut is copied first (its
/// pointers), and so is a payload changed in place.
#[derive(Default)]
struct Payloads {
    chunks: Vec<Arc<PayloadChunk>>,
    len: usize,
}

type PayloadChunk = Vec<Option<Arc<Payload>>>;

/// Slots per payload chunk (32 KiB of pointers).
const PAYLOAD_CHUNK: usize = 4096;

static EMPTY_PAYLOAD: std::sync::LazyLock<Payload> = std::sync::LazyLock::new(Payload::new);

impl Payloads {
    fn push_empty(&mut self) {
        if self.len.is_multiple_of(PAYLOAD_CHUNK) {
            self.chunks
                .push(Arc::new(Vec::with_capacity(PAYLOAD_CHUNK)));
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        Arc::make_mut(last).push(None);
        self.len += 1;
    }
    fn slot(&self, off: u32) -> &Option<Arc<Payload>> {
        let o = off as usize;
        &self.chunks[o / PAYLOAD_CHUNK][o % PAYLOAD_CHUNK]
    }
    fn slot_mut(&mut self, off: u32) -> &mut Option<Arc<Payload>> {
        let o = off as usize;
        &mut Arc::make_mut(&mut self.chunks[o / PAYLOAD_CHUNK])[o % PAYLOAD_CHUNK]
    }
    fn get(&self, off: u32) -> &Payload {
        self.slot(off).as_deref().unwrap_or(&EMPTY_PAYLOAD)
    }
    fn get_mut(&mut self, off: u32) -> &mut Payload {
        Arc::make_mut(self.slot_mut(off).get_or_insert_with(Default::default))
    }
    fn set(&mut self, off: u32, p: Payload) {
        *self.slot_mut(off) = (!p.is_empty()).then(|| Arc::new(p));
    }
    fn take(&mut self, off: u32) -> Payload {
        self.slot_mut(off)
            .take()
            .map(|a| Arc::try_unwrap(a).unwrap_or_else(|a| (*a).clone()))
            .unwrap_or_default()
    }
}

/// A consistent cut of a store for a checkpoint, taken under the store lock in time linear
/// in the slots but copying no vector and no payload: the live slots in slot order with
/// their ids and versions, the (shared) payload chunks, and which dense vectors each has. A slot's
/// vectors never change once written (a point whose vectors change moves to a new slot),
/// and slots are renumbered only by [`PointStore::compact`], so the vectors are copied
/// afterwards, a chunk at a time ([`PointStore::copy_dense_rows`],
/// [`PointStore::copy_sparse`]), while writes go on; the caller keeps `compact` from
/// running meanwhile.
pub struct StoreCut {
    pub slots: Vec<u32>,
    pub ids: Vec<PointId>,
    pub versions: Vec<u64>,
    /// The payload chunks as they were at the cut (by slot).
    payloads: Vec<Arc<PayloadChunk>>,
    /// Dense names with their dimension, and per name which cut points have a vector.
    pub dense: Vec<(String, usize, Vec<bool>)>,
    pub sparse: Vec<String>,
}

impl StoreCut {
    pub fn payload(&self, i: usize) -> &Payload {
        let s = self.slots[i] as usize;
        self.payloads[s / PAYLOAD_CHUNK][s % PAYLOAD_CHUNK]
            .as_deref()
            .unwrap_or(&EMPTY_PAYLOAD)
    }

    /// Keep only the points whose id passes `keep` (their order unchanged).
    pub fn retain(&mut self, keep: impl Fn(PointId) -> bool) {
        let kept: Vec<usize> = (0..self.ids.len()).filter(|&i| keep(self.ids[i])).collect();
        fn pick<T: Clone>(v: &[T], at: &[usize]) -> Vec<T> {
            at.iter().map(|&i| v[i].clone()).collect()
        }
        self.slots = pick(&self.slots, &kept);
        self.ids = pick(&self.ids, &kept);
        self.versions = pick(&self.versions, &kept);
        for (_, _, present) in &mut self.dense {
            *present = pick(present, &kept);
        }
    }
}

#[derive(Default)]
pub struct PointStore {
    schema: VectorSchema,
    ids: BTreeMap<PointId, u32>,
    slot_id: Vec<Option<PointId>>,
    versions: Vec<u64>,
    payloads: Payloads,
    dense: BTreeMap<String, Arena>,
    sparse: BTreeMap<String, Vec<Option<SparseVector>>>,
    graphs: BTreeMap<String, GraphIndex>,
    payload_indexes: BTreeMap<String, FieldIndex>,
    /// int8 codes of quantized vector names (trained once a graph exists).
    quant: BTreeMap<String, QuantizedVectors>,
    /// Where `on_disk` vector files are created (system temp dir if `None`).
    vector_dir: Option<std::path::PathBuf>,
    /// Per-value graphs ("payload blocks", `hnsw_config.payload_m`): per vector name, per
    /// (payload index name, value). An accelerator only: searches stay correct without
    /// them and with stale ones (see [`BlockGraph`]).
    blocks: BTreeMap<String, HashMap<(String, MatchValue), Arc<BlockGraph>>>,
    /// The same blocks found by slot: per vector name, per payload index name.
    block_links: BTreeMap<String, HashMap<String, BlockLinks>>,
}

/// Which payload block of one field holds each slot, so that a filtered walk of the main
/// graph can also follow an accepted node's links in the graph of its value: the
/// per-value links Qdrant adds to its main graph (`payload_m`), kept in separate graphs
/// here and joined at query time. A slot in blocks of several values of a multi-valued
/// field is found in the last one installed (an accelerator: any block is a good one).
#[derive(Default)]
struct BlockLinks {
    blocks: Vec<Option<Arc<BlockGraph>>>,
    index_of: HashMap<MatchValue, u32>,
    /// `at[slot]` = (block index + 1) << 32 | node in that block; 0 = in no block.
    at: Vec<u64>,
}

impl BlockLinks {
    /// Point the slots of `new` (the block of `value`) at it, and unlink the slots of the
    /// block it replaces that it no longer holds.
    fn link(&mut self, value: &MatchValue, new: &Arc<BlockGraph>) {
        let BlockLinks {
            blocks,
            index_of,
            at,
        } = self;
        let idx = *index_of.entry(value.clone()).or_insert_with(|| {
            blocks.push(None);
            (blocks.len() - 1) as u32
        });
        let tag = (idx as u64 + 1) << 32;
        if let Some(old) = &blocks[idx as usize] {
            for &s in &old.slots {
                if let Some(e) = at.get_mut(s as usize) {
                    if *e >> 32 == tag >> 32 {
                        *e = 0;
                    }
                }
            }
        }
        if let Some(&max) = new.slots.iter().max() {
            if at.len() <= max as usize {
                at.resize(max as usize + 1, 0);
            }
        }
        for (i, &s) in new.slots.iter().enumerate() {
            at[s as usize] = tag | i as u64;
        }
        blocks[idx as usize] = Some(new.clone());
    }

    /// Append the block-graph neighbours of `slot` (as slots) to `out`.
    #[inline]
    fn neighbours(&self, slot: u32, out: &mut Vec<u32>) {
        let Some(&e) = self.at.get(slot as usize) else {
            return;
        };
        if e == 0 {
            return;
        }
        let Some(Some(b)) = self.blocks.get((e >> 32) as usize - 1) else {
            return;
        };
        let node = e as u32;
        if (node as usize) < b.slots.len() {
            out.extend(b.graph.links0(node).iter().map(|&l| b.slots[l as usize]));
        }
    }
}

/// An HNSW graph over the points that held one value of an indexed payload field when it
/// was built. A filter asking for exactly that value walks this small graph instead of
/// scanning the value's points or filtering a walk of the whole graph.
///
/// Correctness does not depend on it being current: a walk accepts only slots in the
/// filter's current set, and the slots of that set the graph does not hold (written or
/// changed since) are scanned exactly.
pub struct BlockGraph {
    graph: Hnsw,
    /// Graph node `i` is slot `slots[i]`.
    slots: Vec<u32>,
    members: RoaringBitmap,
}

/// Searches answered through a payload block since start (observability and tests).
pub static BLOCK_SEARCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Filtered walks of a main graph that followed payload-block links (see [`BlockLinks`]).
pub static LINKED_WALKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A background build of one [`BlockGraph`] (vectors copied out under the read lock).
pub struct BlockJob {
    name: String,
    key: (String, MatchValue),
    slots: Vec<u32>,
    data: Vec<f32>,
    dim: usize,
    distance: Distance,
    params: HnswParams,
}

/// A finished [`BlockJob`], for [`PointStore::install_block`].
pub struct BuiltBlock {
    name: String,
    key: (String, MatchValue),
    block: BlockGraph,
}

impl BlockJob {
    pub fn points(&self) -> usize {
        self.slots.len()
    }

    /// Run the build (CPU heavy; call without holding the store lock).
    pub fn run(self) -> BuiltBlock {
        let arena = hnsw::Arena {
            data: &self.data,
            dim: self.dim,
            distance: self.distance,
        };
        let nodes: Vec<u32> = (0..self.slots.len() as u32).collect();
        let graph = Hnsw::build(arena, &nodes, self.params);
        let members = self.slots.iter().copied().collect();
        BuiltBlock {
            name: self.name,
            key: self.key,
            block: BlockGraph {
                graph,
                slots: self.slots,
                members,
            },
        }
    }
}

impl std::fmt::Debug for PointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointStore")
            .field("points", &self.ids.len())
            .field("slots", &self.slot_id.len())
            .finish()
    }
}

impl PointStore {
    pub fn new(schema: VectorSchema) -> Self {
        Self::with_vector_dir(schema, None)
    }

    /// A store whose `on_disk` vectors live in (unlinked) files under `dir`.
    /// Where later on-disk vector files are created (the collection's directory moved;
    /// files already open are unlinked and unaffected).
    pub fn set_vector_dir(&mut self, dir: Option<std::path::PathBuf>) {
        self.vector_dir = dir;
    }

    pub fn with_vector_dir(schema: VectorSchema, dir: Option<std::path::PathBuf>) -> Self {
        let dense = schema
            .dense
            .iter()
            .map(|(n, p)| (n.clone(), Arena::new(p.size, p.on_disk, dir.as_deref())))
            .collect();
        let sparse = schema
            .sparse
            .keys()
            .map(|n| (n.clone(), Vec::new()))
            .collect();
        PointStore {
            schema,
            dense,
            sparse,
            vector_dir: dir,
            ..Default::default()
        }
    }

    /// Change how a dense vector is stored (`on_disk`, quantization) — PATCH of the
    /// collection's vector params. Codes are retrained when a graph exists.
    pub fn configure_vector(
        &mut self,
        name: &str,
        on_disk: bool,
        quantization: Option<ScalarConfig>,
    ) {
        let Some(p) = self.schema.dense.get_mut(name) else {
            return;
        };
        let requant = p.quantization != quantization;
        p.on_disk = on_disk;
        p.quantization = quantization;
        let dir = self.vector_dir.clone();
        if let Some(a) = self.dense.get_mut(name) {
            a.set_on_disk(on_disk, dir.as_deref());
        }
        if requant {
            self.quant.remove(name);
            self.ensure_quantized(name);
        }
        if let Some(a) = self.dense.get_mut(name) {
            a.settle_pages();
        }
    }

    /// Train and fill the int8 codes of `name` if it is configured for quantization, has a
    /// graph and no codes yet. Returns whether codes exist afterwards.
    pub fn ensure_quantized(&mut self, name: &str) -> bool {
        if self.quant.contains_key(name) {
            return true;
        }
        let Some(p) = self.schema.dense.get(name) else {
            return false;
        };
        let (Some(cfg), true) = (p.quantization, self.graphs.contains_key(name)) else {
            return false;
        };
        let Some(a) = self.dense.get(name) else {
            return false;
        };
        let rows = (0..a.present.len() as u32).filter_map(|o| a.get(o));
        let q = ScalarQuantizer::train(a.dim, p.distance, rows, cfg.quantile);
        let mut qv = QuantizedVectors::new(q);
        for off in 0..a.present.len() as u32 {
            if let Some(v) = a.get(off) {
                qv.set(off, v);
            }
        }
        // the training pass read every row: callers settle the vector pages afterwards
        qv.advise_huge_pages();
        self.quant.insert(name.to_string(), qv);
        true
    }

    /// Whether `name` is searched through int8 codes (see [`PointStore::ensure_quantized`]).
    pub fn is_quantized(&self, name: &str) -> bool {
        self.quant.contains_key(name)
    }

    /// Bytes of RAM held by the f32 vectors and the codes of `name` (files excluded).
    pub fn vector_ram_bytes(&self, name: &str) -> usize {
        let f32_bytes = match self.dense.get(name).map(|a| &a.rows) {
            Some(Rows::Ram(v)) => v.capacity() * 4,
            _ => 0,
        };
        f32_bytes + self.quant.get(name).map_or(0, |q| q.bytes())
    }

    pub fn schema(&self) -> &VectorSchema {
        &self.schema
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Vectors stored for live points, over every vector name (O(points x names)).
    pub fn vector_count(&self) -> usize {
        self.ids
            .values()
            .map(|&off| {
                let dense = self.dense.values().filter(|a| a.get(off).is_some()).count();
                let sparse = self
                    .sparse
                    .values()
                    .filter(|c| matches!(c.get(off as usize), Some(Some(_))))
                    .count();
                dense + sparse
            })
            .sum()
    }

    pub fn contains(&self, id: PointId) -> bool {
        self.ids.contains_key(&id)
    }

    /// Validate and normalise vectors for storage: known names, right dimension, finite.
    pub fn prepare_vectors(&self, vectors: NamedVectors) -> Result<NamedVectors, StoreError> {
        let mut out = NamedVectors::new();
        for (name, v) in vectors {
            let v = self.prepare_vector(&name, v)?;
            out.insert(name, v);
        }
        Ok(out)
    }

    /// Validate one vector (stored or query) for `name`, applying the distance preprocessing.
    pub fn prepare_vector(&self, name: &str, v: Vector) -> Result<Vector, StoreError> {
        match v {
            Vector::Dense(d) => {
                let p = self.check_dense(name, &d)?;
                Ok(Vector::Dense(distance::preprocess(p.distance, d)))
            }
            Vector::Sparse(s) => {
                self.check_sparse_name(name)?;
                s.normalized()
                    .map(Vector::Sparse)
                    .map_err(StoreError::Invalid)
            }
        }
    }

    /// What [`Self::prepare_vector`] checks, without preparing (or copying a dense vector).
    pub fn check_vector(&self, name: &str, v: &Vector) -> Result<(), StoreError> {
        match v {
            Vector::Dense(d) => self.check_dense(name, d).map(|_| ()),
            Vector::Sparse(s) => {
                self.check_sparse_name(name)?;
                s.clone()
                    .normalized()
                    .map(|_| ())
                    .map_err(StoreError::Invalid)
            }
        }
    }

    fn check_dense(&self, name: &str, d: &[f32]) -> Result<&DenseParams, StoreError> {
        let p = self
            .schema
            .dense
            .get(name)
            .ok_or_else(|| StoreError::UnknownVector(display_name(name)))?;
        if d.len() != p.size {
            return Err(StoreError::Dimension {
                expected: p.size,
                got: d.len(),
            });
        }
        if d.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::Invalid(
                "vector values must be finite numbers (no NaN or infinity)".into(),
            ));
        }
        Ok(p)
    }

    fn check_sparse_name(&self, name: &str) -> Result<(), StoreError> {
        if self.schema.sparse.contains_key(name) {
            Ok(())
        } else {
            Err(StoreError::UnknownVector(display_name(name)))
        }
    }

    fn alloc(&mut self, id: PointId) -> u32 {
        let off = u32::try_from(self.slot_id.len()).expect("more than 2^32 slots in one store");
        self.slot_id.push(Some(id));
        self.versions.push(0);
        self.payloads.push_empty();
        off
    }

    fn write_vectors(&mut self, off: u32, vectors: &NamedVectors) {
        for (name, v) in vectors {
            match v {
                Vector::Dense(d) => {
                    if let Some(a) = self.dense.get_mut(name) {
                        a.set(off, d);
                    }
                    if let Some(q) = self.quant.get_mut(name) {
                        q.set(off, d);
                    }
                }
                Vector::Sparse(s) => {
                    if let Some(col) = self.sparse.get_mut(name) {
                        if col.len() <= off as usize {
                            col.resize(off as usize + 1, None);
                        }
                        col[off as usize] = Some(s.clone());
                    }
                }
            }
        }
    }

    /// Turn a slot into a tombstone (its vectors stay readable for graph traversal).
    fn retire(&mut self, off: u32) {
        self.unindex_payload(off);
        self.slot_id[off as usize] = None;
        self.payloads.set(off, Payload::new());
    }

    /// Insert or fully replace a point (always into a new slot). Vectors must be prepared.
    pub fn upsert(&mut self, id: PointId, version: u64, vectors: &NamedVectors, payload: Payload) {
        if let Some(old) = self.ids.remove(&id) {
            self.retire(old);
        }
        let off = self.alloc(id);
        self.ids.insert(id, off);
        self.write_vectors(off, vectors);
        self.payloads.set(off, payload);
        self.versions[off as usize] = version;
        self.reindex_payload(off);
    }

    /// Remove a slot's current payload values from every payload index.
    fn unindex_payload(&mut self, off: u32) {
        let p = self.payloads.get(off);
        for ix in self.payload_indexes.values_mut() {
            ix.remove(off, p);
        }
    }

    /// Add a slot's current payload values to every payload index.
    fn reindex_payload(&mut self, off: u32) {
        let p = self.payloads.get(off);
        for ix in self.payload_indexes.values_mut() {
            ix.add(off, p);
        }
    }

    /// Create (or replace) a payload index on `field`, indexing every live point.
    pub fn create_payload_index(&mut self, field: &str, kind: FieldType) -> Result<(), StoreError> {
        let path = JsonPath::parse(field).map_err(StoreError::Invalid)?;
        let mut ix = FieldIndex::new(path, kind);
        for &off in self.ids.values() {
            ix.add(off, self.payloads.get(off));
        }
        self.payload_indexes.insert(field.to_string(), ix);
        Ok(())
    }

    pub fn drop_payload_index(&mut self, field: &str) {
        self.payload_indexes.remove(field);
        for b in self.blocks.values_mut() {
            b.retain(|(f, _), _| f != field);
        }
        for l in self.block_links.values_mut() {
            l.remove(field);
        }
    }

    /// Builds of payload blocks for `name` that are missing or stale: values of keyword,
    /// uuid, integer and bool indexes holding at least `min_points` slots. A block is stale
    /// when more than half of the value's current slots are not in it. At most `limit`
    /// jobs; none before `name` has its main graph.
    pub fn block_jobs(
        &self,
        name: &str,
        params: HnswParams,
        min_points: u64,
        limit: usize,
    ) -> Vec<BlockJob> {
        let (Some(a), Some(p), true) = (
            self.dense.get(name),
            self.schema.dense.get(name),
            self.graphs.contains_key(name),
        ) else {
            return vec![];
        };
        let mut jobs = Vec::new();
        for (key, slots) in self.stale_blocks(name, min_points).take(limit) {
            let slots: Vec<u32> = slots
                .iter()
                .filter(|&o| a.present.get(o as usize).copied().unwrap_or(false))
                .collect();
            let mut data = Vec::with_capacity(slots.len() * a.dim);
            for &o in &slots {
                data.extend_from_slice(a.get(o).expect("present slot"));
            }
            jobs.push(BlockJob {
                name: name.to_string(),
                key,
                slots,
                data,
                dim: a.dim,
                distance: p.distance,
                params,
            });
        }
        jobs
    }

    /// Values that deserve a payload block of `name` and have none or a stale one: at
    /// least `min_points` points and at most a quarter of the collection (a value covering
    /// more is served well by the main graph with a filter, its beam widened at most 2x; a
    /// graph of its own would cost a large share of a full build and a copy of its vectors).
    fn stale_blocks<'a>(
        &'a self,
        name: &str,
        min_points: u64,
    ) -> impl Iterator<Item = ((String, MatchValue), &'a RoaringBitmap)> + 'a {
        let existing = self.blocks.get(name);
        let present = self.dense.get(name).map_or(&[][..], |a| &a.present[..]);
        let max_points = (self.ids.len() as u64 / 4).max(min_points);
        self.payload_indexes.iter().flat_map(move |(field, ix)| {
            ix.blocks(min_points)
                .into_iter()
                .filter(move |(_, slots)| slots.len() <= max_points)
                .filter_map(move |(value, slots)| {
                    let key = (field.clone(), value);
                    // stale: over half of the value's slots with a vector are not in it (the
                    // rest is scanned exactly; rebuilding at 2x growth bounds the rebuild work
                    // during a long upload to about twice the final block)
                    let fresh = existing.and_then(|e| e.get(&key)).is_some_and(|b| {
                        slots.difference_len(&b.members) * 2 <= slots.len()
                            || slots
                                .iter()
                                .filter(|&o| {
                                    present.get(o as usize).copied().unwrap_or(false)
                                        && !b.members.contains(o)
                                })
                                .count() as u64
                                * 2
                                <= slots.len()
                    });
                    (!fresh).then_some((key, slots))
                })
        })
    }

    /// Whether [`PointStore::block_jobs`] has work for `name`.
    pub fn blocks_pending(&self, name: &str, min_points: u64) -> bool {
        self.graphs.contains_key(name) && self.stale_blocks(name, min_points).next().is_some()
    }

    /// Install a built payload block (dropped if its field index is gone meanwhile).
    pub fn install_block(&mut self, built: BuiltBlock) -> bool {
        if !self.payload_indexes.contains_key(&built.key.0) || !self.dense.contains_key(&built.name)
        {
            return false;
        }
        self.put_block(&built.name, built.key, built.block);
        true
    }

    /// Number of payload blocks of `name` and their nodes.
    pub fn block_stats(&self, name: &str) -> (usize, usize) {
        self.blocks.get(name).map_or((0, 0), |b| {
            (b.len(), b.values().map(|g| g.slots.len()).sum())
        })
    }

    /// The payload block answering `filter` exactly, if there is one: a filter of one
    /// indexed condition (`must` only) naming one value.
    fn block_for(&self, name: &str, filter: Option<&Filter>) -> Option<&Arc<BlockGraph>> {
        let blocks = self.blocks.get(name)?;
        let (field, ix, fc) = self.sole_indexed_condition(filter?)?;
        let value = ix.block_of(&fc.check)?;
        blocks.get(&(field.clone(), value))
    }

    /// The payload index (name and index) on the field at `key`, if there is one.
    fn index_for(&self, key: &JsonPath) -> Option<(&String, &FieldIndex)> {
        self.payload_indexes.iter().find(|(_, ix)| ix.path() == key)
    }

    /// A filter that is exactly one condition (`must` only) on an indexed field: that
    /// field's index name, index and condition.
    fn sole_indexed_condition<'f>(
        &self,
        f: &'f Filter,
    ) -> Option<(&String, &FieldIndex, &'f crate::filter::FieldCondition)> {
        if f.should.is_some() || f.must_not.is_some() || f.min_should.is_some() {
            return None;
        }
        let [crate::filter::Condition::Field(fc)] = f.must.as_deref()? else {
            return None;
        };
        let (field, ix) = self.index_for(&fc.key)?;
        Some((field, ix, fc))
    }

    /// [`FieldIndex::range_probe`] for a filter that is one range condition (`must` only)
    /// on an indexed numeric field.
    fn range_probe<'a>(&'a self, f: &Filter) -> Option<(u64, impl Fn(u32) -> Option<bool> + 'a)> {
        let (_, ix, fc) = self.sole_indexed_condition(f)?;
        ix.range_probe(&fc.check)
    }

    /// The block links of the first `must` condition's field that has payload blocks.
    fn links_for(&self, name: &str, filter: Option<&Filter>) -> Option<&BlockLinks> {
        let links = self.block_links.get(name)?;
        filter?.must.as_ref()?.iter().find_map(|c| {
            let crate::filter::Condition::Field(fc) = c else {
                return None;
            };
            let (field, _) = self.index_for(&fc.key)?;
            links.get(field).filter(|l| !l.blocks.is_empty())
        })
    }

    /// Resolve the filter's top-level `must` conditions that a payload index answers into
    /// one bitmap of slots (their intersection); `None` when no index applies. When every
    /// part of the filter was answered, `residual` is false and the bitmap is the exact set
    /// of live matching slots; otherwise candidates must still be checked against the filter.
    pub fn plan_filter(&self, filter: &Filter) -> Option<FilterPlan> {
        let must = filter.must.as_ref()?;
        let mut set: Option<RoaringBitmap> = None;
        let mut residual =
            filter.should.is_some() || filter.must_not.is_some() || filter.min_should.is_some();
        for c in must {
            let crate::filter::Condition::Field(fc) = c else {
                residual = true;
                continue;
            };
            let answered = self
                .index_for(&fc.key)
                .and_then(|(_, ix)| ix.candidates(&fc.check));
            match answered {
                Some(b) => match &mut set {
                    Some(s) => *s &= b,
                    None => set = Some(b),
                },
                None => residual = true,
            }
        }
        set.map(|set| FilterPlan { set, residual })
    }

    pub fn delete(&mut self, id: PointId) -> bool {
        let Some(off) = self.ids.remove(&id) else {
            return false;
        };
        self.retire(off);
        true
    }

    fn with_point<R>(
        &mut self,
        id: PointId,
        version: u64,
        f: impl FnOnce(&mut Self, u32) -> R,
    ) -> Option<R> {
        let off = *self.ids.get(&id)?;
        self.versions[off as usize] = version;
        let indexed = !self.payload_indexes.is_empty();
        if indexed {
            self.unindex_payload(off);
        }
        let r = f(self, off);
        if indexed {
            self.reindex_payload(off);
        }
        Some(r)
    }

    /// Merge payload (a `null` value removes the key); with `key`, merge at that path.
    pub fn set_payload(
        &mut self,
        id: PointId,
        version: u64,
        payload: &Payload,
        key: Option<&JsonPath>,
    ) -> bool {
        self.with_point(id, version, |s, off| {
            let p = s.payloads.get_mut(off);
            match key {
                None => merge_payload(p, payload),
                Some(k) => k.set(p, payload),
            }
        })
        .is_some()
    }

    pub fn overwrite_payload(&mut self, id: PointId, version: u64, payload: &Payload) -> bool {
        self.with_point(id, version, |s, off| s.payloads.set(off, payload.clone()))
            .is_some()
    }

    pub fn delete_payload(&mut self, id: PointId, version: u64, keys: &[JsonPath]) -> bool {
        self.with_point(id, version, |s, off| {
            for k in keys {
                k.delete(s.payloads.get_mut(off));
            }
        })
        .is_some()
    }

    pub fn clear_payload(&mut self, id: PointId, version: u64) -> bool {
        self.with_point(id, version, |s, off| s.payloads.set(off, Payload::new()))
            .is_some()
    }

    /// Replace the named vectors given (others untouched). Vectors must be prepared.
    pub fn update_vectors(&mut self, id: PointId, version: u64, vectors: &NamedVectors) -> bool {
        self.rewrite_vectors(id, version, |v| {
            v.extend(vectors.iter().map(|(k, v)| (k.clone(), v.clone())))
        })
    }

    /// Remove the named vectors.
    pub fn delete_vectors(&mut self, id: PointId, version: u64, names: &[String]) -> bool {
        self.rewrite_vectors(id, version, |v| v.retain(|n, _| !names.contains(n)))
    }

    /// Change a point's vectors with `edit`: the point moves to a new slot with the edited
    /// vectors and its payload, so that no slot's vectors change in place (see
    /// [`StoreCut`]). False if the point does not exist.
    fn rewrite_vectors(
        &mut self,
        id: PointId,
        version: u64,
        edit: impl FnOnce(&mut NamedVectors),
    ) -> bool {
        let Some(&old) = self.ids.get(&id) else {
            return false;
        };
        let mut vectors = self.vectors_of(old);
        edit(&mut vectors);
        // the old slot's index entries go before its payload moves to the new slot
        self.unindex_payload(old);
        let payload = self.payloads.take(old);
        self.upsert(id, version, &vectors, payload);
        true
    }

    fn vectors_of(&self, off: u32) -> NamedVectors {
        let mut out = NamedVectors::new();
        for (n, a) in &self.dense {
            if let Some(v) = a.get(off) {
                out.insert(n.clone(), Vector::Dense(v.to_vec()));
            }
        }
        for (n, col) in &self.sparse {
            if let Some(Some(v)) = col.get(off as usize) {
                out.insert(n.clone(), Vector::Sparse(v.clone()));
            }
        }
        out
    }

    fn has_vector(&self, off: u32, name: &str) -> bool {
        if let Some(a) = self.dense.get(name) {
            return a.get(off).is_some();
        }
        self.sparse
            .get(name)
            .and_then(|c| c.get(off as usize))
            .is_some_and(Option::is_some)
    }

    fn record(&self, id: PointId, off: u32) -> Record {
        Record {
            id,
            version: self.versions[off as usize],
            payload: self.payloads.get(off).clone(),
            vectors: self.vectors_of(off),
        }
    }

    pub fn get(&self, id: PointId) -> Option<Record> {
        self.ids.get(&id).map(|&off| self.record(id, off))
    }

    /// The point's vectors (copied; on-disk vectors are read from their file).
    pub fn vectors(&self, id: PointId) -> Option<NamedVectors> {
        self.ids.get(&id).map(|&off| self.vectors_of(off))
    }

    pub fn payload(&self, id: PointId) -> Option<&Payload> {
        self.ids.get(&id).map(|&off| self.payloads.get(off))
    }

    /// Version of the last operation applied to the point.
    pub fn version(&self, id: PointId) -> Option<u64> {
        self.ids.get(&id).map(|&off| self.versions[off as usize])
    }

    fn matches(&self, id: PointId, off: u32, filter: Option<&Filter>) -> bool {
        match filter {
            None => true,
            Some(f) => {
                let hv = |name: &str| self.has_vector(off, name);
                f.check(&PointView {
                    id: Some(id),
                    payload: self.payloads.get(off),
                    has_vector: &hv,
                })
            }
        }
    }

    /// Ids matching `filter`, ascending, starting at `from` (inclusive), at most `limit`.
    pub fn scroll(
        &self,
        from: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
    ) -> Vec<PointId> {
        if let Some(plan) = filter.and_then(|f| self.plan_filter(f)) {
            // indexed filter: only candidate slots, then id order
            let mut ids: Vec<PointId> = plan
                .set
                .iter()
                .filter_map(|off| {
                    self.slot_id[off as usize].filter(|id| {
                        from.is_none_or(|f| *id >= f)
                            && (!plan.residual || self.matches(*id, off, filter))
                    })
                })
                .collect();
            ids.sort_unstable();
            ids.truncate(limit);
            return ids;
        }
        let iter: Box<dyn Iterator<Item = (&PointId, &u32)>> = match from {
            Some(f) => Box::new(self.ids.range(f..)),
            None => Box::new(self.ids.iter()),
        };
        iter.filter(|(id, off)| self.matches(**id, **off, filter))
            .take(limit)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every point's id and version, in id order (no lookup per point).
    pub fn ids_and_versions(&self) -> impl Iterator<Item = (PointId, u64)> + '_ {
        self.ids_and_versions_after(None)
    }

    /// [`PointStore::ids_and_versions`] of the ids after `after` (all when `None`).
    pub fn ids_and_versions_after(
        &self,
        after: Option<PointId>,
    ) -> impl Iterator<Item = (PointId, u64)> + '_ {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.ids
            .range((from, Unbounded))
            .map(|(id, off)| (*id, self.versions[*off as usize]))
    }

    /// All ids matching the filter (ascending).
    pub fn matching_ids(&self, filter: Option<&Filter>) -> Vec<PointId> {
        self.scroll(None, usize::MAX, filter)
    }

    pub fn count(&self, filter: Option<&Filter>) -> usize {
        if let Some(plan) = filter.and_then(|f| self.plan_filter(f)) {
            if !plan.residual {
                return plan.set.len() as usize;
            }
            return plan
                .set
                .iter()
                .filter(|&off| self.matches_slot(off, filter))
                .count();
        }
        match filter {
            None => self.ids.len(),
            Some(_) => self
                .ids
                .iter()
                .filter(|(id, off)| self.matches(**id, **off, filter))
                .count(),
        }
    }

    /// The `top` best points by internal score (bigger = better), ties by id. `query` must
    /// be prepared with `prepare_vector`. `threshold` is internal: hits must be strictly
    /// better. Sparse queries only score points sharing an index with the query.
    ///
    /// Planner for dense vectors with a graph: no filter -> graph over indexed slots plus an
    /// exact scan of newer slots; with a filter, its cardinality is estimated by sampling and
    /// below `full_scan_threshold` the search is exact, above it the graph checks the filter
    /// during traversal (falling back to exact if the graph comes back short).
    pub fn search(
        &self,
        name: &str,
        query: &Vector,
        filter: Option<&Filter>,
        top: usize,
        threshold: Option<f32>,
    ) -> Result<Vec<Hit>, StoreError> {
        self.search_with(
            name,
            query,
            filter,
            top,
            threshold,
            &SearchParams {
                exact: true,
                ..Default::default()
            },
        )
    }

    /// An upper estimate of the vector components an unfiltered dense search of `name`
    /// reads: the graph walk (about `ef × 2m` scored vectors; 25-35 per unit of ef were
    /// measured, see [`search_with`](Self::search_with)) plus the exact scan of the slots the graph does
    /// not cover, or the whole arena for an exact search. `None` for an unknown or sparse
    /// vector name. Used to decide whether a search is cheap enough to run inline.
    pub fn dense_search_cost(
        &self,
        name: &str,
        exact: bool,
        hnsw_ef: Option<usize>,
    ) -> Option<usize> {
        let arena = self.dense.get(name)?;
        let slots = self.slot_id.len();
        let cost = match self.graphs.get(name).filter(|_| !exact) {
            Some(g) => {
                let ef = hnsw_ef.unwrap_or(g.ef_construct);
                let walk = ef.saturating_mul(2 * g.graph.m());
                walk.saturating_add(slots.saturating_sub(g.covered))
            }
            None => slots,
        };
        Some(cost.saturating_mul(arena.dim))
    }

    pub fn search_with(
        &self,
        name: &str,
        query: &Vector,
        filter: Option<&Filter>,
        top: usize,
        threshold: Option<f32>,
        params: &SearchParams,
    ) -> Result<Vec<Hit>, StoreError> {
        if top == 0 {
            return Ok(vec![]);
        }
        // int8 codes preselect `top × oversampling` candidates; the f32 vectors re-score them
        let codes = match query {
            Vector::Dense(q) if !params.exact && !params.quantization.ignore => {
                self.quant.get(name).map(|qv| qv.query(q))
            }
            _ => None,
        };
        let preselect = match &codes {
            Some(_) => {
                // Unset: 2 (Qdrant's default is 1). Re-scoring `limit` more candidates costs
                // little next to the graph walk and lifts recall@10 from 0.93 to 0.99+ on
                // the clustered test set (tests/python/test_ann_recall.py).
                let default = if params.quantization.rescore.unwrap_or(true) {
                    DEFAULT_OVERSAMPLING
                } else {
                    1.0
                };
                let o = params
                    .quantization
                    .oversampling
                    .unwrap_or(default)
                    .clamp(1.0, 1000.0);
                ((top as f64 * o).ceil() as usize).clamp(top, top.max(1_000_000))
            }
            None => top,
        };
        let mut top_k = TopK::new(preselect, threshold.filter(|_| codes.is_none()));
        match query {
            Vector::Dense(q) => {
                let arena = self
                    .dense
                    .get(name)
                    .ok_or_else(|| StoreError::UnknownVector(display_name(name)))?;
                let dist = self.schema.dense[name].distance;
                let graph = self.graphs.get(name).filter(|_| !params.exact);
                let score_slot = |off: u32, v: &[f32]| match &codes {
                    Some(c) => c
                        .try_score(off)
                        .unwrap_or_else(|| distance::score(dist, q, v)),
                    None => distance::score(dist, q, v),
                };
                let mut scan_from = 0usize;
                // One range condition on a numeric index holding many points (a set dense
                // enough for the graph): tested slot by slot from the index's per-slot
                // values instead of building the union of the range's posting lists (about
                // 1 ns per member: 43% of a 50%-selective search over REST).
                let probe = match (filter, graph) {
                    (Some(f), Some(g)) => self
                        .range_probe(f)
                        .filter(|(n, _)| *n as usize >= g.covered / 16),
                    _ => None,
                };
                // a retired slot is unindexed (its value reads as none), so the index's
                // answer covers liveness; multi-valued slots go to `matches_slot`
                let probe_ok = |off: u32| match &probe {
                    Some((_, t)) => t(off).unwrap_or_else(|| self.matches_slot(off, filter)),
                    None => self.matches_slot(off, filter),
                };
                // Indexed filter conditions give candidates (and an exact cardinality bound);
                // otherwise the cardinality is estimated by sampling.
                let plan = match probe {
                    Some(_) => None,
                    None => filter.and_then(|f| self.plan_filter(f)),
                };
                let est = match (filter, &plan, &probe) {
                    (_, _, Some((n, _))) => *n as usize,
                    (None, _, _) => self.ids.len(),
                    (Some(_), Some(p), _) if !p.residual => p.set.len() as usize,
                    (Some(f), Some(p), _) => self.estimate_within(f, &p.set),
                    (Some(f), None, _) => self.estimate_matches(f),
                };
                // a filter naming one value of an indexed field: walk that value's own
                // graph (payload block), then scan exactly the value's slots it lacks
                let block = match (&codes, graph, &plan) {
                    (None, Some(_), Some(p)) if !p.residual => {
                        self.block_for(name, filter).map(|b| (b, p))
                    }
                    _ => None,
                };
                let mut block_rest: Option<Vec<u32>> = None;
                if let (Some((b, p)), Some(g)) = (block, graph) {
                    BLOCK_SEARCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let a = hnsw::Arena {
                        data: arena.data(),
                        dim: arena.dim,
                        distance: dist,
                    };
                    let mq = hnsw::MappedQuery::new(a, &b.slots, q);
                    let accept = |i: u32| {
                        let off = b.slots[i as usize];
                        p.set.contains(off) && arena.present[off as usize]
                    };
                    let ef = params.hnsw_ef.unwrap_or(g.ef_construct).max(top);
                    for (i, score) in b.graph.search_scored(&mq, top, ef, &accept, false) {
                        let off = b.slots[i as usize];
                        if let Some(id) = self.slot_id[off as usize] {
                            top_k.push(Hit {
                                id,
                                offset: off,
                                score,
                            });
                        }
                    }
                    block_rest = Some((&p.set - &b.members).iter().collect());
                    scan_from = g.covered;
                } else if let Some(g) = graph {
                    let selectivity = est as f64 / self.ids.len().max(1) as f64;
                    // an accepted node's links in its payload block (same value of a
                    // filtered field) are extra neighbours likely to pass the filter (used
                    // by the two-hop walk: filters answered by indexes alone)
                    // the whole filter answered by an index (bitmap or per-slot values):
                    // cheap to test in the walk, which can then be two-hop
                    let index_only = probe.is_some() || plan.as_ref().is_some_and(|p| !p.residual);
                    let links = self.links_for(name, filter).filter(|_| index_only);
                    // A filter hides most of the graph: without block links the beam is
                    // widened by selectivity^-1/4 (x1.8 at 10%, x1.2 at 50%, at most x3.2).
                    // With them the passing subgraph is connected and `hnsw_ef` is used as
                    // given, as in Qdrant: recall at equal ef is then about the unfiltered
                    // one (10%, ef 40: 0.973 vs 0.968 on WordNet MiniLM), and at equal recall
                    // widening only cost CPU (bench/run.py, REST, 10% and 50%).
                    let widen = match links {
                        Some(_) => 1.0,
                        None => (1.0 / selectivity.max(0.01)).powf(0.25),
                    };
                    let ef = ((params.hnsw_ef.unwrap_or(g.ef_construct) as f64 * widen) as usize)
                        .max(preselect);
                    // Below `full_scan_threshold` the scan is exact, unless the filter is
                    // answered by bitmaps alone (cheap to test in the walk) and the walk is
                    // expected to score far fewer vectors than the scan: about `ef × m0`
                    // (measured: 25-35 scored per unit of ef), kept 2x pessimistic. At 10%
                    // of 200k points that is ~4k scored instead of ~20k.
                    let walk_cost = ef.saturating_mul(2 * g.graph.m() * 2);
                    let use_graph = filter.is_none()
                        || est >= params.full_scan_threshold.max(top)
                        || (index_only && est >= top && est > walk_cost);
                    if use_graph {
                        let a = hnsw::Arena {
                            data: &arena.data()[..g.covered * arena.dim],
                            dim: arena.dim,
                            distance: dist,
                        };
                        let f32q = hnsw::F32Query::new(a, q);
                        let extra_fn = |slot: u32, out: &mut Vec<u32>| {
                            if let Some(l) = links {
                                l.neighbours(slot, out);
                            }
                        };
                        let extra: Option<hnsw::Extra<'_>> = links.map(|_| &extra_fn as _);
                        let walk = |accept: &dyn Fn(u32) -> bool, two_hop: bool, ef: usize| {
                            let x = extra.filter(|_| two_hop);
                            if x.is_some() {
                                LINKED_WALKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            match &codes {
                                Some(c) => g
                                    .graph
                                    .search_scored_with(c, preselect, ef, accept, two_hop, x),
                                None => g
                                    .graph
                                    .search_scored_with(&f32q, preselect, ef, accept, two_hop, x),
                            }
                        };
                        // bitmap membership first; the JSON payload is read only for
                        // conditions no index answered
                        let accept = |off: u32| {
                            arena.present[off as usize]
                                && match &plan {
                                    Some(p) => {
                                        p.set.contains(off)
                                            && (!p.residual || self.matches_slot(off, filter))
                                    }
                                    None => self.matches_slot(off, filter),
                                }
                        };
                        // a filter answered entirely by bitmaps: cheap to test, so only
                        // passing nodes are scored (two-hop traversal)
                        let bitmap_only = plan.as_ref().filter(|p| !p.residual);
                        let found = if probe.is_some() {
                            let t = |off: u32| arena.present[off as usize] && probe_ok(off);
                            walk(&t, true, ef)
                        } else if let Some(p) = bitmap_only.filter(|p| {
                            // a set denser than 1/16 is mostly bitmap containers, which
                            // answer membership fast themselves; flattening costs one step
                            // per member (measured at 10%: a fifth of the search)
                            p.set.len() as usize >= g.covered / 16
                        }) {
                            let in_set =
                                |off: u32| p.set.contains(off) && arena.present[off as usize];
                            walk(&in_set, true, ef)
                        } else if let Some(p) = bitmap_only {
                            // flat bitset of the passing slots with a vector: one load and
                            // shift per test (the plan's set holds only live slots)
                            let mut bits = vec![0u64; g.covered.div_ceil(64)];
                            // internal iteration (`for_each` folds per container; `next()`
                            // per element was a quarter of a dense filtered search)
                            p.set.range(..g.covered as u32).for_each(|off| {
                                if arena.present[off as usize] {
                                    bits[off as usize >> 6] |= 1u64 << (off & 63);
                                }
                            });
                            let in_set = |off: u32| {
                                bits.get(off as usize >> 6)
                                    .is_some_and(|w| (w >> (off & 63)) & 1 == 1)
                            };
                            walk(&in_set, true, ef)
                        } else {
                            walk(&accept, false, ef)
                        };
                        let short = filter.is_some() && found.len() < top;
                        if !short {
                            for (off, score) in found {
                                top_k.push(Hit {
                                    id: self.slot_id[off as usize]
                                        .expect("accepted slots are live"),
                                    offset: off,
                                    score,
                                });
                            }
                            scan_from = g.covered;
                        }
                    }
                }
                if params.indexed_only && graph.is_some() && scan_from > 0 {
                    // only what the graph covers
                } else if let Some(p) = &plan {
                    // scattered slots: prefetch the vector a few candidates ahead
                    const AHEAD: usize = 6;
                    let offs: Vec<u32> = match block_rest {
                        Some(rest) => rest,
                        None => p.set.range(scan_from as u32..).collect(),
                    };
                    for (i, &off) in offs.iter().enumerate() {
                        if let Some(&next) = offs.get(i + AHEAD) {
                            match &codes {
                                Some(c) => c.prefetch_slot(next),
                                None => {
                                    let o = next as usize * arena.dim;
                                    if let Some(row) = arena.data().get(o..o + arena.dim) {
                                        hnsw::prefetch_all(row);
                                    }
                                }
                            }
                        }
                        let Some(v) = arena.get(off) else { continue };
                        if p.residual && !self.matches_slot(off, filter) {
                            continue;
                        }
                        // the point id (another scattered read) only for scores that can
                        // still enter the top
                        let score = score_slot(off, v);
                        if !top_k.may_take(score) {
                            continue;
                        }
                        let Some(id) = self.slot_id[off as usize] else {
                            continue;
                        };
                        top_k.push(Hit {
                            id,
                            offset: off,
                            score,
                        });
                    }
                } else {
                    for off in scan_from..self.slot_id.len() {
                        let off = off as u32;
                        let Some(id) = self.slot_id[off as usize] else {
                            continue;
                        };
                        let Some(v) = arena.get(off) else { continue };
                        if !probe_ok(off) {
                            continue;
                        }
                        top_k.push(Hit {
                            id,
                            offset: off,
                            score: score_slot(off, v),
                        });
                    }
                }
            }
            Vector::Sparse(q) => {
                let col = self
                    .sparse
                    .get(name)
                    .ok_or_else(|| StoreError::UnknownVector(display_name(name)))?;
                let q = &self.sparse_query(name, q);
                for (&id, &off) in &self.ids {
                    let Some(Some(v)) = col.get(off as usize) else {
                        continue;
                    };
                    let Some(s) = distance::sparse_dot(q, v) else {
                        continue;
                    };
                    if !self.matches(id, off, filter) {
                        continue;
                    }
                    top_k.push(Hit {
                        id,
                        offset: off,
                        score: s,
                    });
                }
            }
        }
        let (Some(_), Vector::Dense(q)) = (&codes, query) else {
            return Ok(top_k.into_sorted());
        };
        // Candidates were ranked by code: re-score them with the f32 vectors (a few random
        // reads when those are on disk), unless the request opted out.
        let rescore = params.quantization.rescore.unwrap_or(true);
        let dist = self.schema.dense[name].distance;
        let mut out = TopK::new(top, threshold);
        let mut row = Vec::new();
        for mut h in top_k.into_sorted() {
            if rescore {
                let Some(v) = self
                    .dense
                    .get(name)
                    .and_then(|a| a.read_row(h.offset, &mut row))
                else {
                    continue;
                };
                h.score = distance::score(dist, q, v);
            }
            out.push(h);
        }
        Ok(out.into_sorted())
    }

    fn matches_slot(&self, off: u32, filter: Option<&Filter>) -> bool {
        match (filter, self.slot_id[off as usize]) {
            (None, Some(_)) => true,
            (Some(_), Some(id)) => self.matches(id, off, filter),
            (_, None) => false,
        }
    }

    /// Estimate how many of `live` live points match `filter` from an evenly spaced sample
    /// (about 512) of the `len` positions `slot_at` maps to slots; tombstones are skipped.
    fn sample_matches(
        &self,
        filter: &Filter,
        len: usize,
        live: usize,
        slot_at: impl Fn(usize) -> Option<u32>,
    ) -> usize {
        const SAMPLE: usize = 512;
        let step = (len / SAMPLE).max(1);
        let (mut seen, mut hit) = (0usize, 0usize);
        for off in (0..len).step_by(step).filter_map(slot_at) {
            if self.slot_id[off as usize].is_some() {
                seen += 1;
                if self.matches_slot(off, Some(filter)) {
                    hit += 1;
                }
            }
        }
        if seen == 0 {
            return 0;
        }
        // round up: never estimate zero matches for a filter that matched in the sample
        (hit * live).div_ceil(seen)
    }

    /// Estimated number of slots in `set` (live slots) that match `filter`.
    fn estimate_within(&self, filter: &Filter, set: &RoaringBitmap) -> usize {
        let n = set.len() as usize;
        self.sample_matches(filter, n, n, |rank| set.select(rank as u32))
    }

    /// Estimated number of live points matching `filter` (evenly spaced sample of slots).
    pub fn estimate_matches(&self, filter: &Filter) -> usize {
        let live = self.ids.len();
        if live <= 512 {
            return self.count(Some(filter));
        }
        self.sample_matches(filter, self.slot_id.len(), live, |off| Some(off as u32))
    }

    /// Live points with a vector `name` that the graph covers / does not cover yet.
    pub fn index_coverage(&self, name: &str) -> (usize, usize) {
        let Some(a) = self.dense.get(name) else {
            return (0, 0);
        };
        let covered = self.graphs.get(name).map_or(0, |g| g.covered);
        let (mut inside, mut outside) = (0, 0);
        for (off, id) in self.slot_id.iter().enumerate() {
            if id.is_some() && a.present.get(off).copied().unwrap_or(false) {
                if off < covered {
                    inside += 1;
                } else {
                    outside += 1;
                }
            }
        }
        (inside, outside)
    }

    /// Slots that exist (live or tombstone) — tombstones are dropped on rebuild.
    pub fn slot_count(&self) -> usize {
        self.slot_id.len()
    }

    /// Prepare a background build that adds every slot not yet in `name`'s graph.
    pub fn index_job(&self, name: &str, params: HnswParams) -> Option<IndexJob> {
        let a = self.dense.get(name)?;
        let dist = self.schema.dense.get(name)?.distance;
        let (base, covered) = match self.graphs.get(name) {
            Some(g) => (g.graph.clone(), g.covered),
            None => (Arc::new(Hnsw::empty(params.m)), 0),
        };
        let len = self.slot_id.len();
        let new_nodes: Vec<u32> = (covered..len)
            .filter(|&o| self.slot_id[o].is_some() && a.present.get(o).copied().unwrap_or(false))
            .map(|o| o as u32)
            .collect();
        if new_nodes.is_empty() {
            return None;
        }
        let mut data = a.data()[..len.min(a.present.len()) * a.dim].to_vec();
        data.resize(len * a.dim, 0.0);
        Some(IndexJob {
            name: name.to_string(),
            base,
            data,
            dim: a.dim,
            distance: dist,
            new_nodes,
            covered: len,
            params,
        })
    }

    /// Install a finished build unless another build replaced the graph meanwhile.
    pub fn install_index(&mut self, built: BuiltIndex) -> bool {
        let current = self.graphs.get(&built.name).map(|g| g.graph.clone());
        let same_base = match &current {
            Some(c) => Arc::ptr_eq(c, &built.base),
            None => built.base.node_count() == 0,
        };
        if !same_base {
            return false;
        }
        let name = built.name.clone();
        self.graphs.insert(
            built.name,
            GraphIndex {
                graph: Arc::new(built.graph),
                covered: built.covered,
                ef_construct: built.ef_construct,
            },
        );
        self.ensure_quantized(&name);
        // the build copied the vectors through the mapping: let those pages go
        if let Some(a) = self.dense.get_mut(&name) {
            a.settle_pages();
        }
        true
    }

    /// Rebuild without tombstones (vacuum). Payload indexes are rebuilt; graphs are dropped
    /// (slot numbers change) and must be rebuilt by the optimizer.
    pub fn compact(&mut self) {
        let kinds: Vec<(String, FieldType)> = self
            .payload_indexes
            .iter()
            .map(|(k, ix)| (k.clone(), ix.kind()))
            .collect();
        let mut fresh = PointStore::with_vector_dir(self.schema.clone(), self.vector_dir.clone());
        for r in self.iter_records() {
            fresh.upsert(r.id, r.version, &r.vectors, r.payload);
        }
        for (k, kind) in kinds {
            fresh
                .create_payload_index(&k, kind)
                .expect("field path was valid before");
        }
        *self = fresh;
    }

    /// Drop every graph (e.g. after the HNSW config changed).
    pub fn drop_indexes(&mut self) {
        self.graphs.clear();
        self.blocks.clear();
        self.block_links.clear();
    }

    /// A sparse query as it is scored: weighted by inverse document frequency when the
    /// vector has `modifier: idf` (`ln((n - df + 0.5) / (df + 0.5) + 1)`, `n` = live points
    /// having the vector, `df` = those among them having the index), else unchanged.
    pub fn sparse_query(&self, name: &str, q: &SparseVector) -> SparseVector {
        let (Some(p), Some(col)) = (self.schema.sparse.get(name), self.sparse.get(name)) else {
            return q.clone();
        };
        if !p.idf {
            return q.clone();
        }
        let mut n = 0u64;
        let mut df = vec![0u64; q.indices.len()];
        for &off in self.ids.values() {
            let Some(Some(v)) = col.get(off as usize) else {
                continue;
            };
            n += 1;
            for (i, idx) in q.indices.iter().enumerate() {
                if v.indices.binary_search(idx).is_ok() {
                    df[i] += 1;
                }
            }
        }
        let values = q
            .values
            .iter()
            .zip(&df)
            .map(|(&x, &d)| {
                let (n, d) = (n as f64, d as f64);
                (x as f64 * ((n - d + 0.5) / (d + 0.5) + 1.0).ln()) as f32
            })
            .collect();
        SparseVector {
            indices: q.indices.clone(),
            values,
        }
    }

    /// Score specific points against a query (used by fusion / rescoring). Missing vectors skip;
    /// so do sparse vectors sharing no index with the query.
    pub fn score_points(&self, name: &str, query: &Vector, ids: &[PointId]) -> Vec<Hit> {
        self.score_points_with(name, query, ids, false)
    }

    /// [`Self::score_points`], with `empty_is_zero`: a sparse vector sharing no index with the
    /// query scores 0 instead of being skipped.
    pub fn score_points_with(
        &self,
        name: &str,
        query: &Vector,
        ids: &[PointId],
        empty_is_zero: bool,
    ) -> Vec<Hit> {
        let sparse_q = match query {
            Vector::Sparse(q) => Some(self.sparse_query(name, q)),
            Vector::Dense(_) => None,
        };
        let mut out = Vec::new();
        for &id in ids {
            let Some(&off) = self.ids.get(&id) else {
                continue;
            };
            let s = match query {
                Vector::Dense(q) => {
                    let (Some(a), Some(p)) = (self.dense.get(name), self.schema.dense.get(name))
                    else {
                        continue;
                    };
                    let Some(v) = a.get(off) else { continue };
                    distance::score(p.distance, q, v)
                }
                Vector::Sparse(_) => {
                    let Some(Some(v)) = self.sparse.get(name).and_then(|c| c.get(off as usize))
                    else {
                        continue;
                    };
                    let q = sparse_q.as_ref().expect("sparse query");
                    match distance::sparse_dot(q, v) {
                        Some(s) => s,
                        None if empty_is_zero => 0.0,
                        None => continue,
                    }
                }
            };
            out.push(Hit {
                id,
                offset: off,
                score: s,
            });
        }
        out
    }

    /// Iterate all live records in id order (for checkpoints and exports).
    pub fn iter_records(&self) -> impl Iterator<Item = Record> + '_ {
        self.ids.iter().map(|(&id, &off)| self.record(id, off))
    }

    /// The cut a checkpoint starts from (see [`StoreCut`]): live slots in slot order, so a
    /// store rebuilt from the checkpoint numbers its slots densely in the same order (what
    /// `graph_exports` remaps graphs to).
    pub fn cut(&self) -> StoreCut {
        let live = self.len();
        let mut cut = StoreCut {
            slots: Vec::with_capacity(live),
            ids: Vec::with_capacity(live),
            versions: Vec::with_capacity(live),
            payloads: self.payloads.chunks.clone(),
            dense: Vec::new(),
            sparse: self.sparse.keys().cloned().collect(),
        };
        for (off, id) in self.slot_id.iter().enumerate() {
            if let Some(id) = id {
                cut.slots.push(off as u32);
                cut.ids.push(*id);
                cut.versions.push(self.versions[off]);
            }
        }
        cut.dense = self
            .schema
            .dense
            .iter()
            .map(|(n, p)| {
                let present = match self.dense.get(n) {
                    Some(a) => cut
                        .slots
                        .iter()
                        .map(|&s| a.present.get(s as usize).copied().unwrap_or(false))
                        .collect(),
                    None => vec![false; cut.slots.len()],
                };
                (n.clone(), p.size, present)
            })
            .collect();
        cut
    }

    /// Append the rows of dense vector `name` for `slots` (taken by a [`Self::cut`]) as
    /// little-endian f32 bytes; zeros where `present` says the slot had none at the cut.
    pub fn copy_dense_rows(&self, name: &str, slots: &[u32], present: &[bool], out: &mut Vec<u8>) {
        let Some(a) = self.dense.get(name) else {
            out.resize(out.len() + slots.len() * self.dim_of(name) * 4, 0);
            return;
        };
        let data = a.data();
        for (&s, &has) in slots.iter().zip(present) {
            let (from, to) = (s as usize * a.dim, (s as usize + 1) * a.dim);
            match data.get(from..to) {
                Some(row) if has => extend_le(out, row),
                _ => out.resize(out.len() + a.dim * 4, 0),
            }
        }
    }

    /// The sparse vectors `name` of `slots` (taken by a [`Self::cut`]).
    pub fn copy_sparse(&self, name: &str, slots: &[u32]) -> Vec<Option<SparseVector>> {
        let col = self.sparse.get(name);
        slots
            .iter()
            .map(|&s| col.and_then(|c| c.get(s as usize)).cloned().flatten())
            .collect()
    }

    fn dim_of(&self, name: &str) -> usize {
        self.schema.dense.get(name).map_or(0, |p| p.size)
    }

    /// Slot -> its number in a checkpoint (live slots in slot order), plus the live count.
    fn checkpoint_numbering(&self) -> (Vec<Option<u32>>, u32) {
        let mut map = Vec::with_capacity(self.slot_id.len());
        let mut live = 0u32;
        for id in &self.slot_id {
            map.push(id.map(|_| {
                live += 1;
                live - 1
            }));
        }
        (map, live)
    }

    /// The graphs and payload blocks to persist with a checkpoint written from
    /// `iter_records_by_slot`, both renumbered by one pass over the slots. Cheap to take
    /// under the store lock: the graphs' remap runs later, in `GraphExport::encode`.
    pub fn exports(&self) -> (Vec<GraphExport>, Vec<BlockExport>) {
        if self.graphs.is_empty() && self.blocks.is_empty() {
            return (vec![], vec![]);
        }
        let (map, live) = self.checkpoint_numbering();
        let blocks = self.block_exports(&map);
        (self.graph_exports(Arc::new(map), live), blocks)
    }

    /// The payload blocks, their slots renumbered by `map`. A block holding a slot that is
    /// no longer live is left out (it is rebuilt after a restart, as it would be soon
    /// anyway).
    fn block_exports(&self, map: &[Option<u32>]) -> Vec<BlockExport> {
        let mut out = Vec::new();
        for (name, blocks) in &self.blocks {
            for ((field, value), b) in blocks {
                let slots: Option<Vec<u32>> = b
                    .slots
                    .iter()
                    .map(|&s| map.get(s as usize).copied().flatten())
                    .collect();
                if let Some(slots) = slots {
                    out.push(BlockExport {
                        name: name.clone(),
                        field: field.clone(),
                        value: value.clone(),
                        slots,
                        block: b.clone(),
                    });
                }
            }
        }
        out
    }

    /// Install a payload block saved with a checkpoint (after the checkpoint, the WAL tail
    /// and the payload indexes are loaded). Refused unless its field is indexed, its
    /// vector exists and every node names an existing slot; staleness is then judged as
    /// for any block.
    pub fn import_block(
        &mut self,
        name: &str,
        field: &str,
        value: MatchValue,
        graph: Hnsw,
        slots: Vec<u32>,
    ) -> bool {
        if !self.dense.contains_key(name)
            || !self.payload_indexes.contains_key(field)
            || graph.len() != slots.len()
            || slots.iter().any(|&s| s as usize >= self.slot_id.len())
        {
            return false;
        }
        let members = slots.iter().copied().collect();
        let block = BlockGraph {
            graph,
            slots,
            members,
        };
        self.put_block(name, (field.to_string(), value), block);
        true
    }

    fn put_block(&mut self, name: &str, key: (String, MatchValue), block: BlockGraph) {
        let block = Arc::new(block);
        self.block_links
            .entry(name.to_string())
            .or_default()
            .entry(key.0.clone())
            .or_default()
            .link(&key.1, &block);
        self.blocks
            .entry(name.to_string())
            .or_default()
            .insert(key, block);
    }

    /// The graphs worth persisting, to be renumbered by `map` (`live` slots). A graph
    /// whose covered range holds more than 5% tombstones is skipped (it would lose too
    /// many links; it is rebuilt after a restart instead).
    fn graph_exports(&self, map: Arc<Vec<Option<u32>>>, live: u32) -> Vec<GraphExport> {
        let mut out = Vec::new();
        for (name, g) in &self.graphs {
            let Some(arena) = self.dense.get(name) else {
                continue;
            };
            let covered = g.covered.min(map.len());
            let live_covered = map[..covered].iter().filter(|x| x.is_some()).count();
            if (covered - live_covered) * 20 > covered {
                continue;
            }
            let nodes = (0..covered)
                .filter(|&o| map[o].is_some() && arena.present.get(o).copied().unwrap_or(false))
                .count();
            out.push(GraphExport {
                name: name.clone(),
                graph: g.graph.clone(),
                map: map.clone(),
                new_n: live as usize,
                nodes,
                covered: live_covered,
                ef_construct: g.ef_construct,
            });
        }
        out
    }

    /// Install a graph loaded with a checkpoint (before any later write is replayed).
    /// Refused if it does not fit this store's slots.
    pub fn import_graph(
        &mut self,
        name: &str,
        graph: Hnsw,
        covered: usize,
        ef_construct: usize,
    ) -> bool {
        if !self.dense.contains_key(name)
            || graph.len() != self.slot_id.len()
            || covered > self.slot_id.len()
        {
            return false;
        }
        self.graphs.insert(
            name.to_string(),
            GraphIndex {
                graph: Arc::new(graph),
                covered,
                ef_construct,
            },
        );
        self.ensure_quantized(name);
        if let Some(a) = self.dense.get_mut(name) {
            a.settle_pages();
        }
        true
    }
}

fn display_name(name: &str) -> String {
    if name.is_empty() {
        "\"\" (the unnamed vector)".to_string()
    } else {
        name.to_string()
    }
}

/// Bounded top-k collector with an optional strict threshold.
struct TopK {
    top: usize,
    threshold: Option<f32>,
    heap: BinaryHeap<HeapHit>,
}

impl TopK {
    fn new(top: usize, threshold: Option<f32>) -> Self {
        TopK {
            top,
            threshold,
            heap: BinaryHeap::with_capacity(top.min(1 << 16) + 1),
        }
    }
    /// Whether a hit with this score could be kept (ties included: they are decided by id).
    #[inline]
    fn may_take(&self, score: f32) -> bool {
        if self.threshold.is_some_and(|t| score <= t) {
            return false;
        }
        // the first key of `hit_order`, so a hit this rejects could never be kept by `push`
        self.heap.len() < self.top
            || self
                .heap
                .peek()
                .is_none_or(|w| cmp_f32(score, w.0.score).is_ge())
    }
    fn push(&mut self, h: Hit) {
        if !self.may_take(h.score) {
            return;
        }
        if self.heap.len() < self.top {
            self.heap.push(HeapHit(h));
        } else if let Some(worst) = self.heap.peek() {
            if hit_order(&h, &worst.0).is_lt() {
                self.heap.pop();
                self.heap.push(HeapHit(h));
            }
        }
    }
    fn into_sorted(self) -> Vec<Hit> {
        let mut out: Vec<Hit> = self.heap.into_iter().map(|h| h.0).collect();
        out.sort_by(hit_order);
        out
    }
}

/// Max-heap by "worst first": the heap top is the worst of the kept hits.
struct HeapHit(Hit);
impl PartialEq for HeapHit {
    fn eq(&self, o: &Self) -> bool {
        hit_order(&self.0, &o.0).is_eq()
    }
}
impl Eq for HeapHit {}
impl PartialOrd for HeapHit {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for HeapHit {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        hit_order(&self.0, &o.0)
    }
}

/// Append `v` as little-endian f32 bytes: one copy on little-endian machines.
fn extend_le(out: &mut Vec<u8>, v: &[f32]) {
    if cfg!(target_endian = "little") {
        // SAFETY: f32 has no padding and any byte pattern is a valid u8; the slice covers
        // exactly the floats' bytes and lives as long as `v`.
        let bytes = unsafe {
            std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
        };
        out.extend_from_slice(bytes);
    } else {
        out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn schema(d: Distance) -> VectorSchema {
        let mut s = VectorSchema::default();
        s.dense
            .insert(DEFAULT_VECTOR.into(), DenseParams::new(4, d));
        s.sparse.insert("sp".into(), SparseParams::default());
        s
    }

    /// An empty store with one unnamed Euclid vector of `dim`.
    fn euclid_store(dim: usize) -> PointStore {
        let mut sc = VectorSchema::default();
        sc.dense.insert(
            DEFAULT_VECTOR.into(),
            DenseParams::new(dim, Distance::Euclid),
        );
        PointStore::new(sc)
    }

    /// Upsert point `i` (version `i`) with a uniform random vector and `payload`.
    fn put_random(
        s: &mut PointStore,
        rng: &mut rand::rngs::StdRng,
        i: u64,
        payload: serde_json::Value,
    ) {
        let dim = s.schema.dense[DEFAULT_VECTOR].size;
        let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let v = s.prepare_vectors(vecs(v)).unwrap();
        s.upsert(PointId::Num(i), i, &v, payload.as_object().unwrap().clone());
    }

    /// A filter naming one indexed value walks that value's block graph: results are the
    /// value's points only, close to exact; after points leave the value, join it or are
    /// deleted (stale block), membership stays exact and recall holds.
    #[test]
    fn payload_block_graph_answers_single_value_filters() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let dim = 16;
        let mut s = euclid_store(dim);
        let n = 6000u64;
        // "a" and "b" 1000 points each, "c" 4000 (over a quarter: no block of its own)
        let tenant = |i: u64| match i % 6 {
            0 => "a",
            1 => "b",
            _ => "c",
        };
        let put = |s: &mut PointStore, rng: &mut rand::rngs::StdRng, i: u64, t: &str| {
            put_random(s, rng, i, serde_json::json!({ "t": t }))
        };
        for i in 0..n {
            put(&mut s, &mut rng, i, tenant(i));
        }
        s.create_payload_index("t", FieldType::Keyword).unwrap();
        assert!(s.install_index(s.index_job("", HnswParams::default()).unwrap().run()));
        assert!(s.blocks_pending("", 1000));
        let jobs = s.block_jobs("", HnswParams::default(), 1000, 64);
        assert_eq!(
            jobs.len(),
            2,
            "one block per value with 1000 ..= n/4 points"
        );
        for j in jobs {
            assert!(s.install_block(j.run()));
        }
        assert!(!s.blocks_pending("", 1000));
        assert_eq!(s.block_stats(""), (2, 2000));
        let fa = crate::filter::Filter::from_json(
            &serde_json::json!({"must": [{"key": "t", "match": {"value": "a"}}]}),
        )
        .unwrap();
        let mut qs: Vec<Vector> = Vec::new();
        for _ in 0..30 {
            let q: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            qs.push(s.prepare_vector("", Vector::Dense(q)).unwrap());
        }
        let check = |s: &PointStore, stage: &str| {
            let before = BLOCK_SEARCHES.load(Relaxed);
            let (mut common, mut total) = (0, 0);
            for q in &qs {
                let exact = s.search("", q, Some(&fa), 10, None).unwrap();
                let params = SearchParams {
                    exact: false,
                    ..Default::default()
                };
                let got = s.search_with("", q, Some(&fa), 10, None, &params).unwrap();
                assert_eq!(got.len(), exact.len(), "{stage}");
                for h in &got {
                    assert_eq!(s.payloads.get(h.offset).get("t").unwrap(), "a", "{stage}");
                    assert_eq!(
                        s.slot_id[h.offset as usize],
                        Some(h.id),
                        "{stage}: live only"
                    );
                }
                let truth: Vec<PointId> = exact.iter().map(|h| h.id).collect();
                common += got.iter().filter(|h| truth.contains(&h.id)).count();
                total += truth.len();
            }
            assert!(
                BLOCK_SEARCHES.load(Relaxed) >= before + qs.len() as u64,
                "{stage}: the block graph was not used"
            );
            let r = common as f64 / total as f64;
            assert!(r >= 0.95, "{stage}: recall {r}");
        };
        check(&s, "fresh");
        // 600 points join "a" (new slots), 300 of "a" are deleted: stale block
        for i in (2..n).step_by(6).take(600) {
            put(&mut s, &mut rng, i, "a");
        }
        for i in (0..n).step_by(6).take(300) {
            assert!(s.delete(PointId::Num(i)));
        }
        check(&s, "stale");
    }

    /// A filter spanning several indexed values (no single block answers it) walks the
    /// main graph and follows accepted nodes' links in their value's block: results match
    /// the filter, are live, and stay close to exact, also once blocks hold slots newer
    /// than the main graph (ignored by the walk, scanned exactly).
    #[test]
    fn filtered_walk_follows_block_links() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let dim = 16;
        let mut s = euclid_store(dim);
        let put = |s: &mut PointStore, rng: &mut rand::rngs::StdRng, i: u64, r: u64| {
            put_random(s, rng, i, serde_json::json!({ "r": r }))
        };
        let n = 20_000u64;
        for i in 0..n {
            put(&mut s, &mut rng, i, i % 20); // 20 values of 1,000 points
        }
        s.create_payload_index("r", FieldType::Integer).unwrap();
        assert!(s.install_index(s.index_job("", HnswParams::default()).unwrap().run()));
        let build = |s: &mut PointStore| {
            for j in s.block_jobs("", HnswParams::default(), 1000, 64) {
                assert!(s.install_block(j.run()));
            }
        };
        build(&mut s);
        assert_eq!(s.block_stats(""), (20, 20_000));
        // the same 3 values as a range (tested per slot from the index's values) and as a
        // match (answered by the union of their posting lists)
        let filters: Vec<crate::filter::Filter> = [
            serde_json::json!({"must": [{"key": "r", "range": {"lt": 3}}]}),
            serde_json::json!({"must": [{"key": "r", "match": {"any": [0, 1, 2]}}]}),
        ]
        .iter()
        .map(|j| crate::filter::Filter::from_json(j).unwrap())
        .collect();
        let qs: Vec<Vector> = (0..40)
            .map(|_| {
                let q: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                s.prepare_vector("", Vector::Dense(q)).unwrap()
            })
            .collect();
        let check_one = |s: &PointStore, f: &crate::filter::Filter, stage: &str| {
            let before = LINKED_WALKS.load(Relaxed);
            let (mut common, mut total) = (0, 0);
            let params = SearchParams {
                exact: false,
                hnsw_ef: Some(64),
                full_scan_threshold: 0,
                ..Default::default()
            };
            for q in &qs {
                let exact = s.search("", q, Some(f), 10, None).unwrap();
                let got = s.search_with("", q, Some(f), 10, None, &params).unwrap();
                assert_eq!(got.len(), 10, "{stage}");
                for h in &got {
                    let r = s.payloads.get(h.offset).get("r").unwrap().as_u64().unwrap();
                    assert!(r < 3, "{stage}: r = {r} does not match");
                    assert_eq!(s.slot_id[h.offset as usize], Some(h.id), "{stage}");
                }
                let truth: Vec<PointId> = exact.iter().map(|h| h.id).collect();
                common += got.iter().filter(|h| truth.contains(&h.id)).count();
                total += truth.len();
            }
            assert!(
                LINKED_WALKS.load(Relaxed) >= before + qs.len() as u64,
                "{stage}: block links were not followed"
            );
            let r = common as f64 / total as f64;
            assert!(r >= 0.95, "{stage}: recall {r}");
        };
        let check = |s: &PointStore, stage: &str| {
            for f in &filters {
                check_one(s, f, stage);
            }
        };
        check(&s, "fresh");
        // 1,200 new points of value 0 (slots past the main graph) make its block stale;
        // the rebuilt block links them; 500 old points are deleted
        for i in n..n + 1200 {
            put(&mut s, &mut rng, i, 0);
        }
        for i in (0..n).step_by(40).take(500) {
            assert!(s.delete(PointId::Num(i)));
        }
        build(&mut s);
        assert!(s.block_stats("").1 > 20_000);
        check(&s, "grown");
    }

    /// int8 codes (+ rescoring) and on-disk f32 vectors keep graph, filtered and exact-scan
    /// searches close to exact, for every distance; options apply and revert in place.
    #[test]
    fn quantized_on_disk_search_keeps_recall() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let dim = 32;
        for d in [
            Distance::Cosine,
            Distance::Euclid,
            Distance::Dot,
            Distance::Manhattan,
        ] {
            let mut sc = VectorSchema::default();
            let mut p = DenseParams::new(dim, d);
            p.on_disk = true;
            p.quantization = Some(ScalarConfig {
                quantile: Some(0.99),
            });
            sc.dense.insert(DEFAULT_VECTOR.into(), p);
            let dir = tempfile::tempdir().unwrap();
            let mut s = PointStore::with_vector_dir(sc, Some(dir.path().to_path_buf()));
            assert!(s.dense[""].on_disk());
            let n = 3000u64;
            for i in 0..n {
                let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                let v = s.prepare_vectors(vecs(v)).unwrap();
                let pl = serde_json::json!({"m": i % 20})
                    .as_object()
                    .unwrap()
                    .clone();
                s.upsert(PointId::Num(i), i, &v, pl);
            }
            s.create_payload_index("m", FieldType::Integer).unwrap();
            assert!(!s.is_quantized(""), "codes wait for the graph");
            assert!(s.install_index(s.index_job("", HnswParams::default()).unwrap().run()));
            assert!(s.is_quantized(""));
            // points written after training are coded too (scanned outside the graph)
            for i in n..n + 200 {
                let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                let v = s.prepare_vectors(vecs(v)).unwrap();
                let pl = serde_json::json!({"m": i % 20})
                    .as_object()
                    .unwrap()
                    .clone();
                s.upsert(PointId::Num(i), i, &v, pl);
            }
            let f = crate::filter::Filter::from_json(
                &serde_json::json!({"must": [{"key": "m", "match": {"value": 3}}]}),
            )
            .unwrap();
            let (mut common, mut total) = (0, 0);
            for _ in 0..20 {
                let q: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                let q = s.prepare_vector("", Vector::Dense(q)).unwrap();
                for filter in [None, Some(&f)] {
                    let exact = s.search("", &q, filter, 10, None).unwrap();
                    for threshold in [0, 10_000] {
                        let params = SearchParams {
                            full_scan_threshold: threshold,
                            quantization: QuantSearch {
                                oversampling: Some(2.0),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        let got = s.search_with("", &q, filter, 10, None, &params).unwrap();
                        assert_eq!(got.len(), 10);
                        // rescored: the reported scores are the exact ones
                        for h in &got {
                            let e = s.score_points("", &q, &[h.id])[0].score;
                            assert_eq!(h.score, e);
                        }
                        common += got
                            .iter()
                            .filter(|h| exact.iter().any(|e| e.id == h.id))
                            .count();
                        total += 10;
                    }
                }
            }
            let recall = common as f64 / total as f64;
            assert!(recall >= 0.95, "{d:?}: recall {recall}");
            // without rescoring the scores are the approximate ones
            let q = s.prepare_vector("", Vector::Dense(vec![0.1; dim])).unwrap();
            let raw = SearchParams {
                quantization: QuantSearch {
                    rescore: Some(false),
                    ..Default::default()
                },
                ..Default::default()
            };
            let approx = s.search_with("", &q, None, 5, None, &raw).unwrap();
            let exact_scores: Vec<f32> = approx
                .iter()
                .map(|h| s.score_points("", &q, &[h.id])[0].score)
                .collect();
            assert!(approx.iter().zip(&exact_scores).any(|(h, e)| h.score != *e));
            // back to RAM and unquantized: same answers as exact
            s.configure_vector("", false, None);
            assert!(!s.dense[""].on_disk() && !s.is_quantized(""));
            let exact = s.search("", &q, None, 10, None).unwrap();
            let plain = s
                .search_with("", &q, None, 10, None, &SearchParams::default())
                .unwrap();
            assert!(plain.iter().filter(|h| exact.contains(h)).count() >= 9);
        }
    }

    fn vecs(v: Vec<f32>) -> NamedVectors {
        [(DEFAULT_VECTOR.to_string(), Vector::Dense(v))].into()
    }

    #[test]
    fn search_matches_brute_force_sort() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for d in [
            Distance::Cosine,
            Distance::Euclid,
            Distance::Dot,
            Distance::Manhattan,
        ] {
            let mut s = PointStore::new(schema(d));
            for i in 0..300u64 {
                let v: Vec<f32> = (0..4).map(|_| rng.random_range(-1.0..1.0)).collect();
                let v = s.prepare_vectors(vecs(v)).unwrap();
                s.upsert(PointId::Num(i), i, &v, Payload::new());
            }
            for i in (0..300u64).step_by(3) {
                assert!(s.delete(PointId::Num(i)));
            }
            let q = s
                .prepare_vector("", Vector::Dense(vec![0.3, -0.2, 0.9, 0.1]))
                .unwrap();
            let got = s.search("", &q, None, 10, None).unwrap();
            let mut all = s.score_points("", &q, &s.matching_ids(None));
            all.sort_by(hit_order);
            assert_eq!(got, all[..10].to_vec(), "{d:?}");
            assert!(got.iter().all(|h| h.id != PointId::Num(0)));
        }
    }

    #[test]
    fn graph_search_agrees_with_exact_and_survives_updates() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut s = PointStore::new(schema(Distance::Euclid));
        let put = |s: &mut PointStore, i: u64, rng: &mut rand::rngs::StdRng| {
            let v: Vec<f32> = (0..4).map(|_| rng.random_range(-1.0..1.0)).collect();
            let v = s.prepare_vectors(vecs(v)).unwrap();
            s.upsert(
                PointId::Num(i),
                i,
                &v,
                serde_json::json!({"m": i % 10})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
        };
        for i in 0..2000 {
            put(&mut s, i, &mut rng);
        }
        let job = s.index_job("", HnswParams::default()).unwrap();
        assert_eq!(job.new_points(), 2000);
        // writes while the build runs: updates (move slots), deletes and new points
        for i in 0..100 {
            put(&mut s, i, &mut rng);
        }
        for i in 100..200 {
            s.delete(PointId::Num(i));
        }
        for i in 2000..2300 {
            put(&mut s, i, &mut rng);
        }
        assert!(s.install_index(job.run()));
        // 100 updated points moved to new slots, 100 were deleted, 300 are new
        assert_eq!(s.index_coverage(""), (1800, 400));
        let f = crate::filter::Filter::from_json(
            &serde_json::json!({"must": [{"key": "m", "match": {"value": 3}}]}),
        )
        .unwrap();
        for _ in 0..30 {
            let q: Vec<f32> = (0..4).map(|_| rng.random_range(-1.0..1.0)).collect();
            let q = s.prepare_vector("", Vector::Dense(q)).unwrap();
            for filter in [None, Some(&f)] {
                let exact = s.search("", &q, filter, 10, None).unwrap();
                let approx = s
                    .search_with(
                        "",
                        &q,
                        filter,
                        10,
                        None,
                        &SearchParams {
                            full_scan_threshold: 0,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                let common = approx
                    .iter()
                    .filter(|h| exact.iter().any(|e| e.id == h.id))
                    .count();
                assert!(common >= 9, "graph {approx:?} vs exact {exact:?}");
                assert!(approx.iter().all(|h| !(100..200).contains(&match h.id {
                    PointId::Num(n) => n,
                    _ => 0,
                })));
            }
        }
    }

    /// Payload indexes must hold exactly the live matching slots through every kind of
    /// change, so that index-answered filters (no payload re-check) equal a full scan.
    #[test]
    fn payload_indexes_stay_exact_under_random_updates() {
        use serde_json::json;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut s = PointStore::new(schema(Distance::Euclid));
        s.create_payload_index("k", FieldType::Keyword).unwrap();
        s.create_payload_index("n", FieldType::Integer).unwrap();
        s.create_payload_index("f", FieldType::Float).unwrap();
        s.create_payload_index("b", FieldType::Bool).unwrap();
        s.create_payload_index("t", FieldType::Text).unwrap();
        s.create_payload_index("g", FieldType::Geo).unwrap();
        let payload = |rng: &mut rand::rngs::StdRng| -> Payload {
            let pt = |rng: &mut rand::rngs::StdRng| json!({"lon": rng.random_range(-10.0..10.0), "lat": rng.random_range(-10.0..10.0)});
            let g = match rng.random_range(0..6) {
                0 => json!([pt(rng), pt(rng)]),
                1 => json!({"lon": 1.0}), // not a point: never matches
                _ => pt(rng),
            };
            let k = ["a", "b", "c"][rng.random_range(0..3)];
            let words = ["Red", "fox", "blue", "cat", "red-fox", "dog"];
            let mut sentence = || {
                (0..rng.random_range(1..4))
                    .map(|_| words[rng.random_range(0..words.len())])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let (t1, t2) = (sentence(), sentence());
            let v = if rng.random_bool(0.3) {
                json!({"k": [k, "z"], "n": [rng.random_range(0..5), 9], "f": rng.random_range(0.0..1.0), "b": rng.random_bool(0.5), "t": [t1, t2]})
            } else {
                json!({"k": k, "n": rng.random_range(0..5), "f": rng.random_range(0.0..1.0), "t": t1, "g": g})
            };
            v.as_object().unwrap().clone()
        };
        let filters: Vec<Filter> = [
            json!({"must": [{"key": "k", "match": {"value": "a"}}]}),
            json!({"must": [{"key": "k", "match": {"any": ["b", "z"]}}, {"key": "n", "range": {"gte": 2}}]}),
            json!({"must": [{"key": "n", "match": {"value": 9}}]}),
            json!({"must": [{"key": "f", "range": {"lt": 0.3}}, {"key": "b", "match": {"value": true}}]}),
            json!({"must": [{"key": "k", "match": {"value": "c"}}], "must_not": [{"key": "n", "match": {"value": 1}}]}),
            json!({"must": [{"key": "t", "match": {"text": "red FOX"}}]}),
            json!({"must": [{"key": "t", "match": {"text_any": "cat dog"}}, {"key": "k", "match": {"value": "a"}}]}),
            json!({"must": [{"key": "t", "match": {"text": "zebra"}}]}),
            json!({"must": [{"key": "t", "match": {"phrase": "blue cat"}}]}),
            json!({"must": [{"key": "g", "geo_radius": {"center": {"lon": 0.0, "lat": 0.0}, "radius": 500000.0}}]}),
            json!({"must": [{"key": "g", "geo_bounding_box": {"top_left": {"lon": -5.0, "lat": 5.0}, "bottom_right": {"lon": 5.0, "lat": -2.0}}}, {"key": "k", "match": {"value": "b"}}]}),
            json!({"must": [{"key": "g", "geo_bounding_box": {"top_left": {"lon": 8.0, "lat": 9.0}, "bottom_right": {"lon": -8.0, "lat": -9.0}}}]}),
            json!({"must": [{"key": "g", "geo_polygon": {"exterior": {"points": [{"lon": -6.0, "lat": -6.0}, {"lon": 6.0, "lat": -6.0}, {"lon": 6.0, "lat": 6.0}, {"lon": -6.0, "lat": 6.0}, {"lon": -6.0, "lat": -6.0}]}, "interiors": [{"points": [{"lon": -2.0, "lat": -2.0}, {"lon": 2.0, "lat": -2.0}, {"lon": 2.0, "lat": 2.0}, {"lon": -2.0, "lat": 2.0}, {"lon": -2.0, "lat": -2.0}]}]}}]}),
        ]
        .iter()
        .map(|f| Filter::from_json(f).unwrap())
        .collect();
        let v = |rng: &mut rand::rngs::StdRng| {
            vecs((0..4).map(|_| rng.random_range(-1.0..1.0)).collect())
        };
        for step in 0..3000u64 {
            let id = PointId::Num(rng.random_range(0..200));
            match rng.random_range(0..7) {
                0 | 1 => {
                    let p = payload(&mut rng);
                    let vv = s.prepare_vectors(v(&mut rng)).unwrap();
                    s.upsert(id, step, &vv, p);
                }
                2 => {
                    s.delete(id);
                }
                3 => {
                    let p = payload(&mut rng);
                    s.set_payload(id, step, &p, None);
                }
                4 => {
                    let p = payload(&mut rng);
                    s.overwrite_payload(id, step, &p);
                }
                5 => {
                    let vv = s.prepare_vectors(v(&mut rng)).unwrap();
                    s.update_vectors(id, step, &vv);
                }
                _ => {
                    s.clear_payload(id, step);
                }
            }
            if step % 100 == 0 {
                for f in &filters {
                    let brute: Vec<PointId> = s
                        .iter_records()
                        .filter(|r| s.matches(r.id, s.ids[&r.id], Some(f)))
                        .map(|r| r.id)
                        .collect();
                    assert_eq!(s.count(Some(f)), brute.len(), "step {step} filter {f:?}");
                    assert_eq!(s.matching_ids(Some(f)), brute, "step {step}");
                    let q = s
                        .prepare_vector(DEFAULT_VECTOR, Vector::Dense(vec![0.1, 0.2, 0.3, 0.4]))
                        .unwrap();
                    let hits = s.search(DEFAULT_VECTOR, &q, Some(f), 500, None).unwrap();
                    let mut got: Vec<PointId> = hits.iter().map(|h| h.id).collect();
                    got.sort_unstable();
                    assert_eq!(got, brute, "search, step {step}");
                }
            }
        }
    }

    #[test]
    fn validation_and_slots() {
        let mut s = PointStore::new(schema(Distance::Dot));
        assert!(matches!(
            s.prepare_vectors(vecs(vec![1.0])),
            Err(StoreError::Dimension {
                expected: 4,
                got: 1
            })
        ));
        assert!(s
            .prepare_vectors(vecs(vec![1.0, f32::NAN, 0.0, 0.0]))
            .is_err());
        assert!(s
            .prepare_vector("nope", Vector::Dense(vec![0.0; 4]))
            .is_err());
        let v = s.prepare_vectors(vecs(vec![1.0, 0.0, 0.0, 0.0])).unwrap();
        s.upsert(PointId::Num(1), 1, &v, Payload::new());
        s.delete(PointId::Num(1));
        s.upsert(PointId::Num(2), 2, &v, Payload::new());
        assert_eq!(s.len(), 1);
        assert_eq!(s.slot_count(), 2);
        assert_eq!(s.get(PointId::Num(2)).unwrap().vectors.len(), 1);
        assert!(s.get(PointId::Num(1)).is_none());
    }
}
