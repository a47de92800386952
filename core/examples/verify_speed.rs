//! How fast this build verifies a signed record (decode, canonical check, ed25519): run under the
//! `mobile` and `release` profiles by `scripts/library-size.sh` to show the size-optimised library
//! keeps its crypto fast.
use std::time::Instant;

use icn_mesh_core::dag::SignedRecord;
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::records::JobRecord;
use icn_mesh_core::spec::JobSpec;

fn main() {
    let key = Keypair::from_seed(&[7; 32]);
    let spec =
        JobSpec::from_json(r#"{"runtime": {"type": "WASM"}, "budget": {"max_total": 1}}"#).expect("spec");
    let record =
        JobRecord { spec, module: icn_mesh_core::dag::blob_cid(b"module"), input: None, submitted_at_ms: 1 };
    let signed = SignedRecord::sign(record, &key).expect("sign");
    let bytes = signed.bytes().to_vec();
    let mut best = f64::MAX;
    for _ in 0..15 {
        let start = Instant::now();
        for _ in 0..2000 {
            std::hint::black_box(
                SignedRecord::<JobRecord>::decode(std::hint::black_box(&bytes)).expect("verifies"),
            );
        }
        best = best.min(start.elapsed().as_secs_f64() / 2000.0);
    }
    println!("{:.1}", best * 1e6);
}
