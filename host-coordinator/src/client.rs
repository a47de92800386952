//! The client side of the coordinator protocol: what `icn job submit`, `job status` and `ledger` use.

use icn_mesh_core::dag::{SignedRecord, blob_cid};
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::net::{self, Hello, PeerAddr, Role, frame};
use icn_mesh_core::protocol::{Blob, ClientReply, ClientRequest, MAX_MESSAGE_BYTES, RecordBytes};
use icn_mesh_core::records::JobRecord;
use icn_mesh_core::spec::{JobSpec, Runtime};
use icn_mesh_core::{ErrorCode, Problem};

/// Builds and signs the job record for `spec` with `module` and `input`: the module's CID is filled
/// in (and must match one the spec names), as is the input's.
pub fn job_record(
    spec: &mut JobSpec,
    module: &[u8],
    input: Option<&[u8]>,
    key: &Keypair,
    now_ms: u64,
) -> Result<SignedRecord<JobRecord>, Problem> {
    let cid = blob_cid(module);
    let named = match &mut spec.runtime {
        Runtime::WASM { module, .. } => Some(module),
        Runtime::CCL { contract, .. } => Some(contract),
        _ => None,
    };
    if let Some(named) = named {
        if !named.is_empty() && *named != cid.to_string() {
            return Err(Problem::new(
                ErrorCode::J001,
                "runtime.module",
                format!("the module file's CID is {cid} but the spec names {named}"),
            ));
        }
        *named = cid.to_string();
    }
    let input_cid = input.map(blob_cid);
    if let (Some(spec_input), Some(actual)) = (spec.input.as_ref().and_then(|i| i.cid.clone()), input_cid)
        && spec_input != actual.to_string()
    {
        return Err(Problem::new(
            ErrorCode::J001,
            "input.cid",
            format!("the input file's CID is {actual} but the spec names {spec_input}"),
        ));
    }
    if spec.submitter.is_none() {
        spec.submitter = Some(key.did().to_string());
    }
    let record = JobRecord { spec: spec.clone(), module: cid, input: input_cid, submitted_at_ms: now_ms };
    SignedRecord::sign(record, key).map_err(|e| Problem::new(ErrorCode::J001, "", e.to_string()))
}

/// Sends one request on a connection of its own and hands every reply to `on_reply` until it
/// returns `false` or the stream ends.
pub async fn request(
    coordinator: &PeerAddr,
    key: &Keypair,
    request: &ClientRequest,
    on_reply: &mut dyn FnMut(ClientReply) -> bool,
) -> Result<(), String> {
    let session = Session::open(coordinator, key).await?;
    let result = session.request(request, on_reply).await;
    session.close().await;
    result
}

/// One connection to a coordinator for many requests, one stream each (concurrent requests are
/// fine): what a program that submits many jobs uses instead of [`request`].
#[derive(Debug)]
pub struct Session {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// The stream the hello went over; it carries the first request.
    first: std::sync::Mutex<Option<(quinn::SendStream, quinn::RecvStream)>>,
}

impl Session {
    pub async fn open(coordinator: &PeerAddr, key: &Keypair) -> Result<Self, String> {
        let bind = if coordinator.addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        let endpoint =
            net::dialer(bind.parse().map_err(|_| "bind address".to_owned())?).map_err(|e| e.to_string())?;
        let conn = net::connect_kept_alive(&endpoint, key, coordinator).await.map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        frame::write(&mut send, &Hello::new(Role::Client), MAX_MESSAGE_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let hello: Hello = frame::read(&mut recv, MAX_MESSAGE_BYTES).await.map_err(|e| e.to_string())?;
        hello.check().map_err(|e| e.to_string())?;
        Ok(Self { endpoint, conn, first: std::sync::Mutex::new(Some((send, recv))) })
    }

    /// Sends `request` and hands every reply to `on_reply` until it returns `false` or the stream
    /// ends.
    pub async fn request(
        &self,
        request: &ClientRequest,
        on_reply: &mut dyn FnMut(ClientReply) -> bool,
    ) -> Result<(), String> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (mut send, mut recv) = match first {
            Some(streams) => streams,
            None => self.conn.open_bi().await.map_err(|e| e.to_string())?,
        };
        frame::write(&mut send, request, MAX_MESSAGE_BYTES).await.map_err(|e| e.to_string())?;
        loop {
            match frame::read::<ClientReply>(&mut recv, MAX_MESSAGE_BYTES).await {
                Ok(reply) => {
                    if !on_reply(reply) {
                        break;
                    }
                }
                Err(frame::FrameError::Closed) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}

/// A submit request for a signed job.
pub fn submit_request(
    job: &SignedRecord<JobRecord>,
    module: Vec<u8>,
    input: Vec<u8>,
    wait: bool,
) -> ClientRequest {
    ClientRequest::Submit {
        job: RecordBytes(job.bytes().to_vec()),
        module: Blob(module),
        input: Blob(input),
        wait,
    }
}
