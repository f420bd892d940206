//! The body of every daemon's `/healthz` and `/readyz`: the same JSON shape
//! everywhere, `{"status": …, "checks": {name: {"ok": …, "detail": …}}}`,
//! with 200 when the status is good and 503 otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One check of a health or readiness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub ok: bool,
    /// What was found, in words (why it is not ok, or what it is).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Check {
    pub fn ok(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
        }
    }

    pub fn failed(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// A health (`/healthz`) or readiness (`/readyz`) report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` or `unhealthy` (`/healthz`); `ready` or `not ready` (`/readyz`).
    pub status: String,
    pub checks: BTreeMap<String, Check>,
}

impl Health {
    /// `/healthz`: `ok` when every check is.
    pub fn liveness(checks: impl IntoIterator<Item = (&'static str, Check)>) -> Self {
        Self::new(checks, "ok", "unhealthy")
    }

    /// `/readyz`: `ready` when every check is ok.
    pub fn readiness(checks: impl IntoIterator<Item = (&'static str, Check)>) -> Self {
        Self::new(checks, "ready", "not ready")
    }

    fn new(checks: impl IntoIterator<Item = (&'static str, Check)>, good: &str, bad: &str) -> Self {
        let checks: BTreeMap<String, Check> = checks
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let status = if checks.values().all(|c| c.ok) {
            good
        } else {
            bad
        };
        Self {
            status: status.to_string(),
            checks,
        }
    }

    /// Whether every check is ok.
    pub fn is_ok(&self) -> bool {
        self.checks.values().all(|c| c.ok)
    }

    /// 200 when ok, 503 otherwise.
    pub fn http_status(&self) -> u16 {
        if self.is_ok() { 200 } else { 503 }
    }

    /// The JSON body, with a trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("health serializes") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_checks() {
        let h = Health::readiness([
            ("etcd", Check::ok("")),
            ("sync", Check::failed("waiting for c2")),
        ]);
        assert_eq!(h.status, "not ready");
        assert_eq!(h.http_status(), 503);
        assert_eq!(
            h.to_json(),
            "{\"status\":\"not ready\",\"checks\":{\"etcd\":{\"ok\":true},\"sync\":{\"ok\":false,\"detail\":\"waiting for c2\"}}}\n"
        );
        let h = Health::liveness([("loop", Check::ok("running"))]);
        assert_eq!((h.status.as_str(), h.http_status()), ("ok", 200));
        let back: Health = serde_json::from_str(&h.to_json()).unwrap();
        assert_eq!(back, h);
    }
}
