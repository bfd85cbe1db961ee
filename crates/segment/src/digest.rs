//! Content digests of a shard's points, to verify that two replicas hold the same data
//! (a transfer switches its target to Active only when the digests agree).
//!
//! A point's hash covers its id, every vector (name and f32 bit patterns, or sparse indices
//! and values) and its payload in canonical form (object keys sorted, numbers as written by
//! serde_json). The shard's digest is the point count and the wrapping sum of the point
//! hashes, so it does not depend on the order points were written or are visited. Versions
//! are left out on purpose: each replica numbers its own log.
//!
//! The 64-bit point hash is two CRC32C with different seeds (hardware-accelerated); the
//! digest is a check against lost or diverged points, not a defence against an adversary.

use crate::routing::shard_of;
use crate::store::PointStore;
use crate::types::{PointId, Vector};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub count: u64,
    pub sum: u64,
}

/// The digest of the points of `shard` (of `shard_number`) in `store`.
pub fn shard_digest(store: &PointStore, shard_number: u32, shard: u32) -> Digest {
    let mut d = Digest::default();
    let mut buf = Vec::new();
    for id in store.matching_ids(None) {
        if shard_of(id, shard_number) != shard {
            continue;
        }
        buf.clear();
        point_bytes(store, id, &mut buf);
        d.count += 1;
        d.sum = d.sum.wrapping_add(hash64(&buf));
    }
    d
}

fn hash64(b: &[u8]) -> u64 {
    let lo = crc32c::crc32c(b) as u64;
    let hi = crc32c::crc32c_append(0x9e37_79b9, b) as u64;
    (hi << 32) | lo
}

fn point_bytes(store: &PointStore, id: PointId, out: &mut Vec<u8>) {
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(0);
    if let Some(vectors) = store.vectors(id) {
        let mut names: Vec<&String> = vectors.keys().collect();
        names.sort();
        for n in names {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
            match &vectors[n] {
                Vector::Dense(d) => d
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
                Vector::Sparse(s) => {
                    s.indices
                        .iter()
                        .for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
                    s.values
                        .iter()
                        .for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes()));
                }
            }
            out.push(1);
        }
    }
    if let Some(p) = store.payload(id) {
        canonical(&Value::Object(p.clone()), out);
    }
}

/// JSON with object keys sorted (replicas may have built a payload's keys in another order).
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for k in keys {
                out.extend_from_slice(Value::from(k.as_str()).to_string().as_bytes());
                out.push(b':');
                canonical(&m[k], out);
                out.push(b',');
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for x in a {
                canonical(x, out);
                out.push(b',');
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DenseParams, VectorSchema};
    use crate::Distance;
    use serde_json::json;

    fn store(points: &[(u64, [f32; 2], Value)]) -> PointStore {
        let mut schema = VectorSchema::default();
        schema.dense.insert(
            String::new(),
            DenseParams {
                size: 2,
                distance: Distance::Dot,
                on_disk: false,
                quantization: None,
            },
        );
        let mut s = PointStore::new(schema);
        for (i, (id, v, p)) in points.iter().enumerate() {
            let vecs = [(String::new(), Vector::Dense(v.to_vec()))].into();
            s.upsert(
                PointId::Num(*id),
                i as u64 + 1,
                &vecs,
                p.as_object().unwrap().clone(),
            );
        }
        s
    }

    #[test]
    fn equal_content_equal_digest_whatever_the_order() {
        let a = store(&[
            (1, [1.0, 2.0], json!({"a": 1, "b": [1, {"x": 2, "y": 3}]})),
            (2, [0.5, 0.0], json!({})),
        ]);
        let b = store(&[
            (2, [0.5, 0.0], json!({})),
            (1, [1.0, 2.0], json!({"b": [1, {"y": 3, "x": 2}], "a": 1})),
        ]);
        for shard in 0..3 {
            assert_eq!(shard_digest(&a, 3, shard), shard_digest(&b, 3, shard));
        }
        assert_eq!(shard_digest(&a, 1, 0).count, 2);
    }

    #[test]
    fn any_difference_changes_the_digest() {
        let base = store(&[
            (1, [1.0, 2.0], json!({"a": 1})),
            (2, [0.5, 0.0], json!({"t": "x"})),
        ]);
        let d = shard_digest(&base, 1, 0);
        for other in [
            store(&[(1, [1.0, 2.0], json!({"a": 1}))]), // lost point
            store(&[
                (1, [1.0, 2.0], json!({"a": 2})),
                (2, [0.5, 0.0], json!({"t": "x"})),
            ]), // payload
            store(&[
                (1, [1.0, 2.5], json!({"a": 1})),
                (2, [0.5, 0.0], json!({"t": "x"})),
            ]), // vector
            store(&[
                (1, [1.0, 2.0], json!({"a": 1})),
                (3, [0.5, 0.0], json!({"t": "x"})),
            ]), // id
        ] {
            assert_ne!(shard_digest(&other, 1, 0), d);
        }
    }
}
