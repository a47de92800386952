//! The protocol's economic rules (spec §3, §6, §7), pure: records and a clock value in, decisions out.
//!
//! No I/O, no clock, no randomness of its own: `now` is an argument and the Random strategy draws from
//! a seed the caller records in the award, so anyone holding the bids and the award can replay the
//! choice. Drivers (the coordinator, the executor) call these functions and persist what they return.
//!
//! - [`check_bid`] — §3.1: job id, price ≤ budget, completion ≤ deadline, capability vs requirements,
//!   reputation threshold, validity window.
//! - [`bid_stake`] — the 5% stake locked with a bid.
//! - [`score`] and [`select`] — §3.2's weighted score and the four strategies.
//! - [`settle`] — §6: base payment, early-completion and quality bonuses, reputation multiplier,
//!   disputed payment, slashes and refunds, always within the locked budget.

mod rules;
mod settle;

pub use rules::*;
pub use settle::*;
