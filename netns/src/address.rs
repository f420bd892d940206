//! An address on an interface, removed on drop.

use crate::command::{self, CommandError};

/// An address added with `ip addr add`; removed on drop unless [`keep`]
/// was called. Removal of an address whose namespace or interface is already
/// gone is silently skipped.
///
/// [`keep`]: Address::keep
#[derive(Debug)]
#[must_use = "the address is removed when this guard drops; call keep() to leave it"]
pub struct Address {
    netns: Option<String>,
    dev: String,
    cidr: String,
    keep: bool,
}

impl Address {
    /// `ip [-n netns] addr add <cidr> dev <dev>` (`nodad` for IPv6).
    pub fn add(netns: Option<&str>, dev: &str, cidr: &str) -> Result<Self, CommandError> {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        command::ip(netns, &args)?;
        Ok(Self {
            netns: netns.map(str::to_owned),
            dev: dev.to_owned(),
            cidr: cidr.to_owned(),
            keep: false,
        })
    }

    /// The address with its prefix length, as added.
    pub fn cidr(&self) -> &str {
        &self.cidr
    }

    /// Leaves the address in place when the guard drops (it still goes away
    /// with its interface or namespace).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Address {
    fn drop(&mut self) {
        if !self.keep {
            let _ = command::ip(
                self.netns.as_deref(),
                &["addr", "del", &self.cidr, "dev", &self.dev],
            );
        }
    }
}
