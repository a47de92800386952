//! Crash points, for the tests that kill the coordinator at a chosen instant: with
//! `ICN_CRASH_AT=NAME` in its environment the coordinator aborts when it reaches point NAME — no
//! destructors, no further commits, as SIGKILL would leave it. Unset, a point costs a comparison.
//!
//! Points: `settle-before-ledger` (receipts signed and stored, the ledger not yet moved),
//! `settle-after-ledger` (the ledger moved, the job not yet marked final), `final-after-flush`
//! (the settlement durable, the final report not yet sent).

use std::sync::LazyLock;

static CRASH_AT: LazyLock<Option<String>> = LazyLock::new(|| std::env::var("ICN_CRASH_AT").ok());

pub fn crash_point(name: &str) {
    if CRASH_AT.as_deref() == Some(name) {
        eprintln!("ICN_CRASH_AT={name}: aborting here");
        std::process::abort();
    }
}
