//! Filters: Qdrant's condition language, parsed from JSON and evaluated against one point.
//!
//! Parsing is hand-written over `serde_json::Value` (conditions are an untagged union in the
//! API): it dispatches on the keys present and gives precise errors. Evaluation follows
//! Qdrant's semantics (see the differential tests against `qdrant-client`'s local mode).

use crate::json_path::JsonPath;
use crate::types::{Payload, PointId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// Bound on filter nesting depth (the JSON parser already limits depth to 128).
pub const MAX_FILTER_DEPTH: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub must: Option<Vec<Condition>>,
    pub should: Option<Vec<Condition>>,
    pub must_not: Option<Vec<Condition>>,
    pub min_should: Option<MinShould>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinShould {
    pub conditions: Vec<Condition>,
    pub min_count: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    Field(FieldCondition),
    IsEmpty(JsonPath),
    IsNull(JsonPath),
    HasId(HashSet<PointId>),
    HasVector(String),
    Nested {
        path: JsonPath,
        filter: Box<Filter>,
    },
    Filter(Box<Filter>),
    /// Internal (cluster mode): the point's shard, `routing::shard_of(id, shard_number)`,
    /// is one of `shards`. Coordinators add it to sub-requests so a peer answers only for
    /// the replicas it was asked to serve. JSON: `{"__shards": {"shard_number": n, "shards": [..]}}`.
    ShardScope {
        shard_number: u32,
        shards: Vec<u32>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldCondition {
    pub key: JsonPath,
    pub check: FieldCheck,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldCheck {
    Match(Match),
    Range(Range<f64>),
    DatetimeRange(Range<i64>),
    GeoBoundingBox {
        top_left: GeoPoint,
        bottom_right: GeoPoint,
    },
    GeoRadius {
        center: GeoPoint,
        radius: f64,
    },
    GeoPolygon {
        exterior: Vec<GeoPoint>,
        interiors: Vec<Vec<GeoPoint>>,
    },
    ValuesCount(Range<f64>),
    IsEmpty(bool),
    IsNull(bool),
    /// A field condition with no check at all (Qdrant rejects it; kept for a clear error).
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Match {
    Value(MatchValue),
    Any(Vec<MatchValue>),
    Except(Vec<MatchValue>),
    Text(String),
    TextAny(String),
    Phrase(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Range<T> {
    pub lt: Option<T>,
    pub gt: Option<T>,
    pub lte: Option<T>,
    pub gte: Option<T>,
}

impl<T: PartialOrd + Copy> Range<T> {
    pub fn check(&self, v: T) -> bool {
        self.lt.is_none_or(|b| v < b)
            && self.lte.is_none_or(|b| v <= b)
            && self.gt.is_none_or(|b| v > b)
            && self.gte.is_none_or(|b| v >= b)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lon: f64,
    pub lat: f64,
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

type PResult<T> = Result<T, String>;

impl Filter {
    pub fn from_json(v: &Value) -> PResult<Filter> {
        parse_filter(v, 0)
    }
}

fn obj<'a>(v: &'a Value, what: &str) -> PResult<&'a serde_json::Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format!("{what} must be an object"))
}

fn parse_filter(v: &Value, depth: usize) -> PResult<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(format!(
            "filter is nested deeper than {MAX_FILTER_DEPTH} levels"
        ));
    }
    let m = obj(v, "filter")?;
    let mut f = Filter::default();
    for (k, val) in m {
        match k.as_str() {
            "must" => f.must = parse_cond_list(val, depth)?,
            "should" => f.should = parse_cond_list(val, depth)?,
            "must_not" => f.must_not = parse_cond_list(val, depth)?,
            "min_should" => {
                if val.is_null() {
                    continue;
                }
                let ms = obj(val, "min_should")?;
                let conditions = parse_cond_list(ms.get("conditions").unwrap_or(&Value::Null), depth)?
                    .ok_or("min_should: missing field `conditions`")?;
                let min_count = ms
                    .get("min_count")
                    .and_then(Value::as_u64)
                    .ok_or("min_should: `min_count` must be a non-negative integer")?;
                if min_count < 1 {
                    return Err(format!("min_count value {min_count} is invalid. Must be 1 or larger."));
                }
                f.min_should = Some(MinShould { conditions, min_count: min_count as usize });
            }
            other => return Err(format!("unknown field `{other}` in filter, expected one of `must`, `should`, `must_not`, `min_should`")),
        }
    }
    Ok(f)
}

fn parse_cond_list(v: &Value, depth: usize) -> PResult<Option<Vec<Condition>>> {
    match v {
        Value::Null => Ok(None),
        Value::Array(a) => a
            .iter()
            .map(|c| parse_condition(c, depth + 1))
            .collect::<PResult<Vec<_>>>()
            .map(Some),
        Value::Object(_) => Ok(Some(vec![parse_condition(v, depth + 1)?])),
        _ => Err("filter clause must be a condition or a list of conditions".into()),
    }
}

fn key_path(v: Option<&Value>, ctx: &str) -> PResult<JsonPath> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{ctx}: `key` must be a string"))?;
    JsonPath::parse(s)
}

/// JSON of the internal shard-scope condition ([`Condition::ShardScope`]): points whose
/// shard (of `shard_number`) is in `shards`. The one place that writes this shape.
pub fn shard_scope(shard_number: u32, shards: &[u32]) -> Value {
    serde_json::json!({"__shards": {"shard_number": shard_number, "shards": shards}})
}

/// A filter of the shard-scope condition alone (the parsed form of
/// `{"must": [shard_scope(..)]}`).
pub fn shard_filter(shard_number: u32, shards: &[u32]) -> Filter {
    Filter {
        must: Some(vec![Condition::ShardScope {
            shard_number,
            shards: shards.to_vec(),
        }]),
        ..Default::default()
    }
}

fn parse_condition(v: &Value, depth: usize) -> PResult<Condition> {
    if depth > MAX_FILTER_DEPTH {
        return Err(format!(
            "filter is nested deeper than {MAX_FILTER_DEPTH} levels"
        ));
    }
    let m = obj(v, "condition")?;
    if m.contains_key("key") {
        return parse_field_condition(m).map(Condition::Field);
    }
    if let Some(ids) = m.get("has_id") {
        let arr = ids.as_array().ok_or("has_id must be a list of point ids")?;
        let set = arr
            .iter()
            .map(|x| serde_json::from_value::<PointId>(x.clone()).map_err(|e| e.to_string()))
            .collect::<PResult<HashSet<_>>>()?;
        return Ok(Condition::HasId(set));
    }
    if let Some(x) = m.get("is_empty") {
        return Ok(Condition::IsEmpty(key_path(
            obj(x, "is_empty")?.get("key"),
            "is_empty",
        )?));
    }
    if let Some(x) = m.get("is_null") {
        return Ok(Condition::IsNull(key_path(
            obj(x, "is_null")?.get("key"),
            "is_null",
        )?));
    }
    if let Some(x) = m.get("__shards") {
        let o = obj(x, "__shards")?;
        let shard_number =
            o.get("shard_number")
                .and_then(Value::as_u64)
                .filter(|n| (1..=u32::MAX as u64).contains(n))
                .ok_or("__shards: `shard_number` must be a positive integer")? as u32;
        let shards = o
            .get("shards")
            .and_then(Value::as_array)
            .ok_or("__shards: `shards` must be a list")?
            .iter()
            .map(|s| {
                s.as_u64()
                    .map(|s| s as u32)
                    .ok_or("__shards: shard ids are integers")
            })
            .collect::<Result<Vec<u32>, _>>()?;
        return Ok(Condition::ShardScope {
            shard_number,
            shards,
        });
    }
    if let Some(x) = m.get("has_vector") {
        let s = x.as_str().ok_or("has_vector must be a vector name")?;
        return Ok(Condition::HasVector(s.to_string()));
    }
    if let Some(x) = m.get("nested") {
        let n = obj(x, "nested")?;
        let path = key_path(n.get("key"), "nested")?.without_trailing_wildcard();
        let filter = parse_filter(
            n.get("filter").ok_or("nested: missing field `filter`")?,
            depth + 1,
        )?;
        return Ok(Condition::Nested {
            path,
            filter: Box::new(filter),
        });
    }
    if m.keys()
        .all(|k| matches!(k.as_str(), "must" | "should" | "must_not" | "min_should"))
    {
        return Ok(Condition::Filter(Box::new(parse_filter(v, depth + 1)?)));
    }
    Err(format!(
        "unknown condition with fields {:?}: expected a field condition (`key`), `has_id`, `is_empty`, `is_null`, `has_vector`, `nested` or a filter",
        m.keys().collect::<Vec<_>>()
    ))
}

fn parse_match_value(v: &Value) -> PResult<MatchValue> {
    match v {
        Value::String(s) => Ok(MatchValue::Str(s.clone())),
        Value::Bool(b) => Ok(MatchValue::Bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(MatchValue::Int)
            .ok_or_else(|| format!("match value must be a string, integer or bool, got {n}")),
        _ => Err(format!(
            "match value must be a string, integer or bool, got {v}"
        )),
    }
}

fn parse_match(v: &Value) -> PResult<Match> {
    let m = obj(v, "match")?;
    let list = |x: &Value| -> PResult<Vec<MatchValue>> {
        x.as_array()
            .ok_or("match any/except must be a list")?
            .iter()
            .map(parse_match_value)
            .collect()
    };
    let text = |x: &Value| -> PResult<String> {
        x.as_str()
            .map(str::to_string)
            .ok_or_else(|| "match text must be a string".to_string())
    };
    if let Some(x) = m.get("value") {
        return parse_match_value(x).map(Match::Value);
    }
    if let Some(x) = m.get("any") {
        return list(x).map(Match::Any);
    }
    if let Some(x) = m.get("except") {
        return list(x).map(Match::Except);
    }
    if let Some(x) = m.get("text") {
        return text(x).map(Match::Text);
    }
    if let Some(x) = m.get("text_any") {
        return text(x).map(Match::TextAny);
    }
    if let Some(x) = m.get("phrase") {
        return text(x).map(Match::Phrase);
    }
    Err("match must have one of `value`, `any`, `except`, `text`, `text_any`, `phrase`".into())
}

fn parse_f64_range(v: &Value, what: &str) -> PResult<Range<f64>> {
    let m = obj(v, what)?;
    let get = |k: &str| -> PResult<Option<f64>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(x) => Err(format!("{what}.{k} must be a number, got {x}")),
        }
    };
    Ok(Range {
        lt: get("lt")?,
        gt: get("gt")?,
        lte: get("lte")?,
        gte: get("gte")?,
    })
}

fn parse_dt_range(v: &serde_json::Map<String, Value>) -> PResult<Range<i64>> {
    let get = |k: &str| -> PResult<Option<i64>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_datetime(s)
                .map(Some)
                .ok_or_else(|| format!("range.{k}: invalid datetime {s:?}")),
            Some(x) => Err(format!("range.{k} must be a datetime string, got {x}")),
        }
    };
    Ok(Range {
        lt: get("lt")?,
        gt: get("gt")?,
        lte: get("lte")?,
        gte: get("gte")?,
    })
}

fn parse_geo_point(v: Option<&Value>, what: &str) -> PResult<GeoPoint> {
    let m = obj(v.ok_or_else(|| format!("missing {what}"))?, what)?;
    let lon = m
        .get("lon")
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("{what}.lon must be a number"))?;
    let lat = m
        .get("lat")
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("{what}.lat must be a number"))?;
    if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
        return Err(format!("{what}: wrong coordinates lon {lon}, lat {lat}"));
    }
    Ok(GeoPoint { lon, lat })
}

fn parse_line(v: Option<&Value>, what: &str) -> PResult<Vec<GeoPoint>> {
    let m = obj(v.ok_or_else(|| format!("missing {what}"))?, what)?;
    let pts = m
        .get("points")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}.points must be a list"))?;
    let line = pts
        .iter()
        .map(|p| parse_geo_point(Some(p), "polygon point"))
        .collect::<PResult<Vec<_>>>()?;
    if line.len() < 4 || line.first() != line.last() {
        return Err(format!(
            "{what}: a polygon ring needs at least 4 points and must be closed"
        ));
    }
    Ok(line)
}

fn parse_field_condition(m: &serde_json::Map<String, Value>) -> PResult<FieldCondition> {
    let key = key_path(m.get("key"), "field condition")?;
    let present = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
    let check = if present("match") {
        FieldCheck::Match(parse_match(&m["match"])?)
    } else if present("range") {
        let r = obj(&m["range"], "range")?;
        if r.values().any(Value::is_string) {
            FieldCheck::DatetimeRange(parse_dt_range(r)?)
        } else {
            FieldCheck::Range(parse_f64_range(&m["range"], "range")?)
        }
    } else if present("geo_bounding_box") {
        let b = obj(&m["geo_bounding_box"], "geo_bounding_box")?;
        FieldCheck::GeoBoundingBox {
            top_left: parse_geo_point(b.get("top_left"), "top_left")?,
            bottom_right: parse_geo_point(b.get("bottom_right"), "bottom_right")?,
        }
    } else if present("geo_radius") {
        let b = obj(&m["geo_radius"], "geo_radius")?;
        let radius = b
            .get("radius")
            .and_then(Value::as_f64)
            .ok_or("geo_radius.radius must be a number")?;
        FieldCheck::GeoRadius {
            center: parse_geo_point(b.get("center"), "center")?,
            radius,
        }
    } else if present("geo_polygon") {
        let b = obj(&m["geo_polygon"], "geo_polygon")?;
        let exterior = parse_line(b.get("exterior"), "exterior")?;
        let interiors = match b.get("interiors") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| parse_line(Some(x), "interior"))
                .collect::<PResult<_>>()?,
            Some(_) => return Err("geo_polygon.interiors must be a list".into()),
        };
        FieldCheck::GeoPolygon {
            exterior,
            interiors,
        }
    } else if present("values_count") {
        FieldCheck::ValuesCount(parse_f64_range(&m["values_count"], "values_count")?)
    } else if present("is_empty") {
        FieldCheck::IsEmpty(m["is_empty"].as_bool().ok_or("is_empty must be a bool")?)
    } else if present("is_null") {
        FieldCheck::IsNull(m["is_null"].as_bool().ok_or("is_null must be a bool")?)
    } else {
        FieldCheck::Nothing
    };
    if check == FieldCheck::Nothing {
        return Err(format!(
            "Validation error: At least one field condition must be specified for key {:?}",
            m.get("key").and_then(Value::as_str).unwrap_or_default()
        ));
    }
    Ok(FieldCondition { key, check })
}

/// Parse a payload datetime string into microseconds since the Unix epoch (UTC).
/// Accepts RFC 3339 and the looser forms Qdrant accepts (space separator, no zone = UTC,
/// date only, minutes only).
pub fn parse_datetime(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let s = s.trim_start();
    let s = if let Some(x) = s.strip_suffix(" UTC") {
        format!("{x}+00:00")
    } else {
        s.to_string()
    };
    if let Ok(d) = DateTime::parse_from_rfc3339(&s) {
        return Some(d.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f %#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(&s, fmt) {
            return Some(d.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(&s, fmt) {
            return Some(d.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok().map(|d| {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_micros()
    })
}

// ---------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------

/// What a filter can see of a point.
pub struct PointView<'a> {
    pub id: Option<PointId>,
    pub payload: &'a Payload,
    pub has_vector: &'a dyn Fn(&str) -> bool,
}

impl Filter {
    pub fn check(&self, p: &PointView) -> bool {
        if let Some(c) = &self.must {
            if !c.iter().all(|c| c.check(p)) {
                return false;
            }
        }
        if let Some(c) = &self.must_not {
            if c.iter().any(|c| c.check(p)) {
                return false;
            }
        }
        if let Some(c) = &self.should {
            if !c.is_empty() && !c.iter().any(|c| c.check(p)) {
                return false;
            }
        }
        if let Some(ms) = &self.min_should {
            if ms.conditions.iter().filter(|c| c.check(p)).count() < ms.min_count {
                return false;
            }
        }
        true
    }
}

fn value_is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn value_is_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(Value::is_null),
        _ => false,
    }
}

fn check_is_empty(path: &JsonPath, payload: &Payload) -> bool {
    path.values(payload, false)
        .iter()
        .all(|v| value_is_empty(v))
}

fn check_is_null(path: &JsonPath, payload: &Payload) -> bool {
    path.values(payload, false).iter().any(|v| value_is_null(v))
}

fn match_value(v: &Value, m: &MatchValue) -> bool {
    match (v, m) {
        (Value::String(a), MatchValue::Str(b)) => a == b,
        (Value::Bool(a), MatchValue::Bool(b)) => a == b,
        (Value::Number(n), MatchValue::Int(b)) => {
            if let Some(a) = n.as_i64() {
                a == *b
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Lowercased alphanumeric word tokens (Qdrant's default word tokenizer for unindexed text).
pub fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn check_match(m: &Match, v: &Value) -> bool {
    match m {
        Match::Value(x) => match_value(v, x),
        Match::Any(xs) => xs.iter().any(|x| match_value(v, x)),
        Match::Except(xs) => !v.is_null() && !xs.iter().any(|x| match_value(v, x)),
        Match::Text(q) => {
            let Value::String(s) = v else { return false };
            let qt = tokens(q);
            let dt: HashSet<String> = tokens(s).into_iter().collect();
            !qt.is_empty() && qt.iter().all(|t| dt.contains(t))
        }
        Match::TextAny(q) => {
            let Value::String(s) = v else { return false };
            let dt: HashSet<String> = tokens(s).into_iter().collect();
            tokens(q).iter().any(|t| dt.contains(t))
        }
        Match::Phrase(q) => {
            let Value::String(s) = v else { return false };
            let qt = tokens(q);
            let dt = tokens(s);
            !qt.is_empty() && dt.windows(qt.len()).any(|w| w == qt.as_slice())
        }
    }
}

pub(crate) fn as_geo(v: &Value) -> Option<GeoPoint> {
    let m = v.as_object()?;
    let lat = m.get("lat")?.as_f64()?;
    let lon = m.get("lon")?.as_f64()?;
    (lat.is_finite() && lon.is_finite()).then_some(GeoPoint { lon, lat })
}

const EARTH_RADIUS_M: f64 = 6371008.8;

pub fn haversine_m(a: GeoPoint, b: GeoPoint) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

fn in_ring(p: GeoPoint, ring: &[GeoPoint]) -> bool {
    // ray casting in (lon, lat) plane
    let mut inside = false;
    let n = ring.len();
    let mut j = n - 1;
    for i in 0..n {
        let (a, b) = (ring[i], ring[j]);
        if ((a.lat > p.lat) != (b.lat > p.lat))
            && (p.lon < (b.lon - a.lon) * (p.lat - a.lat) / (b.lat - a.lat) + a.lon)
        {
            inside = !inside;
        }
        j = i;
    }
    inside
}

impl FieldCheck {
    /// Whether point `p` satisfies this geo condition (false for non-geo conditions).
    pub fn geo_match(&self, p: GeoPoint) -> bool {
        match self {
            FieldCheck::GeoBoundingBox {
                top_left,
                bottom_right,
            } => {
                let lon_ok = if top_left.lon > bottom_right.lon {
                    p.lon > top_left.lon || p.lon < bottom_right.lon
                } else {
                    top_left.lon < p.lon && p.lon < bottom_right.lon
                };
                lon_ok && top_left.lat > p.lat && p.lat > bottom_right.lat
            }
            FieldCheck::GeoRadius { center, radius } => haversine_m(p, *center) < *radius,
            FieldCheck::GeoPolygon {
                exterior,
                interiors,
            } => in_ring(p, exterior) && !interiors.iter().any(|r| in_ring(p, r)),
            _ => false,
        }
    }

    /// The latitude band (degrees, inclusive) every point matching this geo condition lies
    /// in; `None` for non-geo conditions. A great-circle distance is never shorter than
    /// the latitude difference along a meridian, so a radius band is exact as a superset.
    pub fn geo_lat_band(&self) -> Option<(f64, f64)> {
        Some(match self {
            FieldCheck::GeoBoundingBox {
                top_left,
                bottom_right,
            } => (bottom_right.lat, top_left.lat),
            FieldCheck::GeoRadius { center, radius } => {
                let d = (radius.max(0.0) / EARTH_RADIUS_M).to_degrees();
                (center.lat - d, center.lat + d)
            }
            FieldCheck::GeoPolygon { exterior, .. } => exterior
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                    (lo.min(p.lat), hi.max(p.lat))
                }),
            _ => return None,
        })
    }
}

impl FieldCondition {
    fn check(&self, payload: &Payload) -> bool {
        match &self.check {
            FieldCheck::ValuesCount(r) => {
                let vals = self.key.values(payload, false);
                let counts: Vec<usize> = if vals.iter().all(|v| v.is_null()) {
                    vec![0]
                } else {
                    vals.iter()
                        .map(|v| match v {
                            Value::Null => 0,
                            Value::Array(a) => a.len(),
                            _ => 1,
                        })
                        .collect()
                };
                counts.into_iter().any(|c| r.check(c as f64))
            }
            FieldCheck::IsEmpty(b) => check_is_empty(&self.key, payload) == *b,
            FieldCheck::IsNull(b) => check_is_null(&self.key, payload) == *b,
            FieldCheck::Nothing => false,
            check => {
                let vals = self.key.values(payload, true);
                vals.iter().any(|v| match check {
                    FieldCheck::Match(m) => check_match(m, v),
                    FieldCheck::Range(r) => {
                        !v.is_boolean() && v.as_f64().is_some_and(|x| r.check(x))
                    }
                    FieldCheck::DatetimeRange(r) => v
                        .as_str()
                        .and_then(parse_datetime)
                        .is_some_and(|x| r.check(x)),
                    FieldCheck::GeoBoundingBox { .. }
                    | FieldCheck::GeoRadius { .. }
                    | FieldCheck::GeoPolygon { .. } => {
                        as_geo(v).is_some_and(|p| check.geo_match(p))
                    }
                    _ => false,
                })
            }
        }
    }
}

impl Condition {
    pub fn check(&self, p: &PointView) -> bool {
        match self {
            Condition::Field(f) => f.check(p.payload),
            Condition::IsEmpty(k) => check_is_empty(k, p.payload),
            Condition::IsNull(k) => check_is_null(k, p.payload),
            Condition::HasId(ids) => p.id.is_some_and(|id| ids.contains(&id)),
            Condition::HasVector(name) => (p.has_vector)(name),
            Condition::Filter(f) => f.check(p),
            Condition::ShardScope {
                shard_number,
                shards,
            } => {
                p.id.is_some_and(|id| shards.contains(&crate::routing::shard_of(id, *shard_number)))
            }
            Condition::Nested { path, filter } => {
                let never = |_: &str| false;
                path.values(p.payload, false).into_iter().any(|v| {
                    let Value::Array(items) = v else { return false };
                    items.iter().filter_map(Value::as_object).any(|item| {
                        filter.check(&PointView {
                            id: None,
                            payload: item,
                            has_vector: &never,
                        })
                    })
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(f: Value, pl: Value) -> bool {
        let f = Filter::from_json(&f).unwrap();
        let pl = pl.as_object().unwrap().clone();
        let hv = |_: &str| true;
        f.check(&PointView {
            id: Some(PointId::Num(1)),
            payload: &pl,
            has_vector: &hv,
        })
    }

    #[test]
    fn shard_filter_is_the_parsed_shard_scope() {
        let parsed =
            Filter::from_json(&serde_json::json!({"must": [shard_scope(4, &[1, 3])]})).unwrap();
        assert_eq!(shard_filter(4, &[1, 3]), parsed);
    }

    #[test]
    fn conditions_table() {
        let pl = json!({"city": "Berlin", "n": 5, "f": 1.5, "b": true, "tags": ["a", "b"], "e": [], "z": null,
            "loc": {"lon": 13.4, "lat": 52.5}, "arr": [{"x": 1, "y": "p"}, {"x": 2, "y": "q"}], "t": "2024-01-02T03:04:05Z",
            "txt": "The quick brown fox"});
        let cases = [
            (
                json!({"must": [{"key": "city", "match": {"value": "Berlin"}}]}),
                true,
            ),
            (
                json!({"must": {"key": "city", "match": {"value": "berlin"}}}),
                false,
            ),
            (json!({"must": [{"key": "n", "match": {"value": 5}}]}), true),
            (
                json!({"must": [{"key": "f", "match": {"value": 1}}]}),
                false,
            ),
            (
                json!({"must": [{"key": "b", "match": {"value": true}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "b", "match": {"value": 1}}]}),
                false,
            ),
            (
                json!({"must": [{"key": "tags", "match": {"any": ["b", "c"]}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "tags", "match": {"except": ["a", "b"]}}]}),
                false,
            ),
            (
                json!({"must": [{"key": "txt", "match": {"text": "QUICK fox"}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "txt", "match": {"phrase": "brown quick"}}]}),
                false,
            ),
            (
                json!({"must": [{"key": "n", "range": {"gt": 4, "lte": 5}}]}),
                true,
            ),
            (json!({"must": [{"key": "b", "range": {"gte": 0}}]}), false),
            (
                json!({"must": [{"key": "t", "range": {"gt": "2024-01-01", "lt": "2024-01-03T00:00:00+00:00"}}]}),
                true,
            ),
            (json!({"must": [{"has_id": [1, 2]}]}), true),
            (
                json!({"must": [{"is_empty": {"key": "e"}}, {"is_empty": {"key": "missing"}}, {"is_null": {"key": "z"}}]}),
                true,
            ),
            (json!({"must": [{"is_empty": {"key": "tags"}}]}), false),
            (
                json!({"must": [{"key": "tags", "values_count": {"gte": 2, "lt": 3}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "loc", "geo_radius": {"center": {"lon": 13.4, "lat": 52.5}, "radius": 10.0}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "loc", "geo_bounding_box": {"top_left": {"lon": 13.0, "lat": 53.0}, "bottom_right": {"lon": 14.0, "lat": 52.0}}}]}),
                true,
            ),
            (
                json!({"must": [{"key": "loc", "geo_polygon": {"exterior": {"points": [{"lon": 13.0, "lat": 52.0}, {"lon": 14.0, "lat": 52.0}, {"lon": 14.0, "lat": 53.0}, {"lon": 13.0, "lat": 53.0}, {"lon": 13.0, "lat": 52.0}]}}}]}),
                true,
            ),
            (
                json!({"must": [{"nested": {"key": "arr", "filter": {"must": [{"key": "x", "match": {"value": 2}}, {"key": "y", "match": {"value": "q"}}]}}}]}),
                true,
            ),
            (
                json!({"must": [{"nested": {"key": "arr[]", "filter": {"must": [{"key": "x", "match": {"value": 2}}, {"key": "y", "match": {"value": "p"}}]}}}]}),
                false,
            ),
            (
                json!({"must": [{"key": "arr[].y", "match": {"value": "p"}}]}),
                true,
            ),
            (
                json!({"should": [{"key": "n", "match": {"value": 1}}, {"key": "n", "match": {"value": 5}}]}),
                true,
            ),
            (json!({"should": []}), true),
            (
                json!({"must_not": [{"key": "n", "match": {"value": 5}}]}),
                false,
            ),
            (
                json!({"min_should": {"conditions": [{"key": "n", "match": {"value": 5}}, {"key": "b", "match": {"value": true}}, {"key": "n", "match": {"value": 0}}], "min_count": 2}}),
                true,
            ),
            (
                json!({"must": [{"must_not": [{"key": "city", "match": {"value": "Rome"}}]}]}),
                true,
            ),
        ];
        for (i, (f, want)) in cases.into_iter().enumerate() {
            assert_eq!(check(f.clone(), pl.clone()), want, "case {i}: {f}");
        }
    }

    #[test]
    fn rejects_bad_filters() {
        for f in [
            json!({"must": [{"key": "a"}]}),
            json!({"must": [{"foo": 1}]}),
            json!({"mst": []}),
            json!({"min_should": {"conditions": [], "min_count": 0}}),
        ] {
            assert!(Filter::from_json(&f).is_err(), "{f}");
        }
        let mut deep = json!({"key": "a", "match": {"value": 1}});
        for _ in 0..200 {
            deep = json!({"must": [deep]});
        }
        assert!(Filter::from_json(&deep).is_err());
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_datetime("1970-01-01 00:00:01"), Some(1_000_000));
        assert_eq!(parse_datetime("1970-01-01"), Some(0));
        assert_eq!(parse_datetime("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_datetime("nope"), None);
    }
}
