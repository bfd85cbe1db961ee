//! Update operations: the unit written to the WAL and applied to a `PointStore`.
//!
//! An operation is validated (vector names, dimensions, finiteness, filter syntax) *before*
//! it is logged, so replaying the WAL never meets an invalid operation. Application is
//! deterministic: filter selectors are resolved at apply time, in log order, so a replay
//! reproduces exactly the same state.

use crate::error::{CResult, CollectionError};
use segment::filter::Filter;
use segment::json_path::JsonPath;
use segment::store::{NamedVectors, PointStore};
use segment::{Payload, PointId, SparseVector, Vector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A vector as stored in the WAL (tagged, unlike the API form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StoredVector {
    Dense(Vec<f32>),
    Sparse(SparseVector),
}

pub type StoredVectors = BTreeMap<String, StoredVector>;

pub fn to_stored(v: NamedVectors) -> StoredVectors {
    v.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Vector::Dense(d) => StoredVector::Dense(d),
                Vector::Sparse(s) => StoredVector::Sparse(s),
            };
            (k, s)
        })
        .collect()
}

pub fn from_stored(v: &StoredVectors) -> NamedVectors {
    v.iter()
        .map(|(k, v)| {
            let s = match v {
                StoredVector::Dense(d) => Vector::Dense(d.clone()),
                StoredVector::Sparse(s) => Vector::Sparse(s.clone()),
            };
            (k.clone(), s)
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointInsert {
    pub id: PointId,
    pub vectors: StoredVectors,
    pub payload: Option<Payload>,
}

/// Points per batch of a shard's points read for copying (transfers, snapshot installs),
/// at most.
pub const BATCH_POINTS: usize = 256;
/// Bytes per such batch (vectors and payloads, estimated), at most: a batch of large
/// vectors is cut short, so no internal message comes near a size limit.
pub const BATCH_BYTES: usize = 4 << 20;

/// The next points matching `filter` after `after` (in id order), at most `BATCH_POINTS`
/// and about `BATCH_BYTES` (at least one).
pub fn read_batch(store: &PointStore, after: Option<PointId>, filter: &Filter) -> Vec<PointInsert> {
    let mut bytes = 0usize;
    let mut out = Vec::new();
    for id in store.scroll(after, BATCH_POINTS + 1, Some(filter)) {
        if Some(id) == after {
            continue;
        }
        if out.len() == BATCH_POINTS || (!out.is_empty() && bytes >= BATCH_BYTES) {
            break;
        }
        let Some(r) = store.get(id) else { continue };
        bytes += record_bytes(&r);
        out.push(PointInsert {
            id: r.id,
            vectors: to_stored(r.vectors),
            payload: Some(r.payload),
        });
    }
    out
}

/// Estimated encoded size of a point (vectors and payload).
fn record_bytes(r: &segment::store::Record) -> usize {
    let vectors: usize = r
        .vectors
        .values()
        .map(|v| match v {
            Vector::Dense(d) => d.len() * 5,
            Vector::Sparse(s) => s.indices.len() * 10,
        })
        .sum();
    let payload = serde_json::to_vec(&r.payload).map_or(0, |b| b.len());
    vectors + payload + 32
}

/// Points an operation applies to: explicit ids or a filter (kept as JSON, parsed on apply).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Selector {
    Ids(Vec<PointId>),
    Filter(serde_json::Value),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum UpdateMode {
    #[default]
    Upsert,
    InsertOnly,
    UpdateOnly,
}

/// Replication metadata logged with an operation (cluster mode; all `None` otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpMeta {
    /// Id the coordinator gave this client write; every replica logs the same id, which
    /// is how a WAL-delta transfer finds what a returning replica missed.
    #[serde(default)]
    pub id: Option<u64>,
    /// Set on the writes of a transfer that fills this shard (not a client write).
    #[serde(default)]
    pub fill: Option<u32>,
    /// The shards this part of the client write was for (a write is split by shard across
    /// peers, so one id can stand for different parts on different replicas).
    #[serde(default)]
    pub shards: Option<Vec<u32>>,
    /// Set on the records of a shard install (a shard snapshot recovered on a single
    /// node): they take effect together or not at all (`Collection::install_shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallPart>,
}

/// The points that client writes one replica logged and another lacks may have changed
/// (`Collection::touched_missing_from`): the ids they list, and whether any of them selected
/// points by a filter (then it may have changed any point).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    pub ids: Vec<PointId>,
    pub by_filter: bool,
}

impl Touched {
    pub fn may_have_changed(&self, id: PointId) -> bool {
        self.by_filter || self.ids.binary_search(&id).is_ok()
    }
}

/// One record of an all-or-nothing shard install: the install's id, and whether this is
/// its last record (the one that commits it). At start-up, the records of an install
/// whose last record is not in the log are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallPart {
    pub id: u64,
    pub last: bool,
}

impl OpMeta {
    /// Whether this logged write was (possibly) for `shard`; unknown means yes.
    pub fn covers(&self, shard: u32) -> bool {
        self.shards.as_ref().is_none_or(|s| s.contains(&shard))
    }
}

/// A WAL record: the operation and its replication metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
///
/// Encoded as a MessagePack map with `meta` first (records written before that have `op`
/// first; readers accept either order), so [`LoggedOp::decode_meta`] reads the metadata
/// without going through the operation.
pub struct LoggedOp {
    #[serde(default)]
    pub meta: OpMeta,
    pub op: UpdateOp,
}

impl LoggedOp {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("operations always encode")
    }

    /// The metadata of a record only: how a WAL-delta transfer scans the whole log for the
    /// writes a replica missed. A record with `meta` first is read up to the end of its
    /// metadata, without touching the operation's vectors and payloads; an older record
    /// is decoded whole. A bare `UpdateOp` (older logs) has no metadata.
    pub fn decode_meta(bytes: &[u8]) -> CResult<OpMeta> {
        const META_KEY: &[u8] = b"\xa4meta"; // MessagePack fixstr of 4 bytes
        let entries = match bytes.first() {
            Some(0x80..=0x8f) => bytes.get(1..),
            Some(0xde) => bytes.get(3..),
            Some(0xdf) => bytes.get(5..),
            _ => None,
        };
        if let Some(meta) = entries.and_then(|e| e.strip_prefix(META_KEY)) {
            if let Ok(m) = rmp_serde::from_slice::<OpMeta>(meta) {
                return Ok(m);
            }
        }
        Self::decode(bytes).map(|l| l.meta)
    }

    /// Decode a record (a bare `UpdateOp`, as older logs hold, has no metadata).
    pub fn decode(bytes: &[u8]) -> CResult<LoggedOp> {
        match rmp_serde::from_slice::<LoggedOp>(bytes) {
            Ok(l) => Ok(l),
            Err(_) => Ok(LoggedOp {
                op: UpdateOp::decode(bytes)?,
                meta: OpMeta::default(),
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UpdateOp {
    Upsert {
        points: Vec<PointInsert>,
        update_filter: Option<serde_json::Value>,
        mode: UpdateMode,
    },
    Delete(Selector),
    SetPayload {
        selector: Selector,
        payload: Payload,
        key: Option<String>,
    },
    OverwritePayload {
        selector: Selector,
        payload: Payload,
    },
    DeletePayload {
        selector: Selector,
        keys: Vec<String>,
    },
    ClearPayload(Selector),
    UpdateVectors {
        points: Vec<(PointId, StoredVectors)>,
        update_filter: Option<serde_json::Value>,
    },
    DeleteVectors {
        selector: Selector,
        names: Vec<String>,
    },
    /// Several operations logged as one record: applied together or not at all.
    Batch(Vec<UpdateOp>),
}

fn parse_filter(v: &serde_json::Value) -> CResult<Filter> {
    Filter::from_json(v).map_err(CollectionError::BadInput)
}

impl UpdateOp {
    /// Validate against the store's schema and normalise vectors (Cosine). Must be called
    /// before the operation is logged.
    pub fn prepare(self, store: &PointStore) -> CResult<UpdateOp> {
        let check_sel = |s: &Selector| -> CResult<()> {
            if let Selector::Filter(f) = s {
                parse_filter(f)?;
            }
            Ok(())
        };
        Ok(match self {
            UpdateOp::Upsert {
                points,
                update_filter,
                mode,
            } => {
                if let Some(f) = &update_filter {
                    parse_filter(f)?;
                }
                let points = points
                    .into_iter()
                    .map(|p| {
                        Ok(PointInsert {
                            id: p.id,
                            vectors: to_stored(store.prepare_vectors(from_stored(&p.vectors))?),
                            payload: p.payload,
                        })
                    })
                    .collect::<CResult<Vec<_>>>()?;
                UpdateOp::Upsert {
                    points,
                    update_filter,
                    mode,
                }
            }
            UpdateOp::UpdateVectors {
                points,
                update_filter,
            } => {
                if let Some(f) = &update_filter {
                    parse_filter(f)?;
                }
                let points = points
                    .into_iter()
                    .map(|(id, v)| Ok((id, to_stored(store.prepare_vectors(from_stored(&v))?))))
                    .collect::<CResult<Vec<_>>>()?;
                UpdateOp::UpdateVectors {
                    points,
                    update_filter,
                }
            }
            UpdateOp::SetPayload {
                selector,
                payload,
                key,
            } => {
                check_sel(&selector)?;
                if let Some(k) = &key {
                    JsonPath::parse(k).map_err(CollectionError::BadInput)?;
                }
                UpdateOp::SetPayload {
                    selector,
                    payload,
                    key,
                }
            }
            UpdateOp::DeletePayload { selector, keys } => {
                check_sel(&selector)?;
                for k in &keys {
                    JsonPath::parse(k).map_err(CollectionError::BadInput)?;
                }
                UpdateOp::DeletePayload { selector, keys }
            }
            UpdateOp::DeleteVectors { selector, names } => {
                check_sel(&selector)?;
                for n in &names {
                    if !store.schema().dense.contains_key(n)
                        && !store.schema().sparse.contains_key(n)
                    {
                        return Err(CollectionError::BadInput(format!(
                            "Not existing vector name error: {n}"
                        )));
                    }
                }
                UpdateOp::DeleteVectors { selector, names }
            }
            UpdateOp::Batch(ops) => UpdateOp::Batch(
                ops.into_iter()
                    .map(|o| o.prepare(store))
                    .collect::<CResult<_>>()?,
            ),
            op @ (UpdateOp::Delete(_)
            | UpdateOp::OverwritePayload { .. }
            | UpdateOp::ClearPayload(_)) => {
                match &op {
                    UpdateOp::Delete(s)
                    | UpdateOp::OverwritePayload { selector: s, .. }
                    | UpdateOp::ClearPayload(s) => check_sel(s)?,
                    _ => unreachable!("matched above"),
                }
                op
            }
        })
    }

    /// Apply to the store at log position `seq`. Errors only report what could not be
    /// applied (e.g. a missing point); everything applicable has been applied.
    pub fn apply(&self, store: &mut PointStore, seq: u64) -> CResult<()> {
        let resolve = |store: &PointStore, s: &Selector| -> CResult<(Vec<PointId>, bool)> {
            match s {
                Selector::Ids(ids) => Ok((ids.clone(), true)),
                Selector::Filter(f) => Ok((store.matching_ids(Some(&parse_filter(f)?)), false)),
            }
        };
        let mut missing: Option<PointId> = None;
        let mut note = |ok: bool, id: PointId| {
            if !ok && missing.is_none() {
                missing = Some(id);
            }
        };
        match self {
            UpdateOp::Upsert {
                points,
                update_filter,
                mode,
            } => {
                let cond = update_filter.as_ref().map(parse_filter).transpose()?;
                for p in points {
                    let exists = store.contains(p.id);
                    let allowed = match mode {
                        UpdateMode::Upsert => true,
                        UpdateMode::InsertOnly => !exists,
                        UpdateMode::UpdateOnly => exists,
                    };
                    if !allowed {
                        continue;
                    }
                    if let (Some(c), true) = (&cond, exists) {
                        let ok = store.matching_ids(Some(&Filter {
                            must: Some(vec![
                                segment::filter::Condition::HasId([p.id].into()),
                                segment::filter::Condition::Filter(Box::new(c.clone())),
                            ]),
                            ..Default::default()
                        }));
                        if ok.is_empty() {
                            continue;
                        }
                    }
                    store.upsert(
                        p.id,
                        seq,
                        &from_stored(&p.vectors),
                        p.payload.clone().unwrap_or_default(),
                    );
                }
            }
            UpdateOp::Delete(sel) => {
                let (ids, _) = resolve(store, sel)?;
                for id in ids {
                    store.delete(id);
                }
            }
            UpdateOp::SetPayload {
                selector,
                payload,
                key,
            } => {
                let key = key
                    .as_deref()
                    .map(JsonPath::parse)
                    .transpose()
                    .map_err(CollectionError::BadInput)?;
                let (ids, _) = resolve(store, selector)?;
                for id in ids {
                    note(store.set_payload(id, seq, payload, key.as_ref()), id);
                }
            }
            UpdateOp::OverwritePayload { selector, payload } => {
                let (ids, _) = resolve(store, selector)?;
                for id in ids {
                    note(store.overwrite_payload(id, seq, payload), id);
                }
            }
            UpdateOp::DeletePayload { selector, keys } => {
                let keys = keys
                    .iter()
                    .map(|k| JsonPath::parse(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(CollectionError::BadInput)?;
                let (ids, _) = resolve(store, selector)?;
                for id in ids {
                    note(store.delete_payload(id, seq, &keys), id);
                }
            }
            UpdateOp::ClearPayload(sel) => {
                let (ids, _) = resolve(store, sel)?;
                for id in ids {
                    note(store.clear_payload(id, seq), id);
                }
            }
            UpdateOp::UpdateVectors {
                points,
                update_filter,
            } => {
                let cond = update_filter.as_ref().map(parse_filter).transpose()?;
                for (id, v) in points {
                    if let Some(c) = &cond {
                        let f = Filter {
                            must: Some(vec![
                                segment::filter::Condition::HasId([*id].into()),
                                segment::filter::Condition::Filter(Box::new(c.clone())),
                            ]),
                            ..Default::default()
                        };
                        if store.contains(*id) && store.count(Some(&f)) == 0 {
                            continue;
                        }
                    }
                    note(store.update_vectors(*id, seq, &from_stored(v)), *id);
                }
            }
            UpdateOp::DeleteVectors { selector, names } => {
                let (ids, _) = resolve(store, selector)?;
                for id in ids {
                    note(store.delete_vectors(id, seq, names), id);
                }
            }
            UpdateOp::Batch(ops) => {
                let mut first_err = None;
                for op in ops {
                    if let Err(e) = op.apply(store, seq) {
                        first_err.get_or_insert(e);
                    }
                }
                if let Some(e) = first_err {
                    return Err(e);
                }
            }
        }
        match missing {
            Some(id) => Err(CollectionError::PointNotFound(id.to_string())),
            None => Ok(()),
        }
    }

    /// The part of this operation that concerns points for which `keep(id)` holds; `None` if
    /// nothing is left. Filter selectors are kept whole (each peer resolves them locally).
    pub fn retain_ids(&self, keep: &dyn Fn(PointId) -> bool) -> Option<UpdateOp> {
        self.retain_with(keep, None)
    }

    /// The part of this operation that concerns shards `shards` (of `shard_number`): id
    /// lists keep only those shards' ids, filter selectors gain a shard-scope condition.
    /// Used to forward writes to a replica being filled without touching its other shards.
    pub fn scoped(&self, shard_number: u32, shards: &[u32]) -> Option<UpdateOp> {
        let keep = |id: PointId| shards.contains(&crate::routing::shard_of(id, shard_number));
        let wrap = |f: &serde_json::Value| serde_json::json!({"must": [segment::filter::shard_scope(shard_number, shards), f]});
        self.retain_with(&keep, Some(&wrap))
    }

    /// Shards (of `shard_number`) this operation can change: those of its point ids, or all
    /// of them when it has a filter selector. Nothing but filter selectors is cloned.
    pub fn touched_shards(&self, shard_number: u32) -> Vec<u32> {
        let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let record = |id: PointId| {
            seen.borrow_mut()
                .insert(crate::routing::shard_of(id, shard_number));
            false
        };
        // with every id rejected, only filter selectors can survive
        if self.retain_with(&record, None).is_some() {
            return (0..shard_number).collect();
        }
        seen.into_inner().into_iter().collect()
    }

    /// The point ids this operation lists, and whether it also selects points by a filter
    /// (which may touch any point).
    pub fn touched_ids(&self) -> (Vec<PointId>, bool) {
        let seen = std::cell::RefCell::new(Vec::new());
        let record = |id: PointId| {
            seen.borrow_mut().push(id);
            false
        };
        // with every id rejected, only filter selectors can survive
        let by_filter = self.retain_with(&record, None).is_some();
        (seen.into_inner(), by_filter)
    }

    /// Delete every point of `shards` (of `shard_number`): drops a replica's local copy.
    pub fn delete_shards(shard_number: u32, shards: &[u32]) -> UpdateOp {
        UpdateOp::Delete(Selector::Filter(
            serde_json::json!({"must": [segment::filter::shard_scope(shard_number, shards)]}),
        ))
    }

    fn retain_with(
        &self,
        keep: &dyn Fn(PointId) -> bool,
        wrap: Option<&dyn Fn(&serde_json::Value) -> serde_json::Value>,
    ) -> Option<UpdateOp> {
        let sel = |s: &Selector| -> Option<Selector> {
            match s {
                Selector::Ids(ids) => {
                    let v: Vec<PointId> = ids.iter().copied().filter(|i| keep(*i)).collect();
                    (!v.is_empty()).then_some(Selector::Ids(v))
                }
                Selector::Filter(f) => {
                    Some(Selector::Filter(wrap.map_or_else(|| f.clone(), |w| w(f))))
                }
            }
        };
        Some(match self {
            UpdateOp::Upsert {
                points,
                update_filter,
                mode,
            } => {
                let points: Vec<PointInsert> =
                    points.iter().filter(|p| keep(p.id)).cloned().collect();
                if points.is_empty() {
                    return None;
                }
                UpdateOp::Upsert {
                    points,
                    update_filter: update_filter.clone(),
                    mode: *mode,
                }
            }
            UpdateOp::UpdateVectors {
                points,
                update_filter,
            } => {
                let points: Vec<_> = points.iter().filter(|p| keep(p.0)).cloned().collect();
                if points.is_empty() {
                    return None;
                }
                UpdateOp::UpdateVectors {
                    points,
                    update_filter: update_filter.clone(),
                }
            }
            UpdateOp::Delete(s) => UpdateOp::Delete(sel(s)?),
            UpdateOp::SetPayload {
                selector,
                payload,
                key,
            } => UpdateOp::SetPayload {
                selector: sel(selector)?,
                payload: payload.clone(),
                key: key.clone(),
            },
            UpdateOp::OverwritePayload { selector, payload } => UpdateOp::OverwritePayload {
                selector: sel(selector)?,
                payload: payload.clone(),
            },
            UpdateOp::DeletePayload { selector, keys } => UpdateOp::DeletePayload {
                selector: sel(selector)?,
                keys: keys.clone(),
            },
            UpdateOp::ClearPayload(s) => UpdateOp::ClearPayload(sel(s)?),
            UpdateOp::DeleteVectors { selector, names } => UpdateOp::DeleteVectors {
                selector: sel(selector)?,
                names: names.clone(),
            },
            UpdateOp::Batch(ops) => {
                let v: Vec<UpdateOp> = ops
                    .iter()
                    .filter_map(|o| o.retain_with(keep, wrap))
                    .collect();
                if v.is_empty() {
                    return None;
                }
                UpdateOp::Batch(v)
            }
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("operations always encode")
    }

    pub fn decode(bytes: &[u8]) -> CResult<UpdateOp> {
        rmp_serde::from_slice(bytes)
            .map_err(|e| CollectionError::Service(format!("undecodable WAL record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `touched_shards` = the shards whose `retain_ids` part is non-empty.
    #[test]
    fn touched_shards_match_per_shard_retain() {
        let ids = |v: &[u64]| Selector::Ids(v.iter().map(|i| PointId::Num(*i)).collect());
        let ops = [
            UpdateOp::Delete(ids(&[1, 2, 3])),
            UpdateOp::Delete(ids(&[])),
            UpdateOp::ClearPayload(Selector::Filter(json!({"must": []}))),
            UpdateOp::Batch(vec![
                UpdateOp::Delete(ids(&[7])),
                UpdateOp::DeleteVectors {
                    selector: ids(&[40, 41]),
                    names: vec![],
                },
            ]),
            UpdateOp::Batch(vec![
                UpdateOp::Delete(ids(&[7])),
                UpdateOp::Delete(Selector::Filter(json!({}))),
            ]),
        ];
        for n in [1, 3, 6] {
            for op in &ops {
                let per_shard: Vec<u32> = (0..n)
                    .filter(|&s| {
                        op.retain_ids(&|id| crate::routing::shard_of(id, n) == s)
                            .is_some()
                    })
                    .collect();
                assert_eq!(op.touched_shards(n), per_shard, "{op:?} over {n} shards");
            }
        }
    }

    #[test]
    fn ops_roundtrip_through_encoding() {
        let op = UpdateOp::Batch(vec![
            UpdateOp::Upsert {
                points: vec![PointInsert {
                    id: PointId::Uuid(uuid::Uuid::from_u128(7)),
                    vectors: [
                        ("".to_string(), StoredVector::Dense(vec![1.0, 2.5])),
                        (
                            "s".to_string(),
                            StoredVector::Sparse(SparseVector {
                                indices: vec![1],
                                values: vec![0.5],
                            }),
                        ),
                    ]
                    .into(),
                    payload: Some(
                        json!({"a": 1, "b": 1.0, "c": [1, "x", null, {"d": true}], "e": u64::MAX})
                            .as_object()
                            .unwrap()
                            .clone(),
                    ),
                }],
                update_filter: None,
                mode: UpdateMode::Upsert,
            },
            UpdateOp::Delete(Selector::Filter(
                json!({"must": [{"key": "a", "match": {"value": 1}}]}),
            )),
            UpdateOp::SetPayload {
                selector: Selector::Ids(vec![PointId::Num(3)]),
                payload: Payload::new(),
                key: Some("a.b".into()),
            },
        ]);
        let back = UpdateOp::decode(&op.encode()).unwrap();
        assert_eq!(back, op);
    }

    /// The metadata-only decode reads what the full decode reads, for every record kind a
    /// log can hold, and refuses what the full decode refuses.
    #[test]
    fn metadata_decodes_alone_as_in_the_whole_record() {
        let upsert = UpdateOp::Upsert {
            points: vec![PointInsert {
                id: PointId::Num(9),
                vectors: [("".to_string(), StoredVector::Dense(vec![0.25; 1536]))].into(),
                payload: Some(
                    json!({"text": "x".repeat(4096)})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
            }],
            update_filter: None,
            mode: UpdateMode::Upsert,
        };
        let metas = [
            OpMeta::default(),
            OpMeta {
                id: Some(u64::MAX),
                fill: None,
                shards: Some(vec![0, 2]),
                install: None,
            },
            OpMeta {
                id: None,
                fill: Some(3),
                shards: None,
                install: Some(InstallPart { id: 7, last: true }),
            },
        ];
        for meta in metas.clone() {
            for op in [upsert.clone(), UpdateOp::Delete(Selector::Ids(vec![]))] {
                let bytes = LoggedOp {
                    op,
                    meta: meta.clone(),
                }
                .encode();
                assert_eq!(LoggedOp::decode_meta(&bytes).unwrap(), meta);
                assert_eq!(LoggedOp::decode(&bytes).unwrap().meta, meta);
            }
        }
        // records written with `op` first (before `meta` moved ahead) read the same
        #[derive(Serialize)]
        struct OpFirst<'a> {
            op: &'a UpdateOp,
            meta: &'a OpMeta,
        }
        let meta = metas[1].clone();
        let old = rmp_serde::to_vec_named(&OpFirst {
            op: &upsert,
            meta: &meta,
        })
        .unwrap();
        assert_eq!(LoggedOp::decode_meta(&old).unwrap(), meta);
        assert_eq!(LoggedOp::decode(&old).unwrap().op, upsert);
        // with `meta` first, the operation is not read at all: a record cut right after
        // its metadata still yields it
        let whole = LoggedOp {
            op: upsert.clone(),
            meta: meta.clone(),
        }
        .encode();
        let cut = &whole[..whole.len() / 4];
        assert_eq!(LoggedOp::decode_meta(cut).unwrap(), meta);
        assert!(LoggedOp::decode(cut).is_err());
        // a bare operation (older logs) has no metadata
        assert_eq!(
            LoggedOp::decode_meta(&upsert.encode()).unwrap(),
            OpMeta::default()
        );
        assert!(LoggedOp::decode_meta(&[0xc1, 0x00]).is_err());
        assert!(LoggedOp::decode(&[0xc1, 0x00]).is_err());
    }
}
