// One colour per cluster, in the order clusters are first seen (sorted within
// a snapshot), shared by the map regions, the checkboxes and the table tags.

const PALETTE = [
  "#2563eb", // blue
  "#9333ea", // purple
  "#0d9488", // teal
  "#c2410c", // orange
  "#be185d", // pink
  "#4d7c0f", // olive
  "#0369a1", // sky
  "#a16207", // amber-brown
];

const assigned = new Map<string, string>();

export function clusterColor(cluster: string): string {
  if (cluster === "") return "#64748b";
  let c = assigned.get(cluster);
  if (!c) {
    c = PALETTE[assigned.size % PALETTE.length];
    assigned.set(cluster, c);
  }
  return c;
}

export function registerClusters(clusters: readonly string[]): void {
  for (const c of [...clusters].sort()) clusterColor(c);
}
