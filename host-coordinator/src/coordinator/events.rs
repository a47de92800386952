//! Executor messages on their way to the state: verified off the lock, applied in batches.
//!
//! An executor's session has the records its messages carry decoded and verified (the costly part,
//! about 40 µs of ed25519 each) by a [`VerifyPool`] — where they arrive when a few wait, by threads
//! beside the runtime's one in a flood, so the runtime applies earlier ones meanwhile — and queues them
//! with its joins and departures; one task drains the queue and applies everything waiting in one
//! commit. Under load a commit covers many events (fewer commits, and fewer pages for the next flush to write); when the
//! mesh is quiet an event is applied the moment it arrives. One queue keeps each executor's events
//! in the order it sent them, its departure after its last message.

use icn_mesh_core::dag::{DagError, SignedRecord};
use icn_mesh_core::identity::Did;
use icn_mesh_core::market::Bid;
use icn_mesh_core::protocol::{Blob, FromExecutor};
use icn_mesh_core::records::ResultRecord;

use super::state::{ExecutorEntry, Outbox, State};

/// The most events one commit applies (a bound on how long the lock is held at a time).
pub const MAX_EVENTS_PER_COMMIT: usize = 256;

/// Something an executor's session tells the state.
#[derive(Debug)]
pub enum Event {
    Joined {
        did: Did,
        entry: ExecutorEntry,
        at_ms: u64,
    },
    Message {
        did: Did,
        /// Boxed: a verified record is large, and the queue may hold many events.
        message: Box<Checked>,
        at_ms: u64,
    },
    /// A session ended; `session` is the outbox it registered with (the executor may already have
    /// joined again on a new connection, which this must not remove).
    Gone {
        did: Did,
        session: Outbox,
        at_ms: u64,
    },
}

/// An executor's message with the records it carries decoded and verified.
#[derive(Debug)]
pub enum Checked {
    Bid(Result<SignedRecord<Bid>, DagError>),
    Result {
        record: Result<SignedRecord<ResultRecord>, DagError>,
        output: Blob,
    },
    /// Messages that carry no record.
    Plain(FromExecutor),
}

impl Checked {
    /// Verifies what `message` carries; needs no state, so runs before the lock.
    pub fn check(message: FromExecutor) -> Self {
        match message {
            FromExecutor::Bid(bytes) => Self::Bid(SignedRecord::decode(&bytes.0)),
            FromExecutor::Result { record, output } => {
                Self::Result { record: SignedRecord::decode(&record.0), output }
            }
            other => Self::Plain(other),
        }
    }
}

/// Verifies executors' records: where they arrive (the runtime thread) when they come a few at a
/// time, on threads beside it when they come in a flood.
///
/// A session queues its message and yields, so the other sessions the runtime has ready queue
/// theirs. Fewer than [`FLOOD`] waiting: it verifies the first one waiting itself (its own or
/// another's) until its own is done. More: a flood, left to the verifier threads (woken if they
/// sleep) while the runtime applies what they finish. On 2 cores, handing every record to a
/// thread and back cost about 120 µs of coordinator CPU per job when the machine was busy with its
/// executors (bench `mesh throughput`; in later runs 20-40 µs, all inline against all handed), while a
/// flood of bids needs the second core (20k bids/s with it, 11k without; bench `mesh bids`). The runtime stays on one thread: tokio's multi-thread
/// scheduler in the binary cost every `icn node` 0.6 MiB of resident code.
#[derive(Debug)]
pub struct VerifyPool {
    shared: std::sync::Arc<Shared>,
    /// Verifier threads that started; with none, a flood is verified in the sessions too.
    threads: usize,
}

/// Messages waiting at which the verifier threads take over (see [`VerifyPool`]).
pub const FLOOD: usize = 4;

#[derive(Debug, Default)]
struct Shared {
    queue: std::sync::Mutex<Queue>,
    wake: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: std::collections::VecDeque<PoolJob>,
    sleeping: usize,
    stop: bool,
}

type PoolJob = (FromExecutor, tokio::sync::oneshot::Sender<Checked>);

impl VerifyPool {
    /// As many verifier threads as there are cores besides the runtime's (at least one, at most
    /// four): a verifier more than that takes the core the runtime applies events on (on 2 cores,
    /// 2 verifiers gave 10k bids/s, 1 gave 16k).
    pub fn threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).clamp(1, 4))
    }

    /// Starts `threads` verifier threads; they end when the pool is dropped.
    pub fn start(threads: usize) -> Self {
        let shared = std::sync::Arc::new(Shared::default());
        let mut started = 0;
        for n in 0..threads {
            let shared = std::sync::Arc::clone(&shared);
            let spawned = std::thread::Builder::new().name(format!("icn-verify-{n}")).spawn(move || {
                while let Some((message, reply)) = shared.next_job() {
                    let _ = reply.send(Checked::check(message));
                }
            });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(
                    "cannot start a verifier thread: {e}; records are verified in the sessions"
                ),
            }
        }
        Self { shared, threads: started }
    }

    /// `message` with its records verified, here or on a verifier thread.
    pub async fn check(&self, message: FromExecutor) -> Checked {
        if !matches!(message, FromExecutor::Bid(_) | FromExecutor::Result { .. }) {
            return Checked::Plain(message);
        }
        let is_bid = matches!(message, FromExecutor::Bid(_));
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.shared.queue().jobs.push_back((message, reply));
        tokio::task::yield_now().await;
        loop {
            let job = {
                let mut queue = self.shared.queue();
                if queue.jobs.len() >= FLOOD && self.threads > 0 {
                    if queue.sleeping > 0 {
                        self.shared.wake.notify_all();
                    }
                    None
                } else {
                    queue.jobs.pop_front()
                }
            };
            let Some((message, reply)) = job else { break };
            let _ = reply.send(Checked::check(message));
            if let Ok(checked) = answer.try_recv() {
                return checked;
            }
        }
        answer.await.unwrap_or_else(|_| {
            // A verifier thread died with the message (decoding returns errors, it does not
            // panic): the record is refused as unverifiable, and the executor told why.
            let failed = || DagError::Decode("the coordinator's verifier failed".into());
            if is_bid {
                Checked::Bid(Err(failed()))
            } else {
                Checked::Result { record: Err(failed()), output: Blob(Vec::new()) }
            }
        })
    }
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next message for a verifier thread; `None` once the pool is dropped.
    fn next_job(&self) -> Option<PoolJob> {
        let mut queue = self.queue();
        loop {
            if queue.stop {
                return None;
            }
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            queue.sleeping += 1;
            queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
            queue.sleeping -= 1;
        }
    }
}

impl Drop for VerifyPool {
    fn drop(&mut self) {
        self.shared.queue().stop = true;
        self.shared.wake.notify_all();
    }
}

impl State {
    /// Applies one event (the caller holds the commit unit).
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Joined { did, entry, at_ms } => {
                self.executors.insert(did.clone(), entry);
                self.last_seen.insert(did, at_ms);
                self.offer_pending(at_ms);
            }
            Event::Gone { did, session, at_ms } => {
                if self.executors.get(&did).is_some_and(|e| e.outbox.same_channel(&session)) {
                    self.executor_gone(&did, at_ms);
                }
            }
            Event::Message { did, message, at_ms } => {
                tracing::trace!("applying");
                self.last_seen.insert(did.clone(), at_ms);
                match *message {
                    Checked::Bid(bid) => self.bid(&did, bid, at_ms),
                    Checked::Result { record, output } => self.result(&did, record, output, at_ms),
                    Checked::Plain(FromExecutor::Decline { job, .. }) => self.decline(&did, job, at_ms),
                    Checked::Plain(FromExecutor::Progress { job, permille, .. }) => {
                        self.progress(&did, job, permille);
                    }
                    Checked::Plain(FromExecutor::Commit { job, commitment }) => {
                        self.commit(&did, job, commitment);
                    }
                    Checked::Plain(FromExecutor::Accepting(accepting)) => {
                        if let Some(e) = self.executors.get_mut(&did) {
                            e.accepting = accepting;
                        }
                        self.offer_pending(at_ms);
                    }
                    // Sessions refuse a second registration; the others were checked above.
                    Checked::Plain(
                        FromExecutor::Register { .. } | FromExecutor::Bid(_) | FromExecutor::Result { .. },
                    ) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use icn_mesh_core::identity::Keypair;
    use icn_mesh_core::market::{AvailabilityWindow, Capabilities, CapabilityProof, RuntimeKind};
    use icn_mesh_core::protocol::RecordBytes;
    use icn_mesh_core::spec::Architecture;

    fn small_caps() -> Capabilities {
        Capabilities {
            cpu_cores: 1,
            memory_mb: 64,
            disk_mb: 64,
            gpu: None,
            runtimes: vec![RuntimeKind::Wasm],
            architecture: Architecture::X86_64,
            fuel_per_second: 1,
        }
    }

    fn bid_bytes(key: &Keypair) -> Vec<u8> {
        let bid = Bid {
            job: icn_mesh_core::dag::blob_cid(b"job"),
            bidder: key.did().clone(),
            price: 10,
            completion_time: 5,
            capabilities: small_caps(),
            availability: AvailabilityWindow { from: 0, until: 10 },
            reputation_score: 0.5,
            completed_similar: 0,
            success_rate: 1.0,
            capability_proof: CapabilityProof::default(),
            valid_until: 10,
        };
        SignedRecord::sign(bid, key).expect("sign").bytes().to_vec()
    }

    #[test]
    fn the_pool_gives_the_verdicts_the_session_would() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let pool = VerifyPool::start(2);
        let key = Keypair::from_seed(&[3; 32]);
        let good = bid_bytes(&key);
        let mut bent = good.clone();
        let last = bent.len() - 1;
        bent[last] ^= 1;
        rt.block_on(async {
            for (bytes, verifies) in [(good, true), (bent, false)] {
                match pool.check(FromExecutor::Bid(RecordBytes(bytes.clone()))).await {
                    Checked::Bid(Ok(bid)) => {
                        assert!(verifies);
                        assert_eq!(bid.bytes(), &bytes[..]);
                    }
                    Checked::Bid(Err(e)) => assert!(!verifies, "{e}"),
                    other => panic!("{other:?}"),
                }
            }
            let result = FromExecutor::Result { record: RecordBytes(vec![1, 2]), output: Blob(vec![7]) };
            assert!(matches!(
                pool.check(result).await,
                Checked::Result { record: Err(_), output: Blob(o) } if o == [7]
            ));
            assert!(matches!(pool.check(FromExecutor::Accepting(true)).await, Checked::Plain(_)));
        });
    }

    /// Sixteen sessions at once (a flood, left to the threads) and one at a time (verified in the
    /// session), with and without verifier threads: every verdict right, none lost.
    #[test]
    fn a_flood_and_a_trickle_get_the_same_verdicts_with_or_without_threads() {
        let key = Keypair::from_seed(&[4; 32]);
        let good = bid_bytes(&key);
        let mut bent = good.clone();
        bent[good.len() - 1] ^= 1;
        for threads in [0, 1] {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let local = tokio::task::LocalSet::new();
            let pool = std::rc::Rc::new(VerifyPool::start(threads));
            let verdicts = local.block_on(&rt, async {
                let sessions: Vec<_> = (0..16)
                    .map(|n| {
                        let (pool, bytes) =
                            (std::rc::Rc::clone(&pool), if n % 2 == 0 { &good } else { &bent });
                        let bytes = bytes.clone();
                        tokio::task::spawn_local(async move {
                            let mut verdicts = Vec::new();
                            for _ in 0..3 {
                                let checked = pool.check(FromExecutor::Bid(RecordBytes(bytes.clone()))).await;
                                verdicts.push(matches!(checked, Checked::Bid(Ok(_))));
                            }
                            verdicts
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for s in sessions {
                    all.push(s.await.expect("session"));
                }
                all.push(vec![matches!(
                    pool.check(FromExecutor::Bid(RecordBytes(good.clone()))).await,
                    Checked::Bid(Ok(_))
                )]);
                all
            });
            for (n, v) in verdicts.iter().take(16).enumerate() {
                assert_eq!(v, &vec![n % 2 == 0; 3], "session {n} with {threads} thread(s)");
            }
            assert_eq!(verdicts[16], vec![true], "alone, with {threads} thread(s)");
        }
    }

    #[test]
    fn a_departure_removes_only_its_own_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::coordinator::open_db(&dir.path().join("store.redb")).expect("db");
        let mut state = State::open(std::sync::Arc::new(Keypair::from_seed(&[1; 32])), &db).expect("state");
        let did = Keypair::from_seed(&[2; 32]).did().clone();
        let session = || tokio::sync::mpsc::unbounded_channel::<icn_mesh_core::protocol::ToExecutor>().0;
        let (old, new) = (session(), session());
        for outbox in [old.clone(), new.clone()] {
            let entry = ExecutorEntry { outbox, capabilities: small_caps(), accepting: true, busy: None };
            state.apply(Event::Joined { did: did.clone(), entry, at_ms: 1 });
        }
        // The old connection times out after the executor reconnected: its new session stays.
        state.apply(Event::Gone { did: did.clone(), session: old, at_ms: 2 });
        assert!(state.executors.get(&did).is_some_and(|e| e.outbox.same_channel(&new)));
        state.apply(Event::Gone { did: did.clone(), session: new, at_ms: 3 });
        assert!(!state.executors.contains_key(&did));
    }
}
