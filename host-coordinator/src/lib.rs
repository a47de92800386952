//! icn-mesh-coordinator: what a heavier host adds to the light executor — the mana ledger now;
//! auctions, validation, Docker and GPU runtimes as the mesh grows (see ARCHITECTURE.md).
//! The `icn` binary (`src/main.rs`) is built on this library and on `icn-mesh-core`.

pub mod ledger;
