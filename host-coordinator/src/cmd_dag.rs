//! `icn dag show` and `icn dag export`.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use icn_mesh_core::Cid;
use icn_mesh_core::dag::{AnyRecord, DAG_CBOR_CODEC, ipld_to_json, parse_cid};

use crate::output;

#[derive(Subcommand)]
pub enum DagCommand {
    /// Show a record (verified, decoded) or a blob (its size) by CID.
    Show {
        cid: String,
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write the raw block bytes to stdout (as `ipfs block get` does).
    Export {
        cid: String,
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

pub fn run(command: DagCommand) -> u8 {
    match command {
        DagCommand::Show { cid, data, json } => match block(&cid, data) {
            Ok((cid, bytes)) => show(cid, &bytes, json),
            Err(e) => output::fail(&e),
        },
        DagCommand::Export { cid, data } => match block(&cid, data) {
            Ok((_, bytes)) => {
                let mut stdout = std::io::stdout().lock();
                match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
                    Ok(()) => 0,
                    Err(e) => output::fail(&format!("cannot write to stdout: {e}")),
                }
            }
            Err(e) => output::fail(&e),
        },
    }
}

fn block(text: &str, data: Option<PathBuf>) -> Result<(Cid, Vec<u8>), String> {
    let cid = parse_cid(text)?;
    let dir = output::data_dir(data)?;
    let (store, _copy) = output::open_store_for_reading(&dir)?;
    match store.block(&cid).map_err(|e| e.to_string())? {
        Some(bytes) => Ok((cid, bytes)),
        None => Err(format!("{cid} is not in the store at {}", dir.display())),
    }
}

fn show(cid: Cid, bytes: &[u8], json: bool) -> u8 {
    if cid.codec() != DAG_CBOR_CODEC {
        if json {
            output::print_json(
                &serde_json::json!({"cid": cid.to_string(), "kind": "blob", "size": bytes.len()}),
            );
        } else {
            println!("{cid}\n  blob, {} bytes", bytes.len());
        }
        return 0;
    }
    let record = match AnyRecord::decode(bytes) {
        Ok(record) => record,
        Err(e) => return output::fail(&format!("{cid} is stored but does not verify: {e}")),
    };
    let links: Vec<String> = record.links().iter().map(ToString::to_string).collect();
    let payload = ipld_to_json(&record.payload);
    if json {
        output::print_json(&serde_json::json!({
            "cid": cid.to_string(),
            "kind": record.kind,
            "protocol": record.protocol,
            "signer": record.signer.as_str(),
            "signature_valid": true,
            "links": links,
            "payload": payload,
        }));
    } else {
        println!("{cid}");
        println!("  kind      {} (protocol {})", record.kind, record.protocol);
        println!("  signer    {} (signature verified)", record.signer);
        for link in &links {
            println!("  links to  {link}");
        }
        let pretty = serde_json::to_string_pretty(&payload).unwrap_or_default();
        for line in pretty.lines() {
            println!("  {line}");
        }
    }
    0
}
