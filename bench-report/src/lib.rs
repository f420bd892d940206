//! The one output format of every benchmark (`make bench`): one JSON object
//! per line on stdout,
//! `{"bench":"allocator","metric":"allocations_per_s_c16","value":2100.0,"unit":"1/s","better":"higher","baseline_metric":"raw_create_txn_per_s_c16","baseline":4200.0,"ratio":0.5}`,
//! where `better` says which direction is an improvement, and `baseline*` and
//! `ratio` (value / baseline) appear only where a baseline was measured in the
//! same run. Progress belongs on stderr.
//!
//! Not for: anything but benchmark output.

pub mod plot;

use serde_json::Value;

/// Which direction of a metric is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Rates, throughput.
    Higher,
    /// Latencies, durations, sizes, losses, CPU time.
    Lower,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

/// The reporter of one benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Bench {
    name: &'static str,
}

impl Bench {
    pub const fn new(name: &'static str) -> Self {
        Self { name }
    }

    /// Prints a result, with its baseline from the same run when there is one.
    pub fn emit(
        &self,
        metric: &str,
        value: f64,
        unit: &str,
        better: Better,
        baseline: Option<(&str, f64)>,
    ) {
        println!("{}", self.line(metric, value, unit, better, baseline));
    }

    /// The JSON line, fields in the documented order.
    pub fn line(
        &self,
        metric: &str,
        value: f64,
        unit: &str,
        better: Better,
        baseline: Option<(&str, f64)>,
    ) -> String {
        let mut line = format!(
            r#"{{"bench":{},"metric":{},"value":{},"unit":{},"better":{}"#,
            text(self.name),
            text(metric),
            number(value),
            text(unit),
            text(better.as_str())
        );
        if let Some((name, base)) = baseline {
            let ratio = if base == 0.0 {
                "null".to_string()
            } else {
                number(value / base)
            };
            line.push_str(&format!(
                r#","baseline_metric":{},"baseline":{},"ratio":{ratio}"#,
                text(name),
                number(base)
            ));
        }
        line.push('}');
        line
    }
}

fn text(s: &str) -> String {
    Value::from(s).to_string()
}

/// Three decimals are plenty and keep lines readable; non-finite values
/// (a failed measurement) become `null`.
fn number(v: f64) -> String {
    Value::from((v * 1000.0).round() / 1000.0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let b = Bench::new("allocator");
        assert_eq!(
            b.line(
                "allocations_per_s_c16",
                2100.0,
                "1/s",
                Better::Higher,
                Some(("raw_create_txn_per_s_c16", 4200.0))
            ),
            r#"{"bench":"allocator","metric":"allocations_per_s_c16","value":2100.0,"unit":"1/s","better":"higher","baseline_metric":"raw_create_txn_per_s_c16","baseline":4200.0,"ratio":0.5}"#
        );
        assert_eq!(
            b.line("cached", 1.23456, "1/s", Better::Lower, None),
            r#"{"bench":"allocator","metric":"cached","value":1.235,"unit":"1/s","better":"lower"}"#
        );
    }
}
