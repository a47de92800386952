//! The one node both faces (UniFFI and C) wrap: a data directory's key, store and device policy,
//! local runs, and the connection to a coordinator on a thread of its own. Every decision is a call
//! into `icn-mesh-core`; this file only owns threads and handles.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use icn_mesh_core::ErrorCode;
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::local::{LocalJob, NodeCaps, RunReport, run_local};
use icn_mesh_core::market::{Capabilities, RuntimeKind};
use icn_mesh_core::net::PeerAddr;
use icn_mesh_core::node::{Device, ExecutorNode, NodeEvent};
use icn_mesh_core::policy::{DeviceState, DeviceStateUpdate, Policy, Verdict};
use icn_mesh_core::sandbox::{Control, Sandbox};
use icn_mesh_core::spec::Architecture;
use icn_mesh_core::store::Store;
use tokio::sync::oneshot;

/// An error with its spec code and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CoreError {
    pub code: ErrorCode,
    pub message: String,
}

impl CoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The connection to a coordinator, served on its own thread with a current-thread runtime.
struct Service {
    stop: Option<oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<()>,
}

pub struct NodeCore {
    pub dir: PathBuf,
    pub key: Arc<Keypair>,
    pub store: Arc<Store>,
    pub sandbox: Arc<Sandbox>,
    pub device: Arc<Device>,
    /// The local run in progress, so `cancel` can reach it.
    local: Mutex<Option<Arc<Control>>>,
    service: Mutex<Option<Service>>,
}

impl std::fmt::Debug for NodeCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore").field("dir", &self.dir).field("did", self.key.did()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a phone offers: measured where the platform lets us, conservative elsewhere.
fn capabilities(policy: &Policy) -> Capabilities {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    Capabilities {
        cpu_cores: policy.cores_allowed(cores),
        memory_mb: 512,
        disk_mb: 1024,
        gpu: None,
        runtimes: vec![RuntimeKind::Wasm, RuntimeKind::Ccl],
        architecture: if cfg!(target_arch = "aarch64") { Architecture::Arm64 } else { Architecture::X86_64 },
        fuel_per_second: 100_000_000,
    }
}

impl NodeCore {
    /// Opens (creating if needed) the node in `dir`: its key (`node.key`, 0600) and store
    /// (`store.redb`), under the default device policy until the platform says otherwise.
    pub fn open(dir: &Path) -> Result<Self, CoreError> {
        let io = |what: &str, e: String| CoreError::new(ErrorCode::J009, format!("{what}: {e}"));
        std::fs::create_dir_all(dir).map_err(|e| io(&dir.display().to_string(), e.to_string()))?;
        let key =
            Keypair::load_or_create(&dir.join("node.key")).map_err(|e| io("node.key", e.to_string()))?;
        let store = Store::open(&dir.join("store.redb")).map_err(|e| io("store.redb", e.to_string()))?;
        // Records commit without an fsync; the node flushes a second after receipts (see core::node).
        store.db().group_commit();
        Ok(Self {
            dir: dir.to_path_buf(),
            key: Arc::new(key),
            store: Arc::new(store),
            sandbox: Arc::new(Sandbox::default()),
            device: Device::new(Policy::default(), DeviceState::default()),
            local: Mutex::new(None),
            service: Mutex::new(None),
        })
    }

    /// Runs one job here, now (not through a coordinator): `run-local`'s report, and whether
    /// [`NodeCore::cancel_local`] stopped it. Blocks.
    pub fn run_local(&self, spec_json: &str, module: &[u8], input: &[u8]) -> (RunReport, bool) {
        let control = Arc::new(Control::default());
        *lock(&self.local) = Some(Arc::clone(&control));
        let job = LocalJob { spec_json, module: Some(module), input: Some(input) };
        let report = run_local(
            &self.store,
            &self.key,
            &self.sandbox,
            &NodeCaps::default(),
            job,
            &control,
            &mut |_| {},
        );
        *lock(&self.local) = None;
        // A local run is the user's own: make it durable before saying it happened.
        let _ = self.store.db().flush();
        (report, control.is_cancelled())
    }

    /// Cancels the local run in progress, if any.
    pub fn cancel_local(&self) {
        if let Some(control) = lock(&self.local).as_ref() {
            control.cancel();
        }
    }

    /// Applies a partial device-state update (JSON) and returns the policy's verdict.
    pub fn set_device_state_json(&self, state_json: &str) -> Result<Verdict, CoreError> {
        let update = DeviceStateUpdate::from_json(state_json)
            .map_err(|e| CoreError::new(ErrorCode::J001, e.to_string()))?;
        Ok(self.device.update(&update))
    }

    pub fn set_device_state(&self, update: &DeviceStateUpdate) -> Result<Verdict, CoreError> {
        update.check().map_err(|e| CoreError::new(ErrorCode::J001, e.to_string()))?;
        Ok(self.device.update(update))
    }

    /// Connects to `coordinator` (`DID@HOST:PORT`) and works for it on a thread of its own,
    /// reconnecting with back-off, until [`NodeCore::stop`]. Events go to `on_event` on that thread.
    pub fn start(
        &self,
        coordinator: &str,
        price_per_hour: u64,
        on_event: Box<dyn FnMut(NodeEvent) + Send>,
    ) -> Result<(), CoreError> {
        let coordinator =
            PeerAddr::parse(coordinator).map_err(|e| CoreError::new(ErrorCode::J001, e.to_string()))?;
        let mut service = lock(&self.service);
        if service.is_some() {
            return Err(CoreError::new(ErrorCode::J001, "the node is already started: stop it first"));
        }
        let node = ExecutorNode {
            key: Arc::clone(&self.key),
            store: Arc::clone(&self.store),
            sandbox: Arc::clone(&self.sandbox),
            caps: NodeCaps::default(),
            capabilities: capabilities(&self.device.policy()),
            price_per_hour,
            device: Arc::clone(&self.device),
        };
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("icn-node".into())
            .spawn(move || serve(node, coordinator, on_event, stopped))
            .map_err(|e| CoreError::new(ErrorCode::J009, format!("cannot start the node thread: {e}")))?;
        *service = Some(Service { stop: Some(stop), thread });
        Ok(())
    }

    /// Disconnects and waits for the node's thread to end (a running job is cancelled).
    pub fn stop(&self) {
        let service = lock(&self.service).take();
        if let Some(mut service) = service {
            if let Some(stop) = service.stop.take() {
                let _ = stop.send(());
            }
            let _ = service.thread.join();
        }
    }
}

impl Drop for NodeCore {
    fn drop(&mut self) {
        self.stop();
        let _ = self.store.db().flush();
    }
}

fn serve(
    node: ExecutorNode,
    coordinator: PeerAddr,
    mut on_event: Box<dyn FnMut(NodeEvent) + Send>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        tracing::error!("cannot build the node's runtime");
        return;
    };
    rt.block_on(async {
        let first = Duration::from_millis(200);
        let mut backoff = first;
        loop {
            let mut connected = false;
            let mut events = |event: NodeEvent| {
                connected |= matches!(event, NodeEvent::Connected { .. });
                on_event(event);
            };
            tokio::select! {
                _ = &mut stopped => return,
                result = node.serve(&coordinator, &mut events) => {
                    // A session that registered starts the back-off again (a phone that was
                    // connected for hours reconnects after 200 ms, not after its last outage's delay).
                    if connected {
                        backoff = first;
                    }
                    match result {
                        Ok(()) => tracing::info!("the coordinator closed the connection; reconnecting"),
                        Err(e) => tracing::warn!("{e}; reconnecting in {backoff:?}"),
                    }
                }
            }
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
}

/// Asks `coordinator` for `did`'s (balance, locked), on a short-lived thread and runtime.
pub fn balance(key: Arc<Keypair>, coordinator: &str, did: String) -> Result<(u64, u64), CoreError> {
    use icn_mesh_core::protocol::{ClientReply, ClientRequest};
    let coordinator =
        PeerAddr::parse(coordinator).map_err(|e| CoreError::new(ErrorCode::J001, e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CoreError::new(ErrorCode::J009, e.to_string()))?;
    let mut answer = Err(CoreError::new(ErrorCode::J007, "the coordinator did not answer"));
    let request = ClientRequest::Balance { did };
    let sent = rt.block_on(icn_mesh_core::net::client::request(&coordinator, &key, &request, &mut |reply| {
        answer = match reply {
            ClientReply::Balance { balance, locked, .. } => Ok((balance, locked)),
            ClientReply::Refused { code, message } => Err(CoreError::new(code, message)),
            other => Err(CoreError::new(ErrorCode::J007, format!("unexpected reply {other:?}"))),
        };
        false
    }));
    sent.map_err(|e| CoreError::new(ErrorCode::J007, e))?;
    answer
}
