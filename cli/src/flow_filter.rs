//! From `observe`'s filter flags to the allow and deny lists of `FlowFilter`s,
//! the way Hubble's CLI forms them (its `filterTracker`), so that the same
//! flags ask any Hubble server for the same flows.
//!
//! Each list is built from two filters: `left` holds the source side of
//! either-side flags (`--pod`, `--ip`, `--label`, …) and `right` their
//! destination side, while `--from-*`/`--to-*` flags and the rest go into
//! both. The list is `[left, right]` (a flow matches either), or `[left]`
//! when both are equal. `--not` sends the next flag to the deny list.
//! Namespaces (`-n`, `--from-namespace`, `--to-namespace`) are applied to the
//! pod filters when the lists are made. A pod without a namespace is sent as
//! given: the server reads it as one in `default`.

use hubble_api::flow::{
    DropReason, EventTypeFilter, FlowFilter, IpVersion, TcpFlags, TrafficDirection, Verdict,
};

/// A filter flag of `observe`, named as in Hubble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterFlag {
    Not,
    Uuid,
    Pod,
    FromPod,
    ToPod,
    Namespace,
    FromNamespace,
    ToNamespace,
    Ip,
    FromIp,
    ToIp,
    Identity,
    FromIdentity,
    ToIdentity,
    Label,
    FromLabel,
    ToLabel,
    Cluster,
    FromCluster,
    ToCluster,
    Verdict,
    DropReasonDesc,
    Protocol,
    Port,
    FromPort,
    ToPort,
    NodeName,
    TrafficDirection,
    Type,
    TcpFlags,
    IpVersion,
}

impl FilterFlag {
    /// Every flag, for the command line parser.
    pub(crate) const ALL: &[FilterFlag] = &[
        Self::Not,
        Self::Uuid,
        Self::Pod,
        Self::FromPod,
        Self::ToPod,
        Self::Namespace,
        Self::FromNamespace,
        Self::ToNamespace,
        Self::Ip,
        Self::FromIp,
        Self::ToIp,
        Self::Identity,
        Self::FromIdentity,
        Self::ToIdentity,
        Self::Label,
        Self::FromLabel,
        Self::ToLabel,
        Self::Cluster,
        Self::FromCluster,
        Self::ToCluster,
        Self::Verdict,
        Self::DropReasonDesc,
        Self::Protocol,
        Self::Port,
        Self::FromPort,
        Self::ToPort,
        Self::NodeName,
        Self::TrafficDirection,
        Self::Type,
        Self::TcpFlags,
        Self::IpVersion,
    ];

    /// The long flag name (without `--`), also the clap argument id.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Not => "not",
            Self::Uuid => "uuid",
            Self::Pod => "pod",
            Self::FromPod => "from-pod",
            Self::ToPod => "to-pod",
            Self::Namespace => "namespace",
            Self::FromNamespace => "from-namespace",
            Self::ToNamespace => "to-namespace",
            Self::Ip => "ip",
            Self::FromIp => "from-ip",
            Self::ToIp => "to-ip",
            Self::Identity => "identity",
            Self::FromIdentity => "from-identity",
            Self::ToIdentity => "to-identity",
            Self::Label => "label",
            Self::FromLabel => "from-label",
            Self::ToLabel => "to-label",
            Self::Cluster => "cluster",
            Self::FromCluster => "from-cluster",
            Self::ToCluster => "to-cluster",
            Self::Verdict => "verdict",
            Self::DropReasonDesc => "drop-reason-desc",
            Self::Protocol => "protocol",
            Self::Port => "port",
            Self::FromPort => "from-port",
            Self::ToPort => "to-port",
            Self::NodeName => "node-name",
            Self::TrafficDirection => "traffic-direction",
            Self::Type => "type",
            Self::TcpFlags => "tcp-flags",
            Self::IpVersion => "ip-version",
        }
    }

    /// The flag for a long name.
    #[cfg(test)]
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }
}

/// Flags that cannot be given together (in the same list), as in Hubble.
const CONFLICTS: &[&[&str]] = &[
    &["from-ip", "ip", "from-namespace", "namespace"],
    &["from-ip", "ip", "from-pod", "pod"],
    &["to-ip", "ip", "to-namespace", "namespace"],
    &["to-ip", "ip", "to-pod", "pod"],
    &["to-pod", "namespace"],
    &["from-pod", "namespace"],
    &["label", "from-label"],
    &["label", "to-label"],
    &["port", "to-port"],
    &["port", "from-port"],
    &["identity", "to-identity"],
    &["identity", "from-identity"],
];

/// Reserved security identities by name, as Cilium numbers them.
pub(crate) const RESERVED_IDENTITIES: &[(&str, u32)] = &[
    ("host", 1),
    ("world", 2),
    ("unmanaged", 3),
    ("health", 4),
    ("init", 5),
    ("remote-node", 6),
    ("kube-apiserver", 7),
    ("ingress", 8),
    ("world-ipv4", 9),
    ("world-ipv6", 10),
];

/// Event types by name (`--type NAME[:SUBTYPE]`), as the monitor numbers them.
const EVENT_TYPES: &[(&str, i32)] = &[
    ("drop", 1),
    ("debug", 2),
    ("capture", 3),
    ("trace", 4),
    ("policy-verdict", 5),
    ("trace-sock", 7),
    ("l7", 129),
    ("agent", 130),
];

/// Trace observation points by name (`--type trace:NAME`), by sub-type.
pub(crate) const TRACE_POINTS: &[&str] = &[
    "to-endpoint",
    "to-proxy",
    "to-host",
    "to-stack",
    "to-overlay",
    "from-endpoint",
    "from-proxy",
    "from-host",
    "from-stack",
    "from-overlay",
    "from-network",
    "to-network",
];

/// A flag value or a combination of flags that Hubble refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FilterError {
    #[error("filters --{0} and --{1} cannot be combined")]
    Conflict(&'static str, &'static str),
    #[error("consecutive --not statements")]
    ConsecutiveNot,
    #[error("trailing --not found in the arguments")]
    TrailingNot,
    #[error("invalid --{flag} value: {value} ({why})")]
    InvalidValue {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("namespace conflict: {namespace:?} does not contain {name:?}")]
    NamespaceConflict { namespace: String, name: String },
}

/// The allow and deny lists for `GetFlowsRequest`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FlowFilters {
    pub(crate) allow: Vec<FlowFilter>,
    pub(crate) deny: Vec<FlowFilter>,
}

/// The filters of one list, as the flags set them.
#[derive(Debug, Default)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    ns: Vec<String>,
    src_ns: Vec<String>,
    dst_ns: Vec<String>,
    changed: Vec<&'static str>,
}

#[derive(Clone, Copy)]
enum Side {
    Left,
    Right,
    Both,
}

impl Tracker {
    fn update(&mut self, side: Side, f: impl Fn(&mut FlowFilter)) {
        if matches!(side, Side::Left | Side::Both) {
            f(self.left.get_or_insert_with(FlowFilter::default));
        }
        if matches!(side, Side::Right | Side::Both) {
            f(self.right.get_or_insert_with(FlowFilter::default));
        }
    }

    /// An either-side flag: `src` on the left, `dst` on the right.
    fn either(&mut self, src: impl Fn(&mut FlowFilter), dst: impl Fn(&mut FlowFilter)) {
        self.update(Side::Left, src);
        self.update(Side::Right, dst);
    }

    fn check_conflicts(&self) -> Result<(), FilterError> {
        for group in CONFLICTS {
            for &flag in group.iter() {
                if !self.changed.contains(&flag) {
                    continue;
                }
                for &other in group.iter() {
                    if other != flag && self.changed.contains(&other) {
                        return Err(FilterError::Conflict(flag, other));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_namespaces(&self, ff: Option<&FlowFilter>) -> Result<(), FilterError> {
        let Some(ff) = ff else { return Ok(()) };
        let pairs: [(&[String], &[String]); 4] = [
            (&self.ns, &ff.source_pod),
            (&self.ns, &ff.destination_pod),
            (&self.src_ns, &ff.source_pod),
            (&self.dst_ns, &ff.destination_pod),
        ];
        for (namespaces, names) in pairs {
            for ns in namespaces {
                for name in names {
                    if let Some((pod_ns, _)) = name.split_once('/')
                        && pod_ns != ns
                    {
                        return Err(FilterError::NamespaceConflict {
                            namespace: ns.clone(),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn set(&mut self, flag: FilterFlag, value: &str) -> Result<(), FilterError> {
        let name = flag.name();
        let first_use = !self.changed.contains(&name);
        if first_use {
            self.changed.push(name);
        }
        self.check_conflicts()?;
        let v = value.to_owned();
        let invalid = |why: &str| FilterError::InvalidValue {
            flag: name,
            value: value.to_owned(),
            why: why.to_owned(),
        };
        use FilterFlag as F;
        match flag {
            F::Not => unreachable!("--not is handled by build"),
            F::Uuid => self.update(Side::Both, |f| f.uuid.push(v.clone())),
            F::Pod => self.either(
                |f| f.source_pod.push(v.clone()),
                |f| f.destination_pod.push(v.clone()),
            ),
            F::FromPod => self.update(Side::Both, |f| f.source_pod.push(v.clone())),
            F::ToPod => self.update(Side::Both, |f| f.destination_pod.push(v.clone())),
            F::Namespace => self.ns.push(v),
            F::FromNamespace => self.src_ns.push(v),
            F::ToNamespace => self.dst_ns.push(v),
            F::Ip => self.either(
                |f| f.source_ip.push(v.clone()),
                |f| f.destination_ip.push(v.clone()),
            ),
            F::FromIp => self.update(Side::Both, |f| f.source_ip.push(v.clone())),
            F::ToIp => self.update(Side::Both, |f| f.destination_ip.push(v.clone())),
            F::Identity | F::FromIdentity | F::ToIdentity => {
                let id = parse_identity(value).ok_or_else(|| {
                    let names: Vec<&str> = RESERVED_IDENTITIES.iter().map(|(n, _)| *n).collect();
                    invalid(&format!(
                        "expected one of {} or a numeric security identity",
                        names.join(", ")
                    ))
                })?;
                match flag {
                    F::Identity => self.either(
                        |f| f.source_identity.push(id),
                        |f| f.destination_identity.push(id),
                    ),
                    F::FromIdentity => self.update(Side::Both, |f| f.source_identity.push(id)),
                    _ => self.update(Side::Both, |f| f.destination_identity.push(id)),
                }
            }
            F::Label => self.either(
                |f| f.source_label.push(v.clone()),
                |f| f.destination_label.push(v.clone()),
            ),
            F::FromLabel => self.update(Side::Both, |f| f.source_label.push(v.clone())),
            F::ToLabel => self.update(Side::Both, |f| f.destination_label.push(v.clone())),
            F::Cluster => self.either(
                |f| f.source_cluster_name.push(v.clone()),
                |f| f.destination_cluster_name.push(v.clone()),
            ),
            F::FromCluster => self.update(Side::Both, |f| f.source_cluster_name.push(v.clone())),
            F::ToCluster => self.update(Side::Both, |f| f.destination_cluster_name.push(v.clone())),
            F::Verdict => {
                let verdict = Verdict::from_str_name(value).ok_or_else(|| {
                    invalid("expected FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED or TRANSLATED")
                })?;
                if first_use {
                    self.update(Side::Both, |f| f.verdict.clear());
                }
                self.update(Side::Both, |f| f.verdict.push(verdict.into()));
            }
            F::DropReasonDesc => {
                let reason = DropReason::from_str_name(value)
                    .filter(|_| !value.is_empty())
                    .ok_or_else(|| invalid("expected a drop reason such as POLICY_DENIED"))?;
                self.update(Side::Both, |f| f.drop_reason_desc.push(reason.into()));
            }
            F::Protocol => self.update(Side::Both, |f| f.protocol.push(v.clone())),
            F::Port => self.either(
                |f| f.source_port.push(v.clone()),
                |f| f.destination_port.push(v.clone()),
            ),
            F::FromPort => self.update(Side::Both, |f| f.source_port.push(v.clone())),
            F::ToPort => self.update(Side::Both, |f| f.destination_port.push(v.clone())),
            F::NodeName => self.update(Side::Both, |f| f.node_name.push(v.clone())),
            F::TrafficDirection => {
                let direction = match value.to_ascii_lowercase().as_str() {
                    "ingress" => TrafficDirection::Ingress,
                    "egress" => TrafficDirection::Egress,
                    _ => return Err(invalid("expected ingress or egress")),
                };
                self.update(Side::Both, |f| f.traffic_direction.push(direction.into()));
            }
            F::Type => {
                let filter = parse_event_type(value).map_err(|why| invalid(&why))?;
                if first_use {
                    self.update(Side::Both, |f| f.event_type.clear());
                }
                self.update(Side::Both, |f| f.event_type.push(filter));
            }
            F::TcpFlags => {
                let flags = parse_tcp_flags(value).map_err(|why| invalid(&why))?;
                self.update(Side::Both, |f| f.tcp_flags.push(flags));
            }
            F::IpVersion => {
                let version = match value.to_ascii_lowercase().as_str() {
                    "4" | "v4" | "ipv4" | "ip4" => IpVersion::IPv4,
                    "6" | "v6" | "ipv6" | "ip6" => IpVersion::IPv6,
                    _ => IpVersion::IpNotUsed,
                };
                self.update(Side::Both, |f| f.ip_version.push(version.into()));
            }
        }
        self.check_namespaces(self.left.as_ref())?;
        self.check_namespaces(self.right.as_ref())
    }

    /// The list: namespaces applied, `[left, right]`, or `[left]` when equal.
    fn finish(mut self) -> Vec<FlowFilter> {
        if self.left.is_none()
            && self.right.is_none()
            && self.ns.is_empty()
            && self.src_ns.is_empty()
            && self.dst_ns.is_empty()
        {
            return Vec::new();
        }
        let mut left = self.left.take().unwrap_or_default();
        let mut right = self.right.take().unwrap_or_default();
        if !self.dst_ns.is_empty() {
            apply_namespaces(&self.dst_ns, &mut left.destination_pod);
            apply_namespaces(&self.dst_ns, &mut right.destination_pod);
        }
        if !self.src_ns.is_empty() {
            apply_namespaces(&self.src_ns, &mut left.source_pod);
            apply_namespaces(&self.src_ns, &mut right.source_pod);
        }
        if !self.ns.is_empty() {
            apply_namespaces(&self.ns, &mut left.source_pod);
            apply_namespaces(&self.ns, &mut right.destination_pod);
        }
        if left == right {
            vec![left]
        } else {
            vec![left, right]
        }
    }
}

/// `pod` → `ns/pod` for each namespace; an empty pod list stands for every
/// pod (`ns/`). Names that already have a namespace stay as they are.
fn apply_namespaces(namespaces: &[String], pods: &mut Vec<String>) {
    if pods.is_empty() {
        pods.push(String::new());
    }
    let mut out = Vec::new();
    for pod in pods.iter() {
        if pod.contains('/') {
            out.push(pod.clone());
            continue;
        }
        for ns in namespaces {
            out.push(format!("{ns}/{pod}"));
        }
    }
    *pods = out;
}

/// A numeric security identity or a reserved identity's name.
pub(crate) fn parse_identity(value: &str) -> Option<u32> {
    RESERVED_IDENTITIES
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, id)| *id)
        .or_else(|| value.parse().ok())
}

/// `TYPE[:SUBTYPE]`, names or numbers.
fn parse_event_type(value: &str) -> Result<EventTypeFilter, String> {
    let (type_name, sub) = match value.split_once(':') {
        Some((t, s)) => (t, Some(s)),
        None => (value, None),
    };
    let r#type = match EVENT_TYPES.iter().find(|(n, _)| *n == type_name) {
        Some((_, t)) => *t,
        None => type_name.parse::<u32>().map_err(|_| {
            format!("unable to parse type {type_name:?}, not a known type name nor a number")
        })? as i32,
    };
    let mut filter = EventTypeFilter {
        r#type,
        ..Default::default()
    };
    if let Some(sub) = sub {
        let named = (r#type == 4)
            .then(|| TRACE_POINTS.iter().position(|p| *p == sub))
            .flatten();
        let sub_type = match named {
            Some(i) => i as i32,
            None => sub.parse::<u32>().map_err(|_| {
                format!(
                    "unable to parse event sub-type {sub:?}, not a known sub-type name nor a number"
                )
            })? as i32,
        };
        filter.match_sub_type = true;
        filter.sub_type = sub_type;
    }
    Ok(filter)
}

/// `syn,ack`: the flags that must all be set.
fn parse_tcp_flags(value: &str) -> Result<TcpFlags, String> {
    let mut flags = TcpFlags::default();
    for f in value.split(',') {
        match f.to_ascii_uppercase().as_str() {
            "SYN" => flags.syn = true,
            "FIN" => flags.fin = true,
            "RST" => flags.rst = true,
            "PSH" => flags.psh = true,
            "ACK" => flags.ack = true,
            "URG" => flags.urg = true,
            "ECE" => flags.ece = true,
            "CWR" => flags.cwr = true,
            "NS" => flags.ns = true,
            _ => return Err(format!("unknown tcp flag: {f}")),
        }
    }
    Ok(flags)
}

/// The lists for the filter flags in the order they were given.
pub(crate) fn build<'a>(
    flags: impl IntoIterator<Item = (FilterFlag, &'a str)>,
) -> Result<FlowFilters, FilterError> {
    let mut allow = Tracker::default();
    let mut deny = Tracker::default();
    let mut negate = false;
    for (flag, value) in flags {
        if flag == FilterFlag::Not {
            if negate {
                return Err(FilterError::ConsecutiveNot);
            }
            negate = true;
            continue;
        }
        let tracker = if std::mem::take(&mut negate) {
            &mut deny
        } else {
            &mut allow
        };
        tracker.set(flag, value)?;
    }
    if negate {
        return Err(FilterError::TrailingNot);
    }
    Ok(FlowFilters {
        allow: allow.finish(),
        deny: deny.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&'static str]) -> Vec<(FilterFlag, &'static str)> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let flag = FilterFlag::from_name(a.trim_start_matches('-')).expect(a);
            let value = if flag == FilterFlag::Not {
                "true"
            } else {
                it.next().expect("value")
            };
            out.push((flag, value));
        }
        out
    }

    fn lists(args: &[&'static str]) -> (Vec<String>, Vec<String>) {
        let f = build(flags(args)).unwrap();
        let json = |l: &[FlowFilter]| {
            l.iter()
                .map(|f| hubble_api::json::to_json(f).unwrap())
                .collect()
        };
        (json(&f.allow), json(&f.deny))
    }

    /// Expected lists are what `hubble observe --print-raw-filters` (v1.16.6)
    /// prints for the same flags.
    #[test]
    fn filters_match_hubble() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (
                &["--pod", "foo"],
                &[
                    r#"{"source_pod":["foo"]}"#,
                    r#"{"destination_pod":["foo"]}"#,
                ],
                &[],
            ),
            (
                &[
                    "--from-pod",
                    "a",
                    "--to-pod",
                    "kube-system/b",
                    "--not",
                    "--verdict",
                    "DROPPED",
                ],
                &[r#"{"source_pod":["a"],"destination_pod":["kube-system/b"]}"#],
                &[r#"{"verdict":["DROPPED"]}"#],
            ),
            (
                &[
                    "--namespace",
                    "kube-system",
                    "--pod",
                    "x",
                    "--identity",
                    "world",
                    "--from-label",
                    "k8s:app=foo",
                    "--protocol",
                    "tcp",
                    "--port",
                    "80",
                ],
                &[
                    r#"{"source_pod":["kube-system/x"],"source_label":["k8s:app=foo"],"protocol":["tcp"],"source_port":["80"],"source_identity":[2]}"#,
                    r#"{"source_label":["k8s:app=foo"],"destination_pod":["kube-system/x"],"protocol":["tcp"],"destination_port":["80"],"destination_identity":[2]}"#,
                ],
                &[],
            ),
            (
                &["--type", "trace:to-endpoint", "--type", "drop"],
                &[r#"{"event_type":[{"type":4,"match_sub_type":true},{"type":1}]}"#],
                &[],
            ),
            (
                &["--from-ip", "10.0.0.1", "--to-ip", "10.0.0.0/8"],
                &[r#"{"source_ip":["10.0.0.1"],"destination_ip":["10.0.0.0/8"]}"#],
                &[],
            ),
            (
                &["--from-identity", "123", "--to-identity", "host"],
                &[r#"{"source_identity":[123],"destination_identity":[1]}"#],
                &[],
            ),
            (
                &["--namespace", "a", "--namespace", "b", "--pod", "x"],
                &[
                    r#"{"source_pod":["a/x","b/x"]}"#,
                    r#"{"destination_pod":["a/x","b/x"]}"#,
                ],
                &[],
            ),
            (
                &["--from-namespace", "a", "--to-namespace", "b"],
                &[r#"{"source_pod":["a/"],"destination_pod":["b/"]}"#],
                &[],
            ),
            (
                &["--ip", "1.1.1.1", "--not", "--ip", "2.2.2.2"],
                &[
                    r#"{"source_ip":["1.1.1.1"]}"#,
                    r#"{"destination_ip":["1.1.1.1"]}"#,
                ],
                &[
                    r#"{"source_ip":["2.2.2.2"]}"#,
                    r#"{"destination_ip":["2.2.2.2"]}"#,
                ],
            ),
            (
                &[
                    "--traffic-direction",
                    "EGRESS",
                    "--drop-reason-desc",
                    "POLICY_DENIED",
                ],
                &[r#"{"traffic_direction":["EGRESS"],"drop_reason_desc":["POLICY_DENIED"]}"#],
                &[],
            ),
            (
                &["--tcp-flags", "syn,ack", "--type", "4:3"],
                &[
                    r#"{"event_type":[{"type":4,"match_sub_type":true,"sub_type":3}],"tcp_flags":[{"SYN":true,"ACK":true}]}"#,
                ],
                &[],
            ),
        ];
        for (args, allow, deny) in cases {
            let (a, d) = lists(args);
            assert_eq!(a, *allow, "allowlist for {args:?}");
            assert_eq!(d, *deny, "denylist for {args:?}");
        }
    }

    /// Cilium 1.17+ semantics (v1.16.6 still sent `node_name: ["c1/"]`).
    #[test]
    fn cluster_flags_filter_on_endpoint_cluster_names() {
        assert_eq!(
            lists(&["--cluster", "c1"]).0,
            [
                r#"{"source_cluster_name":["c1"]}"#,
                r#"{"destination_cluster_name":["c1"]}"#
            ]
        );
        assert_eq!(
            lists(&["--from-cluster", "c1", "--to-cluster", "c2"]).0,
            [r#"{"source_cluster_name":["c1"],"destination_cluster_name":["c2"]}"#]
        );
    }

    #[test]
    fn refusals_match_hubble() {
        let err = |args: &[&'static str]| build(flags(args)).unwrap_err().to_string();
        assert_eq!(
            err(&["--from-pod", "a", "--pod", "b"]),
            "filters --from-pod and --pod cannot be combined"
        );
        assert_eq!(
            err(&["--port", "80", "--to-port", "81"]),
            "filters --port and --to-port cannot be combined"
        );
        assert_eq!(
            err(&["--from-pod", "ns/a", "--namespace", "ns"]),
            "filters --from-pod and --namespace cannot be combined"
        );
        assert_eq!(
            err(&["--not", "--not", "--pod", "x"]),
            "consecutive --not statements"
        );
        assert_eq!(
            err(&["--pod", "x", "--not"]),
            "trailing --not found in the arguments"
        );
        assert!(err(&["--verdict", "bogus"]).starts_with("invalid --verdict value: bogus ("));
        assert!(err(&["--identity", "unknown"]).contains("world"));
        assert!(err(&["--type", "trace:bogus"]).contains("sub-type"));
        assert!(err(&["--traffic-direction", "up"]).contains("ingress or egress"));
        assert!(err(&["--drop-reason-desc", "X"]).contains("POLICY_DENIED"));
        assert_eq!(
            err(&["--from-namespace", "a", "--from-pod", "b/x"]),
            "namespace conflict: \"a\" does not contain \"b/x\""
        );
    }

    #[test]
    fn no_flags_no_filters() {
        assert_eq!(build([]).unwrap(), FlowFilters::default());
    }
}
