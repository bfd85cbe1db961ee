//! `collection`: collections on one node: configuration, update operations, durability
//! (WAL + checkpoints), the query engine (search, query with prefetch/fusion, recommend,
//! groups, scroll, count) and the table of collections and aliases (`Storage`).
//!
//! No network and no async: callers (the `api` crate) run these calls on blocking threads.

pub mod collection;
pub mod config;
pub mod error;
mod fsutil;
pub mod index_schema;
pub use fsutil::{read_json, set_memory_release, tune_allocator, write_json};
/// Graph builds run on background-priority threads: see `segment::background`.
pub use segment::background::init_global_pool as init_background_pool;
pub mod operations;
pub mod query;
pub mod read;
pub mod routing;
pub mod snapshot;
pub mod storage;

pub use collection::{Collection, ContentVersion};
pub use error::CollectionError;
pub use storage::Storage;
