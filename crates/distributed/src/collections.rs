//! The collections service behind the public metadata handlers ([`CollectionsService`]):
//! on a single node it changes this node's `Storage` ([`LocalCollections`]); in cluster
//! mode it proposes the change through consensus and returns once every reachable peer
//! has applied it ([`ClusterCollections`]). Handlers parse and call; they never ask which
//! mode they run in.

use crate::coordinator;
use crate::error::DistError;
use crate::points::PointsFuture;
use crate::Ctx;
use cluster::node::ClusterNode;
use cluster::state::ClusterOp;
use collection::config::CreateCollection;
use collection::index_schema::IndexSchema;
use collection::storage::AliasAction;
use collection::Storage;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long a proposal may take to commit.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the public collection metadata API does, whatever the mode.
pub trait CollectionsService: Send + Sync + 'static {
    /// Create `name` from `req` (`body`: the request as given, kept in the Raft entry).
    fn create(&self, name: String, req: CreateCollection, body: Value) -> PointsFuture<'_, ()>;
    /// Apply a config patch (`PATCH /collections/{name}`) to `name` (a name or an alias).
    fn update(&self, name: String, patch: Value) -> PointsFuture<'_, ()>;
    /// Whether the collection existed.
    fn delete(&self, name: String) -> PointsFuture<'_, bool>;
    fn update_aliases(&self, actions: Vec<AliasAction>) -> PointsFuture<'_, ()>;
    /// Create (`Some`, a validated schema) or drop (`None`) a payload index.
    fn set_payload_index(
        &self,
        name: String,
        field: String,
        schema: Option<IndexSchema>,
    ) -> PointsFuture<'_, ()>;
}

/// The service for this peer's mode.
pub fn service(ctx: &Ctx) -> Arc<dyn CollectionsService> {
    match &ctx.cluster {
        Some(node) => Arc::new(ClusterCollections {
            ctx: ctx.clone(),
            node: node.clone(),
        }),
        None => Arc::new(LocalCollections {
            storage: ctx.storage.clone(),
        }),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, collection::CollectionError> + Send + 'static,
) -> Result<T, DistError> {
    crate::blocking(move || f().map_err(DistError::from)).await
}

/// A single node: changes go to this node's `Storage`.
pub struct LocalCollections {
    pub storage: Arc<Storage>,
}

impl CollectionsService for LocalCollections {
    fn create(&self, name: String, req: CreateCollection, _: Value) -> PointsFuture<'_, ()> {
        let storage = self.storage.clone();
        Box::pin(blocking(move || storage.create_collection(&name, req)))
    }

    fn update(&self, name: String, patch: Value) -> PointsFuture<'_, ()> {
        let storage = self.storage.clone();
        Box::pin(blocking(move || {
            let c = storage.get(&name)?;
            let new = c.config().apply_update(&patch)?;
            c.set_config(new)
        }))
    }

    fn delete(&self, name: String) -> PointsFuture<'_, bool> {
        let storage = self.storage.clone();
        Box::pin(blocking(move || storage.delete_collection(&name)))
    }

    fn update_aliases(&self, actions: Vec<AliasAction>) -> PointsFuture<'_, ()> {
        let storage = self.storage.clone();
        Box::pin(blocking(move || storage.update_aliases(actions)))
    }

    fn set_payload_index(
        &self,
        name: String,
        field: String,
        schema: Option<IndexSchema>,
    ) -> PointsFuture<'_, ()> {
        let storage = self.storage.clone();
        Box::pin(blocking(move || {
            storage.get(&name)?.set_payload_index(&field, schema)
        }))
    }
}

/// A cluster peer: every change is validated here, then proposed; the call returns once
/// every reachable peer has applied it (as Qdrant's metadata operations do).
pub struct ClusterCollections {
    pub ctx: Ctx,
    pub node: Arc<ClusterNode>,
}

impl ClusterCollections {
    async fn propose(&self, op: ClusterOp) -> Result<(), DistError> {
        self.node.propose(op, PROPOSE_TIMEOUT).await?;
        coordinator::wait_all_applied(&self.ctx, self.node.applied_index()).await
    }
}

impl CollectionsService for ClusterCollections {
    fn create(&self, name: String, req: CreateCollection, body: Value) -> PointsFuture<'_, ()> {
        Box::pin(async move {
            // validated here so bad input never reaches the log
            collection::storage::validate_name(&name)?;
            let storage = &self.ctx.storage;
            if storage.exists(&name) {
                return Err(collection::CollectionError::AlreadyExists(name).into());
            }
            let peers: Vec<u64> = self.node.peers().into_keys().collect();
            let shard_number = req.shard_number.unwrap_or(peers.len() as u32).max(1);
            let replication_factor = req.replication_factor.unwrap_or(1);
            // the config is resolved here, once: every peer creates exactly this one,
            // whatever its own defaults
            let mut config = storage.resolve(req)?;
            config.params.shard_number = shard_number;
            config.params.replication_factor = replication_factor;
            self.propose(ClusterOp::CreateCollection {
                name,
                create: body,
                config: Some(Box::new(config)),
                shard_number,
                replication_factor,
                peers,
                placement: None,
            })
            .await
        })
    }

    fn update(&self, name: String, patch: Value) -> PointsFuture<'_, ()> {
        Box::pin(async move {
            let c = self.ctx.storage.get(&name)?;
            c.config().apply_update(&patch)?; // validated before it is proposed
            self.propose(ClusterOp::UpdateCollection {
                name: c.name().to_string(),
                patch,
            })
            .await
        })
    }

    fn delete(&self, name: String) -> PointsFuture<'_, bool> {
        Box::pin(async move {
            collection::storage::validate_name(&name)?;
            let existed = self.ctx.storage.list().contains(&name);
            self.propose(ClusterOp::DeleteCollection { name }).await?;
            Ok(existed)
        })
    }

    fn update_aliases(&self, actions: Vec<AliasAction>) -> PointsFuture<'_, ()> {
        Box::pin(self.propose(ClusterOp::UpdateAliases { actions }))
    }

    fn set_payload_index(
        &self,
        name: String,
        field: String,
        schema: Option<IndexSchema>,
    ) -> PointsFuture<'_, ()> {
        Box::pin(async move {
            let c = self.ctx.storage.get(&name)?;
            self.propose(ClusterOp::SetPayloadIndex {
                collection: c.name().to_string(),
                field,
                schema,
            })
            .await
        })
    }
}
