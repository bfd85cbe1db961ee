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
//!
//! Digests are a three-level tree, so two replicas find what differs without shipping
//! their points: the shard's digest (the root) is the sum of [`BUCKETS`] bucket digests,
//! each over the points whose id hashes into that bucket's range (`bucket_of`), and a
//! bucket's leaves are its points' hashes. Equal roots cost one number each; unequal roots
//! narrow to the buckets that differ, and those to the points that differ
//! ([`point_hashes`]).

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

impl Digest {
    fn add(&mut self, hash: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(hash);
    }
}

/// Buckets of a shard's digest tree (the second level).
pub const BUCKETS: usize = 256;

/// The bucket of a point: a range of a hash of its id, independent of the shard routing
/// hash so a shard's points spread over every bucket.
pub fn bucket_of(id: PointId) -> u32 {
    let h = match id {
        PointId::Num(n) => crc32c::crc32c_append(0x5bd1_e995, &n.to_le_bytes()),
        PointId::Uuid(u) => crc32c::crc32c_append(0x1b87_3593, u.as_bytes()),
    };
    h >> 24
}

/// The digest of the points of `shard` (of `shard_number`) in `store`.
pub fn shard_digest(store: &PointStore, shard_number: u32, shard: u32) -> Digest {
    total(&shard_buckets(store, shard_number, shard))
}

/// The root of a digest tree: the sum of its buckets.
pub fn total(buckets: &[Digest]) -> Digest {
    buckets.iter().fold(Digest::default(), |a, b| Digest {
        count: a.count + b.count,
        sum: a.sum.wrapping_add(b.sum),
    })
}

/// The [`BUCKETS`] bucket digests of `shard` (one pass over the store).
pub fn shard_buckets(store: &PointStore, shard_number: u32, shard: u32) -> Vec<Digest> {
    shard_tree(store, shard_number, shard, None).0.buckets
}

/// A shard's bucket digests, each with its shape: the count and sum of hashes of its
/// points' `(id, version)`. Every write gives the points it changes a new version, so a
/// bucket whose shape is unchanged holds the same content as when it was digested.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    buckets: Vec<Digest>,
    shapes: Vec<Digest>,
}

impl Tree {
    pub fn root(&self) -> Digest {
        total(&self.buckets)
    }

    pub fn buckets(&self) -> &[Digest] {
        &self.buckets
    }

    /// Per bucket, whether its points (ids and versions) are those it had in `prev`, a
    /// tree of the same store instance: no write touched it in between.
    pub fn unchanged_since(&self, prev: &Tree) -> Vec<bool> {
        (0..self.shapes.len())
            .map(|b| prev.shapes.get(b) == Some(&self.shapes[b]))
            .collect()
    }
}

/// The digest tree of `shard`. With `prev` (a tree of the same store instance: versions
/// are only comparable within one), only the points of buckets whose shape changed are
/// hashed again. Also returns how many points were hashed.
pub fn shard_tree(
    store: &PointStore,
    shard_number: u32,
    shard: u32,
    prev: Option<&Tree>,
) -> (Tree, usize) {
    shard_tree_in_steps(|| store, shard_number, shard, prev, usize::MAX)
}

/// [`shard_tree`] with the store read through `read` (a lock guard) for at most `step`
/// points at a time, so writers wait for one step, not for the whole tree. Writes that
/// land between steps may be half seen; they give the tree's caller a newer content
/// version, and the next tree, built from this one, sees their buckets' shapes changed and
/// hashes them again (a bucket is only reused when its points and versions are those it
/// was hashed with).
pub fn shard_tree_in_steps<G: std::ops::Deref<Target = PointStore>>(
    read: impl Fn() -> G,
    shard_number: u32,
    shard: u32,
    prev: Option<&Tree>,
    step: usize,
) -> (Tree, usize) {
    shard_tree_bounded(read, shard_number, shard, prev, step, usize::MAX)
        .expect("no bound on the points hashed")
}

/// [`shard_tree_in_steps`], or `None` when more than `max_hashed` points would have to be
/// hashed again (only the walk over ids and versions was paid).
pub fn shard_tree_bounded<G: std::ops::Deref<Target = PointStore>>(
    read: impl Fn() -> G,
    shard_number: u32,
    shard: u32,
    prev: Option<&Tree>,
    step: usize,
    max_hashed: usize,
) -> Option<(Tree, usize)> {
    let step = step.max(1);
    let prev = prev.filter(|p| p.buckets.len() == BUCKETS && p.shapes.len() == BUCKETS);
    let mut shapes = vec![Digest::default(); BUCKETS];
    let mut ids: Vec<(PointId, u8)> = Vec::new();
    let mut after = None;
    loop {
        let store = read();
        let mut seen = 0;
        for (id, version) in store.ids_and_versions_after(after).take(step) {
            seen += 1;
            after = Some(id);
            if shard_of(id, shard_number) != shard {
                continue;
            }
            let b = bucket_of(id);
            let mut key = [0u8; 24];
            key[..8].copy_from_slice(&version.to_le_bytes());
            match id {
                PointId::Num(n) => key[8..16].copy_from_slice(&n.to_le_bytes()),
                PointId::Uuid(u) => key[8..].copy_from_slice(u.as_bytes()),
            }
            shapes[b as usize].add(hash64(&key));
            ids.push((id, b as u8));
        }
        if seen < step {
            break;
        }
    }
    let stale: Vec<bool> = (0..BUCKETS)
        .map(|b| prev.is_none_or(|p| p.shapes[b] != shapes[b]))
        .collect();
    let mut buckets: Vec<Digest> = (0..BUCKETS)
        .map(|b| match prev {
            Some(p) if !stale[b] => p.buckets[b],
            _ => Digest::default(),
        })
        .collect();
    ids.retain(|(_, b)| stale[*b as usize]);
    let hashed = ids.len();
    if hashed > max_hashed {
        return None;
    }
    for part in ids.chunks(step) {
        let store = read();
        for &(id, b) in part {
            // a point deleted since the shapes were taken is left out
            if let Some(h) = point_hash(&store, id) {
                buckets[b as usize].add(h);
            }
        }
    }
    Some((Tree { buckets, shapes }, hashed))
}

/// Each point of `shard` in one of `buckets`, with its hash, in id order.
pub fn point_hashes(
    store: &PointStore,
    shard_number: u32,
    shard: u32,
    buckets: &[u32],
) -> Vec<(PointId, u64)> {
    let mut wanted = [false; BUCKETS];
    buckets
        .iter()
        .filter(|b| (**b as usize) < BUCKETS)
        .for_each(|b| wanted[*b as usize] = true);
    let mut buf = Vec::new();
    // ids come in order: the list is sorted; only the wanted buckets' points are hashed
    store
        .ids_and_versions()
        .map(|(id, _)| id)
        .filter(|id| shard_of(*id, shard_number) == shard && wanted[bucket_of(*id) as usize])
        .map(|id| {
            buf.clear();
            point_bytes(store, id, &mut buf);
            (id, hash64(&buf))
        })
        .collect()
}

/// The hash of point `id` in `store` as the digest counts it; `None` when it is absent.
pub fn point_hash(store: &PointStore, id: PointId) -> Option<u64> {
    store.version(id)?;
    let mut buf = Vec::new();
    point_bytes(store, id, &mut buf);
    Some(hash64(&buf))
}

/// The points on which two sorted leaf lists differ, each with its hash on either side
/// (`None`: absent there).
pub fn differences(
    a: &[(PointId, u64)],
    b: &[(PointId, u64)],
) -> Vec<(PointId, Option<u64>, Option<u64>)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if x.1 != y.1 {
                    out.push((x.0, Some(x.1), Some(y.1)));
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                out.push((x.0, Some(x.1), None));
                i += 1;
            }
            (Some(x), None) => {
                out.push((x.0, Some(x.1), None));
                i += 1;
            }
            (_, Some(y)) => {
                out.push((y.0, None, Some(y.1)));
                j += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    out
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
    use crate::store::{DenseParams, NamedVectors, VectorSchema};
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

    #[test]
    fn the_tree_narrows_a_difference_to_its_points() {
        let ids = |d: Vec<(PointId, Option<u64>, Option<u64>)>| -> Vec<PointId> {
            d.into_iter().map(|x| x.0).collect()
        };
        let rows = |skip: u64, change: u64| -> Vec<(u64, [f32; 2], Value)> {
            (0..2000u64)
                .filter(|i| *i != skip)
                .map(|i| {
                    let x = if i == change { 9.0 } else { i as f32 };
                    (i, [x, 1.0], json!({"i": i}))
                })
                .collect()
        };
        let a = store(&rows(u64::MAX, u64::MAX));
        let b = store(&rows(17, 1234)); // one point lost, one changed
        let (ta, tb) = (shard_buckets(&a, 2, 1), shard_buckets(&b, 2, 1));
        assert_eq!(ta.len(), BUCKETS);
        assert_eq!(total(&ta), shard_digest(&a, 2, 1));
        let in_shard = (0..2000u64)
            .filter(|i| shard_of(PointId::Num(*i), 2) == 1)
            .count();
        assert_eq!(total(&ta).count, in_shard as u64);
        assert!(
            ta.iter().filter(|d| d.count > 0).count() > BUCKETS / 2,
            "spread"
        );
        let differ: Vec<u32> = (0..BUCKETS as u32)
            .filter(|k| ta[*k as usize] != tb[*k as usize])
            .collect();
        let expect: Vec<PointId> = [17u64, 1234]
            .into_iter()
            .map(PointId::Num)
            .filter(|id| shard_of(*id, 2) == 1)
            .collect();
        assert!(!expect.is_empty(), "pick ids of shard 1");
        let mut buckets: Vec<u32> = expect.iter().map(|id| bucket_of(*id)).collect();
        buckets.dedup();
        assert_eq!(differ, buckets);
        let (la, lb) = (
            point_hashes(&a, 2, 1, &differ),
            point_hashes(&b, 2, 1, &differ),
        );
        assert!(la.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(ids(differences(&la, &lb)), expect);
        for (id, here, there) in differences(&la, &lb) {
            assert_eq!(here, point_hash(&a, id));
            assert_eq!(there, point_hash(&b, id));
        }
        assert_eq!(point_hash(&b, PointId::Num(17)), None);
        assert_eq!(ids(differences(&lb, &la)), expect);
        assert!(differences(&la, &la).is_empty());
    }

    #[test]
    fn a_refreshed_tree_hashes_only_changed_buckets_and_equals_a_fresh_one() {
        let rows: Vec<(u64, [f32; 2], Value)> = (0..3000u64)
            .map(|i| (i, [i as f32, 1.0], json!({"i": i})))
            .collect();
        let mut s = store(&rows);
        let (t0, hashed) = shard_tree(&s, 1, 0, None);
        assert_eq!(hashed, 3000);
        assert_eq!(shard_tree(&s, 1, 0, Some(&t0)), (t0.clone(), 0));
        // a payload change (new version, same slot), an upsert, a new point, a delete
        s.overwrite_payload(
            PointId::Num(5),
            9001,
            &json!({"i": -5}).as_object().unwrap().clone(),
        );
        let vecs = [(String::new(), Vector::Dense(vec![7.0, 7.0]))].into();
        s.upsert(PointId::Num(6), 9002, &vecs, Default::default());
        s.upsert(PointId::Num(7777), 9003, &vecs, Default::default());
        s.delete(PointId::Num(8));
        let (t1, hashed) = shard_tree(&s, 1, 0, Some(&t0));
        let (fresh, _) = shard_tree(&s, 1, 0, None);
        assert_eq!(t1, fresh);
        assert_ne!(t1.root(), t0.root());
        let dirty: std::collections::BTreeSet<u32> = [5u64, 6, 7777, 8]
            .iter()
            .map(|i| bucket_of(PointId::Num(*i)))
            .collect();
        assert!(
            hashed < 3000 * dirty.len() * 2 / BUCKETS + 60,
            "{hashed} hashed"
        );
        assert!(hashed >= dirty.len(), "{hashed}");
    }

    /// A tree built in steps equals one built at once; a write that lands between steps
    /// makes the next tree (built from it) hash that bucket again, so it ends up exact.
    #[test]
    fn a_tree_built_in_steps_is_exact_once_refreshed() {
        let rows: Vec<(u64, [f32; 2], Value)> = (0..5000u64)
            .map(|i| (i, [i as f32, 1.0], json!({"i": i})))
            .collect();
        let s = std::cell::RefCell::new(store(&rows));
        let whole = shard_tree(&s.borrow(), 2, 1, None).0;
        for step in [1, 7, 4096, 10_000] {
            let stepped = shard_tree_in_steps(|| s.borrow(), 2, 1, None, step).0;
            assert_eq!(stepped, whole, "step {step}");
        }
        // writes between the steps: one behind the scan, one ahead of it, one deleted
        let calls = std::cell::Cell::new(0);
        let vecs: NamedVectors = [(String::new(), Vector::Dense(vec![5.0, 5.0]))].into();
        let during = shard_tree_in_steps(
            || {
                calls.set(calls.get() + 1);
                if calls.get() == 3 {
                    let mut w = s.borrow_mut();
                    w.upsert(PointId::Num(1), 9001, &vecs, Default::default());
                    w.upsert(PointId::Num(4999), 9002, &vecs, Default::default());
                    w.delete(PointId::Num(2500));
                }
                s.borrow()
            },
            2,
            1,
            Some(&whole),
            1000,
        )
        .0;
        let exact = shard_tree(&s.borrow(), 2, 1, None).0;
        let refreshed = shard_tree(&s.borrow(), 2, 1, Some(&during)).0;
        assert_eq!(refreshed, exact);
        // a bound on the points hashed again: refused above it, exact within it
        let st = s.borrow();
        assert!(shard_tree_bounded(|| &*st, 2, 1, None, 4096, 100).is_none());
        let (t, hashed) = shard_tree_bounded(|| &*st, 2, 1, Some(&exact), 4096, 0).unwrap();
        assert_eq!((t, hashed), (exact, 0));
    }

    /// Cost of a full digest tree and of a refresh after a few writes (run by hand:
    /// `cargo test -p segment --release digest_tree_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn digest_tree_cost() {
        use std::time::Instant;
        let mut schema = VectorSchema::default();
        schema.dense.insert(
            String::new(),
            DenseParams {
                size: 128,
                distance: Distance::Dot,
                on_disk: false,
                quantization: None,
            },
        );
        let mut s = PointStore::new(schema);
        for i in 0..667_000u64 {
            let v: Vec<f32> = (0..128).map(|k| (i * 131 + k) as f32).collect();
            let vecs = [(String::new(), Vector::Dense(v))].into();
            s.upsert(
                PointId::Num(i),
                i + 1,
                &vecs,
                json!({"n": i}).as_object().unwrap().clone(),
            );
        }
        let t = Instant::now();
        let (tree, hashed) = shard_tree(&s, 3, 0, None);
        println!("full: {:?} ({hashed} hashed)", t.elapsed());
        let vecs = [(String::new(), Vector::Dense(vec![1.0; 128]))].into();
        for i in 0..10u64 {
            s.upsert(
                PointId::Num(i * 7919),
                10_000_000 + i,
                &vecs,
                Default::default(),
            );
        }
        let t = Instant::now();
        let (refreshed, hashed) = shard_tree(&s, 3, 0, Some(&tree));
        println!("refresh: {:?} ({hashed} hashed)", t.elapsed());
        let t = Instant::now();
        let (stepped, _) = shard_tree_in_steps(|| &s, 3, 0, None, 4096);
        println!("full, in steps of 4096: {:?}", t.elapsed());
        assert_eq!(stepped, refreshed);
        let t = Instant::now();
        let n = s
            .ids_and_versions()
            .filter(|(id, _)| shard_of(*id, 3) == 0)
            .count();
        println!("walk: {:?} ({n})", t.elapsed());
    }
}
