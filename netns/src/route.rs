//! A route, removed on drop.

use crate::command::{self, CommandError};

/// A route added with `ip route add`; removed on drop unless [`keep`] was
/// called. Removal of a route that is already gone is silently skipped.
///
/// [`keep`]: Route::keep
#[derive(Debug)]
#[must_use = "the route is removed when this guard drops; call keep() to leave it"]
pub struct Route {
    netns: Option<String>,
    spec: Vec<String>,
    keep: bool,
}

impl Route {
    /// `ip [-n netns] route add <dest> [via <via>] [dev <dev>]`; IPv6 when
    /// `dest` or `via` contains a colon.
    pub fn add(
        netns: Option<&str>,
        dest: &str,
        via: Option<&str>,
        dev: Option<&str>,
    ) -> Result<Self, CommandError> {
        let mut spec = vec![dest.to_owned()];
        if let Some(via) = via {
            spec.extend(["via".to_owned(), via.to_owned()]);
        }
        if let Some(dev) = dev {
            spec.extend(["dev".to_owned(), dev.to_owned()]);
        }
        let v6 = dest.contains(':') || via.is_some_and(|v| v.contains(':'));
        let route = Self {
            netns: netns.map(str::to_owned),
            spec,
            keep: false,
        };
        command::ip(netns, &route.args("add", v6))?;
        Ok(route)
    }

    /// Leaves the route in place when the guard drops.
    pub fn keep(mut self) {
        self.keep = true;
    }

    fn args(&self, verb: &'static str, v6: bool) -> Vec<&str> {
        let mut args = Vec::with_capacity(self.spec.len() + 3);
        if v6 {
            args.push("-6");
        }
        args.extend(["route", verb]);
        args.extend(self.spec.iter().map(String::as_str));
        args
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        if !self.keep {
            let v6 = self.spec.iter().any(|s| s.contains(':'));
            let _ = command::ip(self.netns.as_deref(), &self.args("del", v6));
        }
    }
}
