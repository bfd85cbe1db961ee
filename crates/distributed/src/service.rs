//! This peer's `PeerService`: what it executes on its own data for a coordinator, a
//! transfer source or the leader's health check (typed requests over the p2p port, or
//! in-process when the coordinator is this peer). Reads run the same code that answers a
//! single node ([`crate::points`]); errors are described by `api`'s one mapping
//! ([`ErrorMap`]).

use crate::error::DistError;
use crate::peer::{
    Applied, ApplyRequest, PeerError, PeerFuture, PeerService, PeerStatus, ReadAnswer, ReadBody,
    ReadRequest, RepairRequest, Scope, TouchedRequest, TreeAnswer, TreeRequest,
};
use crate::{coordinator, replication, Ctx};
use collection::collection::UpdateResult;
use collection::operations::{LoggedOp, Touched};
use collection::CollectionError;
use segment::digest::Digest;
use std::sync::Arc;

/// What `api` provides to this layer: the one error mapping.
pub trait ErrorMap: Send + Sync + 'static {
    /// The status and message the public API answers for `e`.
    fn describe(&self, e: DistError) -> PeerError;
}

pub struct LocalService {
    pub ctx: Ctx,
    pub errors: Arc<dyn ErrorMap>,
}

/// Wait (bounded) until this peer has applied the sender's Raft index, so metadata the
/// request depends on (the collection, its placement) exists here too.
async fn wait_applied(ctx: &Ctx, applied: u64) -> Result<(), DistError> {
    if let (true, Some(node)) = (applied > 0, &ctx.cluster) {
        node.wait_applied_index(applied, coordinator::APPLIED_WAIT)
            .await?;
    }
    Ok(())
}

/// [`crate::blocking`] with this module's error type (closures here use `?` on several).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DistError> + Send + 'static,
) -> Result<T, DistError> {
    crate::blocking(f).await
}

impl LocalService {
    fn applied_of(&self, (r, point_error): (UpdateResult, Option<CollectionError>)) -> Applied {
        Applied {
            operation_id: r.operation_id,
            completed: r.completed,
            point_error: point_error.map(|e| self.errors.describe(e.into())),
        }
    }

    async fn apply_local(&self, req: ApplyRequest) -> Result<Applied, DistError> {
        let ctx = self.ctx.clone();
        wait_applied(&ctx, req.applied).await?;
        let c = ctx.storage.get(&req.collection)?;
        ctx.repl.anti_entropy.touched(&req.collection);
        let (op, wait, meta) = (req.op, req.wait, req.meta);
        // The local apply and the queueing of its forwards to replicas this peer is
        // filling (`replication`) share one hold of the collection's order lock; the
        // fsync (in the same blocking call, after the lock is released) and the forwards
        // are awaited after it, so concurrent writes share fsyncs and none waits on
        // another's network call. All of it runs to the end even if the coordinator goes
        // away meanwhile.
        let outcome = tokio::spawn(async move {
            let guard = ctx.repl.lock_for(c.name()).lock_owned().await;
            let (ctx2, name) = (ctx.clone(), req.collection.clone());
            let (r, forwards) = blocking(move || {
                let op_id = meta.id;
                let mut r = c.update_logged_outcome(op.clone(), false, meta)?;
                let forwards = replication::queue_forwards(&ctx2, &name, &op, op_id);
                drop(guard);
                if wait {
                    c.wait_durable(r.0.operation_id)?;
                    r.0.completed = true;
                }
                Ok((r, forwards))
            })
            .await?;
            replication::forwarded(&ctx, &req.collection, forwards).await;
            Ok::<_, DistError>(r)
        })
        .await??;
        Ok(self.applied_of(outcome))
    }

    async fn apply_batch_local(
        &self,
        collection: String,
        applied: u64,
        ops: Vec<LoggedOp>,
    ) -> Result<Applied, DistError> {
        let ctx = self.ctx.clone();
        wait_applied(&ctx, applied).await?;
        let c = ctx.storage.get(&collection)?;
        ctx.repl.anti_entropy.touched(&collection);
        let r = tokio::spawn(async move {
            let guard = ctx.repl.lock_for(c.name()).lock_owned().await;
            let (ctx2, name) = (ctx.clone(), collection.clone());
            let (last, forwards) = blocking(move || {
                let mut last = None;
                let mut forwards = Vec::new();
                for l in ops {
                    // per-point errors (e.g. a missing point) were reported at the original
                    // write; an operation this peer refuses was not applied here either
                    match c.update_logged_outcome(l.op.clone(), false, l.meta.clone()) {
                        Ok((r, _)) => last = Some(r),
                        Err(e) if e.is_client_error() => continue,
                        Err(e) => return Err(e.into()),
                    }
                    forwards.push(replication::queue_forwards(&ctx2, &name, &l.op, l.meta.id));
                }
                drop(guard);
                c.flush_all()?;
                Ok((last, forwards))
            })
            .await?;
            for f in forwards {
                replication::forwarded(&ctx, &collection, f).await;
            }
            Ok::<_, DistError>(last.unwrap_or(UpdateResult {
                operation_id: 0,
                completed: true,
            }))
        })
        .await??;
        Ok(self.applied_of((r, None)))
    }

    async fn ordered_local(&self, req: ApplyRequest) -> Result<Applied, DistError> {
        let ctx = &self.ctx;
        wait_applied(ctx, req.applied).await?;
        let c = ctx.storage.get(&req.collection)?;
        let p = coordinator::placement_of(ctx, c.name())
            .ok_or_else(|| DistError::not_found("Not found: collection is not distributed"))?;
        let (id, completed) = coordinator::lead_update(ctx, &p, req.op, req.wait).await?;
        Ok(self.applied_of((
            UpdateResult {
                operation_id: id,
                completed,
            },
            None,
        )))
    }

    async fn op_ids_local(&self, collection: String, shard: u32) -> Result<Vec<u64>, DistError> {
        let c = self.ctx.storage.get(&collection)?;
        let limit = collection::collection::WAL_RETAIN_OPS as usize;
        blocking(move || Ok(c.recent_op_ids(limit, shard)?)).await
    }

    async fn digest_local(
        &self,
        collection: String,
        shard: u32,
        applied: u64,
    ) -> Result<Digest, DistError> {
        let ctx = &self.ctx;
        wait_applied(ctx, applied).await?;
        let shard_number = coordinator::placement_of(ctx, &collection)
            .map(|p| p.shard_number)
            .ok_or_else(|| DistError::not_found("Not found: collection is not distributed"))?;
        crate::anti_entropy::local_digest(ctx, &collection, shard, shard_number).await
    }

    async fn digest_tree_local(&self, req: TreeRequest) -> Result<TreeAnswer, DistError> {
        let ctx = &self.ctx;
        wait_applied(ctx, req.applied).await?;
        let shard_number = coordinator::placement_of(ctx, &req.collection)
            .map(|p| p.shard_number)
            .ok_or_else(|| DistError::not_found("Not found: collection is not distributed"))?;
        crate::anti_entropy::local_tree(ctx, &req.collection, req.shard, shard_number, req.level)
            .await
    }

    async fn touched_local(&self, req: TouchedRequest) -> Result<Option<Touched>, DistError> {
        wait_applied(&self.ctx, req.applied).await?;
        let c = self.ctx.storage.get(&req.collection)?;
        let known: std::collections::HashSet<u64> = req.known.into_iter().collect();
        blocking(move || Ok(c.touched_missing_from(&known, req.shard)?)).await
    }

    /// A point-level repair: under the collection's order lock (so no client write falls
    /// between the check and the apply), each point whose copy here still has the hash it
    /// was compared with is made equal to the winning copy.
    async fn repair_local(&self, req: RepairRequest) -> Result<u64, DistError> {
        use collection::operations::{OpMeta, Selector, UpdateMode, UpdateOp};
        let ctx = self.ctx.clone();
        wait_applied(&ctx, req.applied).await?;
        let c = ctx.storage.get(&req.collection)?;
        let placement = coordinator::placement_of(&ctx, &req.collection)
            .ok_or_else(|| DistError::not_found("Not found: collection is not distributed"))?;
        let (n, shard) = (placement.shard_number, req.shard);
        if !placement
            .shards
            .get(shard as usize)
            .is_some_and(|s| s.contains(&placement.me))
        {
            return Err(DistError::not_found(format!(
                "Not found: this peer holds no replica of shard {shard}"
            )));
        }
        if let Some(p) = req.points.iter().find(|p| {
            segment::routing::shard_of(p.id, n) != shard
                || p.copy.as_ref().is_some_and(|c| c.id != p.id)
        }) {
            return Err(DistError::bad_request(format!(
                "point {} is not in shard {shard}, or its copy is of another point",
                p.id
            )));
        }
        ctx.repl.anti_entropy.touched(&req.collection);
        tokio::spawn(async move {
            let guard = ctx.repl.lock_for(c.name()).lock_owned().await;
            let (ctx2, name) = (ctx.clone(), req.collection.clone());
            let (repaired, forwards) = blocking(move || {
                let (mut deletes, mut upserts) = (Vec::new(), Vec::new());
                {
                    let store = c.read();
                    for p in req.points {
                        if segment::digest::point_hash(&store, p.id) != p.expect {
                            continue; // changed since compared: the next round decides
                        }
                        if p.expect.is_none() && p.copy.is_none() {
                            continue; // absent on both sides now: nothing to do
                        }
                        match p.copy {
                            Some(copy) => upserts.push(copy),
                            None => deletes.push(p.id),
                        }
                    }
                }
                let repaired = (deletes.len() + upserts.len()) as u64;
                let meta = OpMeta {
                    id: None,
                    fill: None,
                    shards: Some(vec![shard]),
                    install: None,
                };
                let mut ops = Vec::new();
                if !deletes.is_empty() {
                    ops.push(UpdateOp::Delete(Selector::Ids(deletes)));
                }
                if !upserts.is_empty() {
                    ops.push(UpdateOp::Upsert {
                        points: upserts,
                        update_filter: None,
                        mode: UpdateMode::Upsert,
                    });
                }
                let mut forwards = Vec::new();
                for op in ops {
                    c.update_logged_outcome(op.clone(), false, meta.clone())?;
                    forwards.push(replication::queue_forwards(&ctx2, &name, &op, None));
                }
                drop(guard);
                c.flush_all()?;
                Ok((repaired, forwards))
            })
            .await?;
            for f in forwards {
                replication::forwarded(&ctx, &req.collection, f).await;
            }
            Ok::<_, DistError>(repaired)
        })
        .await?
    }

    async fn read_local(&self, req: ReadRequest) -> Result<ReadAnswer, PeerError> {
        wait_applied(&self.ctx, req.applied)
            .await
            .map_err(|e| self.errors.describe(e))?;
        if self.ctx.lost.lock().contains(&req.collection) {
            // the coordinator fails over to another replica
            return Err(PeerError::unavailable(format!(
                "this peer's replicas of collection `{}` lost their data and are being resynced",
                req.collection
            )));
        }
        self.typed_read(&req.collection, req.body, req.scope.as_ref())
            .await
            .map_err(|e| self.errors.describe(e))
    }

    /// A typed read on this peer's points (of the scope's shards only, if given).
    async fn typed_read(
        &self,
        collection: &str,
        body: ReadBody,
        scope: Option<&Scope>,
    ) -> Result<ReadAnswer, DistError> {
        use crate::points;
        let c = self.ctx.storage.get(collection)?;
        Ok(match body {
            ReadBody::Search(r) => {
                let r = match scope {
                    Some(s) => r.scoped(s),
                    None => *r,
                };
                ReadAnswer::Points(points::search(c, r).await?)
            }
            ReadBody::Retrieve(r) => {
                let r = match scope {
                    Some(s) => r.scoped(s),
                    None => r,
                };
                ReadAnswer::Points(points::retrieve(c, r).await?)
            }
            ReadBody::Query(r) => {
                let r = match scope {
                    Some(s) => r.scoped(s),
                    None => *r,
                };
                ReadAnswer::Points(points::query(self.ctx.storage.clone(), c, r).await?)
            }
            ReadBody::Scroll(r) => {
                let r = match scope {
                    Some(s) => r.scoped(s),
                    None => *r,
                };
                ReadAnswer::Points(points::scroll(c, r).await?.points)
            }
            ReadBody::Count(r) => {
                let r = match scope {
                    Some(s) => r.scoped(s),
                    None => r,
                };
                ReadAnswer::Count(points::count(c, r).await?)
            }
        })
    }
}

impl PeerService for LocalService {
    fn apply(&self, req: ApplyRequest) -> PeerFuture<'_, Applied> {
        Box::pin(async move {
            self.apply_local(req)
                .await
                .map_err(|e| self.errors.describe(e))
        })
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
                .map_err(|e| self.errors.describe(e))
        })
    }

    fn ordered(&self, req: ApplyRequest) -> PeerFuture<'_, Applied> {
        Box::pin(async move {
            self.ordered_local(req)
                .await
                .map_err(|e| self.errors.describe(e))
        })
    }

    fn op_ids(&self, collection: String, shard: u32) -> PeerFuture<'_, Vec<u64>> {
        Box::pin(async move {
            self.op_ids_local(collection, shard)
                .await
                .map_err(|e| self.errors.describe(e))
        })
    }

    fn digest(&self, collection: String, shard: u32, applied: u64) -> PeerFuture<'_, Digest> {
        Box::pin(async move {
            self.digest_local(collection, shard, applied)
                .await
                .map_err(|e| self.errors.describe(e))
        })
    }

    fn digest_tree(&self, req: TreeRequest) -> PeerFuture<'_, TreeAnswer> {
        Box::pin(async move {
            self.digest_tree_local(req)
                .await
                .map_err(|e| self.errors.describe(e))
        })
    }

    fn touched(&self, req: TouchedRequest) -> PeerFuture<'_, Option<Touched>> {
        Box::pin(async move {
            self.touched_local(req)
                .await
                .map_err(|e| self.errors.describe(e))
        })
    }

    fn repair(&self, req: RepairRequest) -> PeerFuture<'_, u64> {
        Box::pin(async move {
            self.repair_local(req)
                .await
                .map_err(|e| self.errors.describe(e))
        })
    }

    fn read(&self, req: ReadRequest) -> PeerFuture<'_, ReadAnswer> {
        Box::pin(self.read_local(req))
    }

    fn status(&self) -> PeerFuture<'_, PeerStatus> {
        Box::pin(async move {
            Ok(PeerStatus {
                ready: true,
                applied: coordinator::applied_index(&self.ctx),
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
        })
    }
}
