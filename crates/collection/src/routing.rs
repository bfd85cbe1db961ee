//! Point id -> shard routing. The function lives in `segment::routing` (filters need it for
//! shard-scoped reads); this module re-exports it for the collection layer.

pub use segment::routing::*;
