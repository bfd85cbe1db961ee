//! Wire types: Qdrant's REST request/response shapes and their conversion into engine types.

use crate::envelope::ApiError;
use collection::operations::{PointInsert, Selector, StoredVectors, UpdateMode, UpdateOp};
use collection::query::{
    OrderBySpec, QueryInput, QuerySpec, RecoStrategy, RequestParams, ScoredPoint, VectorInput,
    WithPayload, WithVector,
};
use segment::filter::Filter;
use segment::json_path::JsonPath;
use segment::store::NamedVectors;
use segment::{Payload, PointId, SparseVector, Vector, DEFAULT_VECTOR};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

type WResult<T> = Result<T, ApiError>;

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::format(m.into())
}

// ------------------------------------------------------------------ query-string params

#[derive(Debug, Default, Deserialize)]
pub struct WriteParams {
    pub wait: Option<String>,
    pub ordering: Option<String>,
    pub timeout: Option<String>,
}

pub use distributed::write::Ordering;

impl WriteParams {
    pub fn ordering(&self) -> WResult<Ordering> {
        match self.ordering.as_deref() {
            None | Some("weak") => Ok(Ordering::Weak),
            Some("medium") => Ok(Ordering::Medium),
            Some("strong") => Ok(Ordering::Strong),
            Some(o) => Err(ApiError::bad_request(format!("Query string error: unknown ordering `{o}`, expected one of `weak`, `medium`, `strong`"))),
        }
    }

    pub fn wait(&self) -> WResult<bool> {
        if let Some(o) = &self.ordering {
            if !matches!(o.as_str(), "weak" | "medium" | "strong") {
                return Err(ApiError::bad_request(format!("Query string error: unknown ordering `{o}`, expected one of `weak`, `medium`, `strong`")));
            }
        }
        parse_bool(self.wait.as_deref(), "wait")
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ReadParams {
    pub consistency: Option<String>,
    pub timeout: Option<String>,
}

pub fn parse_bool(v: Option<&str>, name: &str) -> WResult<bool> {
    match v {
        None => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(x) => Err(ApiError::bad_request(format!(
            "Query string error: `{name}` must be true or false, got `{x}`"
        ))),
    }
}

// ------------------------------------------------------------------ ids, vectors, filters

pub fn point_id(v: &Value) -> WResult<PointId> {
    serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))
}

pub fn opt_filter(v: Option<&Value>) -> WResult<Option<Filter>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(f) => Filter::from_json(f).map(Some).map_err(bad),
    }
}

fn f32s(v: &Value, what: &str) -> WResult<Vec<f32>> {
    let a = v
        .as_array()
        .ok_or_else(|| bad(format!("{what} must be a list of numbers")))?;
    a.iter()
        .map(|x| {
            let f = x
                .as_f64()
                .ok_or_else(|| bad(format!("{what} must be a list of numbers, found {x}")))?;
            let g = f as f32;
            if !g.is_finite() {
                return Err(ApiError::bad_request(format!(
                    "Wrong input: {what} contains a value that is not a finite 32-bit float: {f}"
                )));
            }
            Ok(g)
        })
        .collect()
}

fn sparse(v: &Map<String, Value>) -> WResult<SparseVector> {
    let idx = v
        .get("indices")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("sparse vector needs `indices`"))?;
    let indices = idx
        .iter()
        .map(|x| {
            x.as_u64()
                .filter(|i| *i <= u32::MAX as u64)
                .map(|i| i as u32)
                .ok_or_else(|| {
                    bad(format!(
                        "sparse vector indices must be unsigned 32-bit integers, found {x}"
                    ))
                })
        })
        .collect::<WResult<Vec<_>>>()?;
    let values = f32s(
        v.get("values")
            .ok_or_else(|| bad("sparse vector needs `values`"))?,
        "sparse vector values",
    )?;
    SparseVector { indices, values }
        .normalized()
        .map_err(|e| ApiError::bad_request(format!("Wrong input: {e}")))
}

/// One vector value: dense list or sparse object. Multi-vectors and inference objects are refused.
pub fn vector(v: &Value) -> WResult<Vector> {
    match v {
        Value::Array(a) if a.first().is_some_and(Value::is_array) => Err(ApiError::bad_request(
            "Wrong input: multi-vectors are not supported by Sextant yet",
        )),
        Value::Array(_) => Ok(Vector::Dense(f32s(v, "vector")?)),
        Value::Object(m) if m.contains_key("indices") => Ok(Vector::Sparse(sparse(m)?)),
        Value::Object(m)
            if m.contains_key("text") || m.contains_key("image") || m.contains_key("object") =>
        {
            Err(ApiError::bad_request(
                "Wrong input: inference (documents, images, objects) is not supported by Sextant",
            ))
        }
        _ => Err(bad(format!(
            "expected a vector (list of numbers or sparse vector), found {}",
            short(v)
        ))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// A point's vectors: a dense list (the unnamed vector) or a map of named vectors.
pub fn vector_struct(v: &Value) -> WResult<StoredVectors> {
    let named: NamedVectors = match v {
        Value::Array(_) => [(DEFAULT_VECTOR.to_string(), vector(v)?)].into(),
        Value::Object(m) if !m.contains_key("indices") => m
            .iter()
            .map(|(k, x)| Ok((k.clone(), vector(x)?)))
            .collect::<WResult<_>>()?,
        _ => {
            return Err(bad(format!(
                "expected a vector or a map of named vectors, found {}",
                short(v)
            )))
        }
    };
    Ok(collection::operations::to_stored(named))
}

fn payload_obj(v: Option<&Value>) -> WResult<Option<Payload>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(x) => Err(bad(format!(
            "payload must be an object, found {}",
            short(x)
        ))),
    }
}

fn obj<'a>(v: &'a Value, what: &str) -> WResult<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| bad(format!("{what} must be an object")))
}

/// Refuse fields not in `allowed` (Qdrant-shaped 400 naming the field).
fn known_fields(m: &Map<String, Value>, allowed: &[&str], what: &str) -> WResult<()> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown field `{k}` in {what}, expected one of {}",
                allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

fn ids_list(v: &Value) -> WResult<Vec<PointId>> {
    v.as_array()
        .ok_or_else(|| bad("`points` must be a list of point ids"))?
        .iter()
        .map(point_id)
        .collect()
}

/// `PointsSelector`: `{"points": [...]}` or `{"filter": {...}}`.
pub fn selector(m: &Map<String, Value>) -> WResult<Selector> {
    if let Some(p) = m.get("points").filter(|v| !v.is_null()) {
        return Ok(Selector::Ids(ids_list(p)?));
    }
    if let Some(f) = m.get("filter").filter(|v| !v.is_null()) {
        Filter::from_json(f).map_err(bad)?;
        return Ok(Selector::Filter(f.clone()));
    }
    Err(ApiError::validation(
        "either `points` or `filter` must be given",
    ))
}

// ------------------------------------------------------------------ update operations

pub fn upsert_op(v: &Value) -> WResult<UpdateOp> {
    let m = obj(v, "request body")?;
    known_fields(
        m,
        &[
            "points",
            "batch",
            "shard_key",
            "update_filter",
            "update_mode",
        ],
        "upsert request",
    )?;
    let update_filter = match m.get("update_filter").filter(|v| !v.is_null()) {
        Some(f) => {
            Filter::from_json(f).map_err(bad)?;
            Some(f.clone())
        }
        None => None,
    };
    let mode = match m.get("update_mode").and_then(Value::as_str) {
        None | Some("upsert") => UpdateMode::Upsert,
        Some("insert_only") => UpdateMode::InsertOnly,
        Some("update_only") => UpdateMode::UpdateOnly,
        Some(x) => return Err(bad(format!("unknown update_mode `{x}`"))),
    };
    let mut points = Vec::new();
    if let Some(list) = m.get("points") {
        let list = list
            .as_array()
            .ok_or_else(|| bad("`points` must be a list"))?;
        for p in list {
            let pm = obj(p, "point")?;
            known_fields(pm, &["id", "vector", "payload"], "point")?;
            let id = point_id(pm.get("id").ok_or_else(|| bad("missing field `id`"))?)?;
            let vectors = vector_struct(
                pm.get("vector")
                    .ok_or_else(|| bad("missing field `vector`"))?,
            )?;
            points.push(PointInsert {
                id,
                vectors,
                payload: payload_obj(pm.get("payload"))?,
            });
        }
    } else if let Some(b) = m.get("batch") {
        let bm = obj(b, "batch")?;
        known_fields(bm, &["ids", "vectors", "payloads"], "batch")?;
        let ids = ids_list(bm.get("ids").ok_or_else(|| bad("missing field `ids`"))?)?;
        let n = ids.len();
        let vecs = bm
            .get("vectors")
            .ok_or_else(|| bad("missing field `vectors`"))?;
        let mut per_point: Vec<StoredVectors> = vec![StoredVectors::new(); n];
        match vecs {
            Value::Array(rows) => {
                if rows.len() != n {
                    return Err(ApiError::bad_request(format!(
                        "Wrong input: number of ids ({n}) and vectors ({}) differ",
                        rows.len()
                    )));
                }
                for (i, r) in rows.iter().enumerate() {
                    per_point[i] = vector_struct(r)?;
                }
            }
            Value::Object(named) => {
                for (name, rows) in named {
                    let rows = rows
                        .as_array()
                        .ok_or_else(|| bad(format!("batch vectors `{name}` must be a list")))?;
                    if rows.len() != n {
                        return Err(ApiError::bad_request(format!(
                            "Wrong input: number of ids ({n}) and vectors `{name}` ({}) differ",
                            rows.len()
                        )));
                    }
                    for (i, r) in rows.iter().enumerate() {
                        let v =
                            collection::operations::to_stored([(name.clone(), vector(r)?)].into());
                        per_point[i].extend(v);
                    }
                }
            }
            _ => return Err(bad("batch `vectors` must be a list or a map of lists")),
        }
        let payloads: Vec<Option<Payload>> = match bm.get("payloads") {
            None | Some(Value::Null) => vec![None; n],
            Some(Value::Array(ps)) => {
                if ps.len() != n {
                    return Err(ApiError::bad_request(format!(
                        "Wrong input: number of ids ({n}) and payloads ({}) differ",
                        ps.len()
                    )));
                }
                ps.iter()
                    .map(|p| payload_obj(Some(p)))
                    .collect::<WResult<_>>()?
            }
            Some(_) => return Err(bad("batch `payloads` must be a list")),
        };
        for ((id, vectors), payload) in ids.into_iter().zip(per_point).zip(payloads) {
            points.push(PointInsert {
                id,
                vectors,
                payload,
            });
        }
    } else {
        return Err(bad("expected `points` or `batch`"));
    }
    Ok(UpdateOp::Upsert {
        points,
        update_filter,
        mode,
    })
}

pub fn delete_op(v: &Value) -> WResult<UpdateOp> {
    let m = obj(v, "request body")?;
    known_fields(m, &["points", "filter", "shard_key"], "delete request")?;
    Ok(UpdateOp::Delete(selector(m)?))
}

pub fn set_payload_op(v: &Value, overwrite: bool) -> WResult<UpdateOp> {
    let m = obj(v, "request body")?;
    known_fields(
        m,
        &["payload", "points", "filter", "shard_key", "key"],
        "set payload request",
    )?;
    let payload = payload_obj(m.get("payload"))?.ok_or_else(|| bad("missing field `payload`"))?;
    let sel = selector(m)?;
    let key = match m.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("`key` must be a string")),
    };
    if overwrite {
        Ok(UpdateOp::OverwritePayload {
            selector: sel,
            payload,
        })
    } else {
        Ok(UpdateOp::SetPayload {
            selector: sel,
            payload,
            key,
        })
    }
}

pub fn delete_payload_op(v: &Value) -> WResult<UpdateOp> {
    let m = obj(v, "request body")?;
    known_fields(
        m,
        &["keys", "points", "filter", "shard_key"],
        "delete payload request",
    )?;
    let keys = m
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing field `keys`"))?
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("`keys` must be strings"))
        })
        .collect::<WResult<Vec<_>>>()?;
    Ok(UpdateOp::DeletePayload {
        selector: selector(m)?,
        keys,
    })
}

pub fn clear_payload_op(v: &Value) -> WResult<UpdateOp> {
    let m = obj(v, "request body")?;
    known_fields(
        m,
        &["points", "filter", "shard_key"],
        "clear payload request",
    )?;
    Ok(UpdateOp::ClearPayload(selector(m)?))
}

pub fn update_vectors_op(v: &Value) -> WResult<UpdateOp> {
    let m = obj(v, "request body")?;
    known_fields(
        m,
        &["points", "shard_key", "update_filter"],
        "update vectors request",
    )?;
    let pts = m
        .get("points")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing field `points`"))?;
    let points = pts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let pm = obj(p, "point")?;
            let vectors = vector_struct(
                pm.get("vector")
                    .or_else(|| pm.get("vectors"))
                    .ok_or_else(|| bad("missing field `vector`"))?,
            )?;
            if vectors.is_empty() {
                return Err(ApiError::validation(format!(
                    "[points[{i}].vector: must specify vectors to update for point]"
                )));
            }
            Ok((
                point_id(pm.get("id").ok_or_else(|| bad("missing field `id`"))?)?,
                vectors,
            ))
        })
        .collect::<WResult<Vec<_>>>()?;
    let update_filter = match m.get("update_filter").filter(|v| !v.is_null()) {
        Some(f) => {
            Filter::from_json(f).map_err(bad)?;
            Some(f.clone())
        }
        None => None,
    };
    Ok(UpdateOp::UpdateVectors {
        points,
        update_filter,
    })
}

pub fn delete_vectors_op(v: &Value) -> WResult<UpdateOp> {
    let m = obj(v, "request body")?;
    known_fields(
        m,
        &["points", "filter", "vector", "shard_key"],
        "delete vectors request",
    )?;
    let names = m
        .get("vector")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing field `vector` (list of vector names)"))?
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("`vector` must be a list of names"))
        })
        .collect::<WResult<Vec<_>>>()?;
    Ok(UpdateOp::DeleteVectors {
        selector: selector(m)?,
        names,
    })
}

/// `POST /points/batch` operations, logged as one atomic record.
pub fn batch_ops(v: &Value) -> WResult<Vec<UpdateOp>> {
    let m = obj(v, "request body")?;
    known_fields(m, &["operations"], "batch request")?;
    let ops = m
        .get("operations")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing field `operations`"))?;
    ops.iter()
        .map(|o| {
            let om = obj(o, "operation")?;
            if om.len() != 1 {
                return Err(bad("each operation must have exactly one kind"));
            }
            let (k, body) = om.iter().next().expect("one entry");
            match k.as_str() {
                "upsert" => upsert_op(body),
                "delete" => delete_op(body),
                "set_payload" => set_payload_op(body, false),
                "overwrite_payload" => set_payload_op(body, true),
                "delete_payload" => delete_payload_op(body),
                "clear_payload" => clear_payload_op(body),
                "update_vectors" => update_vectors_op(body),
                "delete_vectors" => delete_vectors_op(body),
                other => Err(bad(format!("unknown operation `{other}`"))),
            }
        })
        .collect()
}

// ------------------------------------------------------------------ selectors

pub fn with_payload(v: Option<&Value>, default: bool) -> WResult<WithPayload> {
    let paths = |a: &Value| -> WResult<Vec<JsonPath>> {
        let list = match a {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(l) => l.clone(),
            _ => return Err(bad("payload selector keys must be a list of strings")),
        };
        list.iter()
            .map(|s| {
                s.as_str()
                    .ok_or_else(|| bad("payload selector keys must be strings"))
                    .and_then(|s| JsonPath::parse(s).map_err(bad))
            })
            .collect()
    };
    Ok(match v {
        None | Some(Value::Null) => {
            if default {
                WithPayload::All
            } else {
                WithPayload::None
            }
        }
        Some(Value::Bool(true)) => WithPayload::All,
        Some(Value::Bool(false)) => WithPayload::None,
        Some(a @ Value::Array(_)) => WithPayload::Include(paths(a)?),
        Some(Value::Object(m)) => {
            if let Some(i) = m.get("include") {
                WithPayload::Include(paths(i)?)
            } else if let Some(e) = m.get("exclude") {
                WithPayload::Exclude(paths(e)?)
            } else {
                return Err(bad("payload selector must have `include` or `exclude`"));
            }
        }
        Some(x) => return Err(bad(format!("invalid with_payload: {}", short(x)))),
    })
}

pub fn with_vector(v: Option<&Value>) -> WResult<WithVector> {
    Ok(match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => WithVector::None,
        Some(Value::Bool(true)) => WithVector::All,
        Some(Value::Array(a)) => WithVector::Names(
            a.iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("with_vector names must be strings"))
                })
                .collect::<WResult<_>>()?,
        ),
        Some(x) => Err(bad(format!("invalid with_vector: {}", short(x))))?,
    })
}

/// `with_vector` and its alias `with_vectors`.
pub fn with_vector_of(m: &Map<String, Value>) -> WResult<WithVector> {
    with_vector(m.get("with_vector").or_else(|| m.get("with_vectors")))
}

// ------------------------------------------------------------------ search inputs

pub fn usize_field(m: &Map<String, Value>, k: &str, default: usize) -> WResult<usize> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| bad(format!("`{k}` must be a non-negative integer, found {v}"))),
    }
}

/// `limit`: at least 1 (422 otherwise, as in Qdrant).
pub fn limit_field(m: &Map<String, Value>, default: usize) -> WResult<usize> {
    let l = usize_field(m, "limit", default)?;
    if l == 0 {
        return Err(ApiError::validation(
            "limit: value 0 invalid, must be 1 or more",
        ));
    }
    Ok(l)
}

pub fn f32_field(m: &Map<String, Value>, k: &str) -> WResult<Option<f32>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| Some(x as f32))
            .ok_or_else(|| bad(format!("`{k}` must be a number"))),
    }
}

pub fn str_field(m: &Map<String, Value>, k: &str) -> WResult<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(format!("`{k}` must be a string, found {v}"))),
    }
}

/// Parse search `params` (hnsw_ef, exact, indexed_only; quantization and acorn accepted).
pub fn request_params(m: &Map<String, Value>) -> WResult<RequestParams> {
    let mut out = RequestParams::default();
    if let Some(p) = m.get("params").filter(|v| !v.is_null()) {
        let pm = obj(p, "params")?;
        known_fields(
            pm,
            &["hnsw_ef", "exact", "quantization", "indexed_only", "acorn"],
            "search params",
        )?;
        if let Some(ef) = pm.get("hnsw_ef").filter(|v| !v.is_null()) {
            let ef = ef
                .as_u64()
                .ok_or_else(|| bad("`hnsw_ef` must be a non-negative integer"))?;
            out.hnsw_ef = Some(ef.min(100_000) as usize);
        }
        for (k, slot) in [
            ("exact", &mut out.exact),
            ("indexed_only", &mut out.indexed_only),
        ] {
            if let Some(v) = pm.get(k).filter(|v| !v.is_null()) {
                *slot = v
                    .as_bool()
                    .ok_or_else(|| bad(format!("`{k}` must be a bool")))?;
            }
        }
        if let Some(q) = pm.get("quantization").filter(|v| !v.is_null()) {
            let qm = obj(q, "params.quantization")?;
            known_fields(
                qm,
                &["ignore", "rescore", "oversampling"],
                "params.quantization",
            )?;
            let flag = |k: &str| -> WResult<Option<bool>> {
                match qm.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v
                        .as_bool()
                        .map(Some)
                        .ok_or_else(|| bad(format!("`quantization.{k}` must be a bool"))),
                }
            };
            out.quantization.ignore = flag("ignore")?.unwrap_or(false);
            out.quantization.rescore = flag("rescore")?;
            if let Some(o) = qm.get("oversampling").filter(|v| !v.is_null()) {
                match o.as_f64() {
                    Some(x) if (1.0..=1000.0).contains(&x) => {
                        out.quantization.oversampling = Some(x)
                    }
                    _ => {
                        return Err(bad(
                            "`quantization.oversampling` must be a number >= 1 (at most 1000)",
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Validate `params` without keeping them.
pub fn check_params(m: &Map<String, Value>) -> WResult<()> {
    request_params(m).map(|_| ())
}

/// Legacy search `vector`: dense list, `{"name", "vector"}` (dense or sparse).
pub fn named_vector(v: &Value) -> WResult<(String, Vector)> {
    match v {
        Value::Array(_) => Ok((DEFAULT_VECTOR.to_string(), vector(v)?)),
        Value::Object(m) if m.contains_key("name") => {
            let name = m
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("vector `name` must be a string"))?
                .to_string();
            Ok((
                name,
                vector(
                    m.get("vector")
                        .ok_or_else(|| bad("missing field `vector`"))?,
                )?,
            ))
        }
        _ => Err(bad(format!(
            "expected a vector or {{\"name\", \"vector\"}}, found {}",
            short(v)
        ))),
    }
}

fn vector_input(v: &Value) -> WResult<VectorInput> {
    match v {
        Value::Number(_) | Value::String(_) => Ok(VectorInput::Id(point_id(v)?)),
        _ => Ok(VectorInput::Vector(vector(v)?)),
    }
}

fn vector_inputs(v: Option<&Value>) -> WResult<Vec<VectorInput>> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a.iter().map(vector_input).collect(),
        Some(x) => Err(bad(format!("examples must be a list, found {}", short(x)))),
    }
}

pub fn strategy(v: Option<&Value>) -> WResult<RecoStrategy> {
    match v.and_then(Value::as_str) {
        None => Ok(RecoStrategy::AverageVector),
        Some("average_vector") => Ok(RecoStrategy::AverageVector),
        Some("best_score") => Ok(RecoStrategy::BestScore),
        Some("sum_scores") => Ok(RecoStrategy::SumScores),
        Some(x) => Err(bad(format!("unknown recommend strategy `{x}`"))),
    }
}

pub fn recommend_input(m: &Map<String, Value>) -> WResult<QueryInput> {
    Ok(QueryInput::Recommend {
        positive: vector_inputs(m.get("positive"))?,
        negative: vector_inputs(m.get("negative"))?,
        strategy: strategy(m.get("strategy"))?,
    })
}

fn order_by(v: &Value) -> WResult<OrderBySpec> {
    match v {
        Value::String(s) => Ok(OrderBySpec {
            key: s.clone(),
            descending: false,
            start_from: None,
        }),
        Value::Object(m) => {
            known_fields(m, &["key", "direction", "start_from"], "order_by")?;
            let key = m
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("order_by needs `key`"))?
                .to_string();
            let descending = match m.get("direction").and_then(Value::as_str) {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(x) => return Err(bad(format!("unknown order_by direction `{x}`"))),
            };
            let start_from = match m.get("start_from") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::String(s)) => Some(
                    segment::filter::parse_datetime(s)
                        .ok_or_else(|| bad(format!("start_from: invalid datetime {s:?}")))?
                        as f64,
                ),
                Some(x) => {
                    return Err(bad(format!(
                        "start_from must be a number or datetime, found {x}"
                    )))
                }
            };
            Ok(OrderBySpec {
                key,
                descending,
                start_from,
            })
        }
        _ => Err(bad("order_by must be a key or an object")),
    }
}

pub fn order_by_opt(v: Option<&Value>) -> WResult<Option<OrderBySpec>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(x) => order_by(x).map(Some),
    }
}

fn query_input(v: &Value) -> WResult<Option<QueryInput>> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Number(_) | Value::String(_) | Value::Array(_) => {
            QueryInput::Nearest(vector_input(v)?)
        }
        Value::Object(m) if m.contains_key("indices") => QueryInput::Nearest(vector_input(v)?),
        Value::Object(m) => {
            if let Some(n) = m.get("nearest") {
                if m.get("mmr").is_some_and(|x| !x.is_null()) {
                    return Err(ApiError::bad_request(
                        "Wrong input: MMR is not supported by Sextant yet",
                    ));
                }
                QueryInput::Nearest(vector_input(n)?)
            } else if let Some(r) = m.get("recommend") {
                recommend_input(obj(r, "recommend")?)?
            } else if let Some(f) = m.get("fusion") {
                match f.as_str() {
                    Some("rrf") => QueryInput::Rrf {
                        k: None,
                        weights: None,
                    },
                    Some("dbsf") => QueryInput::Dbsf,
                    _ => return Err(bad(format!("unknown fusion {f}"))),
                }
            } else if let Some(r) = m.get("rrf") {
                let rm = obj(r, "rrf")?;
                let k = match rm.get("k") {
                    None | Some(Value::Null) => None,
                    Some(x) => Some(
                        x.as_u64()
                            .filter(|k| *k >= 1 && *k <= u32::MAX as u64)
                            .ok_or_else(|| {
                                ApiError::validation("rrf.k must be a positive integer")
                            })? as u32,
                    ),
                };
                let weights = match rm.get("weights") {
                    None | Some(Value::Null) => None,
                    Some(w) => Some(f32s(w, "rrf.weights")?),
                };
                QueryInput::Rrf { k, weights }
            } else if let Some(o) = m.get("order_by") {
                QueryInput::OrderBy(order_by(o)?)
            } else if let Some(s) = m.get("sample") {
                if s.as_str() != Some("random") {
                    return Err(bad("sample must be \"random\""));
                }
                QueryInput::Sample
            } else if let Some(k) = m.keys().next() {
                return Err(ApiError::bad_request(format!(
                    "Wrong input: query kind `{k}` is not supported by Sextant yet"
                )));
            } else {
                return Err(bad("empty query object"));
            }
        }
        Value::Bool(_) => return Err(bad("query must be a vector, a point id or a query object")),
    }))
}

/// Parse a `QueryRequest` / `Prefetch` object into a `QuerySpec`.
pub fn query_spec(m: &Map<String, Value>, top_level: bool, depth: usize) -> WResult<QuerySpec> {
    if depth > 16 {
        return Err(ApiError::bad_request(
            "Wrong input: prefetch is nested deeper than 16 levels",
        ));
    }
    let allowed_top: &[&str] = &[
        "shard_key",
        "prefetch",
        "query",
        "using",
        "filter",
        "params",
        "score_threshold",
        "limit",
        "offset",
        "with_vector",
        "with_payload",
        "lookup_from",
        "group_by",
        "group_size",
        "with_lookup",
    ];
    let allowed_pf: &[&str] = &[
        "prefetch",
        "query",
        "using",
        "filter",
        "params",
        "score_threshold",
        "limit",
        "lookup_from",
    ];
    known_fields(
        m,
        if top_level { allowed_top } else { allowed_pf },
        if top_level {
            "query request"
        } else {
            "prefetch"
        },
    )?;
    check_params(m)?;
    let prefetch = match m.get("prefetch") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| query_spec(obj(p, "prefetch")?, false, depth + 1))
            .collect::<WResult<_>>()?,
        Some(p @ Value::Object(_)) => vec![query_spec(obj(p, "prefetch")?, false, depth + 1)?],
        Some(_) => return Err(bad("prefetch must be an object or a list")),
    };
    if m.get("lookup_from").is_some_and(|v| !v.is_null()) && !top_level {
        return Err(ApiError::bad_request(
            "Wrong input: lookup_from inside prefetch is not supported by Sextant yet",
        ));
    }
    Ok(QuerySpec {
        prefetch,
        query: match m.get("query") {
            None => None,
            Some(q) => query_input(q)?,
        },
        using: str_field(m, "using")?,
        filter: opt_filter(m.get("filter"))?,
        score_threshold: f32_field(m, "score_threshold")?,
        limit: limit_field(m, 10)?,
        offset: if top_level {
            usize_field(m, "offset", 0)?
        } else {
            0
        },
    })
}

// ------------------------------------------------------------------ outputs

/// A stored f32 as JSON: the f64 nearest to the f32's shortest decimal form, so `0.1`
/// comes back as `0.1`, not widened to `0.10000000149011612`.
pub fn f32_out(f: f32) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    let mut buf = ryu::Buffer::new();
    let x: f64 = buf.format_finite(f).parse().unwrap_or(f as f64);
    Value::from(x)
}

/// Vector output: a bare list when the only vector is the unnamed one, else a map.
pub fn vectors_out(v: &NamedVectors) -> Value {
    let one = |x: &Vector| -> Value {
        match x {
            Vector::Dense(d) => Value::from(d.iter().map(|f| f32_out(*f)).collect::<Vec<_>>()),
            Vector::Sparse(s) => serde_json::json!({
                "indices": s.indices,
                "values": s.values.iter().map(|f| f32_out(*f)).collect::<Vec<_>>(),
            }),
        }
    };
    if v.len() == 1 {
        if let Some(x) = v.get(DEFAULT_VECTOR) {
            return one(x);
        }
    }
    Value::Object(v.iter().map(|(k, x)| (k.clone(), one(x))).collect())
}

#[derive(Serialize)]
pub struct ScoredOut {
    pub id: PointId,
    pub version: u64,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_value: Option<Value>,
}

impl From<ScoredPoint> for ScoredOut {
    fn from(p: ScoredPoint) -> Self {
        ScoredOut {
            id: p.id,
            version: p.version,
            score: p.score,
            payload: p.payload,
            vector: p.vector.as_ref().map(vectors_out),
            order_value: p.order_value,
        }
    }
}

#[derive(Serialize)]
pub struct RecordOut {
    pub id: PointId,
    pub payload: Option<Payload>,
    pub vector: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_value: Option<Value>,
}

impl From<ScoredPoint> for RecordOut {
    fn from(p: ScoredPoint) -> Self {
        RecordOut {
            id: p.id,
            payload: p.payload,
            vector: p.vector.as_ref().map(vectors_out),
            order_value: p.order_value,
        }
    }
}

#[derive(Serialize)]
pub struct UpdateResultOut {
    pub operation_id: u64,
    pub status: &'static str,
}

pub fn update_out(r: collection::collection::UpdateResult) -> UpdateResultOut {
    UpdateResultOut {
        operation_id: r.operation_id,
        status: if r.completed {
            "completed"
        } else {
            "acknowledged"
        },
    }
}

/// Normalise a payload index field schema and return its data type name.
pub fn index_data_type(schema: &Value) -> WResult<String> {
    const TYPES: &[&str] = &[
        "keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid",
    ];
    let t = match schema {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("field_schema needs `type`"))?
            .to_string(),
        _ => return Err(bad("field_schema must be a type name or an object")),
    };
    if !TYPES.contains(&t.as_str()) {
        return Err(bad(format!(
            "unknown field_schema type `{t}`, expected one of {}",
            TYPES.join(", ")
        )));
    }
    Ok(t)
}

pub type JsonMap = Map<String, Value>;

/// Stopword languages of text indexes, each with the short codes accepted for it.
const LANGUAGES: &[(&str, &[&str])] = &[
    ("arabic", &["ar"]),
    ("azerbaijani", &["az"]),
    ("basque", &["eu"]),
    ("bengali", &["bn"]),
    ("catalan", &["ca"]),
    ("chinese", &["zh"]),
    ("danish", &["da"]),
    ("dutch", &["nl"]),
    ("english", &["en"]),
    ("finnish", &["fi"]),
    ("french", &["fr"]),
    ("german", &["de"]),
    ("greek", &["el"]),
    ("hebrew", &["he"]),
    ("hinglish", &["hi-en"]),
    ("hungarian", &["hu"]),
    ("indonesian", &["id"]),
    ("italian", &["it"]),
    ("japanese", &["jp", "ja"]),
    ("kazakh", &["kk"]),
    ("nepali", &["ne"]),
    ("norwegian", &["no"]),
    ("portuguese", &["pt"]),
    ("romanian", &["ro"]),
    ("russian", &["ru"]),
    ("slovene", &["sl"]),
    ("spanish", &["es"]),
    ("swedish", &["sv"]),
    ("tajik", &["tg"]),
    ("turkish", &["tr"]),
];

fn language(v: &Value) -> WResult<Value> {
    let s = v
        .as_str()
        .ok_or_else(|| bad("stopwords language must be a string"))?;
    let lower = s.to_ascii_lowercase();
    LANGUAGES
        .iter()
        .find(|(name, codes)| *name == lower || codes.contains(&lower.as_str()))
        .map(|(name, _)| Value::from(*name))
        .ok_or_else(|| {
            bad(format!(
                "unknown stopwords language `{s}`, expected one of {}",
                LANGUAGES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// A payload index `field_schema`, typed and in canonical form: stopword languages given
/// by code (`en`) are stored under their names (`english`), unknown languages are refused,
/// and parameters of other index types are dropped.
pub fn index_schema(schema: &Value) -> WResult<collection::index_schema::IndexSchema> {
    collection::index_schema::IndexSchema::parse(&index_schema_json(schema)?).map_err(bad)
}

fn index_schema_json(schema: &Value) -> WResult<Value> {
    index_data_type(schema)?;
    let mut out = schema.clone();
    if let Some(sw) = out.get_mut("stopwords") {
        match sw {
            Value::String(_) => *sw = language(sw)?,
            Value::Object(set) => {
                known_fields(set, &["languages", "custom"], "stopwords")?;
                if let Some(langs) = set.get_mut("languages") {
                    let list = langs
                        .as_array()
                        .ok_or_else(|| bad("stopwords.languages must be a list"))?;
                    *langs = Value::Array(list.iter().map(language).collect::<WResult<_>>()?);
                }
                if let Some(c) = set.get("custom") {
                    if !c.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                        return Err(bad("stopwords.custom must be a list of strings"));
                    }
                }
            }
            _ => return Err(bad("stopwords must be a language or a set")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_snippets_never_split_characters() {
        let v = json!("é".repeat(100));
        assert!(short(&v).ends_with("..."));
        assert!(vector(&v).is_err());
    }

    #[test]
    fn stopword_languages_by_name_or_code() {
        let s = index_schema_json(&json!({"type": "text", "stopwords": "en"})).unwrap();
        assert_eq!(s["stopwords"], "english");
        let s = index_schema_json(
            &json!({"type": "text", "stopwords": {"languages": ["de", "French"], "custom": ["x"]}}),
        )
        .unwrap();
        assert_eq!(s["stopwords"]["languages"], json!(["german", "french"]));
        assert!(index_schema(&json!({"type": "text", "stopwords": "klingon"})).is_err());
    }

    #[test]
    fn stored_floats_come_back_as_sent() {
        for (f, text) in [
            (0.1f32, "0.1"),
            (-0.3, "-0.3"),
            (1.0, "1.0"),
            (3.4e38, "3.4e+38"),
        ] {
            assert_eq!(f32_out(f).to_string(), text);
        }
        let v: NamedVectors = [(DEFAULT_VECTOR.to_string(), Vector::Dense(vec![0.1, 0.7]))].into();
        assert_eq!(vectors_out(&v).to_string(), "[0.1,0.7]");
    }

    #[test]
    fn vectors_parse_and_reject() {
        assert!(matches!(
            vector(&json!([1, 2.5])).unwrap(),
            Vector::Dense(_)
        ));
        assert!(vector(&json!([1e300])).is_err());
        assert!(vector(&json!([[1.0]])).is_err());
        assert!(
            matches!(vector(&json!({"indices": [3, 1], "values": [1, 2]})).unwrap(), Vector::Sparse(s) if s.indices == vec![1, 3])
        );
        assert!(vector(&json!({"indices": [1, 1], "values": [1, 2]})).is_err());
        assert!(vector(&json!({"indices": [-1], "values": [1]})).is_err());
    }
}
