//! Carries out the local side of applied cluster metadata operations on this node's
//! `Storage` (create/delete collections, aliases, payload indexes, config patches).

use cluster::state::{ClusterState, CollectionMeta, Effect};
use cluster::store::EffectSink;
use collection::config::{CollectionConfig, CreateCollection};
use collection::Storage;
use std::collections::BTreeSet;
use std::sync::Arc;

pub struct StorageSink {
    pub storage: Arc<Storage>,
    /// This peer's id, once known (effects about other peers' replicas are skipped).
    pub me: std::sync::OnceLock<u64>,
    /// Collections the agreed state has but this peer's storage lacked at start-up (or
    /// when a snapshot was installed): their local replicas lost their data and must not
    /// serve until resynced (`crate::replication` marks them Dead).
    pub lost: Lost,
}

/// Shared set of collections whose local data was found missing.
pub type Lost = Arc<parking_lot::Mutex<BTreeSet<String>>>;

impl StorageSink {
    /// Create the agreed collection unless it exists; whether it was created now.
    fn create(&self, name: &str, meta: &CollectionMeta) -> bool {
        let created = match &meta.config {
            // the config the proposer resolved: identical on every peer
            Some(config) => match serde_json::from_value::<CollectionConfig>(config.clone()) {
                Ok(config) => self.storage.ensure_collection_config(name, config),
                Err(e) => {
                    tracing::error!(collection = name, error = %e, "agreed collection config does not parse");
                    return false;
                }
            },
            // an entry from before resolved configs: resolved with this peer's defaults
            None => match serde_json::from_value::<CreateCollection>(meta.create.clone()) {
                Ok(req) => self.storage.ensure_collection(name, req),
                Err(e) => {
                    tracing::error!(collection = name, error = %e, "agreed collection request does not parse");
                    return false;
                }
            },
        };
        match created {
            Ok(true) => {
                if let Ok(c) = self.storage.get(name) {
                    for p in &meta.updates {
                        if let Ok(cfg) = c.config().apply_update(p) {
                            let _ = c.set_config(cfg);
                        }
                    }
                    for (f, s) in &meta.payload_indexes {
                        let _ = c.set_payload_index(f, Some(s.clone()));
                    }
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::error!(collection = name, error = %e, "could not create agreed collection");
                false
            }
        }
    }
}

impl EffectSink for StorageSink {
    fn execute(&self, state: &ClusterState, effects: &[Effect]) {
        for fx in effects {
            match fx {
                Effect::CreateCollection { name } => {
                    if let Some(m) = state.collections.get(name) {
                        self.create(name, m);
                    }
                }
                Effect::DeleteCollection { name } => {
                    if let Err(e) = self.storage.delete_collection(name) {
                        tracing::error!(collection = %name, error = %e, "delete failed");
                    }
                }
                Effect::UpdateCollection { name } => {
                    if let (Some(m), Ok(c)) = (state.collections.get(name), self.storage.get(name))
                    {
                        if let Some(p) = m.updates.last() {
                            match c.config().apply_update(p) {
                                Ok(cfg) => {
                                    let _ = c.set_config(cfg);
                                }
                                Err(e) => {
                                    tracing::error!(collection = %name, error = %e, "agreed update does not apply")
                                }
                            }
                        }
                    }
                }
                Effect::AliasesChanged => {
                    let _ = self.storage.set_aliases(state.aliases.clone());
                }
                Effect::TransferStarted { .. } => {} // run by crate::replication
                Effect::ReplicaDropped {
                    collection,
                    shard,
                    peer,
                } => {
                    let (Some(me), Some(m), Ok(c)) = (
                        self.me.get(),
                        state.collections.get(collection),
                        self.storage.get(collection),
                    ) else {
                        continue;
                    };
                    if me != peer {
                        continue;
                    }
                    let op = collection::operations::UpdateOp::delete_shards(
                        m.shards.len() as u32,
                        &[*shard],
                    );
                    // logged as a reset of the shard: its earlier history no longer
                    // describes this copy (WAL delta must not rely on it)
                    let meta = collection::operations::OpMeta {
                        fill: Some(*shard),
                        ..Default::default()
                    };
                    if let Err(e) = c.update_logged(op, true, meta) {
                        tracing::error!(collection = %collection, shard, error = %e, "could not drop the replica's points");
                    }
                }
                Effect::PayloadIndexChanged { collection, field } => {
                    if let (Some(m), Ok(c)) = (
                        state.collections.get(collection),
                        self.storage.get(collection),
                    ) {
                        let _ = c.set_payload_index(field, m.payload_indexes.get(field).cloned());
                    }
                }
            }
        }
    }

    fn reconcile(&self, state: &ClusterState) {
        let agreed: BTreeSet<&String> = state.collections.keys().collect();
        for name in self.storage.list() {
            if !agreed.contains(&name) {
                let _ = self.storage.delete_collection(&name);
            }
        }
        for (name, m) in &state.collections {
            if self.create(name, m) {
                // agreed earlier, yet not here: whatever replicas this peer holds of it
                // lost their data (wiped storage, or created while this peer was away)
                tracing::warn!(collection = %name, "collection missing from local storage: its local replicas will be resynced");
                self.lost.lock().insert(name.clone());
            }
        }
        let _ = self.storage.set_aliases(state.aliases.clone());
    }
}
