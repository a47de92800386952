//! Any bytes as a signed DAG record: decoding must refuse or verify, never panic; what decodes must
//! re-encode to the same bytes (one record, one CID).
#![no_main]

use icn_mesh_core::dag::{AnyRecord, SignedRecord, ipld_to_json};
use icn_mesh_core::records::{JobRecord, ResultRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = AnyRecord::decode(data) {
        let _ = ipld_to_json(&record.payload);
        let _ = record.links();
    }
    if let Ok(job) = SignedRecord::<JobRecord>::decode(data) {
        assert_eq!(job.bytes(), data);
    }
    let _ = SignedRecord::<ResultRecord>::decode(data);
});
