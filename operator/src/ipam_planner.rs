use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use kvstore::values::IpamAssignment;

use crate::cidr_pool::{CidrPool, IpFamily};

/// A change the IPAM reconciler makes in etcd. Each carries what the planner
/// believed, so the reconciler can make the write conditional on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamAction {
    /// Give `node` the CIDRs of `want`: first create the CIDR keys in
    /// `create` (only if absent), then write the assignment (only if it is
    /// still `current`, the node still exists and every CIDR key of `want`
    /// names the node).
    Assign {
        node: String,
        current: Option<IpamAssignment>,
        want: IpamAssignment,
        create: Vec<IpNet>,
    },
    /// `node` has been gone for the release delay: delete its assignment and
    /// the CIDR keys that name it (only if the node is still gone).
    Release {
        node: String,
        assignment: Option<IpamAssignment>,
        cidrs: Vec<IpNet>,
    },
    /// The CIDR key `cidr` names `node`, whose assignment holds another CIDR
    /// of that family: the leftover of a lost race or of a crash between the
    /// two writes of an assignment.
    DeleteOrphan {
        cidr: IpNet,
        node: String,
        assignment: IpamAssignment,
    },
}

/// What [`IpamPlanner::plan`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamPlan {
    /// In order: releases, orphan deletions, assignments.
    pub actions: Vec<IpamAction>,
    /// Nodes that need a CIDR of a family whose pool is exhausted.
    pub waiting: Vec<(String, IpFamily)>,
    /// When a pending release falls due.
    pub next_wakeup: Option<Instant>,
}

/// Use of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub family: IpFamily,
    /// Node CIDRs of the pool that are assigned (or held by a CIDR key).
    pub assigned: u128,
    pub capacity: u128,
}

impl PoolUsage {
    pub fn free(&self) -> u128 {
        self.capacity.saturating_sub(self.assigned)
    }
}

/// The pod CIDR decisions of the operator, without I/O (sans-IO): the
/// reconciler feeds it what the watches report (nodes, assignments, CIDR
/// keys) and the time, and applies the actions it returns.
///
/// Rules, applied to the whole view every time (level-triggered):
/// - A node is *held* by its assignment (`ipam/v1/nodes/<node>`) and by every
///   CIDR key (`ipam/v1/cidrs/<cidr>`) whose value names it.
/// - A present node that lacks a CIDR of a configured family adopts the
///   lowest CIDR key of the pool that already names it (a half-done
///   assignment), else gets the lowest CIDR that no CIDR key and no
///   assignment uses. Nodes are served in name order.
/// - A CIDR key that names a present node whose assignment holds another
///   CIDR of that family is an orphan and is deleted.
/// - A held name with no node is released once it has been missing for the
///   release delay (counted from when this planner first saw it missing);
///   it is not released if the node returns meanwhile.
#[derive(Debug, Clone)]
pub struct IpamPlanner {
    pools: Vec<CidrPool>,
    release_delay: Duration,
    nodes: BTreeSet<String>,
    assignments: BTreeMap<String, IpamAssignment>,
    cidrs: BTreeMap<IpNet, String>,
    missing_since: HashMap<String, Instant>,
}

impl IpamPlanner {
    /// A planner for `pools` (at most one per family).
    pub fn new(pools: Vec<CidrPool>, release_delay: Duration) -> Self {
        Self {
            pools,
            release_delay,
            nodes: BTreeSet::new(),
            assignments: BTreeMap::new(),
            cidrs: BTreeMap::new(),
            missing_since: HashMap::new(),
        }
    }

    pub fn upsert_node(&mut self, node: &str) {
        self.nodes.insert(node.to_string());
    }

    pub fn delete_node(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    pub fn upsert_assignment(&mut self, assignment: IpamAssignment) {
        self.assignments.insert(assignment.node.clone(), assignment);
    }

    pub fn delete_assignment(&mut self, node: &str) {
        self.assignments.remove(node);
    }

    /// A CIDR key exists and names `node`.
    pub fn upsert_cidr(&mut self, cidr: IpNet, node: &str) {
        self.cidrs.insert(cidr, node.to_string());
    }

    pub fn delete_cidr(&mut self, cidr: &IpNet) {
        self.cidrs.remove(cidr);
    }

    /// Nodes present.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn assignment(&self, node: &str) -> Option<&IpamAssignment> {
        self.assignments.get(node)
    }

    /// Usage of each configured pool.
    pub fn usage(&self) -> Vec<PoolUsage> {
        let used = self.used();
        self.pools
            .iter()
            .map(|pool| PoolUsage {
                family: pool.family(),
                assigned: pool.count_used(&used),
                capacity: pool.capacity(),
            })
            .collect()
    }

    /// What to do now.
    pub fn plan(&mut self, now: Instant) -> IpamPlan {
        let mut plan = IpamPlan::default();
        self.plan_releases(now, &mut plan);
        self.plan_orphans(&mut plan);
        self.plan_assignments(&mut plan);
        plan
    }

    fn plan_releases(&mut self, now: Instant, plan: &mut IpamPlan) {
        let held: BTreeSet<&String> = self
            .assignments
            .keys()
            .chain(self.cidrs.values())
            .filter(|n| !self.nodes.contains(*n))
            .collect();
        self.missing_since.retain(|n, _| held.contains(n));
        for node in held {
            let since = *self.missing_since.entry(node.clone()).or_insert(now);
            let due = since + self.release_delay;
            if now >= due {
                plan.actions.push(IpamAction::Release {
                    node: node.clone(),
                    assignment: self.assignments.get(node).cloned(),
                    cidrs: self
                        .cidrs
                        .iter()
                        .filter(|(_, n)| *n == node)
                        .map(|(c, _)| *c)
                        .collect(),
                });
            } else {
                plan.next_wakeup = Some(plan.next_wakeup.map_or(due, |w| w.min(due)));
            }
        }
    }

    fn plan_orphans(&self, plan: &mut IpamPlan) {
        for (cidr, node) in &self.cidrs {
            if !self.nodes.contains(node) {
                continue;
            }
            let Some(assignment) = self.assignments.get(node) else {
                continue;
            };
            if slot(assignment, IpFamily::of(cidr)).is_some_and(|held| held != *cidr) {
                plan.actions.push(IpamAction::DeleteOrphan {
                    cidr: *cidr,
                    node: node.clone(),
                    assignment: assignment.clone(),
                });
            }
        }
    }

    fn plan_assignments(&self, plan: &mut IpamPlan) {
        let used = self.used();
        let mut free: Vec<_> = self.pools.iter().map(|p| p.free(&used)).collect();
        for node in &self.nodes {
            let current = self.assignments.get(node);
            let mut want = current.cloned().unwrap_or_else(|| IpamAssignment {
                node: node.clone(),
                ipv4: None,
                ipv6: None,
            });
            let mut create = Vec::new();
            for (pool, free) in self.pools.iter().zip(free.iter_mut()) {
                let family = pool.family();
                if slot(&want, family).is_some() {
                    continue;
                }
                let adopted = self
                    .cidrs
                    .iter()
                    .find(|(c, n)| *n == node && pool.contains(c))
                    .map(|(c, _)| *c);
                let cidr = match adopted {
                    Some(c) => c,
                    None => match free.next() {
                        Some(c) => {
                            create.push(c);
                            c
                        }
                        None => {
                            plan.waiting.push((node.clone(), family));
                            continue;
                        }
                    },
                };
                *slot_mut(&mut want, family) = Some(cidr);
            }
            let changed = match current {
                Some(c) => *c != want,
                None => want.ipv4.is_some() || want.ipv6.is_some(),
            };
            if changed {
                plan.actions.push(IpamAction::Assign {
                    node: node.clone(),
                    current: current.cloned(),
                    want,
                    create,
                });
            }
        }
    }

    /// Every CIDR that a CIDR key or an assignment uses.
    fn used(&self) -> Vec<IpNet> {
        self.cidrs
            .keys()
            .copied()
            .chain(
                self.assignments
                    .values()
                    .flat_map(|a| a.ipv4.into_iter().chain(a.ipv6)),
            )
            .collect()
    }
}

/// The CIDR of `family` in an assignment.
pub(crate) fn slot(a: &IpamAssignment, family: IpFamily) -> Option<IpNet> {
    match family {
        IpFamily::V4 => a.ipv4,
        IpFamily::V6 => a.ipv6,
    }
}

fn slot_mut(a: &mut IpamAssignment, family: IpFamily) -> &mut Option<IpNet> {
    match family {
        IpFamily::V4 => &mut a.ipv4,
        IpFamily::V6 => &mut a.ipv6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(30);

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn planner(v4: &str, v6: Option<&str>) -> IpamPlanner {
        let mut pools = vec![CidrPool::new(IpFamily::V4, net(v4), 24).unwrap()];
        if let Some(v6) = v6 {
            pools.push(CidrPool::new(IpFamily::V6, net(v6), 64).unwrap());
        }
        IpamPlanner::new(pools, DELAY)
    }

    fn assignment(node: &str, v4: Option<&str>, v6: Option<&str>) -> IpamAssignment {
        IpamAssignment {
            node: node.into(),
            ipv4: v4.map(net),
            ipv6: v6.map(net),
        }
    }

    /// Applies a plan as if every write succeeded (what the watches then report).
    fn apply(p: &mut IpamPlanner, plan: &IpamPlan) {
        for action in &plan.actions {
            match action {
                IpamAction::Assign {
                    node, want, create, ..
                } => {
                    for c in create {
                        p.upsert_cidr(*c, node);
                    }
                    p.upsert_assignment(want.clone());
                }
                IpamAction::Release { node, cidrs, .. } => {
                    p.delete_assignment(node);
                    for c in cidrs {
                        p.delete_cidr(c);
                    }
                }
                IpamAction::DeleteOrphan { cidr, .. } => p.delete_cidr(cidr),
            }
        }
    }

    #[test]
    fn new_nodes_get_the_lowest_free_cidrs_in_name_order() {
        let mut p = planner("10.1.0.0/16", Some("fd00:1::/48"));
        p.upsert_cidr(net("10.1.0.0/24"), "old");
        p.upsert_assignment(assignment("old", Some("10.1.0.0/24"), None));
        p.upsert_node("old");
        for n in ["b", "a"] {
            p.upsert_node(n);
        }
        let now = Instant::now();
        let plan = p.plan(now);
        assert_eq!(
            plan.actions,
            vec![
                IpamAction::Assign {
                    node: "a".into(),
                    current: None,
                    want: assignment("a", Some("10.1.1.0/24"), Some("fd00:1::/64")),
                    create: vec![net("10.1.1.0/24"), net("fd00:1::/64")],
                },
                IpamAction::Assign {
                    node: "b".into(),
                    current: None,
                    want: assignment("b", Some("10.1.2.0/24"), Some("fd00:1:0:1::/64")),
                    create: vec![net("10.1.2.0/24"), net("fd00:1:0:1::/64")],
                },
                // A node assigned before IPv6 was configured gets an IPv6 CIDR too.
                IpamAction::Assign {
                    node: "old".into(),
                    current: Some(assignment("old", Some("10.1.0.0/24"), None)),
                    want: assignment("old", Some("10.1.0.0/24"), Some("fd00:1:0:2::/64")),
                    create: vec![net("fd00:1:0:2::/64")],
                },
            ]
        );
        apply(&mut p, &plan);
        assert_eq!(p.plan(now), IpamPlan::default(), "nothing left to do");
        let usage = p.usage();
        assert_eq!((usage[0].assigned, usage[0].free()), (3, 253));
        assert_eq!((usage[1].assigned, usage[1].capacity), (3, 65_536));
    }

    #[test]
    fn a_half_done_assignment_is_adopted_and_extra_keys_are_orphans() {
        let mut p = planner("10.1.0.0/16", None);
        p.upsert_node("n1");
        // A crashed leader created two CIDR keys for n1 but no assignment.
        p.upsert_cidr(net("10.1.5.0/24"), "n1");
        p.upsert_cidr(net("10.1.3.0/24"), "n1");
        let now = Instant::now();
        let plan = p.plan(now);
        assert_eq!(
            plan.actions,
            vec![IpamAction::Assign {
                node: "n1".into(),
                current: None,
                want: assignment("n1", Some("10.1.3.0/24"), None),
                create: vec![],
            }]
        );
        apply(&mut p, &plan);
        assert_eq!(
            p.plan(now).actions,
            vec![IpamAction::DeleteOrphan {
                cidr: net("10.1.5.0/24"),
                node: "n1".into(),
                assignment: assignment("n1", Some("10.1.3.0/24"), None),
            }]
        );
    }

    #[test]
    fn release_after_the_delay_unless_the_node_returns() {
        let mut p = planner("10.1.0.0/16", None);
        p.upsert_node("n1");
        let t0 = Instant::now();
        let plan = p.plan(t0);
        apply(&mut p, &plan);
        p.delete_node("n1");
        let plan = p.plan(t0);
        assert!(plan.actions.is_empty());
        assert_eq!(plan.next_wakeup, Some(t0 + DELAY));
        // Back before the delay: nothing is released, and the clock resets.
        p.upsert_node("n1");
        assert_eq!(p.plan(t0 + DELAY / 2), IpamPlan::default());
        p.delete_node("n1");
        let t1 = t0 + DELAY;
        assert!(p.plan(t1).actions.is_empty());
        let plan = p.plan(t1 + DELAY);
        assert_eq!(
            plan.actions,
            vec![IpamAction::Release {
                node: "n1".into(),
                assignment: Some(assignment("n1", Some("10.1.0.0/24"), None)),
                cidrs: vec![net("10.1.0.0/24")],
            }]
        );
        apply(&mut p, &plan);
        // The released CIDR is the lowest free one again.
        p.upsert_node("n2");
        let plan = p.plan(t1 + DELAY);
        assert!(matches!(
            &plan.actions[..],
            [IpamAction::Assign { want, .. }] if want.ipv4 == Some(net("10.1.0.0/24"))
        ));
    }

    #[test]
    fn leftovers_of_missing_nodes_are_released_at_start() {
        let mut p = planner("10.1.0.0/16", None);
        // An assignment without a node, and a CIDR key without anything.
        p.upsert_assignment(assignment("gone", Some("10.1.0.0/24"), None));
        p.upsert_cidr(net("10.1.0.0/24"), "gone");
        p.upsert_cidr(net("10.1.9.0/24"), "half");
        let t0 = Instant::now();
        assert!(p.plan(t0).actions.is_empty());
        let plan = p.plan(t0 + DELAY);
        assert_eq!(
            plan.actions,
            vec![
                IpamAction::Release {
                    node: "gone".into(),
                    assignment: Some(assignment("gone", Some("10.1.0.0/24"), None)),
                    cidrs: vec![net("10.1.0.0/24")],
                },
                IpamAction::Release {
                    node: "half".into(),
                    assignment: None,
                    cidrs: vec![net("10.1.9.0/24")],
                },
            ]
        );
    }

    #[test]
    fn exhaustion_is_reported_and_cleared_by_a_release() {
        let mut p = IpamPlanner::new(
            vec![CidrPool::new(IpFamily::V4, net("10.1.0.0/23"), 24).unwrap()],
            Duration::ZERO,
        );
        for n in ["n1", "n2", "n3"] {
            p.upsert_node(n);
        }
        let now = Instant::now();
        let plan = p.plan(now);
        assert_eq!(plan.actions.len(), 2);
        assert_eq!(plan.waiting, vec![("n3".to_string(), IpFamily::V4)]);
        apply(&mut p, &plan);
        assert_eq!(p.usage()[0].free(), 0);
        p.delete_node("n1");
        let plan = p.plan(now);
        assert!(matches!(&plan.actions[..], [IpamAction::Release { .. }]));
        apply(&mut p, &plan);
        let plan = p.plan(now);
        assert_eq!(
            plan.actions,
            vec![IpamAction::Assign {
                node: "n3".into(),
                current: None,
                want: assignment("n3", Some("10.1.0.0/24"), None),
                create: vec![net("10.1.0.0/24")],
            }]
        );
        assert!(plan.waiting.is_empty());
    }

    #[test]
    fn cidrs_outside_the_pool_are_kept_and_never_handed_out_twice() {
        let mut p = planner("10.1.0.0/16", None);
        p.upsert_node("n1");
        p.upsert_node("n2");
        // n1 was assigned from an older, larger pool; a stray key holds 10.1.0.0.
        p.upsert_assignment(assignment("n1", Some("10.9.0.0/24"), None));
        p.upsert_cidr(net("10.9.0.0/24"), "n1");
        p.upsert_cidr(net("10.1.0.0/24"), "someone");
        p.upsert_node("someone");
        let plan = p.plan(Instant::now());
        let assigned: Vec<_> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                IpamAction::Assign { node, want, .. } => Some((node.as_str(), want.ipv4)),
                _ => None,
            })
            .collect();
        assert_eq!(
            assigned,
            vec![
                ("n2", Some(net("10.1.1.0/24"))),
                ("someone", Some(net("10.1.0.0/24")))
            ]
        );
    }
}
