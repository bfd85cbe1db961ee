//! Collection configuration. Persisted as `collection.json` in the shape of the API's
//! `CollectionConfig`, so it round-trips to clients unchanged.

use crate::error::{CResult, CollectionError};
use segment::store::{DenseParams, VectorSchema};
use segment::{Distance, DEFAULT_VECTOR};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Largest accepted dense vector dimension (Qdrant's limit).
pub const MAX_VECTOR_SIZE: u64 = 65536;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VectorParams {
    pub size: u64,
    pub distance: Distance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datatype: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multivector_config: Option<Value>,
}

/// `vectors`: one unnamed vector, or a map of named ones.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum VectorsConfig {
    Single(Box<VectorParams>),
    Multi(BTreeMap<String, VectorParams>),
}

impl Default for VectorsConfig {
    fn default() -> Self {
        VectorsConfig::Multi(BTreeMap::new())
    }
}

impl VectorsConfig {
    pub fn iter(&self) -> Vec<(&str, &VectorParams)> {
        match self {
            VectorsConfig::Single(p) => vec![(DEFAULT_VECTOR, p)],
            VectorsConfig::Multi(m) => m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }
    pub fn get_mut(&mut self, name: &str) -> Option<&mut VectorParams> {
        match self {
            VectorsConfig::Single(p) if name.is_empty() => Some(p),
            VectorsConfig::Single(_) => None,
            VectorsConfig::Multi(m) => m.get_mut(name),
        }
    }
}

fn d_one() -> u32 {
    1
}
fn d_true() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CollectionParams {
    #[serde(default)]
    pub vectors: VectorsConfig,
    #[serde(default = "d_one")]
    pub shard_number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding_method: Option<Value>,
    #[serde(default = "d_one")]
    pub replication_factor: u32,
    #[serde(default = "d_one", alias = "write_concern_factor")]
    pub write_consistency_factor: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_fan_out_factor: Option<u32>,
    #[serde(default = "d_true")]
    pub on_disk_payload: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_vectors: Option<BTreeMap<String, Value>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HnswConfig {
    pub m: u64,
    pub ef_construct: u64,
    pub full_scan_threshold: u64,
    #[serde(default)]
    pub max_indexing_threads: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_m: Option<u64>,
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig {
            m: 16,
            ef_construct: 100,
            full_scan_threshold: 10000,
            max_indexing_threads: 0,
            on_disk: Some(false),
            payload_m: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OptimizersConfig {
    pub deleted_threshold: f64,
    pub vacuum_min_vector_number: u64,
    pub default_segment_number: u64,
    pub max_segment_size: Option<u64>,
    pub memmap_threshold: Option<u64>,
    pub indexing_threshold: Option<u64>,
    pub flush_interval_sec: u64,
    pub max_optimization_threads: Option<u64>,
}

impl Default for OptimizersConfig {
    fn default() -> Self {
        OptimizersConfig {
            deleted_threshold: 0.2,
            vacuum_min_vector_number: 1000,
            default_segment_number: 0,
            max_segment_size: None,
            memmap_threshold: None,
            indexing_threshold: Some(10000),
            flush_interval_sec: 5,
            max_optimization_threads: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WalConfig {
    pub wal_capacity_mb: u64,
    pub wal_segments_ahead: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            wal_capacity_mb: 32,
            wal_segments_ahead: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CollectionConfig {
    pub params: CollectionParams,
    pub hnsw_config: HnswConfig,
    pub optimizer_config: OptimizersConfig,
    pub wal_config: WalConfig,
    #[serde(default)]
    pub quantization_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_mode_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Body of `PUT /collections/{name}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    #[serde(default)]
    pub vectors: Option<VectorsConfig>,
    pub shard_number: Option<u32>,
    pub sharding_method: Option<Value>,
    pub replication_factor: Option<u32>,
    #[serde(alias = "write_concern_factor")]
    pub write_consistency_factor: Option<u32>,
    pub on_disk_payload: Option<bool>,
    pub hnsw_config: Option<Value>,
    pub wal_config: Option<Value>,
    pub optimizers_config: Option<Value>,
    pub quantization_config: Option<Value>,
    pub sparse_vectors: Option<BTreeMap<String, Value>>,
    pub strict_mode_config: Option<Value>,
    pub metadata: Option<Value>,
    /// Accepted and ignored (deprecated in Qdrant).
    pub init_from: Option<Value>,
}

/// The int8 settings of a `quantization_config`: `Some` for `{"scalar": {"type": "int8",
/// "quantile"?, "always_ram"?}}`, `None` for the other kinds (product, binary: accepted and
/// reported back, vectors stay unquantized), an error for a malformed scalar config.
pub fn scalar_config(q: &Value) -> CResult<Option<segment::store::ScalarConfig>> {
    let bad = |m: &str| CollectionError::Validation(format!("quantization_config.scalar: {m}"));
    let Some(s) = q.get("scalar") else {
        return Ok(None);
    };
    let Value::Object(s) = s else {
        return Err(bad("must be an object"));
    };
    match s.get("type").and_then(Value::as_str) {
        Some("int8") => {}
        _ => return Err(bad("type must be \"int8\"")),
    }
    let quantile = match s.get("quantile") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(x) if (0.5..=1.0).contains(&x) => Some(x as f32),
            _ => return Err(bad("quantile must be a number in [0.5, 1.0]")),
        },
    };
    match s.get("always_ram") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        _ => return Err(bad("always_ram must be a boolean")),
    }
    Ok(Some(segment::store::ScalarConfig { quantile }))
}

/// Merge a JSON object patch into a typed config (keys present in the patch win).
pub fn merge_into<T: Serialize + serde::de::DeserializeOwned>(
    base: &T,
    patch: &Value,
    what: &str,
) -> CResult<T> {
    let mut v = serde_json::to_value(base).map_err(|e| CollectionError::Service(e.to_string()))?;
    let (Value::Object(dst), Value::Object(src)) = (&mut v, patch) else {
        return Err(CollectionError::BadInput(format!(
            "{what} must be an object"
        )));
    };
    for (k, val) in src {
        if !dst.contains_key(k) && !is_known_optional(what, k) {
            return Err(CollectionError::BadInput(format!(
                "unknown field `{k}` in {what}"
            )));
        }
        dst.insert(k.clone(), val.clone());
    }
    serde_json::from_value(v).map_err(|e| CollectionError::BadInput(format!("{what}: {e}")))
}

/// `base` (an object, or nothing yet) with the members of the object `patch` set; a member
/// patched to `null` is removed.
fn merge_object(base: Option<Value>, patch: &Value, what: &str) -> CResult<Value> {
    let Value::Object(p) = patch else {
        return Err(CollectionError::BadInput(format!(
            "{what} must be an object"
        )));
    };
    let mut base = match base {
        Some(Value::Object(b)) => b,
        _ => Default::default(),
    };
    for (k, v) in p {
        if v.is_null() {
            base.remove(k);
        } else {
            base.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(base))
}

fn is_known_optional(what: &str, k: &str) -> bool {
    match what {
        "hnsw_config" => matches!(k, "on_disk" | "payload_m" | "inline_storage"),
        "optimizers_config" => matches!(
            k,
            "max_segment_size"
                | "memmap_threshold"
                | "indexing_threshold"
                | "max_optimization_threads"
                | "prevent_unoptimized"
        ),
        "wal_config" => matches!(k, "wal_retain_closed"),
        "params" => matches!(
            k,
            "read_fan_out_factor" | "read_fan_out_delay_ms" | "sharding_method"
        ),
        _ => false,
    }
}

fn validate_vector_params(name: &str, p: &VectorParams) -> CResult<()> {
    if p.size == 0 || p.size > MAX_VECTOR_SIZE {
        return Err(CollectionError::Validation(format!(
            "vectors{}.size: value {} invalid, must be from 1 to {MAX_VECTOR_SIZE}",
            if name.is_empty() {
                String::new()
            } else {
                format!(".{name}")
            },
            p.size
        )));
    }
    if p.multivector_config.is_some() {
        return Err(CollectionError::Unsupported("multivector_config".into()));
    }
    if let Some(dt) = &p.datatype {
        if dt.as_str() != Some("float32") {
            return Err(CollectionError::Unsupported(format!(
                "vector datatype {dt}"
            )));
        }
    }
    Ok(())
}

/// Node-wide defaults for new collections (from the `storage` config section).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectionDefaults {
    pub on_disk_payload: bool,
    pub hnsw: HnswConfig,
    pub optimizers: OptimizersConfig,
    pub wal: WalConfig,
}

impl CreateCollection {
    /// Build a full config from the request and node defaults, validating every value.
    pub fn into_config(self, defaults: &CollectionDefaults) -> CResult<CollectionConfig> {
        let vectors = self.vectors.unwrap_or_default();
        for (n, p) in vectors.iter() {
            validate_vector_params(n, p)?;
        }
        if let Some(sv) = &self.sparse_vectors {
            for (n, v) in sv {
                if let Some(Value::Object(m)) = Some(v) {
                    let _ = m;
                } else if !v.is_null() {
                    return Err(CollectionError::BadInput(format!(
                        "sparse_vectors.{n} must be an object"
                    )));
                }
                if let VectorsConfig::Multi(m) = &vectors {
                    if m.contains_key(n) {
                        return Err(CollectionError::BadInput(format!(
                            "vector name `{n}` is used by both a dense and a sparse vector"
                        )));
                    }
                }
            }
        }
        let nonzero = |v: Option<u32>, what: &str| -> CResult<u32> {
            match v {
                Some(0) => Err(CollectionError::Validation(format!(
                    "{what}: value 0 invalid, must be 1 or more"
                ))),
                Some(x) => Ok(x),
                None => Ok(1),
            }
        };
        let params = CollectionParams {
            vectors,
            shard_number: nonzero(self.shard_number, "shard_number")?,
            sharding_method: self.sharding_method,
            replication_factor: nonzero(self.replication_factor, "replication_factor")?,
            write_consistency_factor: nonzero(
                self.write_consistency_factor,
                "write_consistency_factor",
            )?,
            read_fan_out_factor: None,
            on_disk_payload: self.on_disk_payload.unwrap_or(defaults.on_disk_payload),
            sparse_vectors: self.sparse_vectors.map(|m| {
                m.into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            if v.is_null() {
                                Value::Object(Default::default())
                            } else {
                                v
                            },
                        )
                    })
                    .collect()
            }),
        };
        let mut cfg = CollectionConfig {
            params,
            hnsw_config: defaults.hnsw.clone(),
            optimizer_config: defaults.optimizers.clone(),
            wal_config: defaults.wal.clone(),
            quantization_config: self.quantization_config.filter(|v| !v.is_null()),
            strict_mode_config: self.strict_mode_config.filter(|v| !v.is_null()),
            metadata: self.metadata.filter(|v| !v.is_null()),
        };
        if let Some(h) = self.hnsw_config.filter(|v| !v.is_null()) {
            cfg.hnsw_config = merge_into(&cfg.hnsw_config, &h, "hnsw_config")?;
        }
        if let Some(o) = self.optimizers_config.filter(|v| !v.is_null()) {
            cfg.optimizer_config = merge_into(&cfg.optimizer_config, &o, "optimizers_config")?;
        }
        if let Some(w) = self.wal_config.filter(|v| !v.is_null()) {
            cfg.wal_config = merge_into(&cfg.wal_config, &w, "wal_config")?;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

impl CollectionConfig {
    pub fn validate(&self) -> CResult<()> {
        if self.wal_config.wal_capacity_mb == 0 {
            return Err(CollectionError::Validation(
                "wal_config.wal_capacity_mb: value 0 invalid, must be 1 or more".into(),
            ));
        }
        if self.hnsw_config.m > 10_000 || self.hnsw_config.ef_construct == 0 {
            return Err(CollectionError::Validation(
                "hnsw_config: ef_construct must be 4 or more and m at most 10000".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.optimizer_config.deleted_threshold) {
            return Err(CollectionError::Validation(
                "optimizers_config.deleted_threshold must be between 0 and 1".into(),
            ));
        }
        if let Some(q) = &self.quantization_config {
            scalar_config(q)?;
        }
        for (_, p) in self.params.vectors.iter() {
            if let Some(q) = &p.quantization_config {
                scalar_config(q)?;
            }
        }
        Ok(())
    }

    pub fn vector_schema(&self) -> VectorSchema {
        let mut s = VectorSchema::default();
        for (n, p) in self.params.vectors.iter() {
            let quant = p
                .quantization_config
                .as_ref()
                .or(self.quantization_config.as_ref());
            s.dense.insert(
                n.to_string(),
                DenseParams {
                    size: p.size as usize,
                    distance: p.distance,
                    on_disk: p.on_disk.unwrap_or(false),
                    quantization: quant.and_then(|q| scalar_config(q).ok().flatten()),
                },
            );
        }
        if let Some(sv) = &self.params.sparse_vectors {
            for (n, p) in sv {
                let idf = p.get("modifier").and_then(Value::as_str) == Some("idf");
                s.sparse
                    .insert(n.clone(), segment::store::SparseParams { idf });
            }
        }
        s
    }

    /// Apply a `PATCH /collections/{name}` body.
    pub fn apply_update(&self, patch: &Value) -> CResult<CollectionConfig> {
        let Value::Object(m) = patch else {
            return Err(CollectionError::BadInput(
                "update body must be an object".into(),
            ));
        };
        let mut cfg = self.clone();
        for (k, v) in m {
            if v.is_null() {
                continue;
            }
            match k.as_str() {
                "optimizers_config" => {
                    cfg.optimizer_config =
                        merge_into(&cfg.optimizer_config, v, "optimizers_config")?
                }
                "hnsw_config" => cfg.hnsw_config = merge_into(&cfg.hnsw_config, v, "hnsw_config")?,
                "quantization_config" => {
                    cfg.quantization_config = if v == "Disabled" {
                        None
                    } else {
                        Some(v.clone())
                    }
                }
                // merged into the stored settings: a patch names only what it changes
                "strict_mode_config" => {
                    cfg.strict_mode_config =
                        Some(merge_object(cfg.strict_mode_config.take(), v, k)?)
                }
                // merged key by key (a key patched to `null` is deleted)
                "metadata" => cfg.metadata = Some(merge_object(cfg.metadata.take(), v, k)?),
                "params" => {
                    let Value::Object(pm) = v else {
                        return Err(CollectionError::BadInput("params must be an object".into()));
                    };
                    for (pk, pv) in pm {
                        match pk.as_str() {
                            "replication_factor"
                            | "write_consistency_factor"
                            | "write_concern_factor"
                            | "read_fan_out_factor" => {
                                let n = pv
                                    .as_u64()
                                    .filter(|n| *n >= 1 && *n <= u32::MAX as u64)
                                    .ok_or_else(|| {
                                        CollectionError::Validation(format!(
                                            "params.{pk} must be an integer of 1 or more"
                                        ))
                                    })? as u32;
                                match pk.as_str() {
                                    "replication_factor" => cfg.params.replication_factor = n,
                                    "read_fan_out_factor" => {
                                        cfg.params.read_fan_out_factor = Some(n)
                                    }
                                    _ => cfg.params.write_consistency_factor = n,
                                }
                            }
                            "on_disk_payload" => {
                                cfg.params.on_disk_payload = pv.as_bool().ok_or_else(|| {
                                    CollectionError::BadInput(
                                        "params.on_disk_payload must be a bool".into(),
                                    )
                                })?
                            }
                            "read_fan_out_delay_ms" => {}
                            other => {
                                return Err(CollectionError::BadInput(format!(
                                    "unknown field `{other}` in params"
                                )))
                            }
                        }
                    }
                }
                "vectors" => {
                    let Value::Object(vm) = v else {
                        return Err(CollectionError::BadInput(
                            "vectors must be an object".into(),
                        ));
                    };
                    for (name, diff) in vm {
                        let p = cfg.params.vectors.get_mut(name).ok_or_else(|| {
                            CollectionError::BadInput(format!(
                                "Not existing vector name error: {name}"
                            ))
                        })?;
                        let Value::Object(dm) = diff else {
                            return Err(CollectionError::BadInput(format!(
                                "vectors.{name} must be an object"
                            )));
                        };
                        for (dk, dv) in dm {
                            match dk.as_str() {
                                "on_disk" => p.on_disk = dv.as_bool(),
                                "hnsw_config" => p.hnsw_config = Some(dv.clone()),
                                "quantization_config" => p.quantization_config = Some(dv.clone()),
                                other => {
                                    return Err(CollectionError::BadInput(format!(
                                        "unknown field `{other}` in vectors.{name}"
                                    )))
                                }
                            }
                        }
                    }
                }
                "sparse_vectors" => {
                    let Value::Object(sm) = v else {
                        return Err(CollectionError::BadInput(
                            "sparse_vectors must be an object".into(),
                        ));
                    };
                    let existing = cfg
                        .params
                        .sparse_vectors
                        .get_or_insert_with(Default::default);
                    for (name, sv) in sm {
                        let e = existing.get_mut(name).ok_or_else(|| {
                            CollectionError::BadInput(format!(
                                "Not existing vector name error: {name}"
                            ))
                        })?;
                        if let (Value::Object(dst), Value::Object(src)) = (e, sv) {
                            for (kk, vv) in src {
                                dst.insert(kk.clone(), vv.clone());
                            }
                        }
                    }
                }
                other => {
                    return Err(CollectionError::BadInput(format!(
                        "unknown field `{other}` in collection update"
                    )))
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(v: Value) -> CResult<CollectionConfig> {
        serde_json::from_value::<CreateCollection>(v)
            .map_err(|e| CollectionError::BadInput(e.to_string()))?
            .into_config(&CollectionDefaults {
                on_disk_payload: true,
                ..Default::default()
            })
    }

    #[test]
    fn unnamed_named_and_alias() {
        let c = create(
            json!({"vectors": {"size": 4, "distance": "Cosine"}, "write_concern_factor": 2}),
        )
        .unwrap();
        assert_eq!(c.params.write_consistency_factor, 2);
        assert!(matches!(c.params.vectors, VectorsConfig::Single(_)));
        let c = create(json!({"vectors": {"a": {"size": 2, "distance": "Dot"}, "b": {"size": 3, "distance": "Euclid"}}, "sparse_vectors": {"s": {}}})).unwrap();
        assert_eq!(c.vector_schema().dense.len(), 2);
        assert_eq!(c.vector_schema().sparse.len(), 1);
        let out = serde_json::to_value(&c.params).unwrap();
        assert_eq!(out["write_consistency_factor"], 1);
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(create(json!({"vectors": {"size": 0, "distance": "Cosine"}})).is_err());
        assert!(create(json!({"vectors": {"size": 4, "distance": "Nope"}})).is_err());
        assert!(
            create(json!({"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 0})).is_err()
        );
        assert!(create(
            json!({"vectors": {"size": 4, "distance": "Dot"}, "hnsw_config": {"mm": 3}})
        )
        .is_err());
        assert!(create(json!({"vectorz": {}})).is_err());
    }

    #[test]
    fn patch_updates_fields() {
        let c = create(json!({"vectors": {"size": 4, "distance": "Cosine"}})).unwrap();
        let u = c.apply_update(&json!({"optimizers_config": {"indexing_threshold": 500}, "params": {"replication_factor": 2}, "vectors": {"": {"on_disk": true}}})).unwrap();
        assert_eq!(u.optimizer_config.indexing_threshold, Some(500));
        assert_eq!(u.params.replication_factor, 2);
        assert!(c
            .apply_update(&json!({"vectors": {"x": {"on_disk": true}}}))
            .is_err());
    }

    #[test]
    fn patch_merges_metadata_and_strict_mode() {
        let c = create(json!({
            "vectors": {"size": 4, "distance": "Cosine"},
            "metadata": {"a": 1, "b": 2},
            "strict_mode_config": {"enabled": true, "search_max_hnsw_ef": 100},
        }))
        .unwrap();
        let u = c
            .apply_update(&json!({
                "metadata": {"a": null, "c": 3},
                "strict_mode_config": {"max_query_limit": 10},
            }))
            .unwrap();
        assert_eq!(u.metadata, Some(json!({"b": 2, "c": 3})));
        assert_eq!(
            u.strict_mode_config,
            Some(json!({"enabled": true, "search_max_hnsw_ef": 100, "max_query_limit": 10}))
        );
    }
}
