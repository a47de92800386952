//! Content addressing: blob CIDs and signed, linked DAG-CBOR records.
//!
//! - A **blob** (module, input, output) is named by CIDv1, codec raw (0x55), sha2-256, base32:
//!   `bafkrei…` — the CID `ipfs add --cid-version 1 --raw-leaves` gives a single-block file.
//! - A **record** is the DAG-CBOR envelope `{body, signer, signature}`; `body` is
//!   `{kind, protocol, payload}`, `signer` a DID string and `signature` an ed25519 signature (a CBOR
//!   byte string) over the body's DAG-CBOR bytes. Its CID is CIDv1 dag-cbor (0x71), sha2-256:
//!   `bafyrei…`. Links between records are real IPLD links (CBOR tag 42).
//!
//! Decoding is strict: the bytes must be canonical DAG-CBOR (re-encoding gives the same bytes), the
//! kind and protocol version must be the expected ones and the signature must verify, so one record
//! has exactly one CID and a signature over one kind of record never passes for another.

pub mod cbor;

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;
use multihash::Multihash;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{Did, Keypair};

/// Multicodec for raw bytes.
pub const RAW_CODEC: u64 = 0x55;
/// Multicodec for DAG-CBOR.
pub const DAG_CBOR_CODEC: u64 = 0x71;
/// Multicodec for the sha2-256 multihash.
pub const SHA2_256: u64 = 0x12;
/// Version of the record formats in this crate. A body with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest record we decode; anything bigger belongs in a blob.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DagError {
    #[error("record is {0} bytes, over the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not a DAG-CBOR record: {0}")]
    Decode(String),
    #[error("record could not be encoded: {0}")]
    Encode(String),
    #[error("record is not canonical DAG-CBOR (re-encoding changes its bytes)")]
    NotCanonical,
    #[error("expected a `{expected}` record, found `{found}`")]
    WrongKind { expected: &'static str, found: String },
    #[error("record protocol version {found} is not supported (this node speaks {PROTOCOL_VERSION})")]
    Version { found: u32 },
    #[error("record signer: {0}")]
    Signer(String),
    #[error("record signature does not verify against its signer {0}")]
    BadSignature(String),
}

/// The CID of a blob: CIDv1, raw, sha2-256.
pub fn blob_cid(bytes: &[u8]) -> Cid {
    Cid::new_v1(RAW_CODEC, sha256_multihash(bytes))
}

/// The CID of a record's bytes: CIDv1, dag-cbor, sha2-256.
pub fn record_cid(bytes: &[u8]) -> Cid {
    Cid::new_v1(DAG_CBOR_CODEC, sha256_multihash(bytes))
}

fn sha256_multihash(bytes: &[u8]) -> Multihash<64> {
    let digest = Sha256::digest(bytes);
    // A 32-byte digest always fits the 64-byte multihash.
    Multihash::wrap(SHA2_256, &digest).unwrap_or_else(|_| unreachable!("32 <= 64"))
}

/// Parses a CID that names a blob, explaining what is wrong with anything else.
pub fn parse_blob_cid(text: &str) -> Result<Cid, String> {
    let cid = parse_cid(text)?;
    if cid.codec() != RAW_CODEC {
        return Err(format!(
            "`{text}` is not a raw-block CID (codec 0x{:x}): name the file by its raw CID (`bafkrei…`, as `icn` and \
             `ipfs add --cid-version 1 --raw-leaves` print it)",
            cid.codec()
        ));
    }
    Ok(cid)
}

/// Parses any CIDv1 with a sha2-256 hash (blob or record).
pub fn parse_cid(text: &str) -> Result<Cid, String> {
    let shown: String = text.chars().take(80).collect();
    let cid = Cid::try_from(text)
        .map_err(|e| format!("`{shown}` is not a CID ({e}): give a full CIDv1 such as `bafkrei…`"))?;
    if cid.version() != cid::Version::V1 {
        return Err(format!("`{shown}` is a CIDv0: give the CIDv1 form (`bafkrei…`)"));
    }
    if cid.hash().code() != SHA2_256 || cid.hash().size() != 32 {
        return Err(format!("`{shown}` does not use sha2-256: icn names content by sha2-256 only"));
    }
    Ok(cid)
}

/// A record payload type: its kind name is part of what gets signed.
pub trait RecordKind: Serialize + DeserializeOwned {
    const KIND: &'static str;
}

#[derive(Serialize, Deserialize)]
struct Body<T> {
    kind: String,
    protocol: u32,
    payload: T,
}

#[derive(Serialize, Deserialize)]
struct Envelope<B> {
    body: B,
    signer: String,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

/// A decoded, verified record of kind `T`, with its exact bytes and CID.
#[derive(Debug, Clone)]
pub struct SignedRecord<T> {
    pub payload: T,
    pub signer: Did,
    bytes: Vec<u8>,
    cid: Cid,
}

impl<T: RecordKind> SignedRecord<T> {
    /// Encodes and signs `payload` with `key`.
    pub fn sign(payload: T, key: &Keypair) -> Result<Self, DagError> {
        let body = Body { kind: T::KIND.to_owned(), protocol: PROTOCOL_VERSION, payload };
        let body_bytes = encode(&body)?;
        let signature = key.sign(&body_bytes);
        let bytes = envelope_bytes(&body_bytes, key.did().as_str(), &signature);
        let cid = record_cid(&bytes);
        Ok(Self { payload: body.payload, signer: key.did().clone(), bytes, cid })
    }

    /// Decodes and verifies a record of kind `T`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DagError> {
        let (envelope, body_bytes) = decode_checked::<Body<T>>(bytes)?;
        if envelope.body.kind != T::KIND {
            return Err(DagError::WrongKind { expected: T::KIND, found: envelope.body.kind });
        }
        if envelope.body.protocol != PROTOCOL_VERSION {
            return Err(DagError::Version { found: envelope.body.protocol });
        }
        let signer = verify(&envelope.signer, &body_bytes, &envelope.signature)?;
        Ok(Self { payload: envelope.body.payload, signer, bytes: bytes.to_vec(), cid: record_cid(bytes) })
    }
}

impl<T> SignedRecord<T> {
    pub fn cid(&self) -> Cid {
        self.cid
    }

    /// The exact DAG-CBOR bytes; their sha2-256 is the CID.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A copy of the bytes with their CID, for a store to keep later.
    pub fn to_cid_bytes(&self) -> CidBytes {
        CidBytes { cid: self.cid, bytes: self.bytes.clone() }
    }
}

/// A record's exact bytes and the CID computed from them. Made only from a [`SignedRecord`], so a
/// store can index them under that CID without hashing them again.
#[derive(Debug, Clone)]
pub struct CidBytes {
    cid: Cid,
    bytes: Vec<u8>,
}

impl CidBytes {
    pub fn cid(&self) -> Cid {
        self.cid
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A verified record of any kind, its body left as IPLD (for `icn dag show`).
#[derive(Debug, Clone)]
pub struct AnyRecord {
    pub kind: String,
    pub protocol: u32,
    pub signer: Did,
    pub payload: Ipld,
    pub cid: Cid,
}

impl AnyRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self, DagError> {
        let (envelope, body_bytes) = decode_checked::<Body<Ipld>>(bytes)?;
        let signer = verify(&envelope.signer, &body_bytes, &envelope.signature)?;
        Ok(Self {
            kind: envelope.body.kind,
            protocol: envelope.body.protocol,
            signer,
            payload: envelope.body.payload,
            cid: record_cid(bytes),
        })
    }

    /// Every CID the payload links to, in document order.
    pub fn links(&self) -> Vec<Cid> {
        let mut out = Vec::new();
        collect_links(&self.payload, &mut out);
        out
    }
}

fn collect_links(ipld: &Ipld, out: &mut Vec<Cid>) {
    match ipld {
        Ipld::Link(cid) => out.push(*cid),
        Ipld::List(items) => items.iter().for_each(|i| collect_links(i, out)),
        Ipld::Map(map) => map.values().for_each(|i| collect_links(i, out)),
        _ => {}
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DagError> {
    cbor::to_vec(value).map_err(|e| DagError::Encode(e.to_string()))
}

/// Decodes an envelope and checks its bytes are canonical, returning the envelope and its body's
/// bytes (what the signature covers). The body is encoded once: the canonical envelope is those
/// bytes between a fixed head and a tail built from the signer and signature
/// ([`envelope_bytes`]), so comparing piecewise is the same check as re-encoding all of it.
fn decode_checked<B: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<(Envelope<B>, Vec<u8>), DagError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DagError::TooLarge(bytes.len()));
    }
    let envelope: Envelope<B> =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| DagError::Decode(e.to_string()))?;
    let body = encode(&envelope.body)?;
    let head = ENVELOPE_HEAD.len();
    let canonical = bytes.len() > head + body.len()
        && bytes[..head] == ENVELOPE_HEAD
        && bytes[head..head + body.len()] == body[..]
        && bytes[head + body.len()..] == envelope_tail(&envelope.signer, &envelope.signature)[..];
    if !canonical {
        return Err(DagError::NotCanonical);
    }
    Ok((envelope, body))
}

/// A map of three entries, then the key "body": DAG-CBOR orders map keys by length, then bytes, so
/// `body` (4) < `signer` (6) < `signature` (9), as `Envelope` declares them.
const ENVELOPE_HEAD: [u8; 6] = [0xa3, 0x64, b'b', b'o', b'd', b'y'];

/// The canonical DAG-CBOR of `{body, signer, signature}` given the body's own canonical bytes.
fn envelope_bytes(body: &[u8], signer: &str, signature: &[u8]) -> Vec<u8> {
    let tail = envelope_tail(signer, signature);
    let mut out = Vec::with_capacity(ENVELOPE_HEAD.len() + body.len() + tail.len());
    out.extend_from_slice(&ENVELOPE_HEAD);
    out.extend_from_slice(body);
    out.extend_from_slice(&tail);
    out
}

fn envelope_tail(signer: &str, signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + signer.len() + signature.len());
    cbor::head(&mut out, cbor::TEXT, 6);
    out.extend_from_slice(b"signer");
    cbor::head(&mut out, cbor::TEXT, signer.len() as u64);
    out.extend_from_slice(signer.as_bytes());
    cbor::head(&mut out, cbor::TEXT, 9);
    out.extend_from_slice(b"signature");
    cbor::head(&mut out, cbor::BYTES, signature.len() as u64);
    out.extend_from_slice(signature);
    out
}

fn verify(signer: &str, message: &[u8], signature: &[u8]) -> Result<Did, DagError> {
    let did = Did::parse(signer).map_err(|e| DagError::Signer(e.to_string()))?;
    did.verify(message, signature).map_err(|_| DagError::BadSignature(did.to_string()))?;
    Ok(did)
}

/// DAG-JSON-style JSON for an IPLD value: links as `{"/": "bafy…"}`, bytes as
/// `{"/": {"bytes": "<base64>"}}`, so people and scripts can read any record.
pub fn ipld_to_json(ipld: &Ipld) -> serde_json::Value {
    use serde_json::Value;
    match ipld {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => {
            if let Ok(n) = i64::try_from(*i) {
                Value::from(n)
            } else if let Ok(n) = u64::try_from(*i) {
                Value::from(n)
            } else {
                Value::String(i.to_string())
            }
        }
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => {
            let encoded = multibase::encode(multibase::Base::Base64, b);
            // multibase prefixes base64 with `m`; DAG-JSON wants the bare base64.
            serde_json::json!({"/": {"bytes": encoded.get(1..).unwrap_or_default()}})
        }
        Ipld::List(items) => Value::Array(items.iter().map(ipld_to_json).collect()),
        Ipld::Map(map) => Value::Object(
            map.iter().map(|(k, v)| (k.clone(), ipld_to_json(v))).collect::<serde_json::Map<_, _>>(),
        ),
        Ipld::Link(cid) => serde_json::json!({"/": cid.to_string()}),
    }
}

/// A small helper for building IPLD maps in tests and tools.
pub fn ipld_map<const N: usize>(entries: [(&str, Ipld); N]) -> Ipld {
    Ipld::Map(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<BTreeMap<_, _>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Note {
        text: String,
        parent: Option<Cid>,
    }
    impl RecordKind for Note {
        const KIND: &'static str = "test-note";
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Other {
        text: String,
        parent: Option<Cid>,
    }
    impl RecordKind for Other {
        const KIND: &'static str = "test-other";
    }

    #[test]
    fn blob_cid_matches_ipfs() {
        // `printf 'hello world' | ipfs add --cid-version 1 --raw-leaves -Q`
        assert_eq!(
            blob_cid(b"hello world").to_string(),
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
        );
        // The empty file.
        assert_eq!(blob_cid(b"").to_string(), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
    }

    #[test]
    fn records_round_trip_link_and_verify() {
        let key = Keypair::from_seed(&[1; 32]);
        let parent = SignedRecord::sign(Note { text: "a".into(), parent: None }, &key).expect("sign");
        let child =
            SignedRecord::sign(Note { text: "b".into(), parent: Some(parent.cid()) }, &key).expect("sign");
        assert!(child.cid().to_string().starts_with("bafyrei"));
        let back = SignedRecord::<Note>::decode(child.bytes()).expect("decode");
        assert_eq!(back.payload, child.payload);
        assert_eq!(back.cid(), child.cid());
        let any = AnyRecord::decode(child.bytes()).expect("any");
        assert_eq!(any.kind, "test-note");
        assert_eq!(any.links(), vec![parent.cid()]);
        // The link is CBOR tag 42 (0xd8 0x2a), not a string.
        assert!(child.bytes().windows(2).any(|w| w == [0xd8, 0x2a]));
    }

    #[test]
    fn envelope_bytes_are_what_serde_encodes() {
        let key = Keypair::from_seed(&[5; 32]);
        // Bodies and signer strings across the CBOR length heads (< 24, < 256, < 65536, larger).
        for len in [0usize, 5, 23, 24, 200, 255, 256, 70_000] {
            let body = Body { kind: "test-note".to_owned(), protocol: 1, payload: "x".repeat(len) };
            let body_bytes = encode(&body).expect("encode");
            for signer in [key.did().as_str().to_owned(), "s".repeat(len.min(300))] {
                let signature = key.sign(&body_bytes).to_vec();
                let ours = envelope_bytes(&body_bytes, &signer, &signature);
                let theirs =
                    encode(&Envelope { body: &body, signer: signer.clone(), signature }).expect("encode");
                assert_eq!(ours, theirs, "body {len}, signer {}", signer.len());
            }
        }
    }

    #[test]
    fn a_record_of_one_kind_never_passes_for_another() {
        let key = Keypair::from_seed(&[2; 32]);
        let note = SignedRecord::sign(Note { text: "x".into(), parent: None }, &key).expect("sign");
        assert!(matches!(SignedRecord::<Other>::decode(note.bytes()), Err(DagError::WrongKind { .. })));
    }

    #[test]
    fn tampered_and_non_canonical_records_are_refused() {
        let key = Keypair::from_seed(&[3; 32]);
        let note = SignedRecord::sign(Note { text: "pay 10".into(), parent: None }, &key).expect("sign");
        let mut bytes = note.bytes().to_vec();
        let at = bytes.windows(6).position(|w| w == b"pay 10").expect("text present");
        bytes[at + 4] = b'9';
        assert!(matches!(SignedRecord::<Note>::decode(&bytes), Err(DagError::BadSignature(_))));
        // Forge the signer: same body and signature, another DID.
        let other = Keypair::from_seed(&[4; 32]);
        let mut forged = note.bytes().to_vec();
        let (from, to) = (key.did().as_str().as_bytes(), other.did().as_str().as_bytes());
        assert_eq!(from.len(), to.len());
        let at = forged.windows(from.len()).position(|w| w == from).expect("signer present");
        forged[at..at + to.len()].copy_from_slice(to);
        assert!(matches!(SignedRecord::<Note>::decode(&forged), Err(DagError::BadSignature(_))));
        assert!(matches!(SignedRecord::<Note>::decode(&[0xff; 10]), Err(DagError::Decode(_))));
        // The same record with the signature's length in a longer head than needed.
        let good = note.bytes();
        let at = good.len() - 66;
        assert_eq!(good[at..at + 2], [0x58, 0x40]);
        let long_head = [&good[..at], &[0x59, 0x00, 0x40], &good[at + 2..]].concat();
        assert!(matches!(SignedRecord::<Note>::decode(&long_head), Err(DagError::Decode(_))));
        // The same entries with `signer` first: valid CBOR, not canonical DAG-CBOR.
        let head = ENVELOPE_HEAD.len();
        let tail = envelope_tail(key.did().as_str(), &good[good.len() - 64..]);
        let body = &good[head..good.len() - tail.len()];
        let signer_entry = &tail[..tail.len() - 64 - 12];
        let reordered =
            [&[0xa3][..], signer_entry, &ENVELOPE_HEAD[1..], body, &tail[signer_entry.len()..]].concat();
        assert_eq!(reordered.len(), good.len());
        // (serde_ipld_dagcbor refuses it itself; the canonical check stands behind it.)
        for refused in
            [SignedRecord::<Note>::decode(&reordered).map(|_| ()), AnyRecord::decode(&reordered).map(|_| ())]
        {
            assert!(matches!(refused, Err(DagError::Decode(_) | DagError::NotCanonical)), "{refused:?}");
        }
        assert!(matches!(
            SignedRecord::<Note>::decode(&vec![0; MAX_RECORD_BYTES + 1]),
            Err(DagError::TooLarge(_))
        ));
    }
}
