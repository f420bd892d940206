//! Network partitions between clusters, for fault-injection tests: nodes
//! and control planes of one cluster cannot reach those of the other, both
//! ways, until healed. Cut in the fabric bridge with nftables.

use anyhow::Result;

use super::{Mesh, plan};
use crate::{error::refuse, topology};

impl Mesh {
    /// Partitions two clusters: nodes and control planes of one cannot
    /// reach those of the other (both ways).
    pub fn cut(&mut self, a: &str, b: &str) -> Result<()> {
        self.state.distinct_clusters("partition", a, b)?;
        if self.partition(a, b).is_some() {
            refuse!("{a} and {b} are already partitioned");
        }
        let na = plan::partition_nets(&self.state, self.state.cluster(a)?);
        let nb = plan::partition_nets(&self.state, self.state.cluster(b)?);
        topology::cut(
            &self.state.fabric_netns,
            &plan::partition_chain(a, b),
            &na,
            &nb,
        )?;
        self.state.cuts.push((a.to_string(), b.to_string()));
        self.state.save()
    }

    /// Heals a partition made by [`Mesh::cut`].
    pub fn heal(&mut self, a: &str, b: &str) -> Result<()> {
        self.state.distinct_clusters("heal", a, b)?;
        let Some((a, b)) = self.partition(a, b) else {
            refuse!("{a} and {b} are not partitioned");
        };
        let (a, b) = (a.as_str(), b.as_str());
        topology::heal(&self.state.fabric_netns, &plan::partition_chain(a, b))?;
        self.state.cuts.retain(|(x, y)| !(x == a && y == b));
        self.state.save()
    }

    /// The recorded partition between `a` and `b`, in the order it was cut.
    fn partition(&self, a: &str, b: &str) -> Option<(String, String)> {
        self.state
            .cuts
            .iter()
            .find(|(x, y)| (x == a && y == b) || (x == b && y == a))
            .cloned()
    }
}
