//! This peer's `PeerService`: what it executes on its own data for a coordinator, a
//! transfer source or the leader's health check (typed requests over the p2p port, or
//! in-process when the coordinator is this peer).

use crate::envelope::ApiError;
use crate::handlers::{blocking, coll, local_read};
use crate::AppState;
use collection::collection::UpdateResult;
use collection::operations::LoggedOp;
use collection::CollectionError;
use distributed::peer::{
    Applied, ApplyRequest, PeerError, PeerFuture, PeerResult, PeerService, PeerStatus, ReadRequest,
    Scope,
};
use segment::digest::Digest;
use serde_json::{json, Value};

pub struct LocalPeer {
    pub st: AppState,
}

fn peer_err(e: ApiError) -> PeerError {
    PeerError::new(e.status.as_u16(), e.message)
}

impl From<PeerError> for ApiError {
    fn from(e: PeerError) -> Self {
        ApiError::new(
            axum::http::StatusCode::from_u16(e.status)
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
            e.message,
        )
    }
}

/// Wait (bounded) until this peer has applied the sender's Raft index, so metadata the
/// request depends on (the collection, its placement) exists here too.
async fn wait_applied(st: &AppState, applied: u64) -> Result<(), ApiError> {
    if let (true, Some(node)) = (applied > 0, &st.cluster) {
        node.wait_applied_index(applied, crate::dist::APPLIED_WAIT)
            .await?;
    }
    Ok(())
}

fn applied_of((r, point_error): (UpdateResult, Option<CollectionError>)) -> Applied {
    Applied {
        operation_id: r.operation_id,
        completed: r.completed,
        point_error: point_error.map(|e| peer_err(ApiError::from(e))),
    }
}

impl LocalPeer {
    async fn apply_local(&self, req: ApplyRequest) -> Result<Applied, ApiError> {
        let st = self.st.clone();
        wait_applied(&st, req.applied).await?;
        let c = coll(&st, &req.collection)?;
        let (op, wait, meta) = (req.op, req.wait, req.meta);
        if st.cluster.is_none() {
            let outcome = blocking(move || Ok(c.update_logged_outcome(op, wait, meta)?)).await?;
            return Ok(applied_of(outcome));
        }
        // Local applies of a collection are serialized with shard transfers and forwarded
        // to replicas this peer is filling (crate::replication). Apply and forward run to
        // the end even if the coordinator goes away meanwhile.
        let outcome = tokio::spawn(async move {
            let lock = st.repl.lock_for(c.name());
            let _g = lock.lock().await;
            let local_op = op.clone();
            let op_id = meta.id;
            let r = blocking(move || Ok(c.update_logged_outcome(local_op, wait, meta)?)).await;
            crate::replication::forward(&st, &req.collection, &op, op_id).await;
            r
        })
        .await??;
        Ok(applied_of(outcome))
    }

    async fn apply_batch_local(
        &self,
        collection: String,
        applied: u64,
        ops: Vec<LoggedOp>,
    ) -> Result<Applied, ApiError> {
        let st = self.st.clone();
        wait_applied(&st, applied).await?;
        let c = coll(&st, &collection)?;
        tokio::spawn(async move {
            let lock = st.repl.lock_for(c.name());
            let _g = lock.lock().await;
            let forwarded = ops.clone();
            let r = blocking(move || {
                let mut last = None;
                for l in ops {
                    // per-op errors (e.g. a missing point) were reported at the original write
                    match c.update_logged(l.op, false, l.meta) {
                        Ok(r) => last = Some(r),
                        Err(e) if e.is_client_error() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                c.flush_all()?;
                Ok(last.unwrap_or(UpdateResult {
                    operation_id: 0,
                    completed: true,
                }))
            })
            .await;
            for l in &forwarded {
                crate::replication::forward(&st, &collection, &l.op, l.meta.id).await;
            }
            r.map(|r| applied_of((r, None)))
        })
        .await?
    }

    async fn ordered_local(&self, req: ApplyRequest) -> Result<Applied, ApiError> {
        let st = &self.st;
        wait_applied(st, req.applied).await?;
        let c = coll(st, &req.collection)?;
        let p = crate::dist::placement_of(st, c.name())
            .ok_or_else(|| ApiError::not_found("Not found: collection is not distributed"))?;
        let (id, completed) = crate::dist::lead_update(st, &p, req.op, req.wait).await?;
        Ok(applied_of((
            UpdateResult {
                operation_id: id,
                completed,
            },
            None,
        )))
    }

    async fn digest_local(
        &self,
        collection: String,
        shard: u32,
        applied: u64,
    ) -> Result<Digest, ApiError> {
        let st = &self.st;
        wait_applied(st, applied).await?;
        let c = coll(st, &collection)?;
        let shard_number = crate::dist::placement_of(st, c.name())
            .map(|p| p.shard_number)
            .ok_or_else(|| ApiError::not_found("Not found: collection is not distributed"))?;
        blocking(move || {
            Ok(segment::digest::shard_digest(
                &c.read(),
                shard_number,
                shard,
            ))
        })
        .await
    }

    async fn read_local(&self, req: ReadRequest) -> Result<Value, ApiError> {
        wait_applied(&self.st, req.applied).await?;
        let body = match &req.scope {
            Some(scope) => scoped_body(scope, req.body),
            None => req.body,
        };
        local_read(self.st.clone(), req.kind, req.collection, body).await
    }
}

/// Restrict a read body to the scope's shards: retrieve ids are cut to those shards;
/// otherwise every filter (top level and prefetches) gains the shard-scope condition.
fn scoped_body(scope: &Scope, mut b: Value) -> Value {
    let n = scope.shard_number;
    if let Some(ids) = b.get_mut("ids").and_then(Value::as_array_mut) {
        ids.retain(|v| {
            crate::dist::bare_pid(v)
                .is_some_and(|id| scope.shards.contains(&collection::routing::shard_of(id, n)))
        });
        return b;
    }
    let cond = json!({"must": [segment::filter::shard_scope(n, &scope.shards)]});
    fn add(v: &mut Value, cond: &Value) {
        let Some(o) = v.as_object_mut() else { return };
        let f = crate::dist::and_filter(o.get("filter"), Some(cond));
        o.insert("filter".into(), f.unwrap_or(Value::Null));
        match o.get_mut("prefetch") {
            Some(Value::Array(list)) => list.iter_mut().for_each(|x| add(x, cond)),
            Some(x @ Value::Object(_)) => add(x, cond),
            _ => {}
        }
    }
    add(&mut b, &cond);
    b
}

impl PeerService for LocalPeer {
    fn apply(&self, req: ApplyRequest) -> PeerFuture<'_, Applied> {
        Box::pin(async move { self.apply_local(req).await.map_err(peer_err) })
    }

    fn apply_batch(
        &self,
        collection: String,
        applied: u64,
        ops: Vec<LoggedOp>,
    ) -> PeerFuture<'_, Applied> {
        Box::pin(async move {
            self.apply_batch_local(collection, applied, ops)
                .await
                .map_err(peer_err)
        })
    }

    fn ordered(&self, req: ApplyRequest) -> PeerFuture<'_, Applied> {
        Box::pin(async move { self.ordered_local(req).await.map_err(peer_err) })
    }

    fn op_ids(&self, collection: String, shard: u32) -> PeerFuture<'_, Vec<u64>> {
        Box::pin(async move {
            let c = coll(&self.st, &collection).map_err(peer_err)?;
            let limit = collection::collection::WAL_RETAIN_OPS as usize;
            blocking(move || Ok(c.recent_op_ids(limit, shard)?))
                .await
                .map_err(peer_err)
        })
    }

    fn digest(&self, collection: String, shard: u32, applied: u64) -> PeerFuture<'_, Digest> {
        Box::pin(async move {
            self.digest_local(collection, shard, applied)
                .await
                .map_err(peer_err)
        })
    }

    fn read(&self, req: ReadRequest) -> PeerFuture<'_, Value> {
        Box::pin(async move { self.read_local(req).await.map_err(peer_err) })
    }

    fn status(&self) -> PeerFuture<'_, PeerStatus> {
        Box::pin(async move {
            let r: PeerResult<PeerStatus> = Ok(PeerStatus {
                ready: true,
                applied: crate::dist::applied_index(&self.st),
                version: env!("CARGO_PKG_VERSION").to_string(),
            });
            r
        })
    }
}
