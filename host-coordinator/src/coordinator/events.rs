//! Executor messages on their way to the state: verified off the lock, applied in batches.
//!
//! An executor's session has the records its messages carry decoded and verified (the costly part,
//! about 40 µs of ed25519 each) by a [`VerifyPool`] — threads beside the runtime's one, so several
//! sessions' records are verified at once while the runtime applies earlier ones — and queues them
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

/// Threads that verify executors' records beside the coordinator's runtime (which stays on one
/// thread: tokio's multi-thread scheduler in the binary cost every `icn node` 0.6 MiB of resident
/// code).
#[derive(Debug)]
pub struct VerifyPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<PoolJob>>,
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
        let (tx, rx) = std::sync::mpsc::channel::<PoolJob>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = std::sync::Arc::clone(&rx);
            let spawned = std::thread::Builder::new().name(format!("icn-verify-{n}")).spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((message, reply)) = job else { return };
                    let _ = reply.send(Checked::check(message));
                }
            });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a verifier thread: {e}; records are verified in the sessions");
            }
        }
        Self { jobs: std::sync::Mutex::new(tx) }
    }

    /// `message` with its records verified, on a pool thread (inline if the pool is gone).
    pub async fn check(&self, message: FromExecutor) -> Checked {
        if !matches!(message, FromExecutor::Bid(_) | FromExecutor::Result { .. }) {
            return Checked::Plain(message);
        }
        let is_bid = matches!(message, FromExecutor::Bid(_));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).send((message, reply));
        match sent {
            Ok(()) => answer.await.unwrap_or_else(|_| {
                // A verifier thread died with the message (decoding returns errors, it does not
                // panic): the record is refused as unverifiable, and the executor told why.
                let failed = || DagError::Decode("the coordinator's verifier failed".into());
                if is_bid {
                    Checked::Bid(Err(failed()))
                } else {
                    Checked::Result { record: Err(failed()), output: Blob(Vec::new()) }
                }
            }),
            Err(std::sync::mpsc::SendError((message, _))) => Checked::check(message),
        }
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
