//! Request-body normalisation, applied to every JSON body before any handler sees it:
//!
//! 1. **`null` means "not set".** Every object member whose value is `null` is removed,
//!    at any depth, except inside user data (`payload`, `payloads`, `metadata`,
//!    `defaults`), where a `null` is a value the user stored (or, for a `metadata` patch,
//!    the instruction to delete that key).
//! 2. **Field aliases** Qdrant accepts are renamed to the field the parsers read. Aliases
//!    that are only aliases in one kind of body are renamed only there ([`Body`]), so a
//!    vector or payload named like an alias is never touched.
//!
//! 3. **Internal conditions are refused.** The shard-scope filter condition (`__shards`)
//!    only exists in the write operations peers forward to each other
//!    (`UpdateOp::scoped`, `UpdateOp::delete_shards`; reads carry their scope as a typed
//!    field); a client body naming it outside user data is refused.
//!
//! These are pure functions over `serde_json::Value`; the parsers then see one
//! canonical shape. The alias list is documented in `docs/compatibility.md`.

use serde_json::{Map, Value};

/// Object members whose values are user data: never stripped of nulls inside.
const USER_DATA: &[&str] = &["payload", "payloads", "metadata", "defaults"];

/// Depth bound for the walk (serde_json already refuses documents nested over 128).
const MAX_DEPTH: usize = 160;

/// Object members only peers may send (see the module docs).
const INTERNAL: &[&str] = &["__shards"];

/// Remove `null` members of objects (recursively, arrays included), leaving user data as is.
/// Returns whether an internal member was found outside user data.
pub fn strip_nulls(v: &mut Value) -> bool {
    strip_at(v, 0)
}

fn strip_at(v: &mut Value, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let mut internal = false;
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            for (k, x) in m.iter_mut() {
                internal |= INTERNAL.contains(&k.as_str());
                if !USER_DATA.contains(&k.as_str()) {
                    internal |= strip_at(x, depth + 1);
                }
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                internal |= strip_at(x, depth + 1);
            }
        }
        _ => {}
    }
    internal
}

/// The kind of request body, for the aliases that hold only in some bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `PUT /collections/{c}` and `PATCH /collections/{c}`.
    CollectionConfig,
    /// Search / recommend (single or grouped), `top` for `limit`.
    SearchLike,
    /// `{"searches": [...]}` of search or recommend batches.
    SearchBatch,
    /// `PUT /points` (and upserts inside `/points/batch`).
    Upsert,
    /// `/points/batch`.
    UpdateBatch,
    /// Every other body (query, scroll, retrieve, count, ...).
    Other,
}

/// Strip nulls and apply the aliases for `kind`; an internal member outside user data is
/// an error (its message).
pub fn request(kind: Body, v: &mut Value) -> Result<(), String> {
    if strip_nulls(v) {
        return Err(format!(
            "{} is not part of the public API (unknown filter condition)",
            INTERNAL
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    aliases(kind, v);
    Ok(())
}

fn rename(m: &mut Map<String, Value>, alias: &str, canonical: &str) {
    if m.contains_key(canonical) {
        return; // both given: the canonical field wins, the alias is left for the parser to refuse
    }
    if let Some(x) = m.remove(alias) {
        m.insert(canonical.to_string(), x);
    }
}

/// `with_vector` / `with_vectors`: every reader accepts both, this picks `with_vector`.
fn with_vector(m: &mut Map<String, Value>) {
    rename(m, "with_vectors", "with_vector");
}

/// Apply the aliases for `kind` (nulls already stripped).
pub fn aliases(kind: Body, v: &mut Value) {
    let Value::Object(m) = v else { return };
    match kind {
        Body::CollectionConfig => collection_config(m),
        Body::SearchLike => search_like(m),
        Body::SearchBatch => {
            if let Some(Value::Array(items)) = m.get_mut("searches") {
                for it in items {
                    if let Value::Object(im) = it {
                        search_like(im);
                    }
                }
            }
        }
        Body::Upsert => upsert(m),
        Body::UpdateBatch => {
            if let Some(Value::Array(ops)) = m.get_mut("operations") {
                for op in ops {
                    if let Some(Value::Object(u)) = op.get_mut("upsert") {
                        upsert(u);
                    }
                }
            }
        }
        Body::Other => {
            with_vector(m);
            if let Some(Value::Array(items)) = m.get_mut("searches") {
                for it in items.iter_mut().filter_map(Value::as_object_mut) {
                    with_vector(it);
                }
            }
        }
    }
}

fn search_like(m: &mut Map<String, Value>) {
    rename(m, "top", "limit");
    with_vector(m);
}

fn upsert(m: &mut Map<String, Value>) {
    if let Some(Value::Array(points)) = m.get_mut("points") {
        for p in points.iter_mut().filter_map(Value::as_object_mut) {
            rename(p, "vectors", "vector");
        }
    }
}

/// `quantization`, `optimizer_config` and the `*_kb` size fields, at the top level and in
/// each vector's own config.
fn collection_config(m: &mut Map<String, Value>) {
    rename(m, "quantization", "quantization_config");
    rename(m, "optimizer_config", "optimizers_config");
    if let Some(Value::Object(o)) = m.get_mut("optimizers_config") {
        optimizer_kb(o);
    }
    if let Some(Value::Object(h)) = m.get_mut("hnsw_config") {
        rename(h, "full_scan_threshold_kb", "full_scan_threshold");
    }
    if let Some(Value::Object(vs)) = m.get_mut("vectors") {
        // one unnamed vector (has `size`) or a map of named ones
        let per_vector: Vec<&mut Map<String, Value>> = if vs.contains_key("size") {
            vec![vs]
        } else {
            vs.values_mut().filter_map(Value::as_object_mut).collect()
        };
        for p in per_vector {
            rename(p, "quantization", "quantization_config");
            if let Some(Value::Object(h)) = p.get_mut("hnsw_config") {
                rename(h, "full_scan_threshold_kb", "full_scan_threshold");
            }
        }
    }
}

fn optimizer_kb(o: &mut Map<String, Value>) {
    for f in ["indexing_threshold", "memmap_threshold", "max_segment_size"] {
        rename(o, &format!("{f}_kb"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nulls_go_except_in_user_data() {
        let mut v = json!({
            "limit": null,
            "params": {"hnsw_ef": null, "exact": true},
            "points": [{"id": 1, "vector": [1.0], "payload": {"a": null, "b": {"c": null}}}],
            "batch": {"payloads": [null, {"x": null}]},
            "metadata": {"k": null},
            "list": [null, {"z": null}],
        });
        assert!(!strip_nulls(&mut v));
        assert_eq!(
            v,
            json!({
                "params": {"exact": true},
                "points": [{"id": 1, "vector": [1.0], "payload": {"a": null, "b": {"c": null}}}],
                "batch": {"payloads": [null, {"x": null}]},
                "metadata": {"k": null},
                "list": [null, {}],
            })
        );
    }

    #[test]
    fn internal_conditions_are_refused_outside_user_data() {
        let scope = segment::filter::shard_scope(2, &[0]);
        for mut v in [
            json!({"filter": {"must": [scope.clone()]}}),
            json!({"prefetch": [{"filter": {"should": scope.clone()}}]}),
            json!({"filter": {"must_not": [{"must": [scope.clone()]}]}}),
        ] {
            let e = request(Body::Other, &mut v).unwrap_err();
            assert!(e.contains("`__shards`"), "{e}");
        }
        // the same key inside a payload is the user's data
        let mut v = json!({"points": [{"id": 1, "vector": [1.0], "payload": scope}]});
        request(Body::Upsert, &mut v).unwrap();
    }

    #[test]
    fn aliases_only_where_they_are_aliases() {
        let mut v = json!({"top": 3, "with_vectors": true, "vector": [1.0]});
        request(Body::SearchLike, &mut v).unwrap();
        assert_eq!(v, json!({"limit": 3, "with_vector": true, "vector": [1.0]}));

        // `limit` wins over `top`; `top` is left for the parser to refuse
        let mut v = json!({"top": 3, "limit": 5});
        request(Body::SearchLike, &mut v).unwrap();
        assert_eq!(v, json!({"top": 3, "limit": 5}));

        // a vector named `top` in a collection config is a name, not an alias
        let mut v = json!({
            "vectors": {"top": {"size": 4, "distance": "Dot", "quantization": {"scalar": {"type": "int8"}}}},
            "quantization": {"scalar": {"type": "int8"}},
            "optimizer_config": {"indexing_threshold_kb": 10, "memmap_threshold_kb": null},
            "hnsw_config": {"full_scan_threshold_kb": 100},
        });
        request(Body::CollectionConfig, &mut v).unwrap();
        assert_eq!(
            v,
            json!({
                "vectors": {"top": {"size": 4, "distance": "Dot", "quantization_config": {"scalar": {"type": "int8"}}}},
                "quantization_config": {"scalar": {"type": "int8"}},
                "optimizers_config": {"indexing_threshold": 10},
                "hnsw_config": {"full_scan_threshold": 100},
            })
        );

        let mut v = json!({"operations": [{"upsert": {"points": [{"id": 1, "vectors": [1.0], "payload": {"vectors": 1}}]}}]});
        request(Body::UpdateBatch, &mut v).unwrap();
        assert_eq!(
            v,
            json!({"operations": [{"upsert": {"points": [{"id": 1, "vector": [1.0], "payload": {"vectors": 1}}]}}]})
        );
    }
}
