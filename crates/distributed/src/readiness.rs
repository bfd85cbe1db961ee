//! Honest readiness (`GET /readyz`): a peer is ready to serve only when it has joined
//! consensus, applied what the leader has applied, holds every collection the agreed state
//! places on it, and none of its replicas is recovering (Dead or Partial). Load balancers
//! and rolling restarts wait on this; the leader's health checks do not (they ask whether
//! the peer answers at all, `PeerService::status`).

use crate::{coordinator, Ctx};
use cluster::state::ReplicaState;
use std::time::Duration;

/// How long the check waits for this peer to apply what the leader has applied.
const CATCH_UP_WAIT: Duration = Duration::from_millis(300);

/// `Ok` when ready, else why not.
pub async fn check(ctx: &Ctx) -> Result<(), String> {
    let Some(node) = &ctx.cluster else {
        return Ok(()); // a single node loads its collections before it serves
    };
    if !node.peers().contains_key(&node.id) {
        return Err("not a member of the cluster yet".into());
    }
    let Some(leader) = node.leader_id() else {
        return Err("no Raft leader known".into());
    };
    if leader != node.id {
        let status = coordinator::peer(ctx, leader)
            .map_err(|e| e.message())?
            .status()
            .await
            .map_err(|e| format!("cannot reach the Raft leader: {}", e.message))?;
        if node
            .wait_applied_index(status.applied, CATCH_UP_WAIT)
            .await
            .is_err()
        {
            return Err(format!(
                "catching up with the Raft log: applied {} of the leader's {}",
                node.applied_index(),
                status.applied
            ));
        }
    }
    if let Some(name) = ctx.lost.lock().iter().next() {
        return Err(format!(
            "the local replicas of collection `{name}` lost their data and are being resynced"
        ));
    }
    let state = node.state();
    for (name, meta) in &state.state.collections {
        for shard in 0..meta.shards.len() as u32 {
            match meta.replica_state(shard, node.id) {
                None => continue,
                Some(ReplicaState::Active) => {}
                Some(s) => {
                    return Err(format!(
                        "replica of shard {shard} of collection `{name}` is {} (recovering)",
                        s.name()
                    ))
                }
            }
            if !ctx.storage.exists(name) {
                return Err(format!(
                    "collection `{name}` is not loaded on this peer yet"
                ));
            }
        }
    }
    Ok(())
}
