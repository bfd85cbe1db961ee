//! The ordered outbox of one replica being filled by a transfer.
//!
//! A transfer source must deliver to its target, in its own order, three kinds of
//! messages: the batches of the shard's points, the writes it applies meanwhile
//! (forwarded), and, at the switch, a request for the target's digest. The order is fixed
//! when a message is queued, under the collection's order lock (`Replication::lock_for`),
//! which local applies and batch reads also take; one task per outbox then sends the
//! messages one at a time, with no lock held, and reports each outcome to whoever queued
//! it. A write therefore never waits behind another write's network call, only behind
//! the messages queued before its own.
//!
//! After the first failure nothing more is sent: a later message would reach the target
//! out of order. Every message queued after it fails with the same error, and the
//! transfer is aborted by its source.

use crate::coordinator as dist;
use crate::Ctx;
use collection::operations::{LoggedOp, OpMeta, UpdateOp};
use segment::digest::Digest;
use tokio::sync::{mpsc, oneshot};

/// What a queued message turned into at the target.
pub type Outcome<T> = oneshot::Receiver<Result<T, String>>;

enum Message {
    Apply {
        op: Box<UpdateOp>,
        meta: OpMeta,
        done: oneshot::Sender<Result<(), String>>,
    },
    Batch {
        ops: Vec<LoggedOp>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Digest {
        done: oneshot::Sender<Result<Digest, String>>,
    },
}

/// Where the messages of one transfer go. Cheap to clone; the sending task ends once
/// every clone is dropped and the queue is empty.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Message>,
}

/// The replica an outbox fills: `shard` of `collection` on peer `peer`.
pub struct Target {
    pub ctx: Ctx,
    pub peer: u64,
    pub collection: String,
    pub shard: u32,
}

impl Outbox {
    /// Start the sending task of a new outbox.
    pub fn start(target: Target) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_all(target, rx));
        Outbox { tx }
    }

    /// Queue a write (applied durably by the target).
    pub fn apply(&self, op: UpdateOp, meta: OpMeta) -> Outcome<()> {
        let (done, rx) = oneshot::channel();
        self.queue(Message::Apply {
            op: Box::new(op),
            meta,
            done,
        });
        rx
    }

    /// Queue logged operations applied by the target in one message (a WAL delta).
    pub fn batch(&self, ops: Vec<LoggedOp>) -> Outcome<()> {
        let (done, rx) = oneshot::channel();
        self.queue(Message::Batch { ops, done });
        rx
    }

    /// Queue a request for the target's digest of the shard: it covers exactly the
    /// messages queued before it.
    pub fn digest(&self) -> Outcome<Digest> {
        let (done, rx) = oneshot::channel();
        self.queue(Message::Digest { done });
        rx
    }

    fn queue(&self, m: Message) {
        // the task only ends once every sender is gone: this send cannot fail
        let _ = self.tx.send(m);
    }
}

/// The outcome of a queued message (a dropped task reads as a failure).
pub async fn outcome<T>(rx: Outcome<T>) -> Result<T, String> {
    rx.await
        .unwrap_or_else(|_| Err("the transfer's outbox stopped".into()))
}

async fn send_all(t: Target, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut failed: Option<String> = None;
    while let Some(m) = rx.recv().await {
        match m {
            Message::Apply { op, meta, done } => {
                let r = match &failed {
                    Some(e) => Err(e.clone()),
                    None => apply(&t, *op, meta).await,
                };
                note(&mut failed, &r);
                let _ = done.send(r);
            }
            Message::Batch { ops, done } => {
                let r = match &failed {
                    Some(e) => Err(e.clone()),
                    None => batch(&t, ops).await,
                };
                note(&mut failed, &r);
                let _ = done.send(r);
            }
            Message::Digest { done } => {
                let r = match &failed {
                    Some(e) => Err(e.clone()),
                    None => digest(&t).await,
                };
                note(&mut failed, &r);
                let _ = done.send(r);
            }
        }
    }
}

fn note<T>(failed: &mut Option<String>, r: &Result<T, String>) {
    if let (None, Err(e)) = (&failed, r) {
        *failed = Some(e.clone());
    }
}

async fn apply(t: &Target, op: UpdateOp, meta: OpMeta) -> Result<(), String> {
    let req = crate::peer::ApplyRequest {
        collection: t.collection.clone(),
        applied: dist::applied_index(&t.ctx),
        op,
        wait: true,
        meta,
    };
    let peer = dist::peer(&t.ctx, t.peer).map_err(|e| e.message())?;
    peer.apply(req).await.map(|_| ()).map_err(|e| e.message)
}

async fn batch(t: &Target, ops: Vec<LoggedOp>) -> Result<(), String> {
    let peer = dist::peer(&t.ctx, t.peer).map_err(|e| e.message())?;
    peer.apply_batch(t.collection.clone(), dist::applied_index(&t.ctx), ops)
        .await
        .map(|_| ())
        .map_err(|e| e.message)
}

async fn digest(t: &Target) -> Result<Digest, String> {
    let peer = dist::peer(&t.ctx, t.peer).map_err(|e| e.message())?;
    peer.digest(t.collection.clone(), t.shard, dist::applied_index(&t.ctx))
        .await
        .map_err(|e| format!("asking the target for its digest: {}", e.message))
}
