//! `distributed`: the policies of Sextant's distributed layer as pure functions over the
//! agreed cluster state — where a collection's shards live and which replicas to read
//! ([`placement`]), when a replicated write may be acknowledged and which replicas failed
//! it ([`write`]), and which replica a Dead one recovers from ([`recovery`]).
//!
//! No I/O, no clock, no network: the `api` crate's drivers gather the inputs (the Raft
//! state, the answers of the peers) and act on the decisions, and the decisions are
//! table-tested here. The drivers (fan-out, transfers, supervisor loop) move into this
//! crate next, behind a typed `PeerClient` (see ARCHITECTURE.md).

pub mod peer;
pub mod placement;
pub mod recovery;
pub mod write;

pub use cluster::state::PeerId;
