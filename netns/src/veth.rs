//! A veth pair whose ends may live in different namespaces, deleted on drop.

use crate::{
    command::{self, CommandError},
    namespace::NetNs,
};

/// A veth pair created with `ip link add ... type veth peer ...`; both ends
/// are brought up. Dropping deletes the pair (deleting either end deletes
/// both; a pair whose namespace is already gone is skipped).
#[derive(Debug)]
pub struct Veth {
    a: String,
    a_ns: Option<String>,
    b: String,
    b_ns: Option<String>,
}

impl Veth {
    /// Creates `name_a` in `ns_a` and its peer `name_b` in `ns_b` (`None` =
    /// the current namespace), both up.
    pub fn create(
        name_a: &str,
        ns_a: Option<&NetNs>,
        name_b: &str,
        ns_b: Option<&NetNs>,
    ) -> Result<Self, CommandError> {
        let a_ns = ns_a.map(|ns| ns.name().to_owned());
        let b_ns = ns_b.map(|ns| ns.name().to_owned());
        let mut args = vec![
            "link", "add", name_a, "type", "veth", "peer", "name", name_b,
        ];
        if let Some(ns) = &b_ns {
            args.extend(["netns", ns]);
        } else if a_ns.is_some() {
            // the peer goes back to the namespace we were called from
            args.extend(["netns", "1"]);
        }
        command::ip(a_ns.as_deref(), &args)?;
        let veth = Self {
            a: name_a.to_owned(),
            a_ns,
            b: name_b.to_owned(),
            b_ns,
        };
        command::ip(veth.a_ns.as_deref(), &["link", "set", name_a, "up"])?;
        command::ip(veth.b_ns.as_deref(), &["link", "set", name_b, "up"])?;
        Ok(veth)
    }

    /// Name of the first end.
    pub fn name_a(&self) -> &str {
        &self.a
    }

    /// Name of the second end.
    pub fn name_b(&self) -> &str {
        &self.b
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = command::ip(self.a_ns.as_deref(), &["link", "del", &self.a]);
    }
}
