//! `segment`: the single-node vector engine core.
//!
//! Synchronous, no tokio, no network. Owns point storage (vectors, payloads), filters,
//! distances and exact search. Persistence of the whole store is provided as a
//! serialisable snapshot (`PointStore::to_checkpoint`); the write-ahead log lives in `wal`
//! and orchestration lives in `collection`.

pub mod background;
pub mod digest;
pub mod distance;
pub mod filter;
pub mod hnsw;
pub mod json_path;
pub mod mem;
pub mod payload_index;
pub mod quant;
pub mod routing;
pub mod simd;
pub mod store;
pub mod types;
pub mod vector_file;

pub use store::PointStore;
pub use types::*;
