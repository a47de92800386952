//! The canonical DAG-CBOR encoder for records: byte for byte what `serde_ipld_dagcbor::to_vec`
//! writes (tested against it on every record kind and on arbitrary IPLD), without its allocations.
//!
//! That encoder serializes each map entry into a vector of its own and sorts the vectors, at every
//! level of nesting, so a job record costs dozens of allocations and copies each nested byte once
//! per level. Here every entry is written in place into one output vector; when a map is done its
//! entries are reordered (through one scratch buffer) only if they did not arrive in canonical
//! order: by their encoded bytes, which for DAG-CBOR's text keys is by key length, then key bytes.
//! Signing and the canonical check on decoding both encode, so this is on every record's path.
//!
//! Decoding stays with serde_ipld_dagcbor.

use serde::ser::{self, Serialize};

/// CBOR major types (RFC 8949 §3.1).
const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
pub(super) const BYTES: u8 = 2;
pub(super) const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
/// Simple values and the 64-bit float marker (major 7).
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;
const NULL: u8 = 0xf6;
const F64: u8 = 0xfb;
/// The CBOR tag of an IPLD link.
const CID_TAG: u64 = 42;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(String);

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Encodes `value` as canonical DAG-CBOR.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut encoder = Encoder { out: Vec::with_capacity(512), ..Encoder::default() };
    value.serialize(&mut encoder)?;
    Ok(encoder.out)
}

#[derive(Debug, Default)]
struct Encoder {
    out: Vec<u8>,
    /// Where each entry of the maps being written starts, outer maps' entries first: a stack
    /// shared by every level, so nesting allocates nothing.
    starts: Vec<usize>,
    /// A map's bytes while its entries are put in order.
    scratch: Vec<u8>,
    /// The canonical order of a map's entries, by index.
    order: Vec<usize>,
    /// Set by a CID's newtype wrapper to where its bytes must begin: those bytes are the link.
    cid_at: Option<usize>,
}

/// A CBOR item head in its shortest form (RFC 8949 §3), as DAG-CBOR requires.
pub(super) fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    match n {
        0..=23 => out.push(major | n as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, n as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn head_bytes(major: u8, n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    head(&mut out, major, n);
    out
}

impl Encoder {
    fn int(&mut self, v: i128) {
        if v >= 0 {
            head(&mut self.out, UNSIGNED, v as u64);
        } else {
            head(&mut self.out, NEGATIVE, (-1 - v) as u64);
        }
    }

    fn text(&mut self, s: &str) {
        head(&mut self.out, TEXT, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Starts a map whose entries follow, with `len` in its head when known.
    fn map(&mut self, len: Option<usize>) -> Entries<'_> {
        let head_at = self.out.len();
        head(&mut self.out, MAP, len.unwrap_or(0) as u64);
        let base = self.starts.len();
        Entries { head: (head_at, len), base, encoder: self }
    }
}

impl<'a> ser::Serializer for &'a mut Encoder {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Entries<'a>;
    type SerializeStruct = Entries<'a>;
    type SerializeStructVariant = Entries<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.push(if v { TRUE } else { FALSE });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        self.int(v.into());
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        if !(-(u64::MAX as i128 + 1)..=u64::MAX as i128).contains(&v) {
            return Err(EncodeError("Integer must be within [-u64::MAX-1, u64::MAX] range".into()));
        }
        self.int(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        head(&mut self.out, UNSIGNED, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        let v = u64::try_from(v)
            .map_err(|_| EncodeError("Unsigned integer must be within [0, u64::MAX] range".into()))?;
        self.serialize_u64(v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        // DAG-CBOR writes every float in 64 bits.
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        if !v.is_finite() {
            return Err(EncodeError("Float must be a finite number, not Infinity or NaN".into()));
        }
        // One encoding per value: -0.0 is written as 0.0.
        let v = if v == 0.0 { 0.0f64 } else { v };
        self.out.push(F64);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.text(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.text(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        if self.cid_at == Some(self.out.len()) {
            // A link: tag 42 over the CID's bytes behind a zero byte (the multibase identity prefix).
            self.cid_at = None;
            head(&mut self.out, TAG, CID_TAG);
            head(&mut self.out, BYTES, v.len() as u64 + 1);
            self.out.push(0);
        } else {
            head(&mut self.out, BYTES, v.len() as u64);
        }
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.out.push(NULL);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.out.push(NULL);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.text(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        if name != cid::serde::CID_SERDE_PRIVATE_IDENTIFIER {
            return value.serialize(self);
        }
        self.cid_at = Some(self.out.len());
        value.serialize(&mut *self)?;
        match self.cid_at.take() {
            None => Ok(()),
            Some(_) => Err(EncodeError("a CID must serialize as its bytes".into())),
        }
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        head(&mut self.out, MAP, 1);
        self.text(variant);
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'a>, EncodeError> {
        let head_at = self.out.len();
        head(&mut self.out, ARRAY, len.unwrap_or(0) as u64);
        Ok(Seq { head: (head_at, len), count: 0, encoder: self })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a>, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'a>, EncodeError> {
        head(&mut self.out, MAP, 1);
        self.text(variant);
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Entries<'a>, EncodeError> {
        Ok(self.map(len))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Entries<'a>, EncodeError> {
        Ok(self.map(Some(len)))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Entries<'a>, EncodeError> {
        head(&mut self.out, MAP, 1);
        self.text(variant);
        Ok(self.map(Some(len)))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Rewrites the head written at `at` as `len`'s (a count learnt only at the end).
fn fix_head(out: &mut Vec<u8>, (at, hinted): (usize, Option<usize>), major: u8, len: usize) {
    if hinted != Some(len) {
        let old = head_bytes(major, hinted.unwrap_or(0) as u64).len();
        out.splice(at..at + old, head_bytes(major, len as u64));
    }
}

/// An array being written: its head, where it is and what it said, fixed at the end if the count
/// was not known or not right.
#[derive(Debug)]
pub struct Seq<'a> {
    encoder: &'a mut Encoder,
    head: (usize, Option<usize>),
    count: usize,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.count += 1;
        value.serialize(&mut *self.encoder)
    }

    fn finish(self) -> Result<(), EncodeError> {
        fix_head(&mut self.encoder.out, self.head, ARRAY, self.count);
        Ok(())
    }
}

/// serde's four array-shaped traits, all [`Seq::element`] and [`Seq::finish`].
macro_rules! seq_impl {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = EncodeError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
                self.element(value)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.finish()
            }
        }
    )*};
}
seq_impl!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// A map (or struct) being written: its head, and its entries' starts from `base` on in the
/// encoder's stack.
#[derive(Debug)]
pub struct Entries<'a> {
    encoder: &'a mut Encoder,
    head: (usize, Option<usize>),
    base: usize,
}

impl Entries<'_> {
    fn key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<(), EncodeError> {
        let at = self.encoder.out.len();
        self.encoder.starts.push(at);
        key.serialize(&mut *self.encoder)?;
        if self.encoder.out.get(at).is_some_and(|b| b >> 5 != TEXT) {
            return Err(EncodeError("Map keys must be strings".into()));
        }
        Ok(())
    }

    /// Puts the entries in canonical order if they are not, and sets the head's count.
    fn finish(self, fix_count: bool) -> Result<(), EncodeError> {
        let Encoder { out, starts, scratch, order, .. } = self.encoder;
        let count = starts.len() - self.base;
        let first = starts.get(self.base).copied().unwrap_or(out.len());
        {
            let starts = &starts[self.base..];
            let end = out.len();
            let entry = |i: usize| &out[starts[i]..starts.get(i + 1).copied().unwrap_or(end)];
            if (1..count).any(|i| entry(i - 1) > entry(i)) {
                order.clear();
                order.extend(0..count);
                order.sort_unstable_by(|&a, &b| entry(a).cmp(entry(b)));
                scratch.clear();
                scratch.extend_from_slice(&out[first..]);
                out.truncate(first);
                for &i in order.iter() {
                    let next = starts.get(i + 1).copied().unwrap_or(end);
                    out.extend_from_slice(&scratch[starts[i] - first..next - first]);
                }
            }
        }
        starts.truncate(self.base);
        if fix_count {
            fix_head(out, self.head, MAP, count);
        }
        Ok(())
    }
}

impl ser::SerializeMap for Entries<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        self.key(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.encoder)
    }
    fn end(self) -> Result<(), EncodeError> {
        // A map's head counts what it holds, whatever its length hint said.
        self.finish(true)
    }
}

/// A struct, or an enum's struct variant: a map whose head says the length serde gave (as
/// serde_ipld_dagcbor writes it).
macro_rules! struct_impl {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Entries<'_> {
            type Ok = ();
            type Error = EncodeError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), EncodeError> {
                self.key(key)?;
                value.serialize(&mut *self.encoder)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.finish(false)
            }
        }
    )*};
}
struct_impl!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use cid::Cid;
    use ipld_core::ipld::Ipld;
    use proptest::prelude::*;
    use serde::Serialize;

    use super::to_vec;
    use crate::dag::{Body, PROTOCOL_VERSION, RecordKind, blob_cid};
    use crate::error::{ErrorCode, FailureReason};
    use crate::identity::Keypair;
    use crate::market::{
        AvailabilityWindow, Bid, Capabilities, CapabilityProof, Judgement, Payment, RuntimeKind,
    };
    use crate::records::*;
    use crate::spec::{Architecture, JobSpec, SelectionStrategy};

    /// Both encoders give the same bytes (`Some`), or both refuse (`None`).
    #[track_caller]
    fn same<T: Serialize + ?Sized>(value: &T) -> Option<Vec<u8>> {
        let reference = serde_ipld_dagcbor::to_vec(value).map_err(|e| e.to_string());
        let ours = to_vec(value).map_err(|e| e.to_string());
        match (reference, ours) {
            (Ok(r), Ok(o)) => {
                assert_eq!(o, r, "bytes differ from serde_ipld_dagcbor's");
                Some(o)
            }
            (Err(_), Err(_)) => None,
            (r, o) => panic!("serde_ipld_dagcbor gave {r:?}, this encoder {o:?}"),
        }
    }

    /// Both encoders give the same bytes, and they do encode it.
    #[track_caller]
    fn encodes<T: Serialize + ?Sized>(value: &T) {
        assert!(same(value).is_some(), "both encoders refused a value they should encode");
    }

    /// Both encoders refuse it.
    #[track_caller]
    fn refused<T: Serialize + ?Sized>(value: &T) {
        assert!(same(value).is_none(), "both encoders encoded a value DAG-CBOR cannot hold");
    }

    #[track_caller]
    fn body<T: RecordKind>(payload: T) {
        encodes(&Body { kind: T::KIND.to_owned(), protocol: PROTOCOL_VERSION, payload });
    }

    #[test]
    fn every_record_kind_encodes_as_serde_ipld_dagcbor_does() {
        let key = Keypair::from_seed(&[7; 32]);
        let did = key.did().clone();
        let cid = |s: &str| -> Cid { blob_cid(s.as_bytes()) };
        for spec in [
            include_str!("../../../examples/specs/echo-ccl.json"),
            include_str!("../../../examples/specs/mandelbrot.json"),
            include_str!("../../../examples/specs/sha256.json"),
            include_str!("../../../examples/specs/sieve.json"),
        ] {
            let spec = JobSpec::from_json(spec).expect("example spec");
            let job = JobRecord { spec, module: cid("m"), input: Some(cid("i")), submitted_at_ms: 1 << 40 };
            body(job.clone());
            body(JobRecord { input: None, ..job });
        }
        body(Bid {
            job: cid("job"),
            bidder: did.clone(),
            price: 1_000_000,
            completion_time: 1_795_600_000,
            capabilities: Capabilities {
                cpu_cores: 4,
                memory_mb: 8192,
                disk_mb: 1 << 20,
                gpu: None,
                runtimes: vec![RuntimeKind::Wasm, RuntimeKind::Docker],
                architecture: Architecture::Arm64,
                fuel_per_second: 300_000_000,
            },
            availability: AvailabilityWindow { from: 0, until: u64::MAX },
            reputation_score: -0.0,
            completed_similar: 3,
            success_rate: 0.987_654_321,
            capability_proof: CapabilityProof { past_execution_cids: vec![cid("a"), cid("b")] },
            valid_until: 1_795_600_060,
        });
        for adjusted_for in [vec![], vec![FailureReason::OutOfMemory, FailureReason::CpuTimeout]] {
            body(AwardRecord {
                job: cid("job"),
                bids: vec![cid("b1"), cid("b2")],
                executors: vec![did.clone()],
                validators: vec![did.clone(), did.clone()],
                strategy: SelectionStrategy::Random,
                seed: u64::MAX,
                price: 42,
                attempt: 2,
                awarded_at_ms: 1_795_600_000_000,
                adjusted_for,
            });
        }
        body(ResultRecord {
            job: cid("job"),
            award: Some(cid("award")),
            status: ResultStatus::Failed,
            failure: Some(FailureReason::OutOfMemory),
            code: Some(ErrorCode::J004),
            message: Some("ran out of memory — ünïcode too".into()),
            exit_code: Some(-1),
            output: None,
            output_bytes: 0,
            output_truncated: true,
            fuel_used: 123_456_789_012,
            fuel_budget: 3_600_000_000,
            peak_memory_bytes: 65_536,
            started_at_ms: 1,
            finished_at_ms: 2,
            engine: ENGINE.into(),
        });
        body(ValidationRecord {
            job: cid("job"),
            results: vec![cid("r1"), cid("r2"), cid("r3")],
            judgement: Judgement::Disputed,
            accepted_output: Some(cid("out")),
            outvoted: vec![did.clone()],
            reason: "2 of 3 agreed".into(),
        });
        body(ReceiptRecord {
            job: cid("job"),
            result: Some(cid("result")),
            validation: None,
            executor: did.clone(),
            submitter: did.clone(),
            status: PaymentStatus::Disputed,
            payment: Payment {
                base: 10,
                early_bonus: 1,
                quality_bonus: 2,
                reputation_bonus: 3,
                total: 16,
                refund: 84,
            },
            slashed: 5,
            settled_at_ms: 9,
        });
        body(RefusalRecord {
            job: None,
            subject: Some(cid("bid")),
            party: Some(did.clone()),
            code: ErrorCode::J003,
            reason: "x".repeat(300),
            at_ms: 0,
        });
        body(GenesisRecord { grants: vec![(did.clone(), 1_000_000_000_000), (did, 0)] });
    }

    /// Fields declared out of canonical order, every enum shape, maps whose length hint is missing
    /// or wrong, keys of 23, 24 and 256 bytes (where the key's head grows), nesting.
    #[test]
    fn unordered_fields_enum_shapes_and_map_hints() {
        #[derive(Serialize)]
        enum Shape {
            Unit,
            Newtype(u8),
            Tuple(i8, String),
            Struct { zebra: bool, ant: Option<u32> },
        }
        #[derive(Serialize)]
        struct Inner {
            protocol: u32,
            kind: &'static str,
            payload: Vec<Shape>,
        }
        #[derive(Serialize)]
        struct Outer {
            zz: Inner,
            a: Inner,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            map: HashMap<String, i64>,
            tuple: (u8, f32, char, ()),
            #[serde(with = "serde_bytes")]
            bytes: Vec<u8>,
        }
        /// A map that gives no length, or a wrong one.
        struct Hinted(Option<usize>, Vec<(String, u8)>);
        impl Serialize for Hinted {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(self.0)?;
                for (k, v) in &self.1 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
        let inner = || Inner {
            protocol: 1,
            kind: "k",
            payload: vec![
                Shape::Unit,
                Shape::Newtype(7),
                Shape::Tuple(-128, "t".into()),
                Shape::Struct { zebra: true, ant: None },
            ],
        };
        let keys = ["b", "a", &"k".repeat(23), &"j".repeat(24), &"l".repeat(256), ""];
        let map = keys.iter().enumerate().map(|(i, k)| (k.to_string(), -(i as i64) * 1000)).collect();
        encodes(&Outer {
            zz: inner(),
            a: inner(),
            skipped: None,
            map,
            tuple: (255, 1.5, 'é', ()),
            bytes: vec![0; 300],
        });
        let entries: Vec<(String, u8)> = keys.iter().map(|k| (k.to_string(), 1)).collect();
        for hint in [None, Some(0), Some(2), Some(entries.len()), Some(1000)] {
            encodes(&Hinted(hint, entries.clone()));
        }
        encodes(&Hinted(None, Vec::new()));
        // Keys that are not text are refused by both.
        let mut numeric = BTreeMap::new();
        numeric.insert(1u8, 2u8);
        refused(&numeric);
        for non_finite in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            refused(&non_finite);
        }
        refused(&u128::MAX);
        refused(&i128::MIN);
        encodes(&(u64::MAX as u128));
        encodes(&(-(u64::MAX as i128) - 1));
    }

    fn ipld() -> impl Strategy<Value = Ipld> {
        let leaf = prop_oneof![
            Just(Ipld::Null),
            any::<bool>().prop_map(Ipld::Bool),
            any::<i64>().prop_map(|i| Ipld::Integer(i.into())),
            any::<u64>().prop_map(|i| Ipld::Integer(i.into())),
            (-(u64::MAX as i128) - 1..=u64::MAX as i128).prop_map(Ipld::Integer),
            any::<f64>().prop_map(Ipld::Float),
            ".{0,40}".prop_map(Ipld::String),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Ipld::Bytes),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Ipld::Link(blob_cid(&b))),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Ipld::List),
                proptest::collection::btree_map("[a-z]{0,30}", inner, 0..8).prop_map(Ipld::Map),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Arbitrary IPLD (what `AnyRecord` re-encodes): maps sorted canonically at every level,
        /// links, every integer DAG-CBOR holds, floats including the ones it refuses.
        #[test]
        fn arbitrary_ipld_encodes_as_serde_ipld_dagcbor_does(value in ipld()) {
            let _ = same(&value);
        }
    }
}
