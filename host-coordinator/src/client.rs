//! The client side of the coordinator protocol: what `icn job submit`, `job status` and `ledger` use.

use icn_mesh_core::dag::{SignedRecord, blob_cid};
use icn_mesh_core::identity::Keypair;
pub use icn_mesh_core::net::client::{Session, request};
use icn_mesh_core::protocol::{Blob, ClientRequest, RecordBytes};
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
