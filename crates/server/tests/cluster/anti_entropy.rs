//! Event: a point-level repair (anti-entropy) reaches a replica.

use crate::harness::Cluster;
use distributed::peer::{RepairPoint, RepairRequest};
use segment::digest::point_hash;
use segment::PointId;

/// A repair is applied only to points whose copy still has the hash it was compared with:
/// a copy that changed meanwhile (a client write the comparison did not see) is left for
/// the next round, never overwritten with an older copy.
#[test]
fn a_repair_skips_points_that_changed_since_compared() {
    let mut c = Cluster::start(3);
    c.create("r", 1536, "Cosine", 1, 2);
    c.fill("r", 20, 1536, 2048);
    let holder = c.meta(0, "r").shards[0][0];
    let i = (0..3).find(|&i| c.id(i) == holder).unwrap();
    let peer = &c.slots[i];
    let ctx = peer.peer().state.dist.clone();
    let col = peer.peer().storage().get("r").unwrap();
    let hash = |id: u64| point_hash(&col.read(), PointId::Num(id));
    // point `to` with the content of point `from`
    let copy_of = |from: u64, to: u64| {
        let r = col.read().get(PointId::Num(from)).unwrap();
        collection::operations::PointInsert {
            id: PointId::Num(to),
            vectors: collection::operations::to_stored(r.vectors),
            payload: Some(r.payload),
        }
    };
    let before = col.read().len();
    let points = vec![
        // compared with another copy: changed since, so kept
        RepairPoint {
            id: PointId::Num(3),
            expect: Some(hash(3).unwrap() ^ 1),
            copy: None,
        },
        // still as compared: deleted (the winning copy lacks it)
        RepairPoint {
            id: PointId::Num(4),
            expect: hash(4),
            copy: None,
        },
        // absent when compared and still absent: copied
        RepairPoint {
            id: PointId::Num(999),
            expect: None,
            copy: Some(copy_of(7, 999)),
        },
        // compared as absent, but it exists now: kept
        RepairPoint {
            id: PointId::Num(5),
            expect: None,
            copy: Some(copy_of(7, 5)),
        },
    ];
    let id = c.id(i);
    let repaired = peer
        .rt()
        .block_on(async move {
            let local = distributed::coordinator::peer(&ctx, id)?;
            local
                .repair(RepairRequest {
                    collection: "r".into(),
                    shard: 0,
                    applied: 0,
                    points,
                })
                .await
                .map_err(distributed::DistError::from)
        })
        .expect("repair");
    assert_eq!(repaired, 2);
    let store = col.read();
    assert!(
        store.get(PointId::Num(3)).is_some(),
        "a changed copy was overwritten"
    );
    assert!(store.get(PointId::Num(4)).is_none());
    assert_eq!(
        store.get(PointId::Num(5)).unwrap().payload["n"],
        5,
        "a point that exists now was overwritten"
    );
    assert_eq!(store.get(PointId::Num(999)).unwrap().payload["n"], 7);
    assert_eq!(store.len(), before);
    drop(store);
    // a copy of another point, or a shard this peer does not hold, is refused
    let (ctx, id) = (peer.peer().state.dist.clone(), c.id(i));
    let bad = vec![RepairPoint {
        id: PointId::Num(6),
        expect: hash(6),
        copy: Some(copy_of(7, 8)),
    }];
    let refused = peer.rt().block_on(async move {
        let local = distributed::coordinator::peer(&ctx, id).unwrap();
        local
            .repair(RepairRequest {
                collection: "r".into(),
                shard: 0,
                applied: 0,
                points: bad,
            })
            .await
    });
    assert_eq!(refused.unwrap_err().status, 400);
    assert!(col.read().get(PointId::Num(6)).is_some());
}
