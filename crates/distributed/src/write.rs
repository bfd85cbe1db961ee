//! When a replicated write may be acknowledged.
//!
//! Every touched shard's part goes to all its Active replicas; each replica either applied
//! it (answered 200: the write is in its log) or failed it (any other answer). The write is
//! acknowledged when every touched shard has `write_consistency_factor` replicas that
//! applied it (capped at the shard's replica count), and only once every failed replica is
//! no longer Active (marked Dead through consensus): a replica that missed an acknowledged
//! write must never serve reads or be a recovery source.

use crate::PeerId;

/// Qdrant's write `ordering`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ordering {
    /// Straight to the replicas (concurrent writes to one point may apply in different
    /// orders on different replicas).
    #[default]
    Weak,
    /// Through the shard's first Active replica, which serializes them.
    Medium,
    /// Through the shard's first replica (its permanent leader); unavailable while it is
    /// not Active.
    Strong,
}

/// One replica peer's answer for the shards it was sent.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaAnswer {
    pub peer: PeerId,
    pub shards: Vec<u32>,
    pub applied: bool,
}

/// What the answers add up to.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tally {
    /// Replicas that applied the write, per shard id.
    pub acks: Vec<usize>,
    /// (shard, peer) replicas that failed it: to be marked Dead before acknowledging.
    pub failed: Vec<(u32, PeerId)>,
}

pub fn tally(shard_number: u32, answers: &[ReplicaAnswer]) -> Tally {
    let mut t = Tally {
        acks: vec![0; shard_number as usize],
        failed: vec![],
    };
    for a in answers {
        for &s in &a.shards {
            if a.applied {
                t.acks[s as usize] += 1;
            } else {
                t.failed.push((s, a.peer));
            }
        }
    }
    t
}

/// The first touched shard short of `write_consistency_factor` applied replicas (capped at
/// its replica count): `(shard, applied, needed)`, or `None` when every shard has enough.
pub fn short_shard(
    tally: &Tally,
    touched: &[u32],
    replicas_per_shard: &[usize],
    wcf: usize,
) -> Option<(u32, usize, usize)> {
    touched.iter().find_map(|&s| {
        let need = wcf.min(replicas_per_shard[s as usize]).max(1);
        let got = tally.acks[s as usize];
        (got < need).then_some((s, got, need))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ans(peer: PeerId, shards: &[u32], applied: bool) -> ReplicaAnswer {
        ReplicaAnswer {
            peer,
            shards: shards.to_vec(),
            applied,
        }
    }

    #[test]
    fn acknowledgement_table() {
        // (answers, touched, replicas per shard, wcf, expected short shard, expected failed)
        type Case = (
            Vec<ReplicaAnswer>,
            Vec<u32>,
            Vec<usize>,
            usize,
            Option<(u32, usize, usize)>,
            Vec<(u32, PeerId)>,
        );
        let cases: Vec<Case> = vec![
            // rf 3, wcf 1: one replica applied is enough, the two failed ones must be marked
            (
                vec![ans(1, &[0], true), ans(2, &[0], false), ans(3, &[0], false)],
                vec![0],
                vec![3],
                1,
                None,
                vec![(0, 2), (0, 3)],
            ),
            // wcf 2 with one applied: short
            (
                vec![ans(1, &[0], true), ans(2, &[0], false)],
                vec![0],
                vec![2],
                2,
                Some((0, 1, 2)),
                vec![(0, 2)],
            ),
            // wcf larger than the replica count is capped
            (vec![ans(1, &[0], true)], vec![0], vec![1], 3, None, vec![]),
            // a peer answering for two shards counts for both
            (
                vec![ans(1, &[0, 1], true), ans(2, &[1], false)],
                vec![0, 1],
                vec![1, 2],
                1,
                None,
                vec![(1, 2)],
            ),
            // nothing applied anywhere
            (
                vec![ans(1, &[0], false)],
                vec![0],
                vec![1],
                1,
                Some((0, 0, 1)),
                vec![(0, 1)],
            ),
            // only touched shards are checked
            (
                vec![ans(1, &[1], true)],
                vec![1],
                vec![1, 1],
                1,
                None,
                vec![],
            ),
        ];
        for (answers, touched, replicas, wcf, short, failed) in cases {
            let t = tally(replicas.len() as u32, &answers);
            assert_eq!(
                short_shard(&t, &touched, &replicas, wcf),
                short,
                "{answers:?}"
            );
            assert_eq!(t.failed, failed, "{answers:?}");
        }
    }
}
