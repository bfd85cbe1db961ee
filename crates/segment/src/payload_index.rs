//! Payload field indexes: value -> slots, used by the planner to find filter candidates
//! and estimate cardinality without scanning every payload.
//!
//! Lists are append-only: when a payload changes in place the new values are added and the
//! old entries stay behind as stale. That is safe because every candidate is re-checked
//! against the full filter (and liveness) before use; stale entries only make the
//! cardinality estimate an upper bound. Indexes are rebuilt compactly when the store is
//! rebuilt from a checkpoint.

use crate::filter::{parse_datetime, FieldCheck, Match, MatchValue};
use crate::json_path::JsonPath;
use crate::types::Payload;
use ordered_float::OrderedFloat;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Keyword,
    Integer,
    Float,
    Bool,
    Uuid,
    Datetime,
    Text,
    Geo,
}

impl FieldType {
    pub fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "keyword" => FieldType::Keyword,
            "integer" => FieldType::Integer,
            "float" => FieldType::Float,
            "bool" => FieldType::Bool,
            "uuid" => FieldType::Uuid,
            "datetime" => FieldType::Datetime,
            "text" => FieldType::Text,
            "geo" => FieldType::Geo,
            _ => return None,
        })
    }
}

pub struct FieldIndex {
    kind: FieldType,
    path: JsonPath,
    keyword: HashMap<String, Vec<u32>>,
    numeric: BTreeMap<OrderedFloat<f64>, Vec<u32>>,
    ints: BTreeMap<i64, Vec<u32>>,
    bools: [Vec<u32>; 2],
}

impl FieldIndex {
    pub fn new(path: JsonPath, kind: FieldType) -> Self {
        FieldIndex {
            kind,
            path,
            keyword: HashMap::new(),
            numeric: BTreeMap::new(),
            ints: BTreeMap::new(),
            bools: [Vec::new(), Vec::new()],
        }
    }

    pub fn kind(&self) -> FieldType {
        self.kind
    }

    pub fn path(&self) -> &JsonPath {
        &self.path
    }

    /// Index the values `payload` has at this field for `slot`.
    pub fn add(&mut self, slot: u32, payload: &Payload) {
        for v in self.path.values(payload, true) {
            match (self.kind, v) {
                (FieldType::Keyword | FieldType::Uuid, Value::String(s)) => {
                    self.keyword.entry(s.clone()).or_default().push(slot)
                }
                (FieldType::Integer, Value::Number(n)) => {
                    if let Some(i) = n.as_i64() {
                        self.ints.entry(i).or_default().push(slot);
                    }
                }
                (FieldType::Float, Value::Number(n)) => {
                    if let Some(f) = n.as_f64() {
                        self.numeric.entry(OrderedFloat(f)).or_default().push(slot);
                    }
                }
                (FieldType::Datetime, Value::String(s)) => {
                    if let Some(t) = parse_datetime(s) {
                        self.numeric
                            .entry(OrderedFloat(t as f64))
                            .or_default()
                            .push(slot);
                    }
                }
                (FieldType::Bool, Value::Bool(b)) => self.bools[*b as usize].push(slot),
                _ => {}
            }
        }
    }

    /// Candidate slots for one condition on this field, or `None` if this index cannot
    /// answer it (the planner then falls back to sampling).
    pub fn candidates(&self, check: &FieldCheck) -> Option<Vec<u32>> {
        let mut out: Vec<u32> = match (self.kind, check) {
            (
                FieldType::Keyword | FieldType::Uuid,
                FieldCheck::Match(Match::Value(MatchValue::Str(s))),
            ) => self.keyword.get(s).cloned().unwrap_or_default(),
            (FieldType::Keyword | FieldType::Uuid, FieldCheck::Match(Match::Any(vs))) => {
                let mut o = Vec::new();
                for v in vs {
                    if let MatchValue::Str(s) = v {
                        o.extend(self.keyword.get(s).into_iter().flatten());
                    }
                }
                o
            }
            (FieldType::Integer, FieldCheck::Match(Match::Value(MatchValue::Int(i)))) => {
                self.ints.get(i).cloned().unwrap_or_default()
            }
            (FieldType::Integer, FieldCheck::Match(Match::Any(vs))) => {
                let mut o = Vec::new();
                for v in vs {
                    if let MatchValue::Int(i) = v {
                        o.extend(self.ints.get(i).into_iter().flatten());
                    }
                }
                o
            }
            (FieldType::Integer, FieldCheck::Range(r)) => self
                .ints
                .iter()
                .filter(|(k, _)| r.check(**k as f64))
                .flat_map(|(_, v)| v.iter().copied())
                .collect(),
            (FieldType::Float, FieldCheck::Range(r)) => {
                range_scan(&self.numeric, r.gt.or(r.gte), r.lt.or(r.lte), |x| {
                    r.check(x)
                })
            }
            (FieldType::Datetime, FieldCheck::DatetimeRange(r)) => {
                let lo = r.gt.or(r.gte).map(|x| x as f64);
                let hi = r.lt.or(r.lte).map(|x| x as f64);
                range_scan(&self.numeric, lo, hi, |x| r.check(x as i64))
            }
            (FieldType::Bool, FieldCheck::Match(Match::Value(MatchValue::Bool(b)))) => {
                self.bools[*b as usize].clone()
            }
            _ => return None,
        };
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

fn range_scan(
    map: &BTreeMap<OrderedFloat<f64>, Vec<u32>>,
    lo: Option<f64>,
    hi: Option<f64>,
    keep: impl Fn(f64) -> bool,
) -> Vec<u32> {
    use std::ops::Bound::*;
    let lo = lo.map_or(Unbounded, |x| Included(OrderedFloat(x)));
    let hi = hi.map_or(Unbounded, |x| Included(OrderedFloat(x)));
    if let (Included(a), Included(b)) = (&lo, &hi) {
        if a > b {
            return vec![];
        }
    }
    map.range((lo, hi))
        .filter(|(k, _)| keep(k.0))
        .flat_map(|(_, v)| v.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{Condition, Filter};
    use serde_json::json;

    fn cond(f: Value) -> FieldCheck {
        match Filter::from_json(&json!({"must": [f]}))
            .unwrap()
            .must
            .unwrap()
            .remove(0)
        {
            Condition::Field(fc) => fc.check,
            _ => unreachable!(),
        }
    }

    #[test]
    fn candidates_per_type() {
        let pl = |v: Value| v.as_object().unwrap().clone();
        let mut kw = FieldIndex::new(JsonPath::parse("c").unwrap(), FieldType::Keyword);
        let mut int = FieldIndex::new(JsonPath::parse("n").unwrap(), FieldType::Integer);
        let mut fl = FieldIndex::new(JsonPath::parse("f").unwrap(), FieldType::Float);
        let mut dt = FieldIndex::new(JsonPath::parse("t").unwrap(), FieldType::Datetime);
        let rows = [
            json!({"c": "a", "n": 1, "f": 0.5, "t": "2024-01-01T00:00:00Z"}),
            json!({"c": ["a", "b"], "n": [2, 3], "f": 1.5, "t": "2024-02-01T00:00:00Z"}),
            json!({"c": "b", "n": 3, "f": 2.5}),
        ];
        for (i, r) in rows.iter().enumerate() {
            for ix in [&mut kw, &mut int, &mut fl, &mut dt] {
                ix.add(i as u32, &pl(r.clone()));
            }
        }
        assert_eq!(
            kw.candidates(&cond(json!({"key": "c", "match": {"value": "a"}}))),
            Some(vec![0, 1])
        );
        assert_eq!(
            kw.candidates(&cond(json!({"key": "c", "match": {"any": ["b", "zz"]}}))),
            Some(vec![1, 2])
        );
        assert_eq!(
            int.candidates(&cond(json!({"key": "n", "range": {"gte": 2}}))),
            Some(vec![1, 2])
        );
        assert_eq!(
            int.candidates(&cond(json!({"key": "n", "match": {"value": 3}}))),
            Some(vec![1, 2])
        );
        assert_eq!(
            fl.candidates(&cond(json!({"key": "f", "range": {"gt": 0.5, "lt": 2.5}}))),
            Some(vec![1])
        );
        assert_eq!(
            dt.candidates(&cond(json!({"key": "t", "range": {"gte": "2024-01-15"}}))),
            Some(vec![1])
        );
        assert_eq!(
            kw.candidates(&cond(json!({"key": "c", "match": {"text": "a"}}))),
            None
        );
    }
}
