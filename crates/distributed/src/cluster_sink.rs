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
    /// Create the agreed collection unless it exists (with its agreed config and payload
    /// indexes); whether it was created now.
    fn create(&self, name: &str, meta: &CollectionMeta) -> bool {
        let Some(config) = self.agreed_config(meta) else {
            tracing::error!(
                collection = name,
                "agreed collection request does not parse"
            );
            return false;
        };
        match self.storage.ensure_collection_config(name, config) {
            Ok(true) => {
                self.reconcile_existing(name, meta);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::error!(collection = name, error = %e, "could not create agreed collection");
                false
            }
        }
    }

    /// The agreed config (creation config plus every update), payload indexes, and the
    /// shards no longer placed here, applied to a collection this peer already has.
    fn reconcile_existing(&self, name: &str, m: &CollectionMeta) {
        let Ok(c) = self.storage.get(name) else {
            return;
        };
        self.take_agreed_config(name, &c, m);
        let have = c.payload_indexes();
        for (field, schema) in &m.payload_indexes {
            if have.get(field) != Some(schema) {
                let _ = c.set_payload_index(field, Some(schema.clone()));
            }
        }
        for field in have.keys().filter(|f| !m.payload_indexes.contains_key(*f)) {
            let _ = c.set_payload_index(field, None);
        }
        let Some(&me) = self.me.get() else { return };
        let shard_number = m.shards.len() as u32;
        let foreign: BTreeSet<u32> = (0..shard_number)
            .filter(|&s| {
                let held = m.shards[s as usize].contains(&me);
                !held && !m.transfers.iter().any(|t| t.shard == s && t.to == me)
            })
            .collect();
        if foreign.is_empty() {
            return;
        }
        // one pass over the points: which of those shards still have some here
        let present: BTreeSet<u32> = c
            .read()
            .matching_ids(None)
            .into_iter()
            .map(|id| collection::routing::shard_of(id, shard_number))
            .filter(|s| foreign.contains(s))
            .collect();
        for shard in present {
            self.drop_local_shard(name, &c, shard_number, shard);
        }
    }

    /// Replace the local config with the agreed one where they differ (a patch is never
    /// applied to a local copy, which may differ).
    fn take_agreed_config(&self, name: &str, c: &collection::Collection, m: &CollectionMeta) {
        let Some(want) = self.agreed_config(m) else {
            tracing::error!(collection = name, "agreed config could not be resolved");
            return;
        };
        if c.config() != want {
            tracing::info!(
                collection = name,
                "local config behind the agreed one: updating"
            );
            if let Err(e) = c.set_config(want) {
                tracing::error!(collection = name, error = %e, "could not apply the agreed config");
            }
        }
    }

    /// The creation config (the proposer's, or for entries from before resolved configs
    /// the user's request under this peer's defaults) with every agreed update applied (an
    /// update that does not apply is skipped, as its own effect skips it).
    fn agreed_config(&self, m: &CollectionMeta) -> Option<CollectionConfig> {
        let mut cfg = match &m.config {
            Some(config) => config.clone(),
            None => {
                let req = serde_json::from_value::<CreateCollection>(m.create.clone()).ok()?;
                self.storage.resolve(req).ok()?
            }
        };
        for p in &m.updates {
            if let Ok(next) = cfg.apply_update(p) {
                cfg = next;
            }
        }
        Some(cfg)
    }

    /// Delete this peer's points of a shard it no longer holds (logged as a reset of the
    /// shard: its earlier history no longer describes this copy, so a WAL delta must not
    /// rely on it).
    fn drop_local_shard(
        &self,
        name: &str,
        c: &collection::Collection,
        shard_number: u32,
        shard: u32,
    ) {
        let op = collection::operations::UpdateOp::delete_shards(shard_number, &[shard]);
        let meta = collection::operations::OpMeta {
            fill: Some(shard),
            ..Default::default()
        };
        if let Err(e) = c.update_logged(op, true, meta) {
            tracing::error!(collection = name, shard, error = %e, "could not drop the points of a shard no longer placed here");
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
                        self.take_agreed_config(name, &c, m);
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
                    self.drop_local_shard(collection, &c, m.shards.len() as u32, *shard);
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

    fn started(&self, me: u64) {
        let _ = self.me.set(me);
    }

    /// Bring local data in line with the agreed state: every effect an applied entry can
    /// have is re-derived here, so a crash between a commit and its effects loses nothing.
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
            } else {
                self.reconcile_existing(name, m);
            }
        }
        let _ = self.storage.set_aliases(state.aliases.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::state::CollectionMeta;
    use collection::config::CollectionDefaults;
    use collection::index_schema::{IndexSchema, IndexType};
    use collection::operations::{PointInsert, StoredVector, UpdateMode, UpdateOp};
    use serde_json::json;

    /// A peer that crashed after its state committed a config update, a payload index, an
    /// index removal and a replica drop, but before their effects ran: `reconcile` at
    /// start-up carries every one of them out, and is idempotent.
    #[test]
    fn reconcile_rederives_effects_a_crash_lost() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), CollectionDefaults::default()).unwrap();
        let create = json!({"vectors": {"size": 3, "distance": "Dot"}});
        let base = storage
            .resolve(serde_json::from_value(create.clone()).unwrap())
            .unwrap();
        storage.create_with_config("c", base.clone()).unwrap();
        let c = storage.get("c").unwrap();
        let points = (0..60u64)
            .map(|i| PointInsert {
                id: segment::PointId::Num(i),
                vectors: [("".into(), StoredVector::Dense(vec![i as f32, 1.0, 0.0]))].into(),
                payload: Some(json!({"k": "v"}).as_object().unwrap().clone()),
            })
            .collect();
        let upsert = UpdateOp::Upsert {
            points,
            update_filter: None,
            mode: UpdateMode::Upsert,
        };
        c.update(upsert, true).unwrap();
        c.set_payload_index("old", Some(IndexSchema::Type(IndexType::Keyword)))
            .unwrap();

        let (me, other) = (1u64, 2u64);
        let update = json!({"hnsw_config": {"ef_construct": 123}});
        let meta = CollectionMeta {
            create,
            config: Some(base.clone()),
            // shard 1 moved away from this peer
            shards: vec![vec![me, other], vec![other]],
            updates: vec![update.clone()],
            payload_indexes: [("k".to_string(), IndexSchema::Type(IndexType::Keyword))].into(),
            ..Default::default()
        };
        let mut state = ClusterState::default();
        state.collections.insert("c".into(), meta);

        let sink = StorageSink {
            storage: storage.clone(),
            me: Default::default(),
            lost: Default::default(),
        };
        sink.started(me);
        let shard_count = |s: u32| {
            let scope = segment::filter::shard_filter(2, &[s]);
            c.read().matching_ids(Some(&scope)).len()
        };
        let kept = shard_count(0);
        assert!(kept > 0 && shard_count(1) > 0);
        for _ in 0..2 {
            sink.reconcile(&state);
            assert_eq!(c.config(), base.apply_update(&update).unwrap());
            assert_eq!(c.config().hnsw_config.ef_construct, 123);
            assert_eq!(
                c.payload_indexes().keys().collect::<Vec<_>>(),
                vec!["k"],
                "the agreed index is built, the dropped one removed"
            );
            assert_eq!((shard_count(0), shard_count(1)), (kept, 0));
            assert!(sink.lost.lock().is_empty());
        }
    }
}
