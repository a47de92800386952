//! icn-mesh-coordinator: what a heavier host adds to the light executor — the coordinator (intake,
//! auctions, validation, settlement), the mana ledger, and the client side of its protocol. Docker
//! and GPU runtimes come later (see ARCHITECTURE.md).
//! The `icn` binary (`src/main.rs`) is built on this library and on `icn-mesh-core`.

pub mod client;
pub mod coordinator;
pub mod ledger;
