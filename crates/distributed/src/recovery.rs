//! Which replica a Dead replica recovers from.

use crate::PeerId;
use cluster::state::CollectionMeta;

/// The source for recovering `me`'s Dead replica of `shard`: the first Active replica in
/// placement order (the shard's leader replica when it is Active), never `me`; `None` when
/// the shard has no other Active replica (then nothing can be recovered yet).
///
/// Every Active replica holds every acknowledged write (a write is acknowledged only after
/// the replicas that missed it are marked Dead), so any of them is a correct source; the
/// placement order makes the choice deterministic and the same on every peer.
pub fn source(meta: &CollectionMeta, shard: u32, me: PeerId) -> Option<PeerId> {
    meta.active_replicas(shard).into_iter().find(|p| *p != me)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::state::ReplicaState::*;

    #[test]
    fn source_table() {
        let meta = |replicas: &[PeerId],
                    states: &[((u32, PeerId), cluster::state::ReplicaState)]| {
            CollectionMeta {
                shards: vec![replicas.to_vec()],
                replica_states: states.iter().copied().collect(),
                ..Default::default()
            }
        };
        assert_eq!(source(&meta(&[1, 2, 3], &[((0, 3), Dead)]), 0, 3), Some(1));
        assert_eq!(source(&meta(&[1, 2, 3], &[((0, 1), Dead)]), 0, 1), Some(2));
        // a Partial or Dead replica is never a source
        assert_eq!(
            source(
                &meta(&[1, 2, 3], &[((0, 1), Partial), ((0, 3), Dead)]),
                0,
                3
            ),
            Some(2)
        );
        assert_eq!(
            source(&meta(&[1, 2], &[((0, 1), Dead), ((0, 2), Dead)]), 0, 2),
            None
        );
        assert_eq!(source(&meta(&[2], &[((0, 2), Dead)]), 0, 2), None);
    }
}
