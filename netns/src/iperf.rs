//! iperf3 between two namespaces: a one-shot server, a client, and the
//! figures benchmarks read from the client's JSON report (TCP Gbit/s,
//! UDP datagrams received per second).

use std::time::Duration;

use serde_json::Value;

use crate::{
    namespace::NetNs,
    process::{Process, ProcessError},
    wait::wait_until,
};

/// How long the server may take to listen, and to exit after a test.
const SERVER_WAIT: Duration = Duration::from_secs(5);

/// Running iperf3 or reading its report failed.
#[derive(Debug, thiserror::Error)]
pub enum IperfError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the iperf3 server did not listen within {SERVER_WAIT:?}")]
    NotListening,
    #[error("cannot parse the iperf3 report")]
    Json(#[source] serde_json::Error),
    #[error("the iperf3 report has no {field}")]
    Missing { field: &'static str },
}

/// One test: a server in `server` listening on `port`, a client in
/// `client` sending to `server_addr` for `seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Iperf<'a> {
    pub client: &'a NetNs,
    pub server: &'a NetNs,
    pub server_addr: &'a str,
    pub port: u16,
    pub seconds: u32,
}

impl Iperf<'_> {
    /// TCP with `streams` parallel streams: Gbit/s received.
    pub fn tcp_gbps(&self, streams: u32) -> Result<f64, IperfError> {
        let streams = streams.to_string();
        let report = self.run(&["-P", &streams])?;
        tcp_gbps(&report)
    }

    /// `len`-byte UDP datagrams at an unlimited rate: datagrams received
    /// per second.
    pub fn udp_pps(&self, len: u32) -> Result<f64, IperfError> {
        let len = len.to_string();
        let report = self.run(&["-u", "-b", "0", "-l", &len])?;
        udp_pps(&report)
    }

    /// Runs the client against a fresh one-shot server; returns its report.
    fn run(&self, args: &[&str]) -> Result<String, IperfError> {
        let port = self.port.to_string();
        let seconds = self.seconds.to_string();
        let server = self.start_server(&port)?;
        let mut all = vec!["-c", self.server_addr, "-p", &port, "-t", &seconds, "-J"];
        all.extend_from_slice(args);
        let report = self.client.run("iperf3", &all)?;
        // The one-shot server exits after its test; a stuck one is killed.
        let _ = server.wait_timeout(SERVER_WAIT);
        Ok(report)
    }

    fn start_server(&self, port: &str) -> Result<Process, IperfError> {
        let server = self
            .server
            .spawn("iperf3", &["-s", "-1", "--forceflush", "-p", port])?;
        if !wait_until(SERVER_WAIT, || server.stdout_so_far().contains("listening")) {
            return Err(IperfError::NotListening);
        }
        Ok(server)
    }
}

/// Gbit/s received, from a TCP test's JSON report.
pub fn tcp_gbps(report: &str) -> Result<f64, IperfError> {
    let json: Value = serde_json::from_str(report).map_err(IperfError::Json)?;
    let bps = number(&json["end"]["sum_received"], "bits_per_second")?;
    Ok(bps / 1e9)
}

/// Datagrams received per second, from a UDP test's JSON report.
pub fn udp_pps(report: &str) -> Result<f64, IperfError> {
    let json: Value = serde_json::from_str(report).map_err(IperfError::Json)?;
    let sum = &json["end"]["sum"];
    let packets = number(sum, "packets")?;
    let lost = number(sum, "lost_packets")?;
    let seconds = number(sum, "seconds")?;
    Ok((packets - lost) / seconds)
}

fn number(v: &Value, field: &'static str) -> Result<f64, IperfError> {
    v[field].as_f64().ok_or(IperfError::Missing { field })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_figures_of_a_report() {
        let tcp = r#"{"end":{"sum_sent":{"bits_per_second":3e10},"sum_received":{"bits_per_second":2.5e10}}}"#;
        assert_eq!(tcp_gbps(tcp).unwrap(), 25.0);
        let udp = r#"{"end":{"sum":{"packets":1000,"lost_packets":200,"seconds":2.0}}}"#;
        assert_eq!(udp_pps(udp).unwrap(), 400.0);
        assert!(matches!(
            tcp_gbps(r#"{"error":"unable to connect"}"#),
            Err(IperfError::Missing {
                field: "bits_per_second"
            })
        ));
    }
}
