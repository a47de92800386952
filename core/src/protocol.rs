//! The messages of the mesh protocol, as they travel in frames (postcard).
//!
//! Records travel as their exact signed bytes ([`RecordBytes`]); the receiver decodes and verifies
//! them (`SignedRecord::decode`) before it believes anything in them, and checks that the signer is
//! the peer the connection proved. Blobs travel as bytes and are checked against their CIDs.
//!
//! Streams: an executor keeps one bidirectional *control* stream per connection — [`FromExecutor`] up,
//! [`ToExecutor`] down. A client (`icn job submit`, `status`, `ledger`) opens one stream per
//! [`ClientRequest`] and reads [`ClientReply`] frames until the last.

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::market::Capabilities;
use crate::spec::Mana;

/// Largest frame on a protocol stream: job submissions and awards carry their module and input.
pub const MAX_MESSAGE_BYTES: usize = 24 << 20;

/// A signed record's exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// A blob's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What an executor tells the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromExecutor {
    /// First message: what this node can do and whether its device policy lets it work now.
    Register {
        capabilities: Capabilities,
        price_per_hour: Mana,
        accepting: bool,
    },
    /// A signed `Bid` record for an offered job.
    Bid(RecordBytes),
    /// Not bidding on an offered job, and why.
    Decline {
        job: Cid,
        reason: String,
    },
    Progress {
        job: Cid,
        permille: u16,
        fuel_used: u64,
    },
    /// Under Full(n): a commitment to the output before anyone reveals.
    Commit {
        job: Cid,
        commitment: [u8; 32],
    },
    /// The signed `Result` record and the output blob.
    Result {
        record: RecordBytes,
        output: Blob,
    },
    /// The device policy changed (e.g. unplugged): stop or start sending offers.
    Accepting(bool),
}

impl FromExecutor {
    /// The message's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::Bid(_) => "bid",
            Self::Decline { .. } => "decline",
            Self::Progress { .. } => "progress",
            Self::Commit { .. } => "commit",
            Self::Result { .. } => "result",
            Self::Accepting(_) => "accepting",
        }
    }
}

/// What the coordinator tells an executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToExecutor {
    Registered,
    /// A job open for bids (the signed `Job` record).
    Offer {
        job: RecordBytes,
        bid_deadline_ms: u64,
    },
    /// The job is yours: the signed `Award` record, the job record, the module and input.
    Award {
        award: RecordBytes,
        job: RecordBytes,
        module: Blob,
        input: Blob,
        reveal_first: bool,
    },
    /// Under Full(n): every executor has committed; send your result now.
    Reveal {
        job: Cid,
    },
    /// The signed `Receipt` record for a job you worked on.
    Receipt(RecordBytes),
    /// Stop working on a job (reassigned, cancelled, deadline passed).
    Cancel {
        job: Cid,
        reason: String,
    },
    /// Something you sent was refused (a signed `Refusal` record).
    Refused(RecordBytes),
}

impl ToExecutor {
    /// The message's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Offer { .. } => "offer",
            Self::Award { .. } => "award",
            Self::Reveal { .. } => "reveal",
            Self::Receipt(_) => "receipt",
            Self::Cancel { .. } => "cancel",
            Self::Refused(_) => "refused",
        }
    }
}

/// One request from a client, on a stream of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Submit a job: the signed `Job` record, its module and input.
    Submit {
        job: RecordBytes,
        module: Blob,
        input: Blob,
        wait: bool,
    },
    Status {
        job: Cid,
    },
    Balance {
        did: String,
    },
    Audit,
}

/// The coordinator's answers. A `Submit` with `wait` gets `Accepted`, then `Progress`es, then `Final`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientReply {
    Accepted { job: Cid },
    Refused { code: ErrorCode, message: String },
    Progress { status: String, permille: u16 },
    Status(JobStatusReport),
    Final(FinalReport),
    Balance { did: String, balance: Mana, locked: Mana },
    Audit(AuditReport),
}

/// `icn job status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatusReport {
    pub job_id: String,
    /// pending, bidding, assigned, running, validating, completed, failed, cancelled
    pub status: String,
    pub executors: Vec<String>,
    pub health: String,
    pub reason: Option<String>,
}

/// `icn job submit --wait --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReport {
    pub job_id: String,
    pub status: String,
    pub output_cid: Option<String>,
    pub executors: Vec<String>,
    /// Everyone whose bid stood in the last round.
    pub bidders: Vec<String>,
    pub paid: Vec<(String, Mana)>,
    pub receipts: Vec<String>,
    pub reason: Option<String>,
}

/// `icn ledger audit --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub granted: Mana,
    pub accounts: Vec<(String, Mana, Mana)>,
    pub sink: Mana,
    pub conserved: bool,
}
