//! Typed reads on this peer's own points, shared by a single node's handlers and by this
//! peer's side of the protocol (a coordinator's sub-request): the same code answers both.

use crate::error::DistError;
use collection::query::ScoredPoint;
use collection::read::{
    self, CountRequest, QueryRequest, RetrieveRequest, ScrollPage, ScrollRequest, SearchRequest,
};
use collection::{Collection, Storage};
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
