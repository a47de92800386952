//! Executor messages on their way to the state: verified off the lock, applied in batches.
//!
//! An executor's session decodes and verifies the records its messages carry (the costly part,
//! about 40 µs of ed25519 each) before they reach the one lock, and queues them with its joins and
//! departures; one task drains the queue and applies everything waiting in one commit. Under load a
//! commit covers many events (fewer commits, and fewer pages for the next flush to write); when the
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
