//! Typed reads on this node's points: what a single node answers itself and what a cluster
//! coordinator sends, already parsed, to each peer holding some of a collection's shards.
//!
//! A request that only concerns some shards (a peer holding more replicas than it was
//! asked to answer for) carries a [`Scope`]; it becomes an internal filter condition
//! ([`segment::filter::Condition::ShardScope`]) that never appears in the public JSON.
//!
//! The types are `serde` so peers can exchange them (MessagePack with named fields: a
//! sparse vector stays a map, see `segment::Vector`'s `Deserialize`). Peers of one cluster
//! run the same version; the encoding is not meant to be read by another one.

use crate::error::{CResult, CollectionError};
use crate::query::{
    enrich, OrderBySpec, QueryEngine, QuerySpec, RequestParams, ScoredPoint, WithPayload,
    WithVector,
};
use crate::{Collection, Storage};
use segment::filter::{Condition, Filter};
use segment::store::PointStore;
use segment::{PointId, Vector};
use serde::{Deserialize, Serialize};

/// Vector components a search may score on an async worker itself. A hop to the blocking
/// pool costs two thread wake-ups, more than a small indexed search: running those inline
/// took a cluster peer's CPU per shard read from 0.21 to 0.15 ms (bench/cluster.py,
/// 30k x 128, 3 shards). Larger, exact or filtered searches (whose cost the planner only
/// knows once it runs) still go to the blocking pool.
pub const INLINE_SEARCH_COMPONENTS: usize = 1 << 19;

/// Results a search may return to run inline (enriching each costs a payload copy).
pub const INLINE_SEARCH_RESULTS: usize = 256;

/// Answer for these shards (of `shard_number`) only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub shard_number: u32,
    pub shards: Vec<u32>,
}

impl Scope {
    pub fn holds(&self, id: PointId) -> bool {
        self.shards
            .contains(&crate::routing::shard_of(id, self.shard_number))
    }

    /// `f` restricted to the scope's shards.
    pub fn restrict(&self, f: Option<Filter>) -> Filter {
        let mut must = vec![Condition::ShardScope {
            shard_number: self.shard_number,
            shards: self.shards.clone(),
        }];
        if let Some(f) = f {
            must.push(Condition::Filter(Box::new(f)));
        }
        Filter {
            must: Some(must),
            ..Default::default()
        }
    }
}

/// A nearest-neighbour search (`POST /collections/{name}/points/search`), parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    pub params: RequestParams,
    /// The vector name ("" for the unnamed one).
    pub using: String,
    pub vector: Vector,
    pub filter: Option<Filter>,
    pub limit: usize,
    pub offset: usize,
    pub score_threshold: Option<f32>,
    pub with_payload: WithPayload,
    pub with_vector: WithVector,
}

impl SearchRequest {
    /// Only points of the scope's shards.
    pub fn scoped(mut self, scope: &Scope) -> Self {
        self.filter = Some(scope.restrict(self.filter.take()));
        self
    }

    /// Whether this search is cheap enough to run on an async worker (see
    /// [`INLINE_SEARCH_COMPONENTS`]).
    pub fn inline(&self, store: &PointStore) -> bool {
        self.filter.is_none()
            && self.limit.saturating_add(self.offset) <= INLINE_SEARCH_RESULTS
            && store
                .dense_search_cost(&self.using, self.params.exact, self.params.hnsw_ef)
                .is_some_and(|n| n <= INLINE_SEARCH_COMPONENTS)
    }
}

/// Payload and vectors of ranked candidates; a `with_vector` naming a vector the
/// collection does not have is refused (400), as in Qdrant, even when nothing matched.
pub fn enrich_checked(
    store: &PointStore,
    cands: Vec<crate::query::Candidate>,
    wp: &WithPayload,
    wv: &WithVector,
) -> CResult<Vec<ScoredPoint>> {
    if let WithVector::Names(names) = wv {
        let schema = store.schema();
        if let Some(n) = names
            .iter()
            .find(|n| !schema.dense.contains_key(*n) && !schema.sparse.contains_key(*n))
        {
            return Err(CollectionError::BadInput(format!(
                "Not existing vector name error: {n}"
            )));
        }
    }
    Ok(enrich(store, cands, wp, wv))
}

/// `lookup_from` of a query: where point ids given as inputs are looked up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LookupFrom {
    pub collection: String,
    /// The vector to read there (default: the query's `using`).
    pub vector: Option<String>,
}

/// Run `f` with a query engine over `store` (a read guard of `c`'s points) whose id
/// lookups read `lookup_from` (another collection of `storage`) or `store` itself.
pub fn with_engine<T>(
    storage: &Storage,
    c: &Collection,
    store: &PointStore,
    lookup_from: Option<&LookupFrom>,
    params: RequestParams,
    f: impl FnOnce(&QueryEngine) -> CResult<T>,
) -> CResult<T> {
    let other = lookup_from
        .map(|l| storage.get(&l.collection))
        .transpose()?;
    let vec_override = lookup_from.and_then(|l| l.vector.as_deref());
    let other_store = other.as_ref().map(|o| o.read());
    let src: &PointStore = other_store.as_deref().unwrap_or(store);
    // examples looked up in another collection are not points of this one
    let exclude = other.as_ref().is_none_or(|o| o.name() == c.name());
    engine_over(c, store, src, vec_override, exclude, params, f)
}

/// A query engine over `store` whose id lookups read `store` itself.
pub fn with_own_engine<T>(
    c: &Collection,
    store: &PointStore,
    params: RequestParams,
    f: impl FnOnce(&QueryEngine) -> CResult<T>,
) -> CResult<T> {
    engine_over(c, store, store, None, true, params, f)
}

/// The engine both of the above set up: ids are looked up in `src` (vector `vec_override`,
/// or the query's `using`).
fn engine_over<T>(
    c: &Collection,
    store: &PointStore,
    src: &PointStore,
    vec_override: Option<&str>,
    exclude_examples: bool,
    params: RequestParams,
    f: impl FnOnce(&QueryEngine) -> CResult<T>,
) -> CResult<T> {
    let lookup = |id: PointId, using: &str| -> CResult<Vector> {
        let name = vec_override.unwrap_or(using);
        let rec = src
            .get(id)
            .ok_or_else(|| CollectionError::PointNotFound(id.to_string()))?;
        rec.vectors
            .get(name)
            .cloned()
            .ok_or_else(|| CollectionError::BadInput(format!("Point {id} has no vector `{name}`")))
    };
    let engine = QueryEngine {
        store,
        lookup: &lookup,
        params,
        full_scan_threshold_kb: c.full_scan_threshold_kb(),
        exclude_examples,
    };
    f(&engine)
}

/// Points by id (`POST /collections/{name}/points`), parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrieveRequest {
    pub ids: Vec<PointId>,
    pub with_payload: WithPayload,
    pub with_vector: WithVector,
}

impl RetrieveRequest {
    /// Only the ids of the scope's shards.
    pub fn scoped(mut self, scope: &Scope) -> Self {
        self.ids.retain(|id| scope.holds(*id));
        self
    }
}

/// The records of `r.ids` that exist, in request order, each once.
pub fn retrieve(store: &PointStore, r: &RetrieveRequest) -> CResult<Vec<ScoredPoint>> {
    let mut seen = std::collections::HashSet::new();
    let cands = r
        .ids
        .iter()
        .filter(|id| seen.insert(**id))
        .map(|&id| crate::query::Candidate {
            id,
            score: 0.0,
            order_value: None,
        })
        .collect();
    enrich_checked(store, cands, &r.with_payload, &r.with_vector)
}

/// A page of points (`POST /collections/{name}/points/scroll`), parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScrollRequest {
    pub filter: Option<Filter>,
    /// At least 1.
    pub limit: usize,
    /// The first id of the page (not with `order_by`).
    pub offset: Option<PointId>,
    pub with_payload: WithPayload,
    pub with_vector: WithVector,
    pub order_by: Option<OrderBySpec>,
}

impl ScrollRequest {
    /// Only points of the scope's shards.
    pub fn scoped(mut self, scope: &Scope) -> Self {
        self.filter = Some(scope.restrict(self.filter.take()));
        self
    }
}

/// A scroll's answer: `next_page_offset` is the id the next page starts at (never with
/// `order_by`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScrollPage {
    pub points: Vec<ScoredPoint>,
    pub next_page_offset: Option<PointId>,
}

/// One page of `store`'s points: in id order from `offset`, or in `order_by` order.
pub fn scroll(store: &PointStore, r: &ScrollRequest) -> CResult<ScrollPage> {
    if let Some(ob) = &r.order_by {
        if r.offset.is_some() {
            return Err(CollectionError::BadInput(
                "Can't use offset with order_by".into(),
            ));
        }
        let lookup = |id: PointId, _: &str| Err(CollectionError::PointNotFound(id.to_string()));
        let engine = QueryEngine::new(store, &lookup);
        let cands = engine.order_by(ob, r.filter.as_ref(), r.limit)?;
        return Ok(ScrollPage {
            points: enrich_checked(store, cands, &r.with_payload, &r.with_vector)?,
            next_page_offset: None,
        });
    }
    let mut ids = store.scroll(r.offset, r.limit.saturating_add(1), r.filter.as_ref());
    let next = if ids.len() > r.limit { ids.pop() } else { None };
    let cands = ids
        .into_iter()
        .map(|id| crate::query::Candidate {
            id,
            score: 0.0,
            order_value: None,
        })
        .collect();
    Ok(ScrollPage {
        points: enrich_checked(store, cands, &r.with_payload, &r.with_vector)?,
        next_page_offset: next,
    })
}

/// How many points match (`POST /collections/{name}/points/count`), parsed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CountRequest {
    pub filter: Option<Filter>,
}

impl CountRequest {
    /// Only points of the scope's shards.
    pub fn scoped(mut self, scope: &Scope) -> Self {
        self.filter = Some(scope.restrict(self.filter.take()));
        self
    }
}

/// A universal query (`POST /collections/{name}/points/query`), parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryRequest {
    pub params: RequestParams,
    pub spec: QuerySpec,
    pub with_payload: WithPayload,
    pub with_vector: WithVector,
    pub lookup_from: Option<LookupFrom>,
}

impl QueryRequest {
    /// Only points of the scope's shards, at every level.
    pub fn scoped(mut self, scope: &Scope) -> Self {
        fn restrict(spec: &mut QuerySpec, scope: &Scope) {
            spec.filter = Some(scope.restrict(spec.filter.take()));
            for p in &mut spec.prefetch {
                restrict(p, scope);
            }
        }
        restrict(&mut self.spec, scope);
        self
    }
}

impl From<SearchRequest> for QueryRequest {
    /// A search is a query for the nearest points to its vector.
    fn from(r: SearchRequest) -> Self {
        QueryRequest {
            params: r.params,
            spec: QuerySpec {
                prefetch: vec![],
                query: Some(crate::query::QueryInput::Nearest(
                    crate::query::VectorInput::Vector(r.vector),
                )),
                using: Some(r.using),
                filter: r.filter,
                score_threshold: r.score_threshold,
                limit: r.limit,
                offset: r.offset,
            },
            with_payload: r.with_payload,
            with_vector: r.with_vector,
            lookup_from: None,
        }
    }
}

/// How `*/groups` requests group their ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRequest {
    pub group_by: String,
    /// At least 1.
    pub group_size: usize,
    /// Groups, at least 1.
    pub limit: usize,
    pub with_lookup: Option<WithLookup>,
}

/// `with_lookup` of a groups request: the record whose id is the group key, from there.
#[derive(Clone, Debug, PartialEq)]
pub struct WithLookup {
    pub collection: String,
    pub with_payload: WithPayload,
    pub with_vector: WithVector,
}

/// One group of a `*/groups` answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub id: serde_json::Value,
    pub hits: Vec<ScoredPoint>,
    /// `with_lookup`: the record whose id is the group key.
    pub lookup: Option<ScoredPoint>,
}

/// A group key that names a point (only those are looked up, as in Qdrant).
pub fn group_key_id(key: &serde_json::Value) -> Option<PointId> {
    match key {
        serde_json::Value::Number(n) => n.as_u64().map(PointId::Num),
        serde_json::Value::String(s) => PointId::parse_str(s),
        _ => None,
    }
}

/// `*/groups` on `store` (a read guard of `c`'s points): `r` ranks every point (each level
/// widened to the whole collection, so groups fill up to `group_size`), then the ranking
/// is grouped ([`crate::query::group_hits`]).
pub fn groups(
    storage: &Storage,
    c: &Collection,
    store: &PointStore,
    mut r: QueryRequest,
    g: &GroupRequest,
) -> CResult<Vec<Group>> {
    r.spec.widen(store.len().max(1));
    r.spec.offset = 0;
    let ranked = with_engine(storage, c, store, r.lookup_from.as_ref(), r.params, |e| {
        e.query(&r.spec)
    })?;
    let groups = crate::query::group_hits(store, ranked, &g.group_by, g.group_size, g.limit)?;
    // the lookup collection; `None` inside: this one, whose points are already held
    let other = match &g.with_lookup {
        Some(l) => {
            let lc = storage.get(&l.collection)?;
            Some((l, (lc.name() != c.name()).then_some(lc)))
        }
        None => None,
    };
    let mut out = Vec::with_capacity(groups.len());
    for (key, hits) in groups {
        let hits = enrich_checked(store, hits, &r.with_payload, &r.with_vector)?;
        let lookup = match (&other, group_key_id(&key)) {
            (Some((l, lc)), Some(id)) => {
                let req = RetrieveRequest {
                    ids: vec![id],
                    with_payload: l.with_payload.clone(),
                    with_vector: l.with_vector.clone(),
                };
                match lc {
                    Some(lc) => retrieve(&lc.read(), &req)?.pop(),
                    None => retrieve(store, &req)?.pop(),
                }
            }
            _ => None,
        };
        out.push(Group {
            id: key,
            hits,
            lookup,
        });
    }
    Ok(out)
}

/// Run a query on `store` (a read guard of `c`'s points).
pub fn query(
    storage: &Storage,
    c: &Collection,
    store: &PointStore,
    r: &QueryRequest,
) -> CResult<Vec<ScoredPoint>> {
    with_engine(storage, c, store, r.lookup_from.as_ref(), r.params, |e| {
        let cands = e.query(&r.spec)?;
        enrich_checked(store, cands, &r.with_payload, &r.with_vector)
    })
}

/// Run a search on `store` (a read guard of `c`'s points).
pub fn search(c: &Collection, store: &PointStore, r: &SearchRequest) -> CResult<Vec<ScoredPoint>> {
    with_own_engine(c, store, r.params, |e| {
        let cands = e.search(
            &r.using,
            &r.vector,
            r.filter.as_ref(),
            r.limit,
            r.offset,
            r.score_threshold,
        )?;
        enrich_checked(store, cands, &r.with_payload, &r.with_vector)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use segment::filter::{FieldCheck, FieldCondition, Match, MatchValue};
    use segment::json_path::JsonPath;
    use segment::SparseVector;

    fn request(vector: Vector) -> SearchRequest {
        SearchRequest {
            params: RequestParams {
                hnsw_ef: Some(64),
                ..Default::default()
            },
            using: "text".into(),
            vector,
            filter: Some(Filter {
                must: Some(vec![Condition::Field(FieldCondition {
                    key: JsonPath::parse("meta.lang").unwrap(),
                    check: FieldCheck::Match(Match::Value(MatchValue::Str("en".into()))),
                })]),
                ..Default::default()
            }),
            limit: 10,
            offset: 5,
            score_threshold: Some(0.25),
            with_payload: WithPayload::Include(vec![JsonPath::parse("a.b").unwrap()]),
            with_vector: WithVector::Names(vec!["text".into()]),
        }
    }

    #[test]
    fn search_requests_survive_the_peer_encoding() {
        let dense: Vec<f32> = (0..3072).map(|i| (i as f32 * 0.37).sin()).collect();
        let sparse = SparseVector {
            indices: vec![3, 17, 4000],
            values: vec![0.5, -1.25, 2.0],
        };
        for v in [Vector::Dense(dense), Vector::Sparse(sparse)] {
            let r = request(v).scoped(&Scope {
                shard_number: 6,
                shards: vec![1, 4],
            });
            let bytes = rmp_serde::to_vec_named(&r).unwrap();
            let back: SearchRequest = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn a_scope_keeps_the_request_filter_and_adds_the_shards() {
        let r = request(Vector::Dense(vec![1.0; 4])).scoped(&Scope {
            shard_number: 3,
            shards: vec![2],
        });
        let must = r.filter.unwrap().must.unwrap();
        assert_eq!(
            must[0],
            Condition::ShardScope {
                shard_number: 3,
                shards: vec![2]
            }
        );
        assert!(matches!(&must[1], Condition::Filter(f) if f.must.as_ref().unwrap().len() == 1));
    }
}
