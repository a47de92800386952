//! Two serde shapes for one type: the Appendix A JSON shape for people, a compact one for the wire.
//!
//! Appendix A writes enums with a `"type"` tag (`{"type": "WASM", "module": …}`). That is serde's
//! *internally tagged* form, which needs a self-describing format to read back; postcard is not one.
//! So each such enum has two private twins — one internally tagged (JSON), one externally tagged
//! (postcard, DAG-CBOR) — and picks between them with `Serializer::is_human_readable`.

/// Declares a public enum of struct variants whose JSON form is tagged by `"type"`.
///
/// Field attributes (`#[serde(default)]`, doc comments) apply to both twins; variant doc comments to
/// the public enum.
macro_rules! type_tagged_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident {
                    $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)?
                }
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $( $(#[$vmeta])* $variant { $( $field: $fty ),* } ),*
        }

        const _: () = {
            use serde::{Deserialize, Deserializer, Serialize, Serializer};

            #[derive(Serialize, Deserialize)]
            #[allow(clippy::upper_case_acronyms)]
            #[serde(tag = "type", deny_unknown_fields)]
            enum Json {
                $( $variant { $( $(#[$fmeta])* $field: $fty ),* } ),*
            }

            #[derive(Serialize, Deserialize)]
            #[allow(clippy::upper_case_acronyms)]
            enum Wire {
                $( $variant { $( $field: $fty ),* } ),*
            }

            impl From<$name> for Json {
                fn from(value: $name) -> Self {
                    match value { $( $name::$variant { $( $field ),* } => Self::$variant { $( $field ),* } ),* }
                }
            }
            impl From<Json> for $name {
                fn from(value: Json) -> Self {
                    match value { $( Json::$variant { $( $field ),* } => Self::$variant { $( $field ),* } ),* }
                }
            }
            impl From<$name> for Wire {
                fn from(value: $name) -> Self {
                    match value { $( $name::$variant { $( $field ),* } => Self::$variant { $( $field ),* } ),* }
                }
            }
            impl From<Wire> for $name {
                fn from(value: Wire) -> Self {
                    match value { $( Wire::$variant { $( $field ),* } => Self::$variant { $( $field ),* } ),* }
                }
            }

            impl Serialize for $name {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    if serializer.is_human_readable() {
                        Json::from(self.clone()).serialize(serializer)
                    } else {
                        Wire::from(self.clone()).serialize(serializer)
                    }
                }
            }

            impl<'de> Deserialize<'de> for $name {
                fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                    if deserializer.is_human_readable() {
                        Json::deserialize(deserializer).map(Into::into)
                    } else {
                        Wire::deserialize(deserializer).map(Into::into)
                    }
                }
            }
        };
    };
}

pub(crate) use type_tagged_enum;
