//! Protobuf JSON for the API's messages, the way Hubble writes and reads it:
//! Go's `protojson` with `UseProtoNames` (keys `IP`, `l4`, `Type`,
//! `node_name`, in the order the proto declares the fields; enums by name;
//! 64-bit integers as strings; `Timestamp` as RFC 3339; wrappers as bare
//! values; default values left out).
//!
//! It works through reflection over [`FILE_DESCRIPTOR_SET`] (the message is
//! re-encoded and read back as a dynamic message), so the generated types
//! keep `prost_types`' well-known types (pbjson would replace them with its
//! own). prost-reflect writes well-known types and reads everything; our
//! messages are written here, field by field in declaration order, because
//! prost-reflect orders fields by number and Go by declaration. It is meant
//! for printing and for files of flows, not for a hot path.

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MapKey, ReflectMessage,
    SerializeOptions, Value,
};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::{FILE_DESCRIPTOR_SET, flow, observer, peer, relay};

/// A message of this API that has a JSON form: its full proto name.
pub trait JsonMessage: Message + Default {
    /// The message's full name, `package.Message`.
    const FULL_NAME: &'static str;
}

macro_rules! json_messages {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl JsonMessage for $ty {
            const FULL_NAME: &'static str = $name;
        })*
    };
}

json_messages! {
    flow::Flow => "flow.Flow",
    flow::FlowFilter => "flow.FlowFilter",
    flow::LostEvent => "flow.LostEvent",
    relay::NodeStatusEvent => "relay.NodeStatusEvent",
    observer::GetFlowsRequest => "observer.GetFlowsRequest",
    observer::GetFlowsResponse => "observer.GetFlowsResponse",
    observer::ServerStatusResponse => "observer.ServerStatusResponse",
    observer::GetNodesResponse => "observer.GetNodesResponse",
    observer::Node => "observer.Node",
    observer::GetNamespacesResponse => "observer.GetNamespacesResponse",
    peer::ChangeNotification => "peer.ChangeNotification",
}

/// Why a message could not be turned into JSON or read from it.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("message {name} is not in the descriptor set")]
    UnknownMessage { name: &'static str },
    #[error("invalid JSON for {name}")]
    Parse {
        name: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {name} as JSON")]
    Serialize {
        name: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot convert {name} from its JSON form")]
    Transcode {
        name: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET)
        .expect("the crate's own descriptor set decodes (built by build.rs)")
});

fn dynamic<M: JsonMessage>(msg: &M) -> Result<DynamicMessage, JsonError> {
    let desc = POOL
        .get_message_by_name(M::FULL_NAME)
        .ok_or(JsonError::UnknownMessage { name: M::FULL_NAME })?;
    DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|source| {
        JsonError::Transcode {
            name: M::FULL_NAME,
            source,
        }
    })
}

fn options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .use_enum_numbers(false)
        .stringify_64_bit_integers(true)
        .skip_default_fields(true)
}

/// A dynamic message written as protojson, our packages' fields in
/// declaration order.
struct Ordered<'a>(&'a DynamicMessage, &'a SerializeOptions);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let desc = self.0.descriptor();
        if desc.full_name().starts_with("google.protobuf.") {
            return self.0.serialize_with_options(s, self.1);
        }
        let mut map = s.serialize_map(None)?;
        for proto in &desc.descriptor_proto().field {
            let field = desc
                .get_field_by_name(proto.name())
                .ok_or_else(|| S::Error::custom("field missing from its own descriptor"))?;
            if !self.0.has_field(&field) {
                continue;
            }
            let value = self.0.get_field(&field);
            map.serialize_entry(field.name(), &Field(&value, &field.kind(), self.1))?;
        }
        map.end()
    }
}

/// A field's value of kind `.1`.
struct Field<'a>(&'a Value, &'a Kind, &'a SerializeOptions);

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Bool(v) => s.serialize_bool(*v),
            Value::I32(v) => s.serialize_i32(*v),
            Value::U32(v) => s.serialize_u32(*v),
            Value::I64(v) => s.collect_str(v),
            Value::U64(v) => s.collect_str(v),
            Value::F32(v) => float(s, f64::from(*v)),
            Value::F64(v) => float(s, *v),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(_) => Err(S::Error::custom("bytes fields are not in this API")),
            Value::EnumNumber(n) => match self.1.as_enum().and_then(|e| e.get_value(*n)) {
                Some(v) => s.serialize_str(v.name()),
                None => s.serialize_i32(*n),
            },
            Value::Message(m) => Ordered(m, self.2).serialize(s),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Field(item, self.1, self.2))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let value_kind = self
                    .1
                    .as_message()
                    .map(|m| m.map_entry_value_field().kind())
                    .ok_or_else(|| S::Error::custom("a map field without an entry type"))?;
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    let key = match k {
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(n) => n.to_string(),
                        MapKey::I64(n) => n.to_string(),
                        MapKey::U32(n) => n.to_string(),
                        MapKey::U64(n) => n.to_string(),
                        MapKey::String(k) => k.clone(),
                    };
                    map.serialize_entry(&key, &Field(v, &value_kind, self.2))?;
                }
                map.end()
            }
        }
    }
}

/// A double as protojson writes it (`"NaN"`, `"Infinity"` as strings).
fn float<S: Serializer>(s: S, v: f64) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v.is_infinite() {
        s.serialize_str(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(v)
    }
}

/// The message as one line of JSON, as `hubble observe -o json` prints it.
pub fn to_json<M: JsonMessage>(msg: &M) -> Result<String, JsonError> {
    let dynamic = dynamic(msg)?;
    serde_json::to_string(&Ordered(&dynamic, &options())).map_err(|source| JsonError::Serialize {
        name: M::FULL_NAME,
        source,
    })
}

/// Messages as a JSON array indented by two spaces, as Go's
/// `json.MarshalIndent` prints a slice of them (`hubble list nodes -o json`).
pub fn to_json_pretty_list<M: JsonMessage>(msgs: &[M]) -> Result<String, JsonError> {
    let options = options();
    let items = msgs.iter().map(dynamic).collect::<Result<Vec<_>, _>>()?;
    let ordered: Vec<Ordered<'_>> = items.iter().map(|d| Ordered(d, &options)).collect();
    serde_json::to_string_pretty(&ordered).map_err(|source| JsonError::Serialize {
        name: M::FULL_NAME,
        source,
    })
}

/// Reads a message from its JSON form (proto or JSON field names; unknown
/// fields, such as L7 records this API leaves out, are skipped).
pub fn from_json<M: JsonMessage>(text: &str) -> Result<M, JsonError> {
    let desc = POOL
        .get_message_by_name(M::FULL_NAME)
        .ok_or(JsonError::UnknownMessage { name: M::FULL_NAME })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize_with_options(
        desc,
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .and_then(|m| de.end().map(|()| m))
    .map_err(|source| JsonError::Parse {
        name: M::FULL_NAME,
        source,
    })?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|source| JsonError::Transcode {
        name: M::FULL_NAME,
        source,
    })
}
