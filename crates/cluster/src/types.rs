//! openraft type configuration.

use crate::state::ClusterOp;
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// Outcome of one applied operation, identical on every peer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpOutcome {
    /// `None` on success, the user-facing error otherwise.
    pub error: Option<String>,
}

openraft::declare_raft_types!(
    /// Sextant's Raft types: metadata operations in, outcomes out, u64 peer ids.
    pub TypeConfig:
        D = ClusterOp,
        R = OpOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
