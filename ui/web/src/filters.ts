// Client-side filter state shared by the service map and the flows table.
//
// Cluster rule (same for map links and table flows): an end whose cluster is ""
// (the world, and anything else outside every cluster) is never hidden; every
// other end must belong to a checked cluster. So a flow or link is shown when
// none of its in-cluster ends is in an unchecked cluster (a c1 -> world flow is
// shown while c1 is checked; a c1 -> c2 flow disappears as soon as c1 or c2 is
// unchecked).

export interface Selection {
  kind: "workload" | "link";
  id: string;
  label: string;
}

export class Filters {
  hiddenClusters = new Set<string>();
  namespace = "";
  verdict = ""; // "", "FORWARDED", "DROPPED"
  label = ""; // lower-cased substring
  pod = ""; // lower-cased substring
  search = ""; // lower-cased substring
  selection: Selection | null = null;

  clusterShown(cluster: string): boolean {
    return cluster === "" || !this.hiddenClusters.has(cluster);
  }

  /** True when a filter other than the cluster checkboxes narrows what is shown. */
  narrowing(): boolean {
    return this.namespace !== "" || this.verdict !== "" || this.label !== "" || this.pod !== "" || this.search !== "";
  }
}

export function anyIncludes(list: readonly string[] | undefined, needle: string): boolean {
  if (!list) return false;
  for (const s of list) if (s.toLowerCase().includes(needle)) return true;
  return false;
}
