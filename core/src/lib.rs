//! icn-mesh-core: everything a light executor needs to take part in the Mesh Job Execution Protocol.
//!
//! No Docker, no FFI, no command line: this crate must build for a phone. See `ARCHITECTURE.md` for the
//! map of its modules.

pub mod dag;
pub mod error;
pub mod identity;
pub mod local;
pub mod market;
pub mod net;
pub mod node;
pub mod policy;
pub mod protocol;
pub mod records;
pub mod sandbox;
pub mod spec;
pub mod store;

pub use cid::Cid;
pub use error::{ErrorCode, FailureReason, Problem};
