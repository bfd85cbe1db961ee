//! Route table and handlers. Engine calls run on the blocking pool, never on async workers.

use crate::envelope::{error_response, parse_query, ApiError, ApiResult, QJson, Timed};
use crate::wire::{self, *};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use cluster::state::ClusterOp;
use collection::config::CreateCollection;
use collection::query::{WithPayload, WithVector};
use collection::read::{
    CountRequest, GroupRequest, LookupFrom, QueryRequest, RetrieveRequest, ScrollPage,
    ScrollRequest, SearchRequest, WithLookup,
};
use collection::storage::AliasAction;
use collection::{Collection, CollectionError};
use distributed::placement::ReadConsistency;
use segment::PointId;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

type St = State<AppState>;

/// The `consistency` query parameter of a read (`all`, `majority`, `quorum` or a number;
/// default one replica per shard). Only coordinators use it.
pub struct ReadOpts(pub ReadConsistency);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReadOpts {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).unwrap_or_default();
        let mut out = ReadConsistency::One;
        for (k, v) in pairs {
            if k == "consistency" {
                out = ReadConsistency::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(format!("Query string error: `consistency` must be `all`, `majority`, `quorum` or a positive integer, got `{v}`"))
                })?;
            }
        }
        Ok(ReadOpts(out))
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "healthz check passed" }))
        .route("/livez", get(|| async { "healthz check passed" }))
        .route("/readyz", get(readyz))
        .route("/cluster", get(cluster_info))
        .route("/telemetry", get(crate::observe::telemetry))
        .route("/metrics", get(crate::observe::metrics))
        .route("/cluster/peer/{peer_id}", delete(remove_peer))
        .route("/cluster/recover", post(cluster_recover))
        .route("/cluster/transfers", get(transfer_history))
        .route("/collections", get(list_collections))
        .route("/aliases", get(list_aliases))
        .route("/collections/aliases", post(update_aliases))
        .route(
            "/collections/{name}",
            get(get_collection)
                .put(create_collection)
                .patch(update_collection)
                .delete(delete_collection),
        )
        .route("/collections/{name}/exists", get(collection_exists))
        .route("/collections/{name}/aliases", get(collection_aliases))
        .route(
            "/collections/{name}/cluster",
            get(collection_cluster).post(update_collection_cluster),
        )
        .route("/collections/{name}/index", put(create_index))
        .route("/collections/{name}/index/{field}", delete(delete_index))
        .route(
            "/collections/{name}/points",
            put(upsert_points).post(retrieve_points),
        )
        .route("/collections/{name}/points/{id}", get(get_point))
        .route("/collections/{name}/points/delete", post(delete_points))
        .route(
            "/collections/{name}/points/payload",
            post(set_payload).put(overwrite_payload),
        )
        .route(
            "/collections/{name}/points/payload/delete",
            post(delete_payload),
        )
        .route(
            "/collections/{name}/points/payload/clear",
            post(clear_payload),
        )
        .route("/collections/{name}/points/vectors", put(update_vectors))
        .route(
            "/collections/{name}/points/vectors/delete",
            post(delete_vectors),
        )
        .route("/collections/{name}/points/batch", post(batch_update))
        .route("/collections/{name}/points/scroll", post(scroll_points))
        .route("/collections/{name}/points/count", post(count_points))
        .route("/collections/{name}/points/search", post(search_points))
        .route(
            "/collections/{name}/points/search/batch",
            post(search_batch),
        )
        .route(
            "/collections/{name}/points/search/groups",
            post(search_groups),
        )
        .route("/collections/{name}/points/query", post(query_points))
        .route("/collections/{name}/points/query/batch", post(query_batch))
        .route(
            "/collections/{name}/points/query/groups",
            post(query_groups),
        )
        .route(
            "/collections/{name}/points/recommend",
            post(recommend_points),
        )
        .route(
            "/collections/{name}/points/recommend/batch",
            post(recommend_batch),
        )
        .route(
            "/collections/{name}/points/recommend/groups",
            post(recommend_groups),
        )
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn fallback() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "Not found: no such endpoint",
        Instant::now(),
    )
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed for this endpoint",
        Instant::now(),
    )
}

use crate::envelope::blocking;

fn coll(st: &AppState, name: &str) -> Result<Arc<Collection>, ApiError> {
    Ok(st.storage.get(name)?)
}

fn obj(v: &Value) -> Result<&JsonMap, ApiError> {
    v.as_object()
        .ok_or_else(|| ApiError::format("request body must be a JSON object"))
}

// ------------------------------------------------------------------ service

async fn root() -> impl IntoResponse {
    axum::Json(
        json!({"title": "sextant - vector search engine (Qdrant-compatible)", "version": "1.18.3", "sextant_version": env!("CARGO_PKG_VERSION")}),
    )
}

async fn cluster_info(State(st): St) -> ApiResult<Value> {
    let t = Instant::now();
    let Some(node) = &st.cluster else {
        return Ok(Timed(t, json!({"status": "disabled"})));
    };
    let peers: serde_json::Map<String, Value> = node
        .peers()
        .into_iter()
        .map(|(id, uri)| (id.to_string(), json!({"uri": format!("{uri}/")})))
        .collect();
    let now = now_rfc3339();
    Ok(Timed(
        t,
        json!({
            "status": "enabled",
            "peer_id": node.id,
            "peers": peers,
            "raft_info": node.raft_info(),
            "consensus_thread_status": {"consensus_thread_status": "working", "last_update": now},
            "message_send_failures": serde_json::to_value(&*node.send_failures.lock()).unwrap_or(json!({})),
        }),
    ))
}

/// RFC 3339 UTC timestamp without pulling a date crate into `api`.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Debug, Default, serde::Deserialize)]
struct RemovePeerParams {
    force: Option<String>,
    #[allow(dead_code)] // accepted for compatibility
    timeout: Option<String>,
}

/// `GET /readyz`: 200 once this peer can serve (see `distributed::readiness`), else 503
/// with the reason.
async fn readyz(State(st): St) -> Response {
    match distributed::readiness::check(&st.dist).await {
        Ok(()) => "all shards are ready".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

/// `DELETE /cluster/peer/{peer_id}`: refused while the peer holds shards unless `force=true`.
/// Runs on the leader (other peers forward the request to it).
async fn remove_peer(
    State(st): St,
    Path(peer): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<bool> {
    let t = Instant::now();
    let Some(node) = st.cluster.clone() else {
        return Err(ApiError::bad_request(
            "Wrong input: Distributed mode is not enabled",
        ));
    };
    let params: RemovePeerParams = parse_query(q)?;
    let force = parse_bool(params.force.as_deref(), "force")?;
    let peer: u64 = peer
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Wrong input: invalid peer id `{peer}`")))?;
    node.remove_peer_via_leader(peer, force).await?;
    Ok(Timed(t, true))
}

/// `POST /cluster/recover`: asks again for everything consensus places on this peer: each
/// of its replicas is resynced from another Active replica (`distributed::replication::
/// resync_all`; cheap when the replica is in sync: a WAL delta with nothing to send, then
/// equal digests).
async fn cluster_recover(State(st): St) -> ApiResult<bool> {
    let t = Instant::now();
    distributed::replication::resync_all(&st.dist).await?;
    Ok(Timed(t, true))
}

/// Propose a metadata operation (cluster mode); returns once every reachable peer has applied it (as in
/// Qdrant: a collection created through one peer exists on all of them when the call
/// returns). A peer that does not answer is down and catches up when it returns.
async fn propose(st: &AppState, op: ClusterOp) -> Result<(), ApiError> {
    let node = st
        .cluster
        .as_ref()
        .expect("propose is only called in cluster mode");
    node.propose(op, std::time::Duration::from_secs(30))
        .await
        .map_err(ApiError::from)?;
    Ok(distributed::coordinator::wait_all_applied(&st.dist, node.applied_index()).await?)
}

// ------------------------------------------------------------------ collections

async fn list_collections(State(st): St) -> ApiResult<Value> {
    let t = Instant::now();
    let names: Vec<Value> = st
        .storage
        .list()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect();
    Ok(Timed(t, json!({"collections": names})))
}

fn collection_info(c: &Collection) -> Value {
    let (status, indexed) = c.index_status();
    let store = c.read();
    let indexes = c.payload_indexes();
    let mut schema = serde_json::Map::new();
    for (field, s) in &indexes {
        let dt = s.kind().name();
        let count = segment::json_path::JsonPath::parse(field)
            .map(|p| {
                // payloads only: iter_records would clone every vector too
                store
                    .matching_ids(None)
                    .into_iter()
                    .filter(|id| {
                        store
                            .payload(*id)
                            .is_some_and(|pl| !p.values(pl, true).is_empty())
                    })
                    .count()
            })
            .unwrap_or(0);
        let mut e = json!({"data_type": dt, "points": count});
        // shown when the schema sets a parameter besides its type
        if let Some(p) = s
            .params()
            .map(|p| json!(p))
            .filter(|p| p.as_object().is_some_and(|m| m.len() > 1))
        {
            e["params"] = p;
        }
        schema.insert(field.clone(), e);
    }
    json!({
        "status": status,
        "optimizer_status": "ok",
        "indexed_vectors_count": indexed,
        "points_count": store.len(),
        "segments_count": 1,
        "config": c.config(),
        "payload_schema": schema,
    })
}

async fn get_collection_local(State(st): St, Path(name): Path<String>) -> ApiResult<Value> {
    let t = Instant::now();
    let c = coll(&st, &name)?;
    Ok(Timed(t, blocking(move || Ok(collection_info(&c))).await?))
}

async fn create_collection(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(mut body): QJson<Value>,
) -> ApiResult<bool> {
    crate::normalize::aliases(crate::normalize::Body::CollectionConfig, &mut body);
    let t = Instant::now();
    let _: WriteParams = parse_query(q)?;
    let req: CreateCollection = serde_json::from_value(body.clone()).map_err(ApiError::format)?;
    st.collections.create(name, req, body).await?;
    Ok(Timed(t, true))
}

async fn update_collection(
    State(st): St,
    Path(name): Path<String>,
    QJson(mut body): QJson<Value>,
) -> ApiResult<bool> {
    crate::normalize::aliases(crate::normalize::Body::CollectionConfig, &mut body);
    let t = Instant::now();
    st.collections.update(name, body).await?;
    Ok(Timed(t, true))
}

async fn delete_collection(State(st): St, Path(name): Path<String>) -> ApiResult<bool> {
    let t = Instant::now();
    Ok(Timed(t, st.collections.delete(name).await?))
}

async fn collection_exists(State(st): St, Path(name): Path<String>) -> ApiResult<Value> {
    Ok(Timed(
        Instant::now(),
        json!({"exists": st.storage.exists(&name)}),
    ))
}

fn aliases_json(list: Vec<(String, String)>) -> Value {
    json!({"aliases": list.into_iter().map(|(a, c)| json!({"alias_name": a, "collection_name": c})).collect::<Vec<_>>()})
}

async fn list_aliases(State(st): St) -> ApiResult<Value> {
    Ok(Timed(
        Instant::now(),
        aliases_json(st.storage.aliases(None)),
    ))
}

async fn collection_aliases(State(st): St, Path(name): Path<String>) -> ApiResult<Value> {
    let t = Instant::now();
    let c = coll(&st, &name)?;
    Ok(Timed(t, aliases_json(st.storage.aliases(Some(c.name())))))
}

async fn update_aliases(State(st): St, QJson(body): QJson<Value>) -> ApiResult<bool> {
    let t = Instant::now();
    let actions = obj(&body)?
        .get("actions")
        .cloned()
        .ok_or_else(|| ApiError::format("missing field `actions`"))?;
    let parsed: Vec<AliasAction> = serde_json::from_value(actions).map_err(ApiError::format)?;
    st.collections.update_aliases(parsed).await?;
    Ok(Timed(t, true))
}

async fn collection_cluster(State(st): St, Path(name): Path<String>) -> ApiResult<Value> {
    let t = Instant::now();
    let c = coll(&st, &name)?;
    let Some(node) = st.cluster.clone() else {
        let n = c.read().len();
        return Ok(Timed(
            t,
            json!({"peer_id": 0, "shard_count": 1, "local_shards": [{"shard_id": 0, "points_count": n, "state": "Active"}], "remote_shards": [], "shard_transfers": []}),
        ));
    };
    let state = node.state();
    let Some(meta) = state.state.collections.get(c.name()) else {
        return Err(CollectionError::CollectionNotFound(name).into());
    };
    let shard_number = meta.shards.len() as u32;
    // per-shard counts of the points stored here
    let mut counts = vec![0usize; meta.shards.len()];
    for id in c.read().matching_ids(None) {
        counts[collection::routing::shard_of(id, shard_number) as usize] += 1;
    }
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for (s, replicas) in meta.shards.iter().enumerate() {
        for peer in replicas {
            let state = meta
                .replica_state(s as u32, *peer)
                .map_or("Active", |x| x.name());
            if *peer == node.id {
                local.push(json!({"shard_id": s, "points_count": counts[s], "state": state}));
            } else {
                remote.push(json!({"shard_id": s, "peer_id": peer, "state": state}));
            }
        }
    }
    let transfers: Vec<Value> = meta
        .transfers
        .iter()
        .map(|tr| {
            let sent = st.dist.repl.progress(c.name(), tr.shard);
            json!({"shard_id": tr.shard, "from": tr.from, "to": tr.to,
                   "sync": tr.kind != cluster::state::TransferKind::Move,
                   "method": tr.method.name(),
                   "comment": sent.map(|n| format!("Transferring records: {n} sent"))})
        })
        .collect();
    Ok(Timed(
        t,
        json!({"peer_id": node.id, "shard_count": shard_number, "local_shards": local, "remote_shards": remote, "shard_transfers": transfers,
               // Sextant-only: the replica comparisons this peer led (docs/operations.md)
               "anti_entropy": st.dist.repl.anti_entropy.counters(c.name())}),
    ))
}

/// `GET /cluster/transfers` (Sextant): the shard transfers this peer finished as their
/// source, with the method actually used, what was sent and how long it took.
async fn transfer_history(State(st): St) -> ApiResult<Value> {
    let t = Instant::now();
    Ok(Timed(t, json!(st.dist.repl.history())))
}

/// `POST /collections/{name}/cluster`: move_shard, replicate_shard, abort_transfer,
/// drop_replica. `method`: `stream_records` (default), `wal_delta` (replays what the
/// target's log lacks; streams records when the source's log cannot tell), `snapshot`
/// (runs as `stream_records`).
async fn update_collection_cluster(
    State(st): St,
    Path(name): Path<String>,
    QJson(body): QJson<Value>,
) -> ApiResult<bool> {
    use cluster::state::{Transfer, TransferKind, TransferMethod};
    let t = Instant::now();
    // body validation comes first, as in Qdrant (before the collection or mode is checked)
    for kind in ["move_shard", "replicate_shard", "abort_transfer"] {
        let Some(args) = body.get(kind) else { continue };
        let (from, to) = (args.get("from_peer_id"), args.get("to_peer_id"));
        if from.is_some() && from == to {
            return Err(ApiError::validation(format!(
                "[{kind}.to_peer_id: cannot transfer shard to itself]"
            )));
        }
    }
    let c = coll(&st, &name)?;
    let Some(node) = st.cluster.clone() else {
        return Err(ApiError::bad_request(
            "Bad request: Distributed mode disabled",
        ));
    };
    let obj = body
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| ApiError::bad_request("Format error in JSON body: expected one of move_shard, replicate_shard, abort_transfer, drop_replica"))?;
    let (kind, args) = obj.iter().next().expect("one key");
    if !matches!(
        kind.as_str(),
        "move_shard" | "replicate_shard" | "abort_transfer" | "drop_replica"
    ) {
        return Err(ApiError::bad_request(format!(
            "Bad request: cluster operation `{kind}` is not supported"
        )));
    }
    let num = |k: &str| -> Result<u64, ApiError> {
        args.get(k).and_then(Value::as_u64).ok_or_else(|| {
            ApiError::validation(format!("{kind}.{k}: expected a non-negative integer"))
        })
    };
    let peers = node.peers();
    let known = |p: u64| -> Result<u64, ApiError> {
        if peers.contains_key(&p) {
            Ok(p)
        } else {
            Err(ApiError::bad_request(format!(
                "Bad request: Peer {p} does not exist"
            )))
        }
    };
    let shard = u32::try_from(num("shard_id")?)
        .map_err(|_| ApiError::validation("shard_id out of range"))?;
    let meta = node
        .state()
        .state
        .collections
        .get(c.name())
        .cloned()
        .ok_or_else(|| CollectionError::CollectionNotFound(name.clone()))?;
    if shard as usize >= meta.shards.len() {
        return Err(ApiError::bad_request(format!(
            "Bad request: Shard {shard} does not exist in collection `{name}`"
        )));
    }
    let cname = c.name().to_string();
    let op = match kind.as_str() {
        "move_shard" | "replicate_shard" | "abort_transfer" => {
            let from = known(num("from_peer_id")?)?;
            let to = known(num("to_peer_id")?)?;
            let mut method = TransferMethod::StreamRecords;
            if let Some(m) = args.get("method").filter(|m| !m.is_null()) {
                method = m.as_str().and_then(TransferMethod::parse).ok_or_else(|| {
                    ApiError::validation(format!("{kind}.method: unsupported transfer method {m}"))
                })?;
            }
            if kind == "abort_transfer" {
                let tr = meta
                    .transfers
                    .iter()
                    .find(|x| x.shard == shard && x.from == from && x.to == to)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::not_found(format!(
                            "Not found: no transfer of shard {shard} from {from} to {to}"
                        ))
                    })?;
                ClusterOp::AbortTransfer {
                    collection: cname,
                    transfer: tr,
                }
            } else {
                ClusterOp::StartTransfer {
                    collection: cname,
                    transfer: Transfer {
                        shard,
                        from,
                        to,
                        kind: if kind == "move_shard" {
                            TransferKind::Move
                        } else if meta.replica_state(shard, to).is_some() {
                            // onto a peer that holds a replica: resync it from `from`
                            // (Qdrant's manual recovery path)
                            TransferKind::Recovery
                        } else {
                            TransferKind::Replicate
                        },
                        method,
                    },
                }
            }
        }
        "drop_replica" => ClusterOp::DropReplica {
            collection: cname,
            shard,
            peer: known(num("peer_id")?)?,
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "Bad request: cluster operation `{other}` is not supported"
            )))
        }
    };
    propose(&st, op).await?;
    Ok(Timed(t, true))
}

async fn create_index(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    let t = Instant::now();
    let wait = parse_query::<WriteParams>(q)?.wait()?;
    coll(&st, &name)?; // a missing collection is reported before the body
    let m = obj(&body)?;
    let field = m
        .get("field_name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::format("missing field `field_name`"))?
        .to_string();
    segment::json_path::JsonPath::parse(&field).map_err(ApiError::bad_request)?;
    let schema = m
        .get("field_schema")
        .cloned()
        .filter(|v| !v.is_null())
        .ok_or_else(|| {
            ApiError::bad_request("Wrong input: field_schema is required to create a payload index")
        })?;
    let schema = wire::index_schema(&schema)?;
    st.collections
        .set_payload_index(name, field, Some(schema))
        .await?;
    Ok(Timed(
        t,
        UpdateResultOut {
            operation_id: 0,
            status: if wait { "completed" } else { "acknowledged" },
        },
    ))
}

async fn delete_index(
    State(st): St,
    Path((name, field)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<UpdateResultOut> {
    let t = Instant::now();
    let wait = parse_query::<WriteParams>(q)?.wait()?;
    st.collections.set_payload_index(name, field, None).await?;
    Ok(Timed(
        t,
        UpdateResultOut {
            operation_id: 0,
            status: if wait { "completed" } else { "acknowledged" },
        },
    ))
}

// ------------------------------------------------------------------ point updates

async fn run_update(
    st: AppState,
    name: String,
    q: Option<String>,
    op: collection::operations::UpdateOp,
) -> ApiResult<UpdateResultOut> {
    let t = Instant::now();
    let params = parse_query::<WriteParams>(q)?;
    let (wait, ordering) = (params.wait()?, params.ordering()?);
    let r = st.points.update(name, op, wait, ordering).await?;
    Ok(Timed(t, update_out(r)))
}

async fn upsert_points(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(mut body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    crate::normalize::aliases(crate::normalize::Body::Upsert, &mut body);
    run_update(st, name, q, upsert_op(&body)?).await
}

async fn delete_points(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    run_update(st, name, q, delete_op(&body)?).await
}

async fn set_payload(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    run_update(st, name, q, set_payload_op(&body, false)?).await
}

async fn overwrite_payload(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    run_update(st, name, q, set_payload_op(&body, true)?).await
}

async fn delete_payload(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    run_update(st, name, q, delete_payload_op(&body)?).await
}

async fn clear_payload(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    run_update(st, name, q, clear_payload_op(&body)?).await
}

async fn update_vectors(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    run_update(st, name, q, update_vectors_op(&body)?).await
}

async fn delete_vectors(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<Value>,
) -> ApiResult<UpdateResultOut> {
    run_update(st, name, q, delete_vectors_op(&body)?).await
}

async fn batch_update(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(mut body): QJson<Value>,
) -> ApiResult<Vec<UpdateResultOut>> {
    crate::normalize::aliases(crate::normalize::Body::UpdateBatch, &mut body);
    let ops = batch_ops(&body)?;
    let n = ops.len();
    let Timed(t, r) = run_update(st, name, q, collection::operations::UpdateOp::Batch(ops)).await?;
    Ok(Timed(
        t,
        (0..n)
            .map(|_| UpdateResultOut {
                operation_id: r.operation_id,
                status: r.status,
            })
            .collect(),
    ))
}

// ------------------------------------------------------------------ reads

fn records_out(points: Vec<collection::query::ScoredPoint>) -> Vec<RecordOut> {
    points.into_iter().map(RecordOut::from).collect()
}

fn parse_retrieve(body: &Value) -> Result<RetrieveRequest, ApiError> {
    let m = obj(body)?;
    Ok(RetrieveRequest {
        ids: m
            .get("ids")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::format("missing field `ids`"))?
            .iter()
            .map(point_id)
            .collect::<Result<_, _>>()?,
        with_payload: with_payload(m.get("with_payload"), true)?,
        with_vector: with_vector_of(m)?,
    })
}

/// Records by id, from this node's points or from their owners.
async fn retrieve_one(
    st: &AppState,
    name: &str,
    read: ReadConsistency,
    r: RetrieveRequest,
) -> Result<Vec<collection::query::ScoredPoint>, ApiError> {
    Ok(st.points.retrieve(name.to_string(), read, r).await?)
}

fn parse_scroll(body: &Value) -> Result<ScrollRequest, ApiError> {
    let m = obj(body)?;
    let filter = opt_filter(m.get("filter"))?;
    let limit = usize_field(m, "limit", 10)?;
    if limit == 0 {
        return Err(ApiError::validation(
            "limit: value 0 invalid, must be 1 or more",
        ));
    }
    let offset = match m.get("offset") {
        None | Some(Value::Null) => None,
        Some(v) => Some(point_id(v)?),
    };
    let order_by = order_by_opt(m.get("order_by"))?;
    if order_by.is_some() && offset.is_some() {
        return Err(ApiError::bad_request(
            "Wrong input: Can't use offset with order_by",
        ));
    }
    Ok(ScrollRequest {
        filter,
        limit,
        offset,
        with_payload: with_payload(m.get("with_payload"), true)?,
        with_vector: with_vector_of(m)?,
        order_by,
    })
}

fn page_out(p: ScrollPage) -> Value {
    json!({"points": records_out(p.points), "next_page_offset": p.next_page_offset})
}

fn parse_count(body: &Value) -> Result<CountRequest, ApiError> {
    let m = obj(body)?;
    if let Some(e) = m.get("exact").filter(|v| !v.is_null()) {
        e.as_bool()
            .ok_or_else(|| ApiError::format("`exact` must be a bool"))?;
    }
    Ok(CountRequest {
        filter: opt_filter(m.get("filter"))?,
    })
}

// ------------------------------------------------------------------ search / query

/// `lookup_from` of a recommend or query body.
fn parse_lookup(v: Option<&Value>) -> Result<Option<LookupFrom>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(LookupFrom {
            collection: m
                .get("collection")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::format("lookup_from needs `collection`"))?
                .to_string(),
            vector: m.get("vector").and_then(Value::as_str).map(str::to_string),
        })),
        Some(_) => Err(ApiError::format("lookup_from must be an object")),
    }
}

fn parse_search(v: &Value) -> Result<SearchRequest, ApiError> {
    let m = obj(v)?;
    let params = request_params(m)?;
    let (using, vector) = named_vector(
        m.get("vector")
            .ok_or_else(|| ApiError::format("missing field `vector`"))?,
    )?;
    if !m.contains_key("limit") {
        return Err(ApiError::format("missing field `limit`"));
    }
    Ok(SearchRequest {
        params,
        using,
        vector,
        filter: opt_filter(m.get("filter"))?,
        limit: limit_field(m, 10)?,
        offset: usize_field(m, "offset", 0)?,
        score_threshold: f32_field(m, "score_threshold")?,
        with_payload: with_payload(m.get("with_payload"), false)?,
        with_vector: with_vector_of(m)?,
    })
}

fn scored_out(points: Vec<collection::query::ScoredPoint>) -> Vec<ScoredOut> {
    points.into_iter().map(ScoredOut::from).collect()
}

fn batch_items(body: &Value) -> Result<Vec<Value>, ApiError> {
    obj(body)?
        .get("searches")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ApiError::format("missing field `searches`"))
}

fn parse_query_req(v: &Value) -> Result<QueryRequest, ApiError> {
    let m = obj(v)?;
    Ok(QueryRequest {
        params: request_params(m)?,
        spec: query_spec(m, true, 0)?,
        with_payload: with_payload(m.get("with_payload"), false)?,
        with_vector: with_vector_of(m)?,
        lookup_from: parse_lookup(m.get("lookup_from"))?,
    })
}

/// A parsed query, on this node's points or fanned out from this peer.
async fn query_one(
    st: &AppState,
    name: &str,
    read: ReadConsistency,
    r: QueryRequest,
) -> Result<Vec<ScoredOut>, ApiError> {
    Ok(scored_out(
        st.points.query(name.to_string(), read, r).await?,
    ))
}

/// A legacy recommend body as the universal query it is: a recommend input, no prefetch.
fn parse_reco(v: &Value) -> Result<QueryRequest, ApiError> {
    let m = obj(v)?;
    let params = request_params(m)?;
    if !m.contains_key("limit") {
        return Err(ApiError::format("missing field `limit`"));
    }
    Ok(QueryRequest {
        params,
        spec: collection::query::QuerySpec {
            prefetch: vec![],
            query: Some(recommend_input(m)?),
            using: Some(str_field(m, "using")?.unwrap_or_default()),
            filter: opt_filter(m.get("filter"))?,
            score_threshold: f32_field(m, "score_threshold")?,
            limit: limit_field(m, 10)?,
            offset: usize_field(m, "offset", 0)?,
        },
        with_payload: with_payload(m.get("with_payload"), false)?,
        with_vector: with_vector_of(m)?,
        lookup_from: parse_lookup(m.get("lookup_from"))?,
    })
}

// ------------------------------------------------------------------ groups

fn parse_groups(m: &JsonMap, default_limit: Option<usize>) -> Result<GroupRequest, ApiError> {
    let group_by =
        str_field(m, "group_by")?.ok_or_else(|| ApiError::format("missing field `group_by`"))?;
    let group_size = usize_field(m, "group_size", 3)?;
    let limit = match default_limit {
        Some(d) => usize_field(m, "limit", d)?,
        None => {
            if !m.contains_key("limit") {
                return Err(ApiError::format("missing field `limit`"));
            }
            usize_field(m, "limit", 10)?
        }
    };
    if group_size == 0 || limit == 0 {
        return Err(ApiError::validation(
            "group_size and limit must be 1 or more",
        ));
    }
    let with_lookup = match m.get("with_lookup") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(WithLookup {
            collection: s.clone(),
            with_payload: WithPayload::All,
            with_vector: WithVector::None,
        }),
        Some(Value::Object(l)) => Some(WithLookup {
            collection: l
                .get("collection")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::format("with_lookup needs `collection`"))?
                .to_string(),
            with_payload: with_payload(l.get("with_payload"), true)?,
            with_vector: with_vector(l.get("with_vectors").or_else(|| l.get("with_vector")))?,
        }),
        Some(_) => {
            return Err(ApiError::format(
                "with_lookup must be a collection name or an object",
            ))
        }
    };
    Ok(GroupRequest {
        group_by,
        group_size,
        limit,
        with_lookup,
    })
}

// ------------------------------------------------------------------ cluster dispatch
// Each read is parsed once; in cluster mode it fans out from the receiving peer
// (`distributed::coordinator`), on a single node it runs here (`distributed::points`).

async fn retrieve_points(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(body): QJson<Value>,
) -> ApiResult<Vec<RecordOut>> {
    let t = Instant::now();
    let r = parse_retrieve(&body)?;
    Ok(Timed(
        t,
        records_out(retrieve_one(&st, &name, read, r).await?),
    ))
}

async fn get_point(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<RecordOut> {
    let t = Instant::now();
    let pid = PointId::parse_str(&id).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Wrong input: invalid point id `{id}`: expected an unsigned integer or a UUID"
        ))
    })?;
    let r = RetrieveRequest {
        ids: vec![pid],
        with_payload: WithPayload::All,
        with_vector: WithVector::All,
    };
    match retrieve_one(&st, &name, read, r).await?.pop() {
        Some(p) => Ok(Timed(t, RecordOut::from(p))),
        None => Err(CollectionError::PointNotFound(pid.to_string()).into()),
    }
}

async fn scroll_points(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(body): QJson<Value>,
) -> ApiResult<Value> {
    let t = Instant::now();
    let r = parse_scroll(&body)?;
    let page = st.points.scroll(name, read, r).await?;
    Ok(Timed(t, page_out(page)))
}

async fn count_points(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(body): QJson<Value>,
) -> ApiResult<Value> {
    let t = Instant::now();
    let r = parse_count(&body)?;
    let n = st.points.count(name, read, r).await?;
    Ok(Timed(t, json!({"count": n})))
}

/// A parsed search, on this node's points or fanned out from this peer.
async fn search_one(
    st: &AppState,
    name: &str,
    read: ReadConsistency,
    r: SearchRequest,
) -> Result<Vec<ScoredOut>, ApiError> {
    Ok(scored_out(
        st.points.search(name.to_string(), read, r).await?,
    ))
}

async fn search_points(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(mut body): QJson<Value>,
) -> ApiResult<Vec<ScoredOut>> {
    crate::normalize::aliases(crate::normalize::Body::SearchLike, &mut body);
    let t = Instant::now();
    let r = parse_search(&body)?;
    Ok(Timed(t, search_one(&st, &name, read, r).await?))
}

async fn search_batch(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(mut body): QJson<Value>,
) -> ApiResult<Vec<Vec<ScoredOut>>> {
    crate::normalize::aliases(crate::normalize::Body::SearchBatch, &mut body);
    let t = Instant::now();
    // every search is validated before any runs
    let reqs = batch_items(&body)?
        .iter()
        .map(parse_search)
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        out.push(search_one(&st, &name, read, r).await?);
    }
    Ok(Timed(t, out))
}

async fn recommend_points(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(mut body): QJson<Value>,
) -> ApiResult<Vec<ScoredOut>> {
    crate::normalize::aliases(crate::normalize::Body::SearchLike, &mut body);
    let t = Instant::now();
    let r = parse_reco(&body)?;
    Ok(Timed(t, query_one(&st, &name, read, r).await?))
}

async fn recommend_batch(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(mut body): QJson<Value>,
) -> ApiResult<Vec<Vec<ScoredOut>>> {
    crate::normalize::aliases(crate::normalize::Body::SearchBatch, &mut body);
    let t = Instant::now();
    // every recommendation is validated before any runs
    let reqs = batch_items(&body)?
        .iter()
        .map(parse_reco)
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        out.push(query_one(&st, &name, read, r).await?);
    }
    Ok(Timed(t, out))
}

async fn query_points(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(body): QJson<Value>,
) -> ApiResult<Value> {
    let t = Instant::now();
    let r = parse_query_req(&body)?;
    Ok(Timed(
        t,
        json!({"points": query_one(&st, &name, read, r).await?}),
    ))
}

async fn query_batch(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(body): QJson<Value>,
) -> ApiResult<Value> {
    let t = Instant::now();
    // every query is validated before any runs
    let reqs = batch_items(&body)?
        .iter()
        .map(parse_query_req)
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        out.push(json!({"points": query_one(&st, &name, read, r).await?}));
    }
    Ok(Timed(t, Value::Array(out)))
}

async fn get_collection(State(st): St, Path(name): Path<String>) -> ApiResult<Value> {
    let t = Instant::now();
    let Timed(_, mut info) = get_collection_local(State(st.clone()), Path(name.clone())).await?;
    if st.cluster.is_some() {
        // points live on several peers: report the cluster-wide count of the peers that
        // answer (collection info must stay available while a peer is down)
        let n = st
            .points
            .count(name, ReadConsistency::default(), Default::default())
            .await
            .unwrap_or(0);
        info["points_count"] = json!(n);
    }
    Ok(Timed(t, info))
}

async fn search_groups(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(mut body): QJson<Value>,
) -> ApiResult<Value> {
    crate::normalize::aliases(crate::normalize::Body::SearchLike, &mut body);
    let t = Instant::now();
    let (g, rest) = split_groups(&body, None)?;
    let r = QueryRequest::from(parse_search(&rest)?);
    Ok(Timed(
        t,
        groups_out(st.points.groups(name, read, r, g).await?),
    ))
}

async fn query_groups(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(body): QJson<Value>,
) -> ApiResult<Value> {
    let t = Instant::now();
    let g = parse_groups(obj(&body)?, Some(10))?;
    let r = parse_query_req(&body)?;
    Ok(Timed(
        t,
        groups_out(st.points.groups(name, read, r, g).await?),
    ))
}

async fn recommend_groups(
    State(st): St,
    ReadOpts(read): ReadOpts,
    Path(name): Path<String>,
    QJson(mut body): QJson<Value>,
) -> ApiResult<Value> {
    crate::normalize::aliases(crate::normalize::Body::SearchLike, &mut body);
    let t = Instant::now();
    let (g, rest) = split_groups(&body, None)?;
    let r = parse_reco(&rest)?;
    Ok(Timed(
        t,
        groups_out(st.points.groups(name, read, r, g).await?),
    ))
}

/// The grouping part of a legacy `*/groups` body, and the rest (a search or recommend).
fn split_groups(
    body: &Value,
    default_limit: Option<usize>,
) -> Result<(GroupRequest, Value), ApiError> {
    let m = obj(body)?;
    let g = parse_groups(m, default_limit)?;
    let mut rest = m.clone();
    for k in ["group_by", "group_size", "with_lookup"] {
        rest.remove(k);
    }
    Ok((g, Value::Object(rest)))
}

/// `*/groups` answers in the wire shape.
fn groups_out(groups: Vec<collection::read::Group>) -> Value {
    let out: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let mut o = json!({"id": g.id, "hits": scored_out(g.hits)});
            if let Some(l) = g.lookup {
                o["lookup"] = serde_json::to_value(RecordOut::from(l)).expect("records encode");
            }
            o
        })
        .collect();
    json!({"groups": out})
}
