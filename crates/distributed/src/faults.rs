//! Seeded fault injection at the peer layer, for tests: a [`PeerClient`] that wraps another
//! and, per rule, drops, loses, delays or fails the requests this peer sends.
//!
//! Rules are given as text (`SEXTANT_PEER_FAULTS`, read at start-up; `SEXTANT_PEER_FAULTS_SEED`
//! seeds the draws), comma-separated, each `request:action[:probability][@peer]`:
//! - `request`: `apply`, `apply_batch`, `ordered`, `op_ids`, `digest`, `read`, `status` or
//!   `*`;
//! - `action`: `drop` (never sent; the caller sees the peer as unavailable), `lose` (never
//!   sent, yet reported as applied: a transport that lies — only for `apply`, never for a
//!   transfer's own writes), `delay=MS`
//!   (sent after MS milliseconds) or `error=STATUS` (never sent; the caller gets STATUS);
//! - `probability`: 0..1, default 1;
//! - `@peer`: only requests to that peer id (a partitioned link: `*:drop@7`).
//!
//! Requests a peer sends to itself are never faulted.

use crate::peer::{
    Applied, ApplyRequest, PeerClient, PeerError, PeerFuture, PeerResult, PeerService, PeerStatus,
    ReadAnswer, ReadRequest, RepairRequest, TouchedRequest, TreeAnswer, TreeRequest,
};
use collection::operations::LoggedOp;
use collection::operations::Touched;
use rand::{Rng, SeedableRng};
use segment::digest::Digest;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Apply,
    ApplyBatch,
    Ordered,
    OpIds,
    Digest,
    Read,
    Status,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Drop,
    Lose,
    Delay(Duration),
    Error(u16),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `None`: every request.
    pub request: Option<Request>,
    pub action: Action,
    pub probability: f64,
    /// `None`: requests to every other peer.
    pub peer: Option<u64>,
}

/// Parse a rule list (see the module docs).
pub fn parse(spec: &str) -> Result<Vec<Rule>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(parse_rule)
        .collect()
}

fn parse_rule(r: &str) -> Result<Rule, String> {
    let (body, peer) = match r.split_once('@') {
        Some((b, p)) => (
            b,
            Some(
                p.parse::<u64>()
                    .map_err(|_| format!("bad peer id in `{r}`"))?,
            ),
        ),
        None => (r, None),
    };
    let mut parts = body.split(':');
    let request = match parts.next().unwrap_or("") {
        "*" => None,
        "apply" => Some(Request::Apply),
        "apply_batch" => Some(Request::ApplyBatch),
        "ordered" => Some(Request::Ordered),
        "op_ids" => Some(Request::OpIds),
        "digest" => Some(Request::Digest),
        "read" => Some(Request::Read),
        "status" => Some(Request::Status),
        other => return Err(format!("unknown request `{other}` in `{r}`")),
    };
    let action = match parts.next().unwrap_or("") {
        "drop" => Action::Drop,
        "lose" if request == Some(Request::Apply) => Action::Lose,
        "lose" => return Err(format!("`lose` is only for `apply`, in `{r}`")),
        a => match a.split_once('=') {
            Some(("delay", ms)) => Action::Delay(Duration::from_millis(
                ms.parse().map_err(|_| format!("bad delay in `{r}`"))?,
            )),
            Some(("error", s)) => Action::Error(
                s.parse::<u16>()
                    .ok()
                    .filter(|s| (400..600).contains(s))
                    .ok_or_else(|| format!("bad error status in `{r}`"))?,
            ),
            _ => return Err(format!("unknown action `{a}` in `{r}`")),
        },
    };
    let probability = match parts.next() {
        None => 1.0,
        Some(p) => p
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=1.0).contains(p))
            .ok_or_else(|| format!("bad probability in `{r}`"))?,
    };
    if parts.next().is_some() {
        return Err(format!("too many fields in `{r}`"));
    }
    Ok(Rule {
        request,
        action,
        probability,
        peer,
    })
}

/// The rules in force, shared by a [`Faulty`] client and whoever steers it: a test can
/// partition a link and heal it again while the peer runs.
#[derive(Clone, Debug, Default)]
pub struct Control {
    rules: Arc<parking_lot::RwLock<Vec<Rule>>>,
    /// Seeds the draws of the client these rules steer.
    pub seed: u64,
}

impl Control {
    pub fn new(rules: Vec<Rule>) -> Control {
        Control {
            rules: Arc::new(parking_lot::RwLock::new(rules)),
            seed: 0,
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Control {
        self.seed = seed;
        self
    }

    /// No rules yet; draws seeded with `seed`.
    pub fn seeded(seed: u64) -> Control {
        Control::default().with_seed(seed)
    }

    /// Replace the rules; requests already past their draw are not affected.
    pub fn set(&self, rules: Vec<Rule>) {
        *self.rules.write() = rules;
    }

    pub fn clear(&self) {
        self.rules.write().clear();
    }
}

/// A `PeerClient` that applies fault rules to the requests sent through it.
pub struct Faulty {
    inner: Arc<dyn PeerClient>,
    me: u64,
    rules: Control,
    rng: Arc<parking_lot::Mutex<rand::rngs::StdRng>>,
}

impl Faulty {
    /// Draws are seeded with `rules.seed`.
    pub fn new(inner: Arc<dyn PeerClient>, me: u64, rules: Control) -> Self {
        let seed = rules.seed;
        Faulty {
            inner,
            me,
            rules,
            rng: Arc::new(parking_lot::Mutex::new(rand::rngs::StdRng::seed_from_u64(
                seed,
            ))),
        }
    }
}

impl PeerClient for Faulty {
    fn peer(&self, id: u64) -> PeerResult<Arc<dyn PeerService>> {
        let inner = self.inner.peer(id)?;
        if id == self.me {
            return Ok(inner);
        }
        Ok(Arc::new(FaultyPeer {
            id,
            inner,
            rules: self.rules.clone(),
            rng: self.rng.clone(),
        }))
    }
}

struct FaultyPeer {
    id: u64,
    inner: Arc<dyn PeerService>,
    rules: Control,
    rng: Arc<parking_lot::Mutex<rand::rngs::StdRng>>,
}

impl FaultyPeer {
    /// The action drawn for a request, if any (the first rule that matches and fires).
    fn draw(&self, request: Request) -> Option<Action> {
        let mut rng = self.rng.lock();
        self.rules
            .rules
            .read()
            .iter()
            .filter(|r| r.request.is_none_or(|q| q == request))
            .filter(|r| r.peer.is_none_or(|p| p == self.id))
            .find(|r| rng.random::<f64>() < r.probability)
            .map(|r| r.action.clone())
    }

    /// Run `call` unless the drawn action replaces it; `lost` is the answer of a lost request.
    async fn run<T>(
        &self,
        request: Request,
        call: PeerFuture<'_, T>,
        lost: impl FnOnce() -> T,
    ) -> PeerResult<T> {
        match self.draw(request) {
            None => call.await,
            Some(Action::Lose) => {
                tracing::warn!(
                    peer = self.id,
                    ?request,
                    "injected fault: request lost, reported as applied"
                );
                Ok(lost())
            }
            Some(other) => self.act(other, call).await,
        }
    }

    /// Carry out a drop, delay or error (a `Lose` is the caller's: here it sends).
    async fn act<T>(&self, action: Action, call: PeerFuture<'_, T>) -> PeerResult<T> {
        match action {
            Action::Delay(d) => {
                tokio::time::sleep(d).await;
                call.await
            }
            Action::Drop => Err(PeerError::unavailable(format!(
                "peer {}: request dropped (injected fault)",
                self.id
            ))),
            Action::Error(status) => Err(PeerError::new(
                status,
                format!("injected fault: peer {} answered {status}", self.id),
            )),
            Action::Lose => call.await,
        }
    }
}

impl PeerService for FaultyPeer {
    fn apply(&self, req: ApplyRequest) -> PeerFuture<'_, Applied> {
        let wait = req.wait;
        if req.meta.fill.is_some() {
            // a transfer's own writes are never lost silently (their loss is what the
            // verified switch catches: `SEXTANT_FAILPOINT=transfer_drop_batch`)
            let call = self.inner.apply(req);
            return Box::pin(async move {
                match self.draw(Request::Apply) {
                    Some(Action::Lose) | None => call.await,
                    Some(other) => self.act(other, call).await,
                }
            });
        }
        Box::pin(
            self.run(Request::Apply, self.inner.apply(req), move || Applied {
                operation_id: 0,
                completed: wait,
                point_error: None,
            }),
        )
    }

    fn apply_batch(
        &self,
        collection: String,
        applied: u64,
        ops: Vec<LoggedOp>,
    ) -> PeerFuture<'_, Applied> {
        Box::pin(self.run(
            Request::ApplyBatch,
            self.inner.apply_batch(collection, applied, ops),
            Applied::default,
        ))
    }

    fn ordered(&self, req: ApplyRequest) -> PeerFuture<'_, Applied> {
        Box::pin(self.run(Request::Ordered, self.inner.ordered(req), Applied::default))
    }

    fn op_ids(&self, collection: String, shard: u32) -> PeerFuture<'_, Vec<u64>> {
        Box::pin(self.run(
            Request::OpIds,
            self.inner.op_ids(collection, shard),
            Vec::new,
        ))
    }

    fn digest(&self, collection: String, shard: u32, applied: u64) -> PeerFuture<'_, Digest> {
        Box::pin(self.run(
            Request::Digest,
            self.inner.digest(collection, shard, applied),
            Digest::default,
        ))
    }

    fn digest_tree(&self, req: TreeRequest) -> PeerFuture<'_, TreeAnswer> {
        Box::pin(self.run(Request::Digest, self.inner.digest_tree(req), || {
            TreeAnswer::Buckets {
                digests: Vec::new(),
                quiet: Vec::new(),
            }
        }))
    }

    fn touched(&self, req: TouchedRequest) -> PeerFuture<'_, Option<Touched>> {
        Box::pin(self.run(Request::OpIds, self.inner.touched(req), || None))
    }

    fn repair(&self, req: RepairRequest) -> PeerFuture<'_, u64> {
        Box::pin(self.run(Request::ApplyBatch, self.inner.repair(req), || 0))
    }

    fn read(&self, req: ReadRequest) -> PeerFuture<'_, ReadAnswer> {
        Box::pin(self.run(Request::Read, self.inner.read(req), || {
            ReadAnswer::Points(Vec::new())
        }))
    }

    fn status(&self) -> PeerFuture<'_, PeerStatus> {
        Box::pin(
            self.run(Request::Status, self.inner.status(), || PeerStatus {
                ready: false,
                applied: 0,
                version: String::new(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        let r = parse("apply:lose:0.25, *:drop@7 ,read:delay=150,status:error=503:0.5").unwrap();
        assert_eq!(
            r,
            vec![
                Rule {
                    request: Some(Request::Apply),
                    action: Action::Lose,
                    probability: 0.25,
                    peer: None
                },
                Rule {
                    request: None,
                    action: Action::Drop,
                    probability: 1.0,
                    peer: Some(7)
                },
                Rule {
                    request: Some(Request::Read),
                    action: Action::Delay(Duration::from_millis(150)),
                    probability: 1.0,
                    peer: None
                },
                Rule {
                    request: Some(Request::Status),
                    action: Action::Error(503),
                    probability: 0.5,
                    peer: None
                },
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        for bad in [
            "write:drop",
            "apply:explode",
            "read:lose",
            "apply:drop:2",
            "apply:error=200",
            "apply:drop@x",
            "apply:drop:0.5:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// A peer that answers every request (counting applies).
    struct Echo(parking_lot::Mutex<u32>);

    impl PeerService for Echo {
        fn apply(&self, _: ApplyRequest) -> PeerFuture<'_, Applied> {
            // counted when the request is carried out (awaited), as a transport sends it
            Box::pin(async {
                *self.0.lock() += 1;
                Ok(Applied {
                    operation_id: 1,
                    completed: true,
                    point_error: None,
                })
            })
        }
        fn apply_batch(&self, _: String, _: u64, _: Vec<LoggedOp>) -> PeerFuture<'_, Applied> {
            Box::pin(async { Ok(Applied::default()) })
        }
        fn ordered(&self, _: ApplyRequest) -> PeerFuture<'_, Applied> {
            Box::pin(async { Ok(Applied::default()) })
        }
        fn op_ids(&self, _: String, _: u32) -> PeerFuture<'_, Vec<u64>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn digest(&self, _: String, _: u32, _: u64) -> PeerFuture<'_, Digest> {
            Box::pin(async { Ok(Digest::default()) })
        }
        fn digest_tree(&self, _: TreeRequest) -> PeerFuture<'_, TreeAnswer> {
            Box::pin(async { Ok(TreeAnswer::Leaves(vec![])) })
        }
        fn touched(&self, _: TouchedRequest) -> PeerFuture<'_, Option<Touched>> {
            Box::pin(async { Ok(None) })
        }
        fn repair(&self, _: RepairRequest) -> PeerFuture<'_, u64> {
            Box::pin(async { Ok(0) })
        }
        fn read(&self, _: ReadRequest) -> PeerFuture<'_, ReadAnswer> {
            Box::pin(async { Ok(ReadAnswer::Count(1)) })
        }
        fn status(&self) -> PeerFuture<'_, PeerStatus> {
            Box::pin(async {
                Ok(PeerStatus {
                    ready: true,
                    applied: 0,
                    version: "t".into(),
                })
            })
        }
    }

    struct Two(Arc<Echo>, Arc<Echo>);

    impl PeerClient for Two {
        fn peer(&self, id: u64) -> PeerResult<Arc<dyn PeerService>> {
            Ok(if id == 1 {
                self.0.clone()
            } else {
                self.1.clone()
            })
        }
    }

    fn apply_req() -> ApplyRequest {
        ApplyRequest {
            collection: "c".into(),
            applied: 0,
            op: collection::operations::UpdateOp::Delete(collection::operations::Selector::Ids(
                vec![],
            )),
            wait: true,
            meta: Default::default(),
        }
    }

    #[tokio::test]
    async fn faults_hit_their_link_and_follow_the_seed() {
        let (me, other) = (
            Arc::new(Echo(Default::default())),
            Arc::new(Echo(Default::default())),
        );
        let inner: Arc<dyn PeerClient> = Arc::new(Two(me.clone(), other.clone()));
        // peer 2 is partitioned away; requests to itself (peer 1) are never faulted
        let control = Control::new(parse("*:drop@2").unwrap());
        let f = Faulty::new(inner.clone(), 1, control.clone());
        // a service handed out before the rules change follows the new rules
        let to_2 = f.peer(2).unwrap();
        assert_eq!(to_2.apply(apply_req()).await.unwrap_err().status, 503);
        assert!(f.peer(1).unwrap().apply(apply_req()).await.is_ok());
        assert_eq!((*me.0.lock(), *other.0.lock()), (1, 0));
        // healed: the link carries requests again
        control.clear();
        assert!(to_2.apply(apply_req()).await.is_ok());
        assert_eq!((*me.0.lock(), *other.0.lock()), (1, 1));
        control.set(parse("apply:error=500@2").unwrap());
        assert_eq!(to_2.apply(apply_req()).await.unwrap_err().status, 500);
        assert_eq!(*other.0.lock(), 1);

        // a lost apply is reported as applied but never reaches the peer
        let f = Faulty::new(inner.clone(), 1, Control::new(parse("apply:lose").unwrap()));
        let a = f.peer(2).unwrap().apply(apply_req()).await.unwrap();
        assert_eq!((a.completed, *other.0.lock()), (true, 1));
        assert_eq!(f.peer(2).unwrap().status().await.unwrap().version, "t");

        // the same seed draws the same faults
        let outcomes = |seed| async move {
            let f = Faulty::new(
                Arc::new(Two(
                    Arc::new(Echo(Default::default())),
                    Arc::new(Echo(Default::default())),
                )),
                1,
                Control::new(parse("read:error=500:0.5").unwrap()).with_seed(seed),
            );
            let mut v = vec![];
            for _ in 0..64 {
                let r = f
                    .peer(2)
                    .unwrap()
                    .read(ReadRequest {
                        collection: "c".into(),
                        applied: 0,
                        body: crate::peer::ReadBody::Count(Default::default()),
                        scope: None,
                    })
                    .await;
                v.push(r.is_ok());
            }
            v
        };
        let a = outcomes(7).await;
        assert_eq!(a, outcomes(7).await);
        let fails = a.iter().filter(|ok| !**ok).count();
        assert!((16..=48).contains(&fails), "{fails} of 64 failed at p=0.5");
    }
}
