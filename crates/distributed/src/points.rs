//! The points service behind every public points handler ([`PointsService`]): on a single
//! node it runs on this node's points ([`LocalPoints`]); in cluster mode it fans reads out
//! and replicates writes from this peer ([`ClusterPoints`]). Handlers parse a request into
//! its `collection::read` type, call the service, and shape the answer; they never ask
//! which mode they run in.
//!
//! The free functions below run one typed read on this peer's own points. A single node's
//! service and this peer's side of the protocol (a coordinator's sub-request) share them.

use crate::coordinator;
use crate::error::DistError;
use crate::placement::{Placement, ReadConsistency};
use crate::write::Ordering;
use crate::Ctx;
use collection::collection::UpdateResult;
use collection::operations::UpdateOp;
use collection::query::ScoredPoint;
use collection::read::{
    self, CountRequest, QueryRequest, RetrieveRequest, ScrollPage, ScrollRequest, SearchRequest,
};
use collection::read::{Group, GroupRequest};
use collection::{Collection, Storage};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Run a search on `c`: on the async worker when it is small and no writer holds or waits
/// for the points (see [`read::INLINE_SEARCH_COMPONENTS`]), else on the blocking pool.
pub async fn search(c: Arc<Collection>, r: SearchRequest) -> Result<Vec<ScoredPoint>, DistError> {
    if let Some(store) = c.try_read().filter(|s| r.inline(s)) {
        return Ok(read::search(&c, &store, &r)?);
    }
    tokio::task::spawn_blocking(move || read::search(&c, &c.read(), &r))
        .await?
        .map_err(DistError::from)
}

/// Records by id, on the blocking pool.
pub async fn retrieve(
    c: Arc<Collection>,
    r: RetrieveRequest,
) -> Result<Vec<ScoredPoint>, DistError> {
    tokio::task::spawn_blocking(move || read::retrieve(&c.read(), &r))
        .await?
        .map_err(DistError::from)
}

/// A universal query, on the blocking pool (its cost is only known once it runs).
pub async fn query(
    storage: Arc<Storage>,
    c: Arc<Collection>,
    r: QueryRequest,
) -> Result<Vec<ScoredPoint>, DistError> {
    tokio::task::spawn_blocking(move || read::query(&storage, &c, &c.read(), &r))
        .await?
        .map_err(DistError::from)
}

/// A page of points, on the blocking pool.
pub async fn scroll(c: Arc<Collection>, r: ScrollRequest) -> Result<ScrollPage, DistError> {
    tokio::task::spawn_blocking(move || read::scroll(&c.read(), &r))
        .await?
        .map_err(DistError::from)
}

/// How many points match, on the blocking pool.
pub async fn count(c: Arc<Collection>, r: CountRequest) -> Result<u64, DistError> {
    Ok(tokio::task::spawn_blocking(move || c.read().count(r.filter.as_ref()) as u64).await?)
}

/// `*/groups`, on the blocking pool.
pub async fn groups(
    storage: Arc<Storage>,
    c: Arc<Collection>,
    r: QueryRequest,
    g: GroupRequest,
) -> Result<Vec<Group>, DistError> {
    tokio::task::spawn_blocking(move || read::groups(&storage, &c, &c.read(), r, &g))
        .await?
        .map_err(DistError::from)
}

/// An update, on the blocking pool (it may wait for its fsync).
pub async fn update(
    c: Arc<Collection>,
    op: UpdateOp,
    wait: bool,
) -> Result<UpdateResult, DistError> {
    tokio::task::spawn_blocking(move || c.update(op, wait))
        .await?
        .map_err(DistError::from)
}

pub type PointsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DistError>> + Send + 'a>>;

/// What the public points API does, whatever the mode. `collection` is a name or an alias;
/// `read` is the request's `consistency` (a single node has one copy of everything).
pub trait PointsService: Send + Sync + 'static {
    fn search(
        &self,
        collection: String,
        read: ReadConsistency,
        r: SearchRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>>;
    fn query(
        &self,
        collection: String,
        read: ReadConsistency,
        r: QueryRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>>;
    fn retrieve(
        &self,
        collection: String,
        read: ReadConsistency,
        r: RetrieveRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>>;
    fn scroll(
        &self,
        collection: String,
        read: ReadConsistency,
        r: ScrollRequest,
    ) -> PointsFuture<'_, ScrollPage>;
    fn count(
        &self,
        collection: String,
        read: ReadConsistency,
        r: CountRequest,
    ) -> PointsFuture<'_, u64>;
    fn groups(
        &self,
        collection: String,
        read: ReadConsistency,
        r: QueryRequest,
        g: GroupRequest,
    ) -> PointsFuture<'_, Vec<Group>>;
    /// Apply a validated write (`ordering` only matters with replicas).
    fn update(
        &self,
        collection: String,
        op: UpdateOp,
        wait: bool,
        ordering: Ordering,
    ) -> PointsFuture<'_, UpdateResult>;
}

/// The service for this peer's mode.
pub fn service(ctx: &Ctx) -> Arc<dyn PointsService> {
    let local = LocalPoints {
        storage: ctx.storage.clone(),
    };
    match ctx.cluster {
        Some(_) => Arc::new(ClusterPoints {
            ctx: ctx.clone(),
            local,
        }),
        None => Arc::new(local),
    }
}

/// A single node: every read and write runs on this node's points.
pub struct LocalPoints {
    pub storage: Arc<Storage>,
}

impl PointsService for LocalPoints {
    fn search(
        &self,
        name: String,
        _: ReadConsistency,
        r: SearchRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>> {
        Box::pin(async move { search(self.storage.get(&name)?, r).await })
    }

    fn query(
        &self,
        name: String,
        _: ReadConsistency,
        r: QueryRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>> {
        Box::pin(async move { query(self.storage.clone(), self.storage.get(&name)?, r).await })
    }

    fn retrieve(
        &self,
        name: String,
        _: ReadConsistency,
        r: RetrieveRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>> {
        Box::pin(async move { retrieve(self.storage.get(&name)?, r).await })
    }

    fn scroll(
        &self,
        name: String,
        _: ReadConsistency,
        r: ScrollRequest,
    ) -> PointsFuture<'_, ScrollPage> {
        Box::pin(async move { scroll(self.storage.get(&name)?, r).await })
    }

    fn count(&self, name: String, _: ReadConsistency, r: CountRequest) -> PointsFuture<'_, u64> {
        Box::pin(async move { count(self.storage.get(&name)?, r).await })
    }

    fn groups(
        &self,
        name: String,
        _: ReadConsistency,
        r: QueryRequest,
        g: GroupRequest,
    ) -> PointsFuture<'_, Vec<Group>> {
        Box::pin(async move { groups(self.storage.clone(), self.storage.get(&name)?, r, g).await })
    }

    fn update(
        &self,
        name: String,
        op: UpdateOp,
        wait: bool,
        _: Ordering,
    ) -> PointsFuture<'_, UpdateResult> {
        Box::pin(async move { update(self.storage.get(&name)?, op, wait).await })
    }
}

/// A cluster peer: reads fan out from here to one replica of every shard (or more, with a
/// read consistency), writes go to every replica of the shards they touch. A collection
/// without an agreed placement yet is served like a single node's.
pub struct ClusterPoints {
    pub ctx: Ctx,
    pub local: LocalPoints,
}

impl ClusterPoints {
    /// The agreed placement of `name` (a name or an alias), read with `read`.
    fn placed(&self, name: &str, read: ReadConsistency) -> Result<Option<Placement>, DistError> {
        let c = self.ctx.storage.get(name)?;
        Ok(coordinator::placement(&self.ctx, c.name()).map(|mut p| {
            p.read = read;
            p
        }))
    }
}

impl PointsService for ClusterPoints {
    fn search(
        &self,
        name: String,
        read: ReadConsistency,
        r: SearchRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>> {
        Box::pin(async move {
            match self.placed(&name, read)? {
                Some(p) => coordinator::search(&self.ctx, &p, r).await,
                None => self.local.search(name, read, r).await,
            }
        })
    }

    fn query(
        &self,
        name: String,
        read: ReadConsistency,
        r: QueryRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>> {
        Box::pin(async move {
            match self.placed(&name, read)? {
                Some(p) => coordinator::query_points(&self.ctx, &p, r).await,
                None => self.local.query(name, read, r).await,
            }
        })
    }

    fn retrieve(
        &self,
        name: String,
        read: ReadConsistency,
        r: RetrieveRequest,
    ) -> PointsFuture<'_, Vec<ScoredPoint>> {
        Box::pin(async move {
            match self.placed(&name, read)? {
                Some(p) => coordinator::retrieve_points(&self.ctx, &p, r).await,
                None => self.local.retrieve(name, read, r).await,
            }
        })
    }

    fn scroll(
        &self,
        name: String,
        read: ReadConsistency,
        r: ScrollRequest,
    ) -> PointsFuture<'_, ScrollPage> {
        Box::pin(async move {
            match self.placed(&name, read)? {
                Some(p) => coordinator::scroll_points(&self.ctx, &p, r).await,
                None => self.local.scroll(name, read, r).await,
            }
        })
    }

    fn count(&self, name: String, read: ReadConsistency, r: CountRequest) -> PointsFuture<'_, u64> {
        Box::pin(async move {
            match self.placed(&name, read)? {
                Some(p) => coordinator::count_points(&self.ctx, &p, r).await,
                None => self.local.count(name, read, r).await,
            }
        })
    }

    fn groups(
        &self,
        name: String,
        read: ReadConsistency,
        r: QueryRequest,
        g: GroupRequest,
    ) -> PointsFuture<'_, Vec<Group>> {
        Box::pin(async move {
            match self.placed(&name, read)? {
                Some(p) => coordinator::group_points(&self.ctx, &p, r, &g).await,
                None => self.local.groups(name, read, r, g).await,
            }
        })
    }

    fn update(
        &self,
        name: String,
        op: UpdateOp,
        wait: bool,
        ordering: Ordering,
    ) -> PointsFuture<'_, UpdateResult> {
        Box::pin(async move {
            let c = self.ctx.storage.get(&name)?;
            let Some(p) = coordinator::placement(&self.ctx, c.name()) else {
                return self.local.update(name, op, wait, ordering).await;
            };
            // validated against the schema here, so bad input fails before any peer applies it
            let op = op.prepare(&c.read())?;
            let (operation_id, completed) = if ordering == Ordering::Weak {
                coordinator::update(&self.ctx, &p, op, wait).await?
            } else {
                coordinator::ordered_update(&self.ctx, &p, op, wait, ordering).await?
            };
            Ok(UpdateResult {
                operation_id,
                completed,
            })
        })
    }
}
