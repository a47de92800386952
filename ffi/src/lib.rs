//! icn-mesh for phones, Pis and C programs. Two faces over one node ([`node::NodeCore`]):
//!
//! - UniFFI objects (this file) for Kotlin, Swift and Python: [`MeshNode`] — open a data directory,
//!   feed the device state, start/stop work for a coordinator with events through a foreign
//!   [`NodeListener`], run a job locally (`suspend`/`async`, with [`MeshNode::cancel`]), read a
//!   balance. Errors are [`MeshError`], each with its spec code.
//! - A C API ([`c_api`]) with a cbindgen header, `bindings/c/icn_mesh.h`.
//!
//! No rules live here: everything is a call into `icn-mesh-core`.

pub mod c_api;
pub mod logging;
pub mod node;

use std::path::Path;
use std::sync::Arc;

use icn_mesh_core::local::{RunReport, RunStatus};
use icn_mesh_core::node::NodeEvent as CoreEvent;
use icn_mesh_core::policy::{self, DeviceStateUpdate};
use tokio::sync::oneshot;

use node::{CoreError, NodeCore};

uniffi::setup_scaffolding!("icn_mesh");

/// The library's version.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Every error the library returns: a small, stable set, each with the spec's code (J001–J010) and
/// a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum MeshError {
    /// The input was refused before anything ran (a bad spec, module, state or address). (`detail`,
    /// not `message`: Kotlin exceptions have a `message` of their own.)
    #[error("{code}: {detail}")]
    Refused { code: String, detail: String },
    /// Storage, the network or the coordinator failed.
    #[error("{code}: {detail}")]
    Unavailable { code: String, detail: String },
    /// The call was cancelled with `cancel()`.
    #[error("cancelled")]
    Cancelled,
}

impl From<CoreError> for MeshError {
    fn from(e: CoreError) -> Self {
        use icn_mesh_core::ErrorCode::{J007, J009};
        match e.code {
            J007 | J009 => Self::Unavailable { code: e.code.to_string(), detail: e.message },
            code => Self::Refused { code: code.to_string(), detail: e.message },
        }
    }
}

/// Android's thermal status names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Thermal {
    None,
    Light,
    Moderate,
    Severe,
    Critical,
    Emergency,
    Shutdown,
}

impl From<Thermal> for policy::Thermal {
    fn from(t: Thermal) -> Self {
        match t {
            Thermal::None => Self::None,
            Thermal::Light => Self::Light,
            Thermal::Moderate => Self::Moderate,
            Thermal::Severe => Self::Severe,
            Thermal::Critical => Self::Critical,
            Thermal::Emergency => Self::Emergency,
            Thermal::Shutdown => Self::Shutdown,
        }
    }
}

/// A partial device-state update: a field left `null` keeps its last value. The same names as the
/// policy file and the C API's JSON.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct DeviceState {
    #[uniffi(default = None)]
    pub charging: Option<bool>,
    #[uniffi(default = None)]
    pub battery_percent: Option<f64>,
    #[uniffi(default = None)]
    pub battery_temp_c: Option<f64>,
    #[uniffi(default = None)]
    pub thermal: Option<Thermal>,
    #[uniffi(default = None)]
    pub screen_on: Option<bool>,
    #[uniffi(default = None)]
    pub metered: Option<bool>,
}

impl From<&DeviceState> for DeviceStateUpdate {
    fn from(s: &DeviceState) -> Self {
        Self {
            charging: s.charging,
            battery_percent: s.battery_percent,
            battery_temp_c: s.battery_temp_c,
            thermal: s.thermal.map(Into::into),
            screen_on: s.screen_on,
            metered: s.metered,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Decision {
    Run,
    Pause,
    Stop,
}

/// The device policy's answer and why.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PolicyDecision {
    pub decision: Decision,
    pub reason: String,
}

impl From<policy::Decision> for Decision {
    fn from(d: policy::Decision) -> Self {
        match d {
            policy::Decision::Run => Self::Run,
            policy::Decision::Pause => Self::Pause,
            policy::Decision::Stop => Self::Stop,
        }
    }
}

impl From<policy::Verdict> for PolicyDecision {
    fn from(v: policy::Verdict) -> Self {
        Self { decision: v.decision.into(), reason: v.reason }
    }
}

/// A local run's outcome: `status` is `completed`, `failed` or `refused`; `json` is exactly what
/// `icn job run-local --json` prints.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LocalRun {
    pub status: String,
    pub code: Option<String>,
    pub failure: Option<String>,
    pub message: String,
    pub output: Vec<u8>,
    pub output_cid: Option<String>,
    pub result_cid: Option<String>,
    pub fuel_used: u64,
    pub json: String,
}

impl From<RunReport> for LocalRun {
    fn from(r: RunReport) -> Self {
        let status = match r.status {
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Refused => "refused",
        };
        Self {
            status: status.to_owned(),
            code: r.code.map(|c| c.to_string()),
            failure: r.failure.map(|f| f.to_string()),
            message: r.message.clone(),
            output_cid: r.output_cid.clone(),
            result_cid: r.result_cid.clone(),
            fuel_used: r.fuel_used,
            json: serde_json::to_string(&r).unwrap_or_default(),
            output: r.output,
        }
    }
}

/// What the node does while it works for a coordinator.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum NodeEvent {
    Connected { coordinator: String },
    Offered { job: String },
    Bid { job: String, price: u64 },
    Declined { job: String, reason: String },
    Awarded { job: String },
    Progress { job: String, permille: u16 },
    Finished { job: String, status: String, result: String },
    Receipt { job: String, receipt: String, paid: u64 },
    Refused { reason: String },
    Policy { decision: Decision, reason: String },
}

impl From<CoreEvent> for NodeEvent {
    fn from(e: CoreEvent) -> Self {
        match e {
            CoreEvent::Connected { coordinator } => Self::Connected { coordinator: coordinator.to_string() },
            CoreEvent::Offered { job } => Self::Offered { job: job.to_string() },
            CoreEvent::Bid { job, price } => Self::Bid { job: job.to_string(), price },
            CoreEvent::Declined { job, reason } => Self::Declined { job: job.to_string(), reason },
            CoreEvent::Awarded { job } => Self::Awarded { job: job.to_string() },
            CoreEvent::Progress { job, permille } => Self::Progress { job: job.to_string(), permille },
            CoreEvent::Finished { job, status, result } => Self::Finished {
                job: job.to_string(),
                status: format!("{status:?}").to_lowercase(),
                result: result.to_string(),
            },
            CoreEvent::Receipt { job, receipt, paid } => {
                Self::Receipt { job: job.to_string(), receipt: receipt.to_string(), paid }
            }
            CoreEvent::Refused { reason } => Self::Refused { reason },
            CoreEvent::Policy { decision, reason } => Self::Policy { decision: decision.into(), reason },
        }
    }
}

/// Implemented by the app (Kotlin, Swift, Python) to hear what the node does. Called on the node's
/// own thread: hand the event to the UI thread, do not block.
#[uniffi::export(with_foreign)]
pub trait NodeListener: Send + Sync {
    fn on_event(&self, event: NodeEvent);
}

/// (balance, locked) of an account, in mana.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Balance {
    pub balance: u64,
    pub locked: u64,
}

/// An executor node living in a data directory.
#[derive(Debug, uniffi::Object)]
pub struct MeshNode {
    core: Arc<NodeCore>,
}

/// Runs `work` on a thread of its own and awaits it without tying the caller to any async runtime
/// (Kotlin coroutines, Swift tasks and Python asyncio all poll the returned future).
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, MeshError> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("icn-call".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| MeshError::Unavailable { code: "J009".into(), detail: e.to_string() })?;
    rx.await.map_err(|_| MeshError::Cancelled)
}

#[uniffi::export]
impl MeshNode {
    /// Opens (or creates) the node in `data_dir`: its key and store.
    #[uniffi::constructor]
    pub fn new(data_dir: String) -> Result<Arc<Self>, MeshError> {
        Ok(Arc::new(Self { core: Arc::new(NodeCore::open(Path::new(&data_dir))?) }))
    }

    /// This node's DID (`did:key:z6Mk…`).
    pub fn did(&self) -> String {
        self.core.key.did().to_string()
    }

    /// Feeds the device state (a partial update) to the policy; returns its decision. A running job
    /// pauses, resumes or stops at once.
    pub fn set_device_state(&self, state: DeviceState) -> Result<PolicyDecision, MeshError> {
        Ok(self.core.set_device_state(&(&state).into())?.into())
    }

    /// The policy's current decision.
    pub fn decision(&self) -> PolicyDecision {
        self.core.device.verdict().into()
    }

    /// Runs a job here and now, not through a coordinator. Cancel with [`MeshNode::cancel`].
    pub async fn run_local(
        &self,
        spec_json: String,
        module: Vec<u8>,
        input: Vec<u8>,
    ) -> Result<LocalRun, MeshError> {
        let core = Arc::clone(&self.core);
        let (report, cancelled) = off_thread(move || core.run_local(&spec_json, &module, &input)).await?;
        if cancelled {
            return Err(MeshError::Cancelled);
        }
        Ok(report.into())
    }

    /// Cancels the local run in progress.
    pub fn cancel(&self) {
        self.core.cancel_local();
    }

    /// Connects to a coordinator (`DID@HOST:PORT`) and bids on and runs its jobs, as the device
    /// policy allows, until [`MeshNode::stop`].
    pub fn start(
        &self,
        coordinator: String,
        price_per_hour: u64,
        listener: Arc<dyn NodeListener>,
    ) -> Result<(), MeshError> {
        self.core.start(&coordinator, price_per_hour, Box::new(move |e| listener.on_event(e.into())))?;
        Ok(())
    }

    /// Disconnects (a running job is cancelled; the coordinator reassigns it).
    pub fn stop(&self) {
        self.core.stop();
    }

    /// This node's balance as the coordinator's ledger has it.
    pub async fn balance(&self, coordinator: String) -> Result<Balance, MeshError> {
        let key = Arc::clone(&self.core.key);
        let did = self.did();
        let (balance, locked) = off_thread(move || node::balance(key, &coordinator, did)).await??;
        Ok(Balance { balance, locked })
    }
}
