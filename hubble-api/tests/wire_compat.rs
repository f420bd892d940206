//! Checks that our protos are wire-compatible with Cilium's Hubble API: every
//! message, field, enum value and RPC we define must exist in the reference
//! protos under the same full name, with the same number, type, label and
//! streaming. The reference lives outside the repository
//! (`$CLUSTERMESH_SHARED/reference/hubble/api/v1`, else `<repo>/../shared/...`),
//! so without it the test prints why it skips and passes, in CI too.

use std::{
    collections::HashMap,
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorSet, ServiceDescriptorProto,
};

/// The proto packages this crate defines; everything else in our descriptor
/// set (google/protobuf) is an import.
const OUR_PACKAGES: &[&str] = &["flow", "observer", "peer", "relay"];

/// The reference files, relative to the reference's `api/v1` directory.
const REFERENCE_FILES: &[&str] = &[
    "flow/flow.proto",
    "observer/observer.proto",
    "peer/peer.proto",
    "relay/relay.proto",
];

#[test]
fn protos_match_cilium_hubble_api() -> Result<()> {
    let Some(reference_dir) = reference_dir() else {
        println!(
            "skipped: no Hubble reference protos at $CLUSTERMESH_SHARED/reference/hubble/api/v1 \
             or <repo>/../shared/reference/hubble/api/v1 (they live outside the repository)"
        );
        return Ok(());
    };
    let ours = FileDescriptorSet::decode(hubble_api::FILE_DESCRIPTOR_SET)
        .context("decode our descriptor set")?;
    let reference = compile_reference(&reference_dir)?;

    let reference = Index::new(&reference);
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for file in &ours.file {
        let package = file.package();
        if !OUR_PACKAGES.contains(&package) {
            continue;
        }
        let prefix = format!(".{package}");
        for message in &file.message_type {
            checked += check_message(&prefix, message, &reference, &mut mismatches);
        }
        for enumeration in &file.enum_type {
            checked += check_enum(&prefix, enumeration, &reference, &mut mismatches);
        }
        for service in &file.service {
            checked += check_service(&prefix, service, &reference, &mut mismatches);
        }
    }
    assert!(
        checked > 0,
        "no messages, enums or services found in our protos"
    );
    assert!(
        mismatches.is_empty(),
        "{} wire incompatibilities with {}:\n  {}",
        mismatches.len(),
        reference_dir.display(),
        mismatches.join("\n  ")
    );
    println!(
        "checked {checked} messages, enums and services against {}",
        reference_dir.display()
    );
    Ok(())
}

fn reference_dir() -> Option<PathBuf> {
    let shared = match env::var_os("CLUSTERMESH_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    let dir = shared.join("reference/hubble/api/v1");
    dir.is_dir().then_some(dir)
}

fn compile_reference(dir: &Path) -> Result<FileDescriptorSet> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hubble-reference-{}.bin", std::process::id()));
    let protoc = env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let mut command = Command::new(&protoc);
    command.arg("-I").arg(dir);
    // Debian's libprotobuf-dev puts google/protobuf/*.proto here.
    if Path::new("/usr/include/google/protobuf").is_dir() {
        command.arg("-I/usr/include");
    }
    command
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(REFERENCE_FILES);
    let output = command
        .output()
        .with_context(|| format!("run {}", protoc.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "protoc failed on the reference protos: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bytes = std::fs::read(&out).with_context(|| format!("read {}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    FileDescriptorSet::decode(bytes.as_slice()).context("decode the reference descriptor set")
}

/// The reference's messages, enums and services by full name (".flow.Flow").
struct Index<'a> {
    messages: HashMap<String, &'a DescriptorProto>,
    enums: HashMap<String, &'a EnumDescriptorProto>,
    services: HashMap<String, &'a ServiceDescriptorProto>,
}

impl<'a> Index<'a> {
    fn new(set: &'a FileDescriptorSet) -> Self {
        let mut index = Index {
            messages: HashMap::new(),
            enums: HashMap::new(),
            services: HashMap::new(),
        };
        for file in &set.file {
            let prefix = format!(".{}", file.package());
            for message in &file.message_type {
                index.add_message(&prefix, message);
            }
            for enumeration in &file.enum_type {
                index
                    .enums
                    .insert(format!("{prefix}.{}", enumeration.name()), enumeration);
            }
            for service in &file.service {
                index
                    .services
                    .insert(format!("{prefix}.{}", service.name()), service);
            }
        }
        index
    }

    fn add_message(&mut self, prefix: &str, message: &'a DescriptorProto) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for enumeration in &message.enum_type {
            self.enums
                .insert(format!("{name}.{}", enumeration.name()), enumeration);
        }
        self.messages.insert(name, message);
    }
}

/// Checks a message, its fields and its nested types; returns how many
/// messages and enums it checked.
fn check_message(
    prefix: &str,
    ours: &DescriptorProto,
    reference: &Index<'_>,
    mismatches: &mut Vec<String>,
) -> usize {
    let name = format!("{prefix}.{}", ours.name());
    let mut checked = 1;
    for nested in &ours.nested_type {
        checked += check_message(&name, nested, reference, mismatches);
    }
    for enumeration in &ours.enum_type {
        checked += check_enum(&name, enumeration, reference, mismatches);
    }
    let Some(theirs) = reference.messages.get(&name) else {
        mismatches.push(format!("message {name}: not in the reference"));
        return checked;
    };
    for field in &ours.field {
        let field_name = format!("{name}.{}", field.name());
        let Some(other) = theirs.field.iter().find(|f| f.name() == field.name()) else {
            mismatches.push(format!("field {field_name}: not in the reference"));
            continue;
        };
        if field.number() != other.number() {
            mismatches.push(format!(
                "field {field_name}: number {} (reference {})",
                field.number(),
                other.number()
            ));
        }
        if field.r#type() != other.r#type() || field.type_name() != other.type_name() {
            mismatches.push(format!(
                "field {field_name}: type {:?} {} (reference {:?} {})",
                field.r#type(),
                field.type_name(),
                other.r#type(),
                other.type_name()
            ));
        }
        if field.label() != other.label() || field.proto3_optional() != other.proto3_optional() {
            mismatches.push(format!(
                "field {field_name}: label {:?} optional={} (reference {:?} optional={})",
                field.label(),
                field.proto3_optional(),
                other.label(),
                other.proto3_optional()
            ));
        }
        let ours_oneof = oneof_name(ours, field.oneof_index);
        let their_oneof = oneof_name(theirs, other.oneof_index);
        if ours_oneof != their_oneof {
            mismatches.push(format!(
                "field {field_name}: oneof {ours_oneof:?} (reference {their_oneof:?})"
            ));
        }
    }
    checked
}

fn oneof_name(message: &DescriptorProto, index: Option<i32>) -> Option<&str> {
    let index = usize::try_from(index?).ok()?;
    message.oneof_decl.get(index).map(|oneof| oneof.name())
}

fn check_enum(
    prefix: &str,
    ours: &EnumDescriptorProto,
    reference: &Index<'_>,
    mismatches: &mut Vec<String>,
) -> usize {
    let name = format!("{prefix}.{}", ours.name());
    let Some(theirs) = reference.enums.get(&name) else {
        mismatches.push(format!("enum {name}: not in the reference"));
        return 1;
    };
    for value in &ours.value {
        match theirs.value.iter().find(|v| v.name() == value.name()) {
            None => mismatches.push(format!(
                "enum value {name}.{}: not in the reference",
                value.name()
            )),
            Some(other) if other.number() != value.number() => mismatches.push(format!(
                "enum value {name}.{}: number {} (reference {})",
                value.name(),
                value.number(),
                other.number()
            )),
            Some(_) => {}
        }
    }
    1
}

fn check_service(
    prefix: &str,
    ours: &ServiceDescriptorProto,
    reference: &Index<'_>,
    mismatches: &mut Vec<String>,
) -> usize {
    let name = format!("{prefix}.{}", ours.name());
    let Some(theirs) = reference.services.get(&name) else {
        mismatches.push(format!("service {name}: not in the reference"));
        return 1;
    };
    for method in &ours.method {
        let method_name = format!("{name}.{}", method.name());
        let Some(other) = theirs.method.iter().find(|m| m.name() == method.name()) else {
            mismatches.push(format!("rpc {method_name}: not in the reference"));
            continue;
        };
        let shape = |m: &prost_types::MethodDescriptorProto| {
            format!(
                "({}{}) returns ({}{})",
                if m.client_streaming() { "stream " } else { "" },
                m.input_type(),
                if m.server_streaming() { "stream " } else { "" },
                m.output_type()
            )
        };
        if shape(method) != shape(other) {
            mismatches.push(format!(
                "rpc {method_name}: {} (reference {})",
                shape(method),
                shape(other)
            ));
        }
    }
    1
}
