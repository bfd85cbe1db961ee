//! Where a collection's data lives, for one request, and which replicas a read asks.

use cluster::state::{CollectionMeta, PeerId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A snapshot of the agreed placement of one collection, taken once per request.
#[derive(Clone, Debug)]
pub struct Placement {
    pub name: String,
    pub shard_number: u32,
    /// `shards[s]`: the peers holding a replica of shard `s`, in placement order.
    pub shards: Vec<Vec<PeerId>>,
    /// Every peer of the cluster: id -> p2p URI.
    pub peers: BTreeMap<PeerId, String>,
    /// The peer this request runs on.
    pub me: PeerId,
    pub meta: Arc<CollectionMeta>,
    /// The read's `consistency` (reads only; one replica per shard by default).
    pub read: ReadConsistency,
}

/// Qdrant's read `consistency` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// One replica per shard (Qdrant's default, `consistency=1`).
    #[default]
    One,
    /// `n` replicas per shard; a point must be in every answer.
    Factor(usize),
    /// Every Active replica; a point must be in every answer.
    All,
    /// Every Active replica; a point must be in more than half of the answers.
    Majority,
    /// Half of the Active replicas plus one; a point must be in every answer.
    Quorum,
}

impl ReadConsistency {
    pub fn parse(s: &str) -> Option<ReadConsistency> {
        match s {
            "all" => Some(ReadConsistency::All),
            "majority" => Some(ReadConsistency::Majority),
            "quorum" => Some(ReadConsistency::Quorum),
            n => match n.parse::<usize>().ok()? {
                0 => None,
                1 => Some(ReadConsistency::One),
                n => Some(ReadConsistency::Factor(n)),
            },
        }
    }

    /// `(replicas to ask, answers a point must be in)` for a shard with `active` Active
    /// replicas; `Err(required)` when it has too few.
    pub fn plan(self, active: usize) -> Result<(usize, usize), usize> {
        match self {
            ReadConsistency::One => Ok((1, 1)),
            ReadConsistency::Factor(n) if n > active => Err(n),
            ReadConsistency::Factor(n) => Ok((n, n)),
            ReadConsistency::All => Ok((active, active)),
            ReadConsistency::Majority => Ok((active, active / 2 + 1)),
            ReadConsistency::Quorum => Ok((active / 2 + 1, active / 2 + 1)),
        }
    }
}

impl Placement {
    /// Peers holding at least one replica.
    pub fn data_peers(&self) -> BTreeSet<PeerId> {
        self.shards.iter().flatten().copied().collect()
    }

    /// Shards `peer` holds a replica of, in any state.
    pub fn held_by(&self, peer: PeerId) -> Vec<u32> {
        (0..self.shards.len() as u32)
            .filter(|s| self.shards[*s as usize].contains(&peer))
            .collect()
    }

    /// Whether `peer` holds replicas of `shards` only, so a sub-request for those shards
    /// needs no shard scope.
    pub fn holds_only(&self, peer: PeerId, shards: &[u32]) -> bool {
        self.held_by(peer).iter().all(|s| shards.contains(s))
    }

    /// For reads whose answers are merged by point id (duplicates dropped): let each asked
    /// peer answer for every shard it holds when all of its replicas are Active, so its
    /// request needs no shard scope (a scoped request makes the peer filter its whole
    /// store; an unscoped one is a plain search). Shards answered twice are harmless there;
    /// counts must not use this.
    pub fn widen_unscoped(&self, by_peer: &mut BTreeMap<PeerId, Vec<u32>>) {
        for (peer, shards) in by_peer.iter_mut() {
            let held = self.held_by(*peer);
            let all_active = held
                .iter()
                .all(|s| self.meta.active_replicas(*s).contains(peer));
            if all_active && held.len() > shards.len() {
                *shards = held;
            }
        }
    }

    /// Active replicas of `shard` to read from, in order of preference: this peer first,
    /// then the others starting at position `rotation` (the driver passes a counter, which
    /// spreads reads over the replicas).
    pub fn read_order(&self, shard: u32, rotation: usize) -> Vec<PeerId> {
        let mut act = self.meta.active_replicas(shard);
        let mine = act
            .iter()
            .position(|p| *p == self.me)
            .map(|i| act.remove(i));
        if act.len() > 1 {
            let k = rotation % act.len();
            act.rotate_left(k);
        }
        if let Some(me) = mine {
            act.insert(0, me);
        }
        act
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::state::ReplicaState::{self, *};

    fn placement(
        me: PeerId,
        shards: &[&[PeerId]],
        states: &[((u32, PeerId), ReplicaState)],
    ) -> Placement {
        let meta = CollectionMeta {
            shards: shards.iter().map(|s| s.to_vec()).collect(),
            replica_states: states.iter().copied().collect(),
            ..Default::default()
        };
        Placement {
            name: "c".into(),
            shard_number: shards.len() as u32,
            shards: meta.shards.clone(),
            peers: BTreeMap::new(),
            me,
            meta: Arc::new(meta),
            read: ReadConsistency::One,
        }
    }

    /// (me, replicas of shard 0, non-Active states, rotation, expected order)
    type ReadOrderCase = (
        PeerId,
        &'static [PeerId],
        &'static [((u32, PeerId), ReplicaState)],
        usize,
        &'static [PeerId],
    );

    #[test]
    fn read_order_table() {
        // (me, replicas of shard 0, non-Active states, rotation, expected order)
        let cases: &[ReadOrderCase] = &[
            (1, &[1, 2, 3], &[], 0, &[1, 2, 3]),
            (1, &[1, 2, 3], &[], 1, &[1, 3, 2]),
            (2, &[1, 2, 3], &[], 0, &[2, 1, 3]),
            (9, &[1, 2, 3], &[], 2, &[3, 1, 2]),
            // never a Dead or Partial replica, even this peer's own
            (1, &[1, 2, 3], &[((0, 1), Dead)], 0, &[2, 3]),
            (1, &[1, 2, 3], &[((0, 2), Partial), ((0, 3), Dead)], 5, &[1]),
            (1, &[1, 2], &[((0, 1), Dead), ((0, 2), Dead)], 0, &[]),
        ];
        for (me, replicas, states, rot, want) in cases {
            let p = placement(*me, &[replicas], states);
            assert_eq!(
                p.read_order(0, *rot),
                want.to_vec(),
                "me {me} states {states:?} rot {rot}"
            );
        }
    }

    #[test]
    fn widen_only_peers_whose_replicas_are_all_active() {
        // rf 2 over 3 peers: 1 holds {0,1}, 2 holds {1,2}, 3 holds {2,0}
        let p = placement(1, &[&[1, 3], &[1, 2], &[2, 3]], &[((2, 3), Partial)]);
        let mut by_peer: BTreeMap<PeerId, Vec<u32>> = [(1, vec![0, 1]), (2, vec![2])].into();
        p.widen_unscoped(&mut by_peer);
        assert_eq!(by_peer, [(1, vec![0, 1]), (2, vec![1, 2])].into());
        // peer 3's replica of shard 2 is Partial: it keeps its scope
        let mut by_peer: BTreeMap<PeerId, Vec<u32>> = [(3, vec![0])].into();
        p.widen_unscoped(&mut by_peer);
        assert_eq!(by_peer, [(3, vec![0])].into());
    }

    #[test]
    fn holdings() {
        let p = placement(1, &[&[1, 2], &[2, 3], &[3, 1]], &[]);
        assert_eq!(p.data_peers(), [1, 2, 3].into());
        assert_eq!(p.held_by(2), vec![0, 1]);
        assert!(p.holds_only(2, &[0, 1]));
        assert!(!p.holds_only(2, &[0]));
    }

    #[test]
    fn consistency_plans() {
        use ReadConsistency::*;
        let cases = [
            ("1", One, 3, Ok((1, 1))),
            ("2", Factor(2), 3, Ok((2, 2))),
            ("4", Factor(4), 3, Err(4)),
            ("all", All, 3, Ok((3, 3))),
            ("majority", Majority, 3, Ok((3, 2))),
            ("quorum", Quorum, 3, Ok((2, 2))),
            ("quorum", Quorum, 4, Ok((3, 3))),
        ];
        for (text, rc, active, want) in cases {
            assert_eq!(ReadConsistency::parse(text), Some(rc));
            assert_eq!(rc.plan(active), want, "{text} with {active} active");
        }
        assert_eq!(ReadConsistency::parse("0"), None);
        assert_eq!(ReadConsistency::parse("x"), None);
    }
}
