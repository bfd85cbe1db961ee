//! `cluster`: consensus on cluster metadata with openraft 0.9 (storage-v2).
//!
//! - `state`: the replicated state and its pure `apply(op) -> effects` function;
//! - `store`: the Raft log, vote and state machine on redb (passes openraft's suite);
//! - `types`: openraft type configuration.

// openraft's traits dictate StorageError (224 bytes) as the error type of storage calls;
// our helpers return the same type rather than boxing and unboxing at every boundary.
#![allow(clippy::result_large_err)]

pub mod network;
pub mod node;
pub mod state;
pub mod store;
pub mod types;

pub mod proto {
    tonic::include_proto!("sextant.p2p");
}
