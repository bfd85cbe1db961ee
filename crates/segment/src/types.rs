//! Core data types shared by every layer: point ids, vectors, payloads, distances.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Name of the unnamed ("default") dense vector.
pub const DEFAULT_VECTOR: &str = "";

pub type Payload = serde_json::Map<String, serde_json::Value>;

/// A point id: an unsigned integer or a UUID. Integer ids order before UUIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointId {
    Num(u64),
    Uuid(uuid::Uuid),
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{}", u.hyphenated()),
        }
    }
}

impl PointId {
    /// Parse from a path segment: a decimal integer or a UUID.
    pub fn parse_str(s: &str) -> Option<PointId> {
        if let Ok(n) = s.parse::<u64>() {
            return Some(PointId::Num(n));
        }
        uuid::Uuid::parse_str(s).ok().map(PointId::Uuid)
    }
}

impl Serialize for PointId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PointId::Num(n) => s.serialize_u64(*n),
            PointId::Uuid(u) => s.serialize_str(&u.hyphenated().to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for PointId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PointId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an unsigned integer or a UUID string")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PointId, E> {
                Ok(PointId::Num(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PointId, E> {
                u64::try_from(v).map(PointId::Num).map_err(|_| {
                    E::custom(format!(
                        "point id must be a non-negative integer or a UUID, got {v}"
                    ))
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PointId, E> {
                Err(E::custom(format!(
                    "point id must be an unsigned integer or a UUID, got {v}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PointId, E> {
                uuid::Uuid::parse_str(v)
                    .map(PointId::Uuid)
                    .map_err(|_| E::custom(format!("Unable to parse UUID: {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Distance {
    Cosine,
    Euclid,
    Dot,
    Manhattan,
}

impl Distance {
    /// True when a bigger *reported* score means more similar.
    pub fn bigger_is_better(self) -> bool {
        matches!(self, Distance::Cosine | Distance::Dot)
    }
}

/// A sparse vector: parallel arrays of distinct indices and values, kept sorted by index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVector {
    /// Validate and sort by index. Errors on length mismatch, duplicates, non-finite values.
    pub fn normalized(mut self) -> Result<Self, String> {
        if self.indices.len() != self.values.len() {
            return Err(format!(
                "Sparse vector indices and values must have the same length, got {} and {}",
                self.indices.len(),
                self.values.len()
            ));
        }
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err("Sparse vector values must be finite numbers".into());
        }
        let mut pairs: Vec<(u32, f32)> = self
            .indices
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect();
        pairs.sort_by_key(|p| p.0);
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("Sparse vector indices must be unique".into());
        }
        self.indices = pairs.iter().map(|p| p.0).collect();
        self.values = pairs.iter().map(|p| p.1).collect();
        Ok(self)
    }
}

/// One vector value of a point: dense or sparse.
#[derive(Clone, Debug, PartialEq)]
pub enum Vector {
    Dense(Vec<f32>),
    Sparse(SparseVector),
}

impl Serialize for Vector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Vector::Dense(v) => v.serialize(s),
            Vector::Sparse(v) => v.serialize(s),
        }
    }
}

/// The inverse of `Serialize` (untagged): a sequence of floats is dense, a map sparse. Used
/// between peers (MessagePack with named fields, so a sparse vector stays a map).
impl<'de> Deserialize<'de> for Vector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of floats or a sparse vector")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vector, A::Error> {
                let mut v = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(x) = a.next_element::<f32>()? {
                    v.push(x);
                }
                Ok(Vector::Dense(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<Vector, A::Error> {
                SparseVector::deserialize(serde::de::value::MapAccessDeserializer::new(a))
                    .map(Vector::Sparse)
            }
        }
        d.deserialize_any(V)
    }
}

/// Total order on f32 scores used for ranking (NaN never occurs: inputs are validated finite).
pub fn cmp_f32(a: f32, b: f32) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// A search hit before payload/vector enrichment. `score` is the internal score (bigger = better).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub id: PointId,
    pub offset: u32,
    pub score: f32,
}

/// Ranking: higher internal score first, ties broken by ascending id.
pub fn hit_order(a: &Hit, b: &Hit) -> Ordering {
    cmp_f32(b.score, a.score).then_with(|| a.id.cmp(&b.id))
}
