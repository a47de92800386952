//! The coordinator: takes jobs, runs auctions, keeps the ledger — the network driver around `state`.
//!
//! One QUIC endpoint; each connection proves its DID in the handshake, then says in its hello whether
//! it is an executor (one long-lived control stream) or a client (one stream per request). All
//! decisions happen in [`state::State`] under one lock, which is never held across an await.

mod auction;
pub mod events;
mod fault;
mod group_commit;
mod journal;
mod judge;
pub mod state;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use icn_mesh_core::dag::SignedRecord;
use icn_mesh_core::identity::{Did, Keypair};
use icn_mesh_core::net::{self, Hello, PeerAddr, Role, frame};
use icn_mesh_core::protocol::{
    AuditReport, ClientReply, ClientRequest, FromExecutor, MAX_MESSAGE_BYTES, ToExecutor,
};
use icn_mesh_core::records::GenesisRecord;
use icn_mesh_core::spec::Mana;
use icn_mesh_core::store::{self as store, Db, DbOptions, LoggedTable, Store, StoreError};
use tokio::sync::mpsc;

use crate::ledger::{Ledger, RedbLedger};
use events::{Event, MAX_EVENTS_PER_COMMIT, VerifyPool};
use group_commit::GroupCommit;
use state::{ExecutorEntry, State};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Net(#[from] net::NetError),
}

/// redb's page cache for the coordinator's database: the hot pages (open jobs, accounts, recent
/// records) fit; older records are read from the file when asked for.
pub const COORDINATOR_CACHE_BYTES: usize = 32 << 20;

/// Every table in the coordinator's database (the store's, the ledger's, the journal's), so that its
/// redo log can be replayed by whoever opens it.
pub const DB_TABLES: [&dyn LoggedTable; 12] = [
    store::TABLES[0],
    store::TABLES[1],
    store::TABLES[2],
    store::TABLES[3],
    store::TABLES[4],
    crate::ledger::TABLES[0],
    crate::ledger::TABLES[1],
    crate::ledger::TABLES[2],
    crate::ledger::TABLES[3],
    journal::TABLES[0],
    journal::TABLES[1],
    journal::TABLES[2],
];

/// Opens a database that may hold the coordinator's tables: its own, or any store `icn` reads.
pub fn open_db(path: &Path) -> Result<Db, StoreError> {
    Db::open_with(
        path,
        DbOptions { cache_bytes: COORDINATOR_CACHE_BYTES, tables: &DB_TABLES, ..DbOptions::default() },
    )
}

/// How the coordinator starts.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub grants: Vec<(Did, Mana)>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handles one event under the lock with all its writes (store, ledger, journal) in one commit.
/// A commit that fails leaves the job table ahead of the disk, so the coordinator stops there;
/// restarted, it recovers from what the disk holds (see `journal.rs`).
fn in_one_commit<R>(state: &Shared, event: impl FnOnce(&mut State) -> R) -> R {
    let mut s = lock(state);
    let db = s.store.db().clone();
    match db.unit(|| event(&mut s)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("committing to the coordinator's database failed: {e}; stopping");
            std::process::exit(70)
        }
    }
}

/// Opens the store, key and ledger in `data`, applies the genesis grants once, listens, and calls
/// `ready` with the address to give executors and clients. Runs until the endpoint closes.
pub async fn run(config: CoordinatorConfig, ready: impl FnOnce(&PeerAddr)) -> Result<(), CoordinatorError> {
    let setup = |e: String| CoordinatorError::Setup(e);
    std::fs::create_dir_all(&config.data).map_err(|e| setup(format!("{}: {e}", config.data.display())))?;
    let key =
        Arc::new(Keypair::load_or_create(&config.data.join("node.key")).map_err(|e| setup(e.to_string()))?);
    // Store, ledger and journal share one file, so one fsync makes a group of their writes durable
    // and a crash keeps the same prefix of all three.
    let db = open_db(&config.data.join("store.redb")).map_err(|e| setup(e.to_string()))?;
    let state = State::open(Arc::clone(&key), &db).map_err(setup)?;
    apply_genesis(&key, &state.store, &state.ledger, &config.grants)?;

    let endpoint = net::listen(&key, config.listen)?;
    let address =
        PeerAddr { did: key.did().clone(), addr: endpoint.local_addr().map_err(|e| setup(e.to_string()))? };
    write_address(&config.data, &address)?;
    ready(&address);

    let state: Shared = Arc::new(Mutex::new(state));
    let unfinished = lock(&state).recover(now_ms()).map_err(setup)?;
    if unfinished > 0 {
        tracing::warn!(
            "{unfinished} job(s) were unfinished when the coordinator last stopped; they run again or are settled"
        );
    }
    let group = GroupCommit::start(db).map_err(|e| setup(format!("cannot start the flusher thread: {e}")))?;
    let events = apply_events(Arc::clone(&state));
    let verifier = Arc::new(VerifyPool::start(VerifyPool::threads()));
    let ticker = Arc::clone(&state);
    let nudged = Arc::clone(&group);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            in_one_commit(&ticker, |s| s.tick(now_ms()));
            nudged.nudge();
        }
    });
    while let Some(incoming) = endpoint.accept().await {
        let state = Arc::clone(&state);
        let group = Arc::clone(&group);
        let events = events.clone();
        let verifier = Arc::clone(&verifier);
        tokio::spawn(async move {
            if let Err(e) = connection(state, events, verifier, group, incoming).await {
                tracing::info!("connection ended: {e}");
            }
        });
    }
    Ok(())
}

/// The task that applies executors' events, as many as are waiting in one commit; returns the
/// queue to them.
///
/// It yields before each receive: sessions whose records the verifier pool finished while the last
/// commit ran have been woken but not yet run, so without the yield the queue holds one event and
/// every event pays a commit of its own (a bid's state path took 65 µs so, 39 µs at four a commit).
/// With it, the sessions queue what is ready first: four events a commit under a flood of bids, and
/// 14k -> 23k bids/s (bench `mesh bids`). An idle coordinator pays one pass of the scheduler.
fn apply_events(state: Shared) -> mpsc::UnboundedSender<Event> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_EVENTS_PER_COMMIT);
        while {
            tokio::task::yield_now().await;
            rx.recv_many(&mut batch, MAX_EVENTS_PER_COMMIT).await > 0
        } {
            in_one_commit(&state, |s| batch.drain(..).for_each(|e| s.apply(e)));
        }
    });
    tx
}

/// The genesis record is deterministic (ed25519 signatures are), so the same grants give the same
/// CID and the ledger applies them once, however often the coordinator restarts.
fn apply_genesis(
    key: &Keypair,
    store: &Store,
    ledger: &RedbLedger,
    grants: &[(Did, Mana)],
) -> Result<(), CoordinatorError> {
    if grants.is_empty() {
        return Ok(());
    }
    let mut grants = grants.to_vec();
    grants.sort();
    let record = SignedRecord::sign(GenesisRecord { grants: grants.clone() }, key)
        .map_err(|e| CoordinatorError::Setup(e.to_string()))?;
    store.put_record(&record, None).map_err(|e| CoordinatorError::Setup(e.to_string()))?;
    for (did, amount) in grants {
        ledger
            .grant(&format!("genesis:{}:{did}", record.cid()), did.as_str(), amount)
            .map_err(|e| CoordinatorError::Setup(e.to_string()))?;
    }
    Ok(())
}

fn write_address(data: &Path, address: &PeerAddr) -> Result<(), CoordinatorError> {
    let tmp = data.join("address.tmp");
    std::fs::write(&tmp, format!("{address}\n"))
        .and_then(|()| std::fs::rename(&tmp, data.join("address")))
        .map_err(|e| CoordinatorError::Setup(format!("cannot write {}/address: {e}", data.display())))
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error("{0}")]
    Protocol(String),
}

async fn connection(
    state: Shared,
    events: mpsc::UnboundedSender<Event>,
    verifier: Arc<VerifyPool>,
    group: Arc<GroupCommit>,
    incoming: quinn::Incoming,
) -> Result<(), SessionError> {
    let conn = incoming.await.map_err(|e| SessionError::Protocol(e.to_string()))?;
    let peer = net::peer_did(&conn)?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| SessionError::Protocol(e.to_string()))?;
    let hello: Hello = frame::read(&mut recv, MAX_MESSAGE_BYTES).await?;
    frame::write(&mut send, &Hello::new(Role::Coordinator), MAX_MESSAGE_BYTES).await?;
    hello.check()?;
    match hello.role {
        Role::Executor => executor_session(events, &verifier, group, peer, send, recv).await,
        Role::Client => {
            client_request(&state, &group, &peer, send, recv).await?;
            // Further requests on further streams of the same connection.
            while let Ok((send, recv)) = conn.accept_bi().await {
                let state = Arc::clone(&state);
                let group = Arc::clone(&group);
                let peer = peer.clone();
                tokio::spawn(async move { client_request(&state, &group, &peer, send, recv).await });
            }
            Ok(())
        }
        Role::Coordinator => {
            Err(SessionError::Protocol("coordinator federation is not supported yet".into()))
        }
    }
}

async fn executor_session(
    events: mpsc::UnboundedSender<Event>,
    verifier: &VerifyPool,
    group: Arc<GroupCommit>,
    did: Did,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), SessionError> {
    let FromExecutor::Register { capabilities, accepting, .. } =
        frame::read(&mut recv, MAX_MESSAGE_BYTES).await?
    else {
        return Err(SessionError::Protocol("an executor must register first".into()));
    };
    frame::write(&mut send, &ToExecutor::Registered, MAX_MESSAGE_BYTES).await?;
    let (outbox, rx) = mpsc::unbounded_channel::<ToExecutor>();
    // Names this session to the state: a departure removes the entry only if it is still this one's.
    let session = outbox.clone();
    let entry = ExecutorEntry { outbox, capabilities, accepting, busy: None };
    // The queue outlives every session (its task holds the state); a send fails only at exit.
    let _ = events.send(Event::Joined { did: did.clone(), entry, at_ms: now_ms() });
    tracing::info!("executor {did} joined");
    let writer = tokio::spawn(executor_writer(group, rx, send));
    // A flood of messages from one executor is cut off: at most this many per second.
    let mut window = (now_ms(), 0u32);
    let result = loop {
        let message = match frame::read::<FromExecutor>(&mut recv, MAX_MESSAGE_BYTES).await {
            Ok(m) => m,
            Err(frame::FrameError::Closed) => break Ok(()),
            Err(e) => break Err(e.into()),
        };
        let now = now_ms();
        if now - window.0 >= 1000 {
            window = (now, 0);
        }
        window.1 += 1;
        if window.1 > MAX_MESSAGES_PER_SECOND {
            break Err(SessionError::Protocol(format!(
                "{did} sent more than {MAX_MESSAGES_PER_SECOND} messages in a second"
            )));
        }
        if matches!(message, FromExecutor::Register { .. }) {
            break Err(SessionError::Protocol("registered twice".into()));
        }
        tracing::trace!("from executor: {}", message.kind());
        let message = Box::new(verifier.check(message).await);
        tracing::trace!("verified");
        let _ = events.send(Event::Message { did: did.clone(), message, at_ms: now });
    };
    let _ = events.send(Event::Gone { did: did.clone(), session, at_ms: now_ms() });
    writer.abort();
    tracing::info!("executor {did} left");
    result
}

/// How long a job's acceptance waits for a flush someone else asks for before asking itself (see
/// `GroupCommit::durable_within`): about a trivial job's whole run on a quiet mesh here, so that
/// one fsync covers both its acceptance and its settlement; `icn job submit` without `--wait`
/// answers at most this much later.
const ACCEPT_FLUSH_WINDOW: Duration = Duration::from_millis(3);

/// How long a durable receipt waits to ride along with the executor's next message before it goes
/// on its own. Nothing waits on a receipt (the executor has been paid; the receipt is its proof of
/// that), and on a busy mesh the next message — the award of the job it has just bid on — follows
/// within a millisecond or two: the two then reach the executor in one packet and one wake-up
/// instead of two.
const RECEIPT_RIDE: Duration = Duration::from_millis(5);

/// Writes what the state sends one executor, in order, except receipts. A receipt says mana moved,
/// so it goes out only once the move is on disk; what comes after it (the executor's next offer,
/// sent as soon as its result is in) does not wait for that flush. Durable receipts then wait up to
/// [`RECEIPT_RIDE`] for the next message to go out with.
async fn executor_writer(
    group: Arc<GroupCommit>,
    mut rx: mpsc::UnboundedReceiver<ToExecutor>,
    mut send: impl Outgoing,
) {
    // Receipts not yet durable, each with the flush mark it waits for, in order.
    let mut flushing: VecDeque<(u64, ToExecutor)> = VecDeque::new();
    // Durable receipts, and when the first of them became so.
    let mut durable: Vec<ToExecutor> = Vec::new();
    let mut durable_since: Option<tokio::time::Instant> = None;
    let mut open = true;
    while open || !flushing.is_empty() || !durable.is_empty() {
        let oldest = flushing.front().map(|(mark, _)| *mark);
        let ride_until = durable_since.map(|t| if open { t + RECEIPT_RIDE } else { t });
        let next = tokio::select! {
            biased;
            () = group.covers(oldest.unwrap_or_default()), if oldest.is_some() => {
                durable.extend(flushing.pop_front().map(|(_, receipt)| receipt));
                durable_since.get_or_insert_with(tokio::time::Instant::now);
                continue;
            }
            () = tokio::time::sleep_until(ride_until.unwrap_or_else(tokio::time::Instant::now)), if ride_until.is_some() => None,
            next = rx.recv(), if open => match next {
                Some(receipt @ ToExecutor::Receipt(_)) => {
                    flushing.push_back((group.want(), receipt));
                    continue;
                }
                Some(other) => Some(other),
                None => {
                    open = false;
                    continue;
                }
            },
        };
        // The receipts first (they were due before it), then the message, written back to back so
        // that they leave together.
        durable_since = None;
        for message in durable.drain(..).chain(next) {
            tracing::trace!("to executor: {}", message.kind());
            if !send.write(&message).await {
                return;
            }
        }
    }
}

/// Where [`executor_writer`] writes: the executor's control stream (a recorder in tests).
trait Outgoing {
    /// Writes one message; false once the peer is gone.
    async fn write(&mut self, message: &ToExecutor) -> bool;
}

impl Outgoing for quinn::SendStream {
    async fn write(&mut self, message: &ToExecutor) -> bool {
        frame::write(self, message, MAX_MESSAGE_BYTES).await.is_ok()
    }
}

/// Writes a job's final report once everything written before it is durable: the report names
/// receipts and payments, and a client told of them must not lose them to a crash. Every final
/// report goes this way, including one that was ready before its "Accepted" was written.
async fn send_final(
    group: &GroupCommit,
    send: &mut quinn::SendStream,
    report: ClientReply,
) -> Result<(), SessionError> {
    tracing::trace!("final");
    group.durable().await;
    fault::crash_point("final-after-flush");
    frame::write(send, &report, MAX_MESSAGE_BYTES).await?;
    let _ = send.finish();
    Ok(())
}

/// Messages per second one executor may send before it is disconnected.
pub const MAX_MESSAGES_PER_SECOND: u32 = 2000;

async fn client_request(
    state: &Shared,
    group: &GroupCommit,
    peer: &Did,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), SessionError> {
    let request: ClientRequest = frame::read(&mut recv, MAX_MESSAGE_BYTES).await?;
    tracing::trace!("request read");
    match request {
        ClientRequest::Submit { job, module, input, wait } => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let first = in_one_commit(state, |s| {
                s.submit(peer, &job, module, input, wait.then(|| tx.clone()), now_ms())
            });
            tracing::trace!("submitted");
            let accepted = matches!(first, ClientReply::Accepted { .. });
            // "Accepted" promises the job and its budget lock are recorded. The flush that keeps
            // that promise is not asked for at once: the offers go out and the executors bid
            // meanwhile, and a short job's final report asks for one that covers both.
            group.durable_within(ACCEPT_FLUSH_WINDOW).await;
            frame::write(&mut send, &first, MAX_MESSAGE_BYTES).await?;
            if wait && accepted {
                // The job may already be final: a resubmission of a finished job, or a short job
                // that ran to its end while "Accepted" waited for its flush.
                if let ClientReply::Accepted { job } = first {
                    // Not in memory: finished long enough ago to be read from the journal.
                    let report = {
                        let state = lock(state);
                        let done = state.jobs.get(&job).is_none_or(|j| j.waiters.is_empty());
                        if done { state.final_report(job) } else { None }
                    };
                    if let Some(report) = report {
                        return send_final(group, &mut send, ClientReply::Final(report)).await;
                    }
                }
                drop(tx);
                while let Some(reply) = rx.recv().await {
                    if matches!(reply, ClientReply::Final(_)) {
                        return send_final(group, &mut send, reply).await;
                    }
                    frame::write(&mut send, &reply, MAX_MESSAGE_BYTES).await?;
                }
            }
        }
        ClientRequest::Status { job } => {
            let reply = match lock(state).status(&job) {
                Some(report) => ClientReply::Status(report),
                None => ClientReply::Refused {
                    code: icn_mesh_core::ErrorCode::J001,
                    message: format!("no job {job} here"),
                },
            };
            frame::write(&mut send, &reply, MAX_MESSAGE_BYTES).await?;
        }
        ClientRequest::Balance { did } => {
            let reply = match lock(state).ledger.account(&did) {
                Ok((balance, locked)) => ClientReply::Balance { did, balance, locked },
                Err(e) => ClientReply::Refused { code: e.code(), message: e.to_string() },
            };
            frame::write(&mut send, &reply, MAX_MESSAGE_BYTES).await?;
        }
        ClientRequest::Audit => {
            // The audit describes what is on disk.
            group.durable().await;
            let reply = match lock(state).ledger.audit() {
                Ok(a) => ClientReply::Audit(AuditReport {
                    granted: a.granted,
                    accounts: a.accounts.into_iter().map(|x| (x.did, x.balance, x.locked)).collect(),
                    sink: a.sink,
                    conserved: a.conserved,
                }),
                Err(e) => ClientReply::Refused { code: e.code(), message: e.to_string() },
            };
            frame::write(&mut send, &reply, MAX_MESSAGE_BYTES).await?;
        }
    }
    let _ = send.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use icn_mesh_core::protocol::RecordBytes;
    use icn_mesh_core::store::Store;

    /// What the writer wrote, and when; checks that no receipt goes out before everything written
    /// to the database by then is durable.
    struct Recorder(mpsc::UnboundedSender<(tokio::time::Instant, ToExecutor)>, Arc<GroupCommit>, Db);

    impl Outgoing for Recorder {
        async fn write(&mut self, message: &ToExecutor) -> bool {
            if matches!(message, ToExecutor::Receipt(_)) {
                assert!(self.1.durable_mark() >= self.2.written(), "a receipt before its flush");
            }
            self.0.send((tokio::time::Instant::now(), message.clone())).is_ok()
        }
    }

    fn receipt(n: u8) -> ToExecutor {
        ToExecutor::Receipt(RecordBytes(vec![n]))
    }

    fn offer(n: u8) -> ToExecutor {
        ToExecutor::Offer { job: RecordBytes(vec![n]), bid_deadline_ms: 0 }
    }

    #[test]
    fn receipts_wait_for_their_flush_then_ride_with_the_next_message_or_go_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(&dir.path().join("store.redb")).expect("db");
        let store = Store::within(db.clone()).expect("store");
        let group = GroupCommit::start(db.clone()).expect("flusher");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (outbox, rx) = mpsc::unbounded_channel();
            let (written, mut out) = mpsc::unbounded_channel();
            tokio::spawn(executor_writer(
                Arc::clone(&group),
                rx,
                Recorder(written, Arc::clone(&group), db.clone()),
            ));

            // A receipt for a payment not yet flushed waits; an offer after it goes at once.
            store.put_blob(b"paid").expect("put");
            let paid = db.written();
            outbox.send(receipt(1)).expect("queue");
            outbox.send(offer(2)).expect("queue");
            let (_, first) = out.recv().await.expect("written");
            assert_eq!(first, offer(2));
            // Once its flush is done, the receipt waits to ride along: written with the next
            // message, just before it.
            group.durable().await;
            assert!(group.durable_mark() >= paid);
            tokio::time::sleep(RECEIPT_RIDE / 5).await;
            assert!(out.try_recv().is_err(), "a durable receipt waits for company");
            outbox.send(offer(3)).expect("queue");
            let (at, second) = out.recv().await.expect("written");
            let (at3, third) = out.recv().await.expect("written");
            assert_eq!((second, third), (receipt(1), offer(3)));
            assert!(at3 - at < RECEIPT_RIDE);

            // Alone, it goes once its ride has waited long enough.
            store.put_blob(b"paid again").expect("put");
            outbox.send(receipt(4)).expect("queue");
            let queued = tokio::time::Instant::now();
            let (at, alone) = tokio::time::timeout(Duration::from_secs(10), out.recv())
                .await
                .expect("sent alone")
                .expect("written");
            assert_eq!(alone, receipt(4));
            assert!(at - queued >= RECEIPT_RIDE, "it waited for a ride first");

            // When the outbox closes, what is left still goes.
            store.put_blob(b"last").expect("put");
            outbox.send(receipt(5)).expect("queue");
            drop(outbox);
            let (_, last) = tokio::time::timeout(Duration::from_secs(10), out.recv())
                .await
                .expect("sent at close")
                .expect("written");
            assert_eq!(last, receipt(5));
        });
    }
}
