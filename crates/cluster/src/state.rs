//! The replicated cluster state and its pure transition function.
//!
//! `ClusterState::apply(op)` is deterministic and does no I/O: it validates the operation
//! against the current state, mutates it, and returns the `Effect`s a node must carry out
//! locally (create a collection directory, ...). Every peer applies the same log and so
//! reaches the same state; effects are executed by the node loop after apply.

use collection::config::CollectionConfig;
use collection::index_schema::IndexSchema;
use collection::storage::AliasAction;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub type PeerId = u64;

/// Metadata of one collection as agreed by the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// The `CreateCollection` body as given by the user (JSON), validated before proposing.
    pub create: Value,
    /// The full collection config the proposer resolved from `create` (its defaults filled
    /// in, shard count and replication factor as agreed): every peer creates the collection
    /// with exactly this. Absent in entries written before it existed (then `create` is
    /// resolved with each peer's defaults).
    #[serde(default)]
    pub config: Option<CollectionConfig>,
    /// `shards[s]` = peers holding a replica of shard `s`.
    pub shards: Vec<Vec<PeerId>>,
    /// Config patches applied after creation, in order (`PATCH /collections/{name}`), kept
    /// only for a collection without a resolved `config` (an entry from an earlier build);
    /// otherwise each patch is applied to `config` when its entry is applied.
    #[serde(default)]
    pub updates: Vec<Value>,
    /// Payload indexes: field -> schema (canonical: parsed by the proposer).
    #[serde(default)]
    pub payload_indexes: BTreeMap<String, IndexSchema>,
    /// Replicas not in state Active: (shard, peer) -> state. Absent = Active.
    #[serde(default)]
    pub replica_states: BTreeMap<(u32, PeerId), ReplicaState>,
    /// Shard transfers in progress (at most one per shard).
    #[serde(default)]
    pub transfers: Vec<Transfer>,
    /// Replicas (shard, peer) self-heal added (a finished `Heal` transfer), until dropped.
    #[serde(default)]
    pub healed: BTreeSet<(u32, PeerId)>,
}

/// State of one replica of a shard, agreed through consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Holds every acknowledged write; serves reads and counts towards write consistency.
    Active,
    /// Missed writes (failed a write or its peer was down): no traffic until recovered.
    Dead,
    /// Being filled by a transfer: receives the source's stream and forwarded writes only.
    Partial,
}

impl ReplicaState {
    pub fn name(self) -> &'static str {
        match self {
            ReplicaState::Active => "Active",
            ReplicaState::Dead => "Dead",
            ReplicaState::Partial => "Partial",
        }
    }
}

/// Why a transfer runs: refill (or resync) an existing replica, copy to a new peer, move,
/// or copy to a new peer for self-heal (like `Replicate`; the new replica is remembered in
/// `CollectionMeta::healed`, so it can be dropped once the lost replica is back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferKind {
    Recovery,
    Replicate,
    Move,
    Heal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub shard: u32,
    pub from: PeerId,
    pub to: PeerId,
    pub kind: TransferKind,
    /// How the source fills the target (requested; `WalDelta` falls back to streaming
    /// when the source's log no longer covers what the target missed).
    #[serde(default)]
    pub method: TransferMethod,
}

/// Qdrant's `method` of a shard transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferMethod {
    /// Copy every point of the shard (the target is cleared first).
    #[default]
    StreamRecords,
    /// Replay only the logged operations the target is missing.
    WalDelta,
    /// Accepted as in Qdrant; runs as `StreamRecords`.
    Snapshot,
}

impl TransferMethod {
    pub fn name(self) -> &'static str {
        match self {
            TransferMethod::StreamRecords => "stream_records",
            TransferMethod::WalDelta => "wal_delta",
            TransferMethod::Snapshot => "snapshot",
        }
    }

    pub fn parse(s: &str) -> Option<TransferMethod> {
        [
            TransferMethod::StreamRecords,
            TransferMethod::WalDelta,
            TransferMethod::Snapshot,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

impl CollectionMeta {
    /// State of `peer`'s replica of `shard`, `None` if it holds none.
    pub fn replica_state(&self, shard: u32, peer: PeerId) -> Option<ReplicaState> {
        let holds = self
            .shards
            .get(shard as usize)
            .is_some_and(|r| r.contains(&peer));
        holds.then(|| {
            self.replica_states
                .get(&(shard, peer))
                .copied()
                .unwrap_or(ReplicaState::Active)
        })
    }

    /// Peers whose replica of `shard` is Active, in placement order.
    pub fn active_replicas(&self, shard: u32) -> Vec<PeerId> {
        self.shards
            .get(shard as usize)
            .map(|r| {
                r.iter()
                    .copied()
                    .filter(|p| self.replica_state(shard, *p) == Some(ReplicaState::Active))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn transfer_of(&self, shard: u32) -> Option<&Transfer> {
        self.transfers.iter().find(|t| t.shard == shard)
    }

    fn set_state(&mut self, shard: u32, peer: PeerId, s: ReplicaState) {
        if s == ReplicaState::Active {
            self.replica_states.remove(&(shard, peer));
        } else {
            self.replica_states.insert((shard, peer), s);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub collections: BTreeMap<String, CollectionMeta>,
    pub aliases: BTreeMap<String, String>,
}

/// Metadata operations replicated through Raft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClusterOp {
    CreateCollection {
        name: String,
        create: Value,
        /// The resolved config (see `CollectionMeta::config`).
        #[serde(default)]
        config: Option<Box<CollectionConfig>>,
        shard_number: u32,
        replication_factor: u32,
        peers: Vec<PeerId>,
        /// Replica sets chosen by the proposer (`placement[s]`: the peers of shard `s`);
        /// absent: placed over `peers` by [`place_shards`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        placement: Option<Vec<Vec<PeerId>>>,
    },
    DeleteCollection {
        name: String,
    },
    UpdateCollection {
        name: String,
        patch: Value,
    },
    /// Alias actions, applied atomically (encoded in the API's shape).
    UpdateAliases {
        actions: Vec<AliasAction>,
    },
    SetPayloadIndex {
        collection: String,
        field: String,
        schema: Option<IndexSchema>,
    },
    /// Drop every replica a removed peer held (forced peer removal).
    RemovePeerReplicas {
        peer: PeerId,
    },
    /// Change one replica's state. `expect`: apply only if the replica is currently in
    /// that state (a stale proposal then fails instead of undoing a newer change).
    SetReplicaState {
        collection: String,
        shard: u32,
        peer: PeerId,
        state: ReplicaState,
        expect: Option<ReplicaState>,
    },
    /// Begin filling `to`'s replica of `shard` from `from` (an Active replica).
    StartTransfer {
        collection: String,
        transfer: Transfer,
    },
    /// The transfer caught up: `to` becomes Active (for a move, `from` drops its replica).
    FinishTransfer {
        collection: String,
        transfer: Transfer,
    },
    /// Give up a transfer: `to` becomes Dead (a new replica of `replicate`/`move` is dropped).
    AbortTransfer {
        collection: String,
        transfer: Transfer,
    },
    /// Give `peer` an Active replica of each of `shards`, which must have no replica at
    /// all (every holder was removed with `force`): the peer recovers their data from a
    /// snapshot (the seed's last line of defence).
    AdoptShards {
        collection: String,
        peer: PeerId,
        shards: Vec<u32>,
    },
    /// Remove `peer`'s replica of `shard` (never the last Active one).
    DropReplica {
        collection: String,
        shard: u32,
        peer: PeerId,
    },
    /// Replicas (shard, peer) that failed a write: each Active one becomes Dead, all in one
    /// step (so none is recovered from another that missed the same write), except in a
    /// shard where every Active replica is listed (then none of them is known to be
    /// newer, and that shard is left as is). Idempotent.
    MarkDead {
        collection: String,
        replicas: Vec<(u32, PeerId)>,
    },
}

/// What a node must do locally after an operation was applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    CreateCollection {
        name: String,
    },
    DeleteCollection {
        name: String,
    },
    UpdateCollection {
        name: String,
    },
    AliasesChanged,
    PayloadIndexChanged {
        collection: String,
        field: String,
    },
    /// A transfer started: its source streams the shard to the target.
    TransferStarted {
        collection: String,
        transfer: Transfer,
    },
    /// `peer` no longer holds `shard`: delete its local points of that shard.
    ReplicaDropped {
        collection: String,
        shard: u32,
        peer: PeerId,
    },
}

/// Result of applying one operation: effects, or a user error (the entry still counts as
/// applied; every peer reaches the same verdict).
pub type ApplyResult = Result<Vec<Effect>, String>;

/// Place `shard_number` shards with `replication_factor` replicas each on `peers`,
/// round-robin so every peer gets an even share. Deterministic for a given peer list.
pub fn place_shards(
    shard_number: u32,
    replication_factor: u32,
    peers: &[PeerId],
) -> Vec<Vec<PeerId>> {
    let mut sorted = peers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len().max(1);
    let rf = (replication_factor as usize).clamp(1, n);
    (0..shard_number as usize)
        .map(|s| (0..rf).map(|r| sorted[(s + r) % n]).collect())
        .collect()
}

fn collection_mut<'a>(
    collections: &'a mut BTreeMap<String, CollectionMeta>,
    name: &str,
) -> Result<&'a mut CollectionMeta, String> {
    collections
        .get_mut(name)
        .ok_or_else(|| format!("Not found: Collection `{name}` doesn't exist!"))
}

/// Remove `t`; the target goes Dead (recovery) or is dropped (a new replica). Returns
/// whether the target's replica was dropped.
fn abort_transfer(c: &mut CollectionMeta, t: &Transfer) -> bool {
    c.transfers.retain(|x| x != t);
    if t.kind == TransferKind::Recovery {
        c.set_state(t.shard, t.to, ReplicaState::Dead);
        false
    } else {
        if let Some(r) = c.shards.get_mut(t.shard as usize) {
            r.retain(|p| *p != t.to);
        }
        c.replica_states.remove(&(t.shard, t.to));
        true
    }
}

impl ClusterState {
    pub fn apply(&mut self, op: &ClusterOp) -> ApplyResult {
        match op {
            ClusterOp::CreateCollection {
                name,
                create,
                config,
                shard_number,
                replication_factor,
                peers,
                placement,
            } => {
                if self.collections.contains_key(name) {
                    return Err(format!("Wrong input: Collection `{name}` already exists!"));
                }
                if self.aliases.contains_key(name) {
                    return Err(format!(
                        "Wrong input: Alias with name {name} already exists"
                    ));
                }
                if peers.is_empty() || *shard_number == 0 {
                    return Err("Wrong input: no peers to place shards on".into());
                }
                let shards = match placement {
                    Some(p) => {
                        let distinct =
                            |r: &Vec<PeerId>| r.iter().collect::<BTreeSet<_>>().len() == r.len();
                        if p.len() != *shard_number as usize
                            || p.iter().any(|r| r.is_empty() || !distinct(r))
                        {
                            return Err("Wrong input: a placement needs one non-empty set of distinct peers per shard".into());
                        }
                        p.clone()
                    }
                    None => place_shards(*shard_number, *replication_factor, peers),
                };
                self.collections.insert(
                    name.clone(),
                    CollectionMeta {
                        create: create.clone(),
                        config: config.as_deref().cloned(),
                        shards,
                        updates: vec![],
                        payload_indexes: BTreeMap::new(),
                        replica_states: BTreeMap::new(),
                        transfers: vec![],
                        healed: BTreeSet::new(),
                    },
                );
                Ok(vec![Effect::CreateCollection { name: name.clone() }])
            }
            ClusterOp::DeleteCollection { name } => {
                if self.collections.remove(name).is_none() {
                    return Ok(vec![]);
                }
                let before = self.aliases.len();
                self.aliases.retain(|_, c| c != name);
                let mut fx = vec![Effect::DeleteCollection { name: name.clone() }];
                if self.aliases.len() != before {
                    fx.push(Effect::AliasesChanged);
                }
                Ok(fx)
            }
            ClusterOp::UpdateCollection { name, patch } => {
                let c = self
                    .collections
                    .get_mut(name)
                    .ok_or_else(|| format!("Not found: Collection `{name}` doesn't exist!"))?;
                match &mut c.config {
                    // the agreed config is patched here, by the same pure code on every
                    // peer: each one then holds exactly this config, whatever its own
                    // copy went through (a patch that does not apply is refused alike)
                    Some(config) => {
                        *config = config.apply_update(patch).map_err(|e| e.to_string())?;
                    }
                    // entries from before resolved configs: each peer resolves the
                    // creation request, then these patches, with its own defaults
                    None => c.updates.push(patch.clone()),
                }
                Ok(vec![Effect::UpdateCollection { name: name.clone() }])
            }
            ClusterOp::UpdateAliases { actions } => {
                let mut aliases = self.aliases.clone();
                for a in actions {
                    match a {
                        AliasAction::CreateAlias {
                            collection_name: c,
                            alias_name: a,
                        } => {
                            if !self.collections.contains_key(c) {
                                return Err(format!("Not found: Collection `{c}` doesn't exist!"));
                            }
                            if self.collections.contains_key(a) {
                                return Err(format!(
                                    "Wrong input: Collection with name {a} already exists"
                                ));
                            }
                            aliases.insert(a.clone(), c.clone());
                        }
                        AliasAction::DeleteAlias { alias_name: a } => {
                            if aliases.remove(a).is_none() {
                                return Err(format!("Wrong input: Alias {a} does not exists!"));
                            }
                        }
                        AliasAction::RenameAlias {
                            old_alias_name: old,
                            new_alias_name: new,
                        } => {
                            let c = aliases
                                .remove(old)
                                .ok_or(format!("Wrong input: Alias {old} does not exists!"))?;
                            aliases.insert(new.clone(), c);
                        }
                    }
                }
                self.aliases = aliases;
                Ok(vec![Effect::AliasesChanged])
            }
            ClusterOp::RemovePeerReplicas { peer } => {
                for c in self.collections.values_mut() {
                    for replicas in c.shards.iter_mut() {
                        replicas.retain(|p| p != peer);
                    }
                    c.replica_states.retain(|(_, p), _| p != peer);
                    c.healed.retain(|(_, p)| p != peer);
                    // a transfer from the removed peer cannot finish; one to it is moot
                    let (gone, keep): (Vec<Transfer>, Vec<Transfer>) = c
                        .transfers
                        .drain(..)
                        .partition(|t| t.from == *peer || t.to == *peer);
                    c.transfers = keep;
                    for t in gone {
                        if t.to != *peer && t.kind != TransferKind::Recovery {
                            if let Some(r) = c.shards.get_mut(t.shard as usize) {
                                r.retain(|p| *p != t.to);
                            }
                            c.replica_states.remove(&(t.shard, t.to));
                        } else if t.to != *peer {
                            c.set_state(t.shard, t.to, ReplicaState::Dead);
                        }
                    }
                }
                Ok(vec![])
            }
            ClusterOp::MarkDead {
                collection,
                replicas,
            } => {
                let c = collection_mut(&mut self.collections, collection)?;
                let shards: BTreeSet<u32> = replicas.iter().map(|(s, _)| *s).collect();
                for shard in shards {
                    let listed: Vec<PeerId> = replicas
                        .iter()
                        .filter(|(s, _)| *s == shard)
                        .map(|(_, p)| *p)
                        .collect();
                    let active = c.active_replicas(shard);
                    if active.iter().all(|p| listed.contains(p)) {
                        continue;
                    }
                    for peer in listed.into_iter().filter(|p| active.contains(p)) {
                        let stale: Vec<Transfer> = c
                            .transfers
                            .iter()
                            .filter(|t| t.shard == shard && (t.to == peer || t.from == peer))
                            .cloned()
                            .collect();
                        for t in stale {
                            abort_transfer(c, &t);
                        }
                        c.set_state(shard, peer, ReplicaState::Dead);
                    }
                }
                Ok(vec![])
            }
            ClusterOp::SetReplicaState {
                collection,
                shard,
                peer,
                state,
                expect,
            } => {
                let c = collection_mut(&mut self.collections, collection)?;
                let cur = c.replica_state(*shard, *peer).ok_or_else(|| {
                    format!("Wrong input: peer {peer} holds no replica of shard {shard}")
                })?;
                if expect.is_some_and(|e| e != cur) {
                    return Err(format!(
                        "Wrong input: replica {shard}@{peer} is {}, not {}",
                        cur.name(),
                        expect.map_or("", |e| e.name())
                    ));
                }
                if cur == ReplicaState::Active
                    && *state != ReplicaState::Active
                    && c.active_replicas(*shard).len() <= 1
                {
                    return Err(format!(
                        "Bad request: replica {shard}@{peer} is the last Active replica of shard {shard}"
                    ));
                }
                if *state == ReplicaState::Dead {
                    // a transfer to a dead replica is over; one from it cannot go on
                    let stale: Vec<Transfer> = c
                        .transfers
                        .iter()
                        .filter(|t| t.shard == *shard && (t.to == *peer || t.from == *peer))
                        .cloned()
                        .collect();
                    for t in stale {
                        abort_transfer(c, &t);
                    }
                }
                c.set_state(*shard, *peer, *state);
                Ok(vec![])
            }
            ClusterOp::StartTransfer {
                collection,
                transfer: t,
            } => {
                let c = collection_mut(&mut self.collections, collection)?;
                if t.shard as usize >= c.shards.len() {
                    return Err(format!(
                        "Not found: shard {} does not exist in collection `{collection}`",
                        t.shard
                    ));
                }
                if t.from == t.to {
                    return Err(
                        "Bad request: a shard cannot be transferred to the same peer".into(),
                    );
                }
                if c.replica_state(t.shard, t.from) != Some(ReplicaState::Active) {
                    return Err(format!(
                        "Bad request: peer {} has no Active replica of shard {}",
                        t.from, t.shard
                    ));
                }
                if c.transfer_of(t.shard).is_some() {
                    return Err(format!(
                        "Bad request: shard {} already has a transfer in progress",
                        t.shard
                    ));
                }
                match (t.kind, c.replica_state(t.shard, t.to)) {
                    // a Dead replica catches up; an Active one is resynced on request (the
                    // manual recovery path: `replicate_shard` onto a peer holding a replica)
                    (TransferKind::Recovery, Some(ReplicaState::Dead | ReplicaState::Active)) => {}
                    (TransferKind::Recovery, s) => {
                        return Err(format!(
                            "Bad request: replica {}@{} is {} (recovery needs an existing replica)",
                            t.shard,
                            t.to,
                            s.map_or("absent", |s| s.name())
                        ))
                    }
                    (_, Some(_)) => {
                        return Err(format!(
                            "Bad request: peer {} already holds a replica of shard {}",
                            t.to, t.shard
                        ))
                    }
                    (_, None) => c.shards[t.shard as usize].push(t.to),
                }
                c.set_state(t.shard, t.to, ReplicaState::Partial);
                c.transfers.push(t.clone());
                Ok(vec![Effect::TransferStarted {
                    collection: collection.clone(),
                    transfer: t.clone(),
                }])
            }
            ClusterOp::FinishTransfer {
                collection,
                transfer: t,
            } => {
                let c = collection_mut(&mut self.collections, collection)?;
                if !c.transfers.contains(t) {
                    return Err(format!("Not found: no such transfer of shard {}", t.shard));
                }
                c.transfers.retain(|x| x != t);
                c.set_state(t.shard, t.to, ReplicaState::Active);
                if t.kind == TransferKind::Heal {
                    c.healed.insert((t.shard, t.to));
                }
                let mut fx = vec![];
                if t.kind == TransferKind::Move {
                    if let Some(r) = c.shards.get_mut(t.shard as usize) {
                        r.retain(|p| *p != t.from);
                    }
                    c.replica_states.remove(&(t.shard, t.from));
                    c.healed.remove(&(t.shard, t.from));
                    fx.push(Effect::ReplicaDropped {
                        collection: collection.clone(),
                        shard: t.shard,
                        peer: t.from,
                    });
                }
                Ok(fx)
            }
            ClusterOp::AdoptShards {
                collection,
                peer,
                shards,
            } => {
                let c = collection_mut(&mut self.collections, collection)?;
                for s in shards {
                    match c.shards.get(*s as usize) {
                        None => return Err(format!("Bad request: shard {s} does not exist")),
                        Some(r) if !r.is_empty() => {
                            return Err(format!(
                                "Bad request: shard {s} of collection `{collection}` still has replicas"
                            ))
                        }
                        Some(_) => {}
                    }
                }
                for s in shards {
                    c.shards[*s as usize].push(*peer);
                    c.set_state(*s, *peer, ReplicaState::Active);
                }
                Ok(vec![])
            }
            ClusterOp::DropReplica {
                collection,
                shard,
                peer,
            } => {
                let c = collection_mut(&mut self.collections, collection)?;
                let cur = c.replica_state(*shard, *peer).ok_or_else(|| {
                    format!("Bad request: peer {peer} holds no replica of shard {shard}")
                })?;
                let active = c.active_replicas(*shard);
                if cur == ReplicaState::Active && active.len() <= 1 {
                    return Err(format!(
                        "Bad request: cannot drop the last Active replica of shard {shard} (peer {peer})"
                    ));
                }
                if let Some(t) = c.transfer_of(*shard).cloned() {
                    if t.from == *peer || t.to == *peer {
                        return Err(format!(
                            "Bad request: replica {shard}@{peer} takes part in a transfer; abort it first"
                        ));
                    }
                }
                if let Some(r) = c.shards.get_mut(*shard as usize) {
                    r.retain(|p| p != peer);
                }
                c.replica_states.remove(&(*shard, *peer));
                c.healed.remove(&(*shard, *peer));
                Ok(vec![Effect::ReplicaDropped {
                    collection: collection.clone(),
                    shard: *shard,
                    peer: *peer,
                }])
            }
            ClusterOp::AbortTransfer {
                collection,
                transfer: t,
            } => {
                let c = collection_mut(&mut self.collections, collection)?;
                if !c.transfers.contains(t) {
                    return Err(format!("Not found: no such transfer of shard {}", t.shard));
                }
                Ok(abort_transfer(c, t)
                    .then(|| Effect::ReplicaDropped {
                        collection: collection.clone(),
                        shard: t.shard,
                        peer: t.to,
                    })
                    .into_iter()
                    .collect())
            }
            ClusterOp::SetPayloadIndex {
                collection,
                field,
                schema,
            } => {
                let c = collection_mut(&mut self.collections, collection)?;
                match schema {
                    Some(s) => {
                        c.payload_indexes.insert(field.clone(), s.clone());
                    }
                    None => {
                        c.payload_indexes.remove(field);
                    }
                }
                Ok(vec![Effect::PayloadIndexChanged {
                    collection: collection.clone(),
                    field: field.clone(),
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Alias actions from their API JSON.
    fn aliases(v: Value) -> Vec<AliasAction> {
        serde_json::from_value(v).unwrap()
    }

    fn create(name: &str, shards: u32, rf: u32, peers: &[u64]) -> ClusterOp {
        ClusterOp::CreateCollection {
            name: name.into(),
            create: json!({}),
            config: None,
            shard_number: shards,
            replication_factor: rf,
            peers: peers.to_vec(),
            placement: None,
        }
    }

    /// Entries written before the typed forms (config and alias actions as JSON values)
    /// decode as the typed operations: a peer upgraded in place reads its old log.
    #[test]
    fn entries_in_the_json_form_decode_typed() {
        #[derive(Serialize)]
        enum OldOp {
            CreateCollection {
                name: String,
                create: Value,
                config: Option<Value>,
                shard_number: u32,
                replication_factor: u32,
                peers: Vec<PeerId>,
            },
            UpdateAliases {
                actions: Value,
            },
        }
        let create = json!({
            "vectors": {"a": {"size": 1536, "distance": "Cosine", "on_disk": true}},
            "sparse_vectors": {"s": {}},
            "hnsw_config": {"m": 8},
            "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99}},
            "metadata": {"team": "x"}
        });
        let config = serde_json::from_value::<collection::config::CreateCollection>(create.clone())
            .unwrap()
            .into_config(&collection::config::CollectionDefaults::default())
            .unwrap();
        let old = OldOp::CreateCollection {
            name: "c".into(),
            create,
            config: Some(serde_json::to_value(&config).unwrap()),
            shard_number: 2,
            replication_factor: 1,
            peers: vec![1, 2],
        };
        let op: ClusterOp = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
        match op {
            ClusterOp::CreateCollection {
                config: Some(c),
                placement: None,
                ..
            } => assert_eq!(*c, config),
            other => panic!("{other:?}"),
        }
        let actions = json!([
            {"create_alias": {"collection_name": "c", "alias_name": "x"}},
            {"rename_alias": {"old_alias_name": "x", "new_alias_name": "y"}},
            {"delete_alias": {"alias_name": "y"}}
        ]);
        let old = OldOp::UpdateAliases {
            actions: actions.clone(),
        };
        let op: ClusterOp = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
        assert_eq!(
            op,
            ClusterOp::UpdateAliases {
                actions: aliases(actions)
            }
        );
    }

    /// An update patches the agreed config in the state itself, so every peer ends with
    /// the same config; a patch that does not apply is refused and changes nothing.
    #[test]
    fn updates_patch_the_agreed_config() {
        let config = serde_json::from_value::<collection::config::CreateCollection>(
            json!({"vectors": {"size": 1536, "distance": "Cosine"}, "hnsw_config": {"m": 8}}),
        )
        .unwrap()
        .into_config(&collection::config::CollectionDefaults::default())
        .unwrap();
        let mut st = ClusterState::default();
        st.apply(&ClusterOp::CreateCollection {
            name: "u".into(),
            create: json!({}),
            config: Some(Box::new(config.clone())),
            shard_number: 1,
            replication_factor: 1,
            peers: vec![1],
            placement: None,
        })
        .unwrap();
        let update = |patch: Value| ClusterOp::UpdateCollection {
            name: "u".into(),
            patch,
        };
        let fx = st
            .apply(&update(
                json!({"hnsw_config": {"ef_construct": 50}, "metadata": {"k": 1}}),
            ))
            .unwrap();
        assert_eq!(fx, vec![Effect::UpdateCollection { name: "u".into() }]);
        let agreed = st.collections["u"].config.clone().unwrap();
        assert_eq!(agreed.hnsw_config.ef_construct, 50);
        assert_eq!(agreed.hnsw_config.m, 8, "fields not named keep their value");
        assert_eq!(agreed.metadata, Some(json!({"k": 1})));
        assert!(st.collections["u"].updates.is_empty());
        let before = st.clone();
        assert!(st
            .apply(&update(json!({"params": {"replication_factor": 0}})))
            .is_err());
        assert_eq!(st, before, "a refused patch changes nothing");
    }

    /// A placement chosen by the proposer is taken as given, once it is well formed.
    #[test]
    fn explicit_placement() {
        let with = |placement: Vec<Vec<u64>>| ClusterOp::CreateCollection {
            name: "p".into(),
            create: json!({}),
            config: None,
            shard_number: 2,
            replication_factor: 2,
            peers: vec![1, 2, 3],
            placement: Some(placement),
        };
        for bad in [
            vec![vec![1, 2]],
            vec![vec![1], vec![]],
            vec![vec![1], vec![2, 2]],
        ] {
            let mut st = ClusterState::default();
            assert!(st.apply(&with(bad.clone())).is_err(), "{bad:?}");
            assert!(st.collections.is_empty());
        }
        let mut st = ClusterState::default();
        st.apply(&with(vec![vec![3, 1], vec![3, 2]])).unwrap();
        assert_eq!(st.collections["p"].shards, vec![vec![3, 1], vec![3, 2]]);
    }

    #[test]
    fn placement_is_even_and_distinct() {
        let p = place_shards(6, 1, &[30, 10, 20]);
        let mut per: BTreeMap<u64, usize> = BTreeMap::new();
        for s in &p {
            *per.entry(s[0]).or_default() += 1;
        }
        assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        for s in place_shards(4, 2, &[1, 2, 3]) {
            assert_eq!(s.len(), 2);
            assert_ne!(s[0], s[1]);
        }
        assert_eq!(place_shards(2, 5, &[1, 2]), vec![vec![1, 2], vec![2, 1]]);
    }

    /// Table of transitions: (op, expected verdict, collections after, aliases after).
    #[test]
    fn transitions_table() {
        let mut st = ClusterState::default();
        let steps: Vec<(ClusterOp, bool)> = vec![
            (create("a", 2, 1, &[1, 2]), true),
            (create("a", 2, 1, &[1, 2]), false),
            (
                ClusterOp::UpdateAliases {
                    actions: aliases(
                        json!([{"create_alias": {"collection_name": "a", "alias_name": "x"}}]),
                    ),
                },
                true,
            ),
            (create("x", 1, 1, &[1]), false),
            (
                ClusterOp::UpdateAliases {
                    actions: aliases(
                        json!([{"rename_alias": {"old_alias_name": "x", "new_alias_name": "y"}}, {"delete_alias": {"alias_name": "nope"}}]),
                    ),
                },
                false,
            ),
            (
                ClusterOp::SetPayloadIndex {
                    collection: "a".into(),
                    field: "f".into(),
                    schema: Some(IndexSchema::Type(
                        collection::index_schema::IndexType::Keyword,
                    )),
                },
                true,
            ),
            (
                ClusterOp::SetPayloadIndex {
                    collection: "zz".into(),
                    field: "f".into(),
                    schema: None,
                },
                false,
            ),
            (ClusterOp::DeleteCollection { name: "a".into() }, true),
        ];
        for (i, (op, ok)) in steps.iter().enumerate() {
            assert_eq!(st.apply(op).is_ok(), *ok, "step {i}: {op:?}");
        }
        assert!(st.collections.is_empty());
        assert!(
            st.aliases.is_empty(),
            "aliases of a deleted collection go with it"
        );
    }

    fn set(peer: u64, shard: u32, state: ReplicaState) -> ClusterOp {
        ClusterOp::SetReplicaState {
            collection: "c".into(),
            shard,
            peer,
            state,
            expect: None,
        }
    }

    #[test]
    fn mark_dead_is_atomic_and_keeps_a_shard_alive() {
        use ReplicaState::*;
        let mut st = ClusterState::default();
        st.apply(&create("c", 2, 3, &[1, 2, 3])).unwrap();
        let mark = |r: &[(u32, PeerId)]| ClusterOp::MarkDead {
            collection: "c".into(),
            replicas: r.to_vec(),
        };
        // shard 0: two of three failed -> both Dead at once; shard 1: all failed -> unchanged
        st.apply(&mark(&[(0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]))
            .unwrap();
        let c = &st.collections["c"];
        assert_eq!(c.active_replicas(0), vec![1]);
        assert_eq!(c.replica_state(0, 2), Some(Dead));
        assert_eq!(c.replica_state(0, 3), Some(Dead));
        assert_eq!(c.active_replicas(1).len(), 3);
        // idempotent: marking again changes nothing and is not an error
        let before = st.clone();
        st.apply(&mark(&[(0, 2), (0, 3)])).unwrap();
        assert_eq!(st, before);
    }

    #[test]
    fn replica_states_and_transfers() {
        use ReplicaState::*;
        let mut st = ClusterState::default();
        st.apply(&create("c", 1, 2, &[1, 2, 3])).unwrap();
        let c = |st: &ClusterState| st.collections["c"].clone();
        assert_eq!(c(&st).shards, vec![vec![1, 2]]);
        assert!(st.apply(&set(1, 0, Dead)).is_ok());
        assert!(
            st.apply(&set(2, 0, Dead)).is_err(),
            "the last Active replica never goes Dead"
        );
        assert!(
            st.apply(&set(3, 0, Dead)).is_err(),
            "peer 3 holds no replica"
        );
        assert_eq!(c(&st).active_replicas(0), vec![2]);
        // recovery 2 -> 1
        let t = Transfer {
            shard: 0,
            from: 2,
            to: 1,
            kind: TransferKind::Recovery,
            method: TransferMethod::StreamRecords,
        };
        let start = ClusterOp::StartTransfer {
            collection: "c".into(),
            transfer: t.clone(),
        };
        assert_eq!(
            st.apply(&start).unwrap(),
            vec![Effect::TransferStarted {
                collection: "c".into(),
                transfer: t.clone()
            }]
        );
        assert!(st.apply(&start).is_err(), "one transfer per shard");
        assert_eq!(c(&st).replica_state(0, 1), Some(Partial));
        // the source dies: the transfer is aborted, the target is Dead again? (source is
        // the last Active replica, so it cannot be marked Dead)
        assert!(st.apply(&set(2, 0, Dead)).is_err());
        st.apply(&ClusterOp::FinishTransfer {
            collection: "c".into(),
            transfer: t.clone(),
        })
        .unwrap();
        assert_eq!(c(&st).active_replicas(0), vec![1, 2]);
        assert!(c(&st).transfers.is_empty());
        // replicate to 3, then abort: 3's new replica disappears
        let r = Transfer {
            shard: 0,
            from: 1,
            to: 3,
            kind: TransferKind::Replicate,
            method: TransferMethod::StreamRecords,
        };
        st.apply(&ClusterOp::StartTransfer {
            collection: "c".into(),
            transfer: r.clone(),
        })
        .unwrap();
        assert_eq!(c(&st).shards, vec![vec![1, 2, 3]]);
        assert_eq!(
            c(&st).active_replicas(0),
            vec![1, 2],
            "Partial is not Active"
        );
        st.apply(&ClusterOp::AbortTransfer {
            collection: "c".into(),
            transfer: r,
        })
        .unwrap();
        assert_eq!(c(&st).shards, vec![vec![1, 2]]);
        // move 2 -> 3: afterwards 2 no longer holds the shard
        let m = Transfer {
            shard: 0,
            from: 2,
            to: 3,
            kind: TransferKind::Move,
            method: TransferMethod::StreamRecords,
        };
        st.apply(&ClusterOp::StartTransfer {
            collection: "c".into(),
            transfer: m.clone(),
        })
        .unwrap();
        let fx = st
            .apply(&ClusterOp::FinishTransfer {
                collection: "c".into(),
                transfer: m,
            })
            .unwrap();
        assert_eq!(
            fx,
            vec![Effect::ReplicaDropped {
                collection: "c".into(),
                shard: 0,
                peer: 2
            }]
        );
        assert_eq!(c(&st).shards, vec![vec![1, 3]]);
        // a Dead replica's recovery transfer is aborted when its source is removed
        st.apply(&set(3, 0, Dead)).unwrap();
        st.apply(&ClusterOp::StartTransfer {
            collection: "c".into(),
            transfer: Transfer {
                shard: 0,
                from: 1,
                to: 3,
                kind: TransferKind::Recovery,
                method: TransferMethod::StreamRecords,
            },
        })
        .unwrap();
        st.apply(&ClusterOp::RemovePeerReplicas { peer: 1 })
            .unwrap();
        assert!(c(&st).transfers.is_empty());
        assert_eq!(c(&st).replica_state(0, 3), Some(Dead));
        // the state (tuple-keyed maps included) survives the log's encoding
        let bytes = rmp_serde::to_vec_named(&st).unwrap();
        let back: ClusterState = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn orphaned_shards_are_adopted_only_when_no_replica_is_left() {
        let mut st = ClusterState::default();
        st.apply(&create("c", 3, 1, &[1, 2, 3])).unwrap();
        let holder = |st: &ClusterState, s: usize| st.collections["c"].shards[s].clone();
        let lost: Vec<u32> = (0..3u32)
            .filter(|s| holder(&st, *s as usize) == vec![1])
            .collect();
        assert!(!lost.is_empty());
        let adopt = |shards: Vec<u32>| ClusterOp::AdoptShards {
            collection: "c".into(),
            peer: 4,
            shards,
        };
        // shards that still have a replica are not up for adoption
        assert!(st.apply(&adopt(vec![0, 1, 2])).is_err());
        st.apply(&ClusterOp::RemovePeerReplicas { peer: 1 })
            .unwrap();
        let before = st.clone();
        // all or nothing: one shard with a replica refuses the whole op
        let with_held = (0..3u32).find(|s| !lost.contains(s)).unwrap();
        assert!(st.apply(&adopt(vec![lost[0], with_held])).is_err());
        assert!(st.apply(&adopt(vec![7])).is_err());
        assert_eq!(st, before);
        st.apply(&adopt(lost.clone())).unwrap();
        for s in &lost {
            assert_eq!(holder(&st, *s as usize), vec![4]);
            assert_eq!(
                st.collections["c"].replica_state(*s, 4),
                Some(ReplicaState::Active)
            );
        }
        assert!(st.apply(&adopt(lost)).is_err(), "adopted twice");
    }

    #[test]
    fn resync_of_an_active_replica() {
        use ReplicaState::*;
        let mut st = ClusterState::default();
        st.apply(&create("c", 1, 2, &[1, 2, 3])).unwrap();
        let t = |from, to| Transfer {
            shard: 0,
            from,
            to,
            kind: TransferKind::Recovery,
            method: TransferMethod::WalDelta,
        };
        let start = |tr: Transfer| ClusterOp::StartTransfer {
            collection: "c".into(),
            transfer: tr,
        };
        // an Active replica may be resynced from another Active one: it is Partial meanwhile
        st.apply(&start(t(1, 2))).unwrap();
        let c = st.collections["c"].clone();
        assert_eq!(
            (c.replica_state(0, 1), c.replica_state(0, 2)),
            (Some(Active), Some(Partial))
        );
        // an aborted resync leaves the replica Dead (its content is unknown): recovered later
        st.apply(&ClusterOp::AbortTransfer {
            collection: "c".into(),
            transfer: t(1, 2),
        })
        .unwrap();
        let c = st.collections["c"].clone();
        assert_eq!(c.shards, vec![vec![1, 2]]);
        assert_eq!(c.replica_state(0, 2), Some(Dead));
        // a peer without a replica is not "recovered" (that is replicate_shard), and the
        // source must be Active
        assert!(st.apply(&start(t(1, 3))).is_err());
        assert!(st.apply(&start(t(2, 1))).is_err());
    }

    #[test]
    fn failed_alias_batch_changes_nothing() {
        let mut st = ClusterState::default();
        st.apply(&create("a", 1, 1, &[1])).unwrap();
        st.apply(&ClusterOp::UpdateAliases {
            actions: aliases(
                json!([{"create_alias": {"collection_name": "a", "alias_name": "x"}}]),
            ),
        })
        .unwrap();
        let before = st.clone();
        assert!(st.apply(&ClusterOp::UpdateAliases { actions: aliases(json!([{"delete_alias": {"alias_name": "x"}}, {"delete_alias": {"alias_name": "x"}}])) }).is_err());
        assert_eq!(st, before);
    }
}
