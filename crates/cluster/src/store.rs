//! Durable Raft storage on redb: the log, the vote, and the state machine.
//!
//! One redb file (`raft.redb`) with two tables:
//! - `logs`: index -> MessagePack `Entry`;
//! - `meta`: `vote`, `committed`, `last_purged`, `sm` (applied state machine), `snapshot`.
//!
//! Every write is its own redb transaction, committed with redb's default durability
//! (fsync) before the call returns; `append` calls openraft's flush callback only after the
//! commit. Applying a batch writes `last_applied` together with the new state in one
//! transaction, so apply is idempotent across crashes.

use crate::state::{ClusterState, Effect};
use crate::types::*;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn ioerr<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("raft types always encode")
}

fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, AnyError> {
    rmp_serde::from_slice(b).map_err(ioerr)
}

/// Opens the shared database.
pub fn open_db(path: &Path) -> Result<Arc<Database>, StorageError> {
    let db = Database::create(path).map_err(|e| StorageIOError::write(ioerr(e)))?;
    let tx = db
        .begin_write()
        .map_err(|e| StorageIOError::write(ioerr(e)))?;
    {
        tx.open_table(LOGS)
            .map_err(|e| StorageIOError::write(ioerr(e)))?;
        tx.open_table(META)
            .map_err(|e| StorageIOError::write(ioerr(e)))?;
    }
    tx.commit().map_err(|e| StorageIOError::write(ioerr(e)))?;
    Ok(Arc::new(db))
}

fn meta_get<T: for<'de> Deserialize<'de>>(db: &Database, key: &str) -> Result<Option<T>, AnyError> {
    let tx = db.begin_read().map_err(ioerr)?;
    let t = tx.open_table(META).map_err(ioerr)?;
    match t.get(key).map_err(ioerr)? {
        Some(v) => Ok(Some(dec(v.value())?)),
        None => Ok(None),
    }
}

fn meta_put<T: Serialize>(db: &Database, key: &str, v: &T) -> Result<(), AnyError> {
    let tx = db.begin_write().map_err(ioerr)?;
    {
        let mut t = tx.open_table(META).map_err(ioerr)?;
        t.insert(key, enc(v).as_slice()).map_err(ioerr)?;
    }
    tx.commit().map_err(ioerr)
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read = || -> Result<Vec<Entry>, AnyError> {
            let tx = self.db.begin_read().map_err(ioerr)?;
            let t = tx.open_table(LOGS).map_err(ioerr)?;
            let mut out = Vec::new();
            for row in t.range(range.clone()).map_err(ioerr)? {
                let (_, v) = row.map_err(ioerr)?;
                out.push(dec(v.value())?);
            }
            Ok(out)
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<LogState<TypeConfig>, AnyError> {
            let last_purged: Option<LogId> = meta_get(&self.db, "last_purged")?;
            let tx = self.db.begin_read().map_err(ioerr)?;
            let t = tx.open_table(LOGS).map_err(ioerr)?;
            let last = match t.last().map_err(ioerr)? {
                Some((_, v)) => Some(dec::<Entry>(v.value())?.log_id),
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        meta_put(&self.db, "vote", vote).map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        meta_get(&self.db, "vote").map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        meta_put(&self.db, "committed", &committed).map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        meta_get::<Option<LogId>>(&self.db, "committed")
            .map(Option::flatten)
            .map_err(|e| StorageIOError::read(e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = || -> Result<(), AnyError> {
            let tx = self.db.begin_write().map_err(ioerr)?;
            {
                let mut t = tx.open_table(LOGS).map_err(ioerr)?;
                for e in entries {
                    t.insert(e.log_id.index, enc(&e).as_slice())
                        .map_err(ioerr)?;
                }
            }
            tx.commit().map_err(ioerr)
        };
        match write() {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let write = || -> Result<(), AnyError> {
            let tx = self.db.begin_write().map_err(ioerr)?;
            {
                let mut t = tx.open_table(LOGS).map_err(ioerr)?;
                t.retain_in(log_id.index.., |_, _| false).map_err(ioerr)?;
            }
            tx.commit().map_err(ioerr)
        };
        write().map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let write = || -> Result<(), AnyError> {
            let tx = self.db.begin_write().map_err(ioerr)?;
            {
                let mut m = tx.open_table(META).map_err(ioerr)?;
                m.insert("last_purged", enc(&Some(log_id)).as_slice())
                    .map_err(ioerr)?;
                let mut t = tx.open_table(LOGS).map_err(ioerr)?;
                t.retain_in(..=log_id.index, |_, _| false).map_err(ioerr)?;
            }
            tx.commit().map_err(ioerr)
        };
        write().map_err(|e| StorageIOError::write_logs(e).into())
    }
}

/// Receives the local side effects of applied operations, in log order.
pub trait EffectSink: Send + Sync + 'static {
    /// Called after `effects` were applied to `state` (log order). Must be idempotent.
    fn execute(&self, state: &ClusterState, effects: &[Effect]);
    /// Called after a snapshot replaced the whole state, and at start-up: re-derives the
    /// local side of every effect from the state (idempotent).
    fn reconcile(&self, state: &ClusterState);
    /// This peer's id, known before the state is opened and reconciled.
    fn started(&self, _me: NodeId) {}
}

/// Work for the effect runner, in log order: what to carry out to reach `data`, which is
/// published after it.
struct EffectJob {
    data: Arc<SmData>,
    work: Work,
}

enum Work {
    /// The effects of the entries applied to reach `data` (often none).
    Execute(Vec<Effect>),
    /// A snapshot replaced the whole state: reconcile local data with it.
    Reconcile,
}

/// Runs consensus effects outside openraft's apply task: one task takes the jobs in log
/// order and runs each on the blocking pool. The state machine's published state (and so
/// `ClusterNode::applied_index`) advances only after a batch's effects ran, so "applied"
/// still means "the collection exists here" for the requests that wait on it, while the
/// apply task goes on with the next entries. A crash between a commit and its effects is
/// covered by `EffectSink::reconcile` at start-up, which re-derives them from the state.
#[derive(Clone)]
struct EffectRunner {
    jobs: tokio::sync::mpsc::UnboundedSender<EffectJob>,
}

impl EffectRunner {
    fn start(
        sink: Arc<dyn EffectSink>,
        published: tokio::sync::watch::Sender<Arc<SmData>>,
    ) -> EffectRunner {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<EffectJob>();
        tokio::spawn(async move {
            while let Some(EffectJob { data, work }) = rx.recv().await {
                // a batch without effects is published in order, without the hop
                if !matches!(&work, Work::Execute(fx) if fx.is_empty()) {
                    let (sink, d) = (sink.clone(), data.clone());
                    let run = move || match work {
                        Work::Execute(effects) => sink.execute(&d.state, &effects),
                        Work::Reconcile => sink.reconcile(&d.state),
                    };
                    if let Err(e) = tokio::task::spawn_blocking(run).await {
                        tracing::error!(error = %e, "consensus effects panicked");
                    }
                }
                published.send_replace(data);
            }
        });
        EffectRunner { jobs: tx }
    }

    fn submit(&self, job: EffectJob) {
        // the runner lives as long as the runtime; after that nothing is applied anyway
        let _ = self.jobs.send(job);
    }
}

/// Sink that does nothing (tests of consensus alone).
pub struct NoEffects;
impl EffectSink for NoEffects {
    fn execute(&self, _: &ClusterState, _: &[Effect]) {}
    fn reconcile(&self, _: &ClusterState) {}
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

pub struct StateMachineStore {
    db: Arc<Database>,
    data: SmData,
    /// Carries out effects and publishes the state after them.
    effects: EffectRunner,
}

impl StateMachineStore {
    /// Open the applied state and reconcile local data with it (the effects of entries
    /// committed before a crash are re-derived here). Needs a tokio runtime: the effect
    /// runner is spawned on it. The receiver sees the state after its effects ran.
    pub fn open(
        db: Arc<Database>,
        sink: Arc<dyn EffectSink>,
    ) -> Result<(Self, tokio::sync::watch::Receiver<Arc<SmData>>), StorageError> {
        let data: SmData = meta_get(&db, "sm")
            .map_err(StorageIOError::read_state_machine)?
            .unwrap_or_default();
        sink.reconcile(&data.state);
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(data.clone()));
        Ok((
            StateMachineStore {
                db,
                data,
                effects: EffectRunner::start(sink, tx),
            },
            rx,
        ))
    }

    fn persist(&self) -> Result<(), StorageError> {
        meta_put(&self.db, "sm", &self.data)
            .map_err(|e| StorageIOError::write_state_machine(e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = enc(&self.data);
        let last = self.data.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.data.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index)
            ),
        };
        meta_put(
            &self.db,
            "snapshot",
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )
        .map_err(|e| StorageIOError::write_snapshot(None, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.data.last_applied, self.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<OpOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut effects = Vec::new();
        for e in entries {
            self.data.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(OpOutcome::default()),
                EntryPayload::Membership(m) => {
                    self.data.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(OpOutcome::default());
                }
                EntryPayload::Normal(op) => match self.data.state.apply(&op) {
                    Ok(fx) => {
                        effects.extend(fx);
                        out.push(OpOutcome::default());
                    }
                    Err(err) => out.push(OpOutcome { error: Some(err) }),
                },
            }
        }
        self.persist()?;
        self.effects.submit(EffectJob {
            data: Arc::new(self.data.clone()),
            work: Work::Execute(effects),
        });
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineStore {
            db: self.db.clone(),
            data: self.data.clone(),
            effects: self.effects.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SmData =
            dec(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        self.data = data;
        self.data.last_applied = meta.last_log_id;
        self.data.membership = meta.last_membership.clone();
        self.persist()?;
        meta_put(
            &self.db,
            "snapshot",
            &StoredSnapshot {
                meta: meta.clone(),
                data: bytes,
            },
        )
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        self.effects.submit(EffectJob {
            data: Arc::new(self.data.clone()),
            work: Work::Reconcile,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let s: Option<StoredSnapshot> =
            meta_get(&self.db, "snapshot").map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(s.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ClusterOp;
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = open_db(&dir.path().join("raft.redb"))?;
            let (sm, _) = StateMachineStore::open(db.clone(), Arc::new(NoEffects))?;
            Ok((dir, LogStore::new(db), sm))
        }
    }

    /// A sink whose effects wait until the test lets them run.
    struct Gated {
        gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
        ran: std::sync::atomic::AtomicUsize,
    }

    impl EffectSink for Gated {
        fn execute(&self, _: &ClusterState, effects: &[Effect]) {
            if !effects.is_empty() {
                // bounded: a sink run inside the apply task must not hang the test
                let _ = self
                    .gate
                    .lock()
                    .unwrap()
                    .recv_timeout(std::time::Duration::from_secs(3));
                self.ran
                    .fetch_add(effects.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
        fn reconcile(&self, _: &ClusterState) {}
    }

    /// Effects run outside openraft's apply task: `apply` returns while a slow effect is
    /// still running, and the published state (what `applied_index` and every wait on it
    /// read) moves only once the effect has run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apply_does_not_wait_for_effects_and_publishes_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("raft.redb")).unwrap();
        let (release, gate) = std::sync::mpsc::channel();
        let sink = Arc::new(Gated {
            gate: std::sync::Mutex::new(gate),
            ran: Default::default(),
        });
        let (mut sm, mut published) = StateMachineStore::open(db, sink.clone()).unwrap();
        let create = ClusterOp::CreateCollection {
            name: "c".into(),
            create: serde_json::json!({}),
            config: None,
            shard_number: 1,
            replication_factor: 1,
            peers: vec![1],
            placement: None,
        };
        let entry = |index, op| Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(op),
        };
        let t = std::time::Instant::now();
        let applied = sm.apply(vec![entry(1, create)]).await.unwrap();
        assert!(applied[0].error.is_none());
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "apply waited {:?} for its effect",
            t.elapsed()
        );
        // the next entry applies too, behind the blocked effect
        let drop_it = ClusterOp::DeleteCollection { name: "c".into() };
        sm.apply(vec![entry(2, drop_it)]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            published.borrow().last_applied,
            None,
            "published before its effects ran"
        );
        assert_eq!(sink.ran.load(std::sync::atomic::Ordering::SeqCst), 0);
        release.send(()).unwrap();
        published
            .wait_for(|d| d.last_applied.is_some_and(|l| l.index == 1))
            .await
            .unwrap();
        assert!(published.borrow().state.collections.contains_key("c"));
        release.send(()).unwrap();
        published
            .wait_for(|d| d.last_applied.is_some_and(|l| l.index == 2))
            .await
            .unwrap();
        assert!(!published.borrow().state.collections.contains_key("c"));
        assert_eq!(sink.ran.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// openraft's own storage conformance suite against our redb store.
    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(Builder)
    }
}
