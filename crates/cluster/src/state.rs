//! The replicated cluster state and its pure transition function.
//!
//! `ClusterState::apply(op)` is deterministic and does no I/O: it validates the operation
//! against the current state, mutates it, and returns the `Effect`s a node must carry out
//! locally (create a collection directory, ...). Every peer applies the same log and so
//! reaches the same state; effects are executed by the node loop after apply.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub type PeerId = u64;

/// Metadata of one collection as agreed by the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// The `CreateCollection` body as given by the user (JSON), validated before proposing.
    pub create: Value,
    /// `shards[s]` = peers holding a replica of shard `s`.
    pub shards: Vec<Vec<PeerId>>,
    /// Config patches applied after creation, in order (`PATCH /collections/{name}`).
    #[serde(default)]
    pub updates: Vec<Value>,
    /// Payload indexes: field -> schema.
    #[serde(default)]
    pub payload_indexes: BTreeMap<String, Value>,
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
        shard_number: u32,
        replication_factor: u32,
        peers: Vec<PeerId>,
    },
    DeleteCollection {
        name: String,
    },
    UpdateCollection {
        name: String,
        patch: Value,
    },
    /// Alias actions in the API's JSON shape, applied atomically.
    UpdateAliases {
        actions: Value,
    },
    SetPayloadIndex {
        collection: String,
        field: String,
        schema: Option<Value>,
    },
    /// Drop every replica a removed peer held (forced peer removal).
    RemovePeerReplicas {
        peer: PeerId,
    },
}

/// What a node must do locally after an operation was applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    CreateCollection { name: String },
    DeleteCollection { name: String },
    UpdateCollection { name: String },
    AliasesChanged,
    PayloadIndexChanged { collection: String, field: String },
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

impl ClusterState {
    pub fn apply(&mut self, op: &ClusterOp) -> ApplyResult {
        match op {
            ClusterOp::CreateCollection {
                name,
                create,
                shard_number,
                replication_factor,
                peers,
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
                let shards = place_shards(*shard_number, *replication_factor, peers);
                self.collections.insert(
                    name.clone(),
                    CollectionMeta {
                        create: create.clone(),
                        shards,
                        updates: vec![],
                        payload_indexes: BTreeMap::new(),
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
                c.updates.push(patch.clone());
                Ok(vec![Effect::UpdateCollection { name: name.clone() }])
            }
            ClusterOp::UpdateAliases { actions } => {
                let mut aliases = self.aliases.clone();
                let list = actions.as_array().ok_or("actions must be a list")?;
                for a in list {
                    let obj = a.as_object().ok_or("alias action must be an object")?;
                    let (kind, body) = obj.iter().next().ok_or("empty alias action")?;
                    let s = |k: &str| {
                        body.get(k)
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .ok_or(format!("alias action `{kind}` needs `{k}`"))
                    };
                    match kind.as_str() {
                        "create_alias" => {
                            let (c, a) = (s("collection_name")?, s("alias_name")?);
                            if !self.collections.contains_key(&c) {
                                return Err(format!("Not found: Collection `{c}` doesn't exist!"));
                            }
                            if self.collections.contains_key(&a) {
                                return Err(format!(
                                    "Wrong input: Collection with name {a} already exists"
                                ));
                            }
                            aliases.insert(a, c);
                        }
                        "delete_alias" => {
                            let a = s("alias_name")?;
                            if aliases.remove(&a).is_none() {
                                return Err(format!("Wrong input: Alias {a} does not exists!"));
                            }
                        }
                        "rename_alias" => {
                            let (old, new) = (s("old_alias_name")?, s("new_alias_name")?);
                            let c = aliases
                                .remove(&old)
                                .ok_or(format!("Wrong input: Alias {old} does not exists!"))?;
                            aliases.insert(new, c);
                        }
                        other => return Err(format!("unknown alias action `{other}`")),
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
                }
                Ok(vec![])
            }
            ClusterOp::SetPayloadIndex {
                collection,
                field,
                schema,
            } => {
                let c = self.collections.get_mut(collection).ok_or_else(|| {
                    format!("Not found: Collection `{collection}` doesn't exist!")
                })?;
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

    fn create(name: &str, shards: u32, rf: u32, peers: &[u64]) -> ClusterOp {
        ClusterOp::CreateCollection {
            name: name.into(),
            create: json!({}),
            shard_number: shards,
            replication_factor: rf,
            peers: peers.to_vec(),
        }
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
                    actions: json!([{"create_alias": {"collection_name": "a", "alias_name": "x"}}]),
                },
                true,
            ),
            (create("x", 1, 1, &[1]), false),
            (
                ClusterOp::UpdateAliases {
                    actions: json!([{"rename_alias": {"old_alias_name": "x", "new_alias_name": "y"}}, {"delete_alias": {"alias_name": "nope"}}]),
                },
                false,
            ),
            (
                ClusterOp::SetPayloadIndex {
                    collection: "a".into(),
                    field: "f".into(),
                    schema: Some(json!("keyword")),
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

    #[test]
    fn failed_alias_batch_changes_nothing() {
        let mut st = ClusterState::default();
        st.apply(&create("a", 1, 1, &[1])).unwrap();
        st.apply(&ClusterOp::UpdateAliases {
            actions: json!([{"create_alias": {"collection_name": "a", "alias_name": "x"}}]),
        })
        .unwrap();
        let before = st.clone();
        assert!(st.apply(&ClusterOp::UpdateAliases { actions: json!([{"delete_alias": {"alias_name": "x"}}, {"delete_alias": {"alias_name": "x"}}]) }).is_err());
        assert_eq!(st, before);
    }
}
