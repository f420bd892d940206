// The service map: workload boxes on namespace blocks on cluster regions, the
// world outside every region, links as arrows coloured by verdict. Regions and
// blocks are plain background nodes sized and placed from the layout (no
// compound nodes: the layout computes every position itself, and keeping
// compound bounds up to date is a large part of cytoscape's first draw).

import cytoscape from "cytoscape";
import type { Link, MapEvent, Workload } from "./types";
import { anyIncludes, Filters } from "./filters";
import { BOX_H, BOX_W, Layout } from "./layout";
import { clusterColor } from "./colors";
import { patchDirtyStyleCache } from "./cyperf";

const BIG_GRAPH_EDGES = 800; // from here on, cheaper edges (haystack for in-cluster links)
const LOD_ZOOM = 0.5; // below this zoom, a big graph's links have no arrows

export interface MapCallbacks {
  onSelect(kind: "workload" | "link" | null, id: string): void;
}

export class MapView {
  readonly cy: cytoscape.Core;
  readonly workloads = new Map<string, Workload>();
  readonly links = new Map<string, Link>();
  private layout = new Layout();
  private pendingReset: MapEvent | null = null;
  private pendingW = new Map<string, Workload>();
  private pendingL = new Map<string, Link>();
  private big = false;
  private lod = false;
  private styled = false; // a stylesheet is set (chosen with the first data)
  private fitted = false;
  private userMoved = false;
  private filtered = false; // some element may carry hidden / faded / focus
  private knownNamespaces = new Set<string>();
  private knownClusters = new Set<string>();

  constructor(container: HTMLElement, cb: MapCallbacks) {
    this.cy = cytoscape({
      container,
      // No stylesheet yet: flush() sets the one that fits the first data.
      layout: { name: "preset" },
      minZoom: 0.05,
      maxZoom: 3,
      boxSelectionEnabled: false,
      autounselectify: true,
      autoungrabify: true, // boxes keep their computed place (the layout is deterministic)
      textureOnViewport: true,
      hideEdgesOnViewport: true,
      motionBlur: false,
      pixelRatio: 1,
    });
    patchDirtyStyleCache(this.cy);
    this.cy.on("zoom", () => this.updateLod());
    // Until the user pans or zooms, the automatic fit follows the pane's size
    // (e.g. when a banner appears above it).
    for (const ev of ["wheel", "mousedown", "touchstart"]) container.addEventListener(ev, () => (this.userMoved = true), { passive: true });
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(() => {
        this.cy.resize();
        if (this.fitted && !this.userMoved) this.quickFit();
      }).observe(container);
    }
    // One listener: cytoscape checks every listener for every event it
    // emits (tens of thousands while it styles and draws a big graph).
    this.cy.on("tap", (e) => {
      const t = e.target as cytoscape.Core | cytoscape.NodeSingular | cytoscape.EdgeSingular;
      if (t === this.cy) cb.onSelect(null, "");
      else if ((t as cytoscape.EdgeSingular).isEdge()) cb.onSelect("link", (t as cytoscape.EdgeSingular).id());
      else if (!(t as cytoscape.NodeSingular).hasClass("region")) cb.onSelect("workload", (t as cytoscape.NodeSingular).id());
    });
  }

  /** Queues a map event; applied by flush() (at most once per frame). */
  enqueue(ev: MapEvent): void {
    if (ev.reset) {
      this.pendingReset = ev;
      this.pendingW.clear();
      this.pendingL.clear();
      return;
    }
    for (const w of ev.workloads ?? []) this.pendingW.set(w.id, w);
    for (const l of ev.links ?? []) this.pendingL.set(l.id, l);
  }

  hasPending(): boolean {
    return this.pendingReset !== null || this.pendingW.size > 0 || this.pendingL.size > 0;
  }

  resetPending(): boolean {
    return this.pendingReset !== null;
  }

  /** Applies the queued events in one cytoscape batch. Returns what happened. */
  flush(): { changed: boolean; reset: boolean; newNamespaces: boolean; newClusters: boolean } {
    const reset = this.pendingReset;
    const ws = [...this.pendingW.values()];
    const ls = [...this.pendingL.values()];
    this.pendingReset = null;
    this.pendingW.clear();
    this.pendingL.clear();
    const nsBefore = this.knownNamespaces.size;
    const clBefore = this.knownClusters.size;
    if (!reset && ws.length === 0 && ls.length === 0) return { changed: false, reset: false, newNamespaces: false, newClusters: false };
    const cy = this.cy;
    // A big first snapshot starts with the low-detail stylesheet: swapping
    // stylesheets later re-styles every element (half a second at 2,000 links).
    if (cy.elements().empty()) {
      const links = reset ? (reset.links ?? []).length : ls.length;
      const lod = this.lod || links >= BIG_GRAPH_EDGES;
      if (!this.styled || lod !== this.lod) {
        this.lod = lod;
        this.styled = true;
        cy.style(lod ? STYLE_LOD : STYLE);
      }
    }
    cy.batch(() => {
      if (reset) this.applyReset(reset);
      this.upsert(ws, ls);
    });
    if (!this.fitted && this.workloads.size > 0) {
      this.fitted = true;
      this.quickFit();
    }
    this.updateLod();
    return {
      changed: true,
      reset: reset !== null,
      newNamespaces: this.knownNamespaces.size !== nsBefore,
      newClusters: this.knownClusters.size !== clBefore,
    };
  }

  private applyReset(ev: MapEvent): void {
    const cy = this.cy;
    const keepW = new Set((ev.workloads ?? []).map((w) => w.id));
    const keepL = new Set((ev.links ?? []).map((l) => l.id));
    for (const id of [...this.links.keys()]) {
      if (keepL.has(id)) continue;
      this.links.delete(id);
      cy.getElementById(id).remove();
    }
    for (const id of [...this.workloads.keys()]) {
      if (keepW.has(id)) continue;
      this.workloads.delete(id);
      this.layout.remove(id);
      cy.getElementById(id).remove();
    }
    this.layout.compact();
    // Sorted, so a first snapshot is laid out the same way every time.
    const ws = [...(ev.workloads ?? [])].sort(byClusterNsName);
    const sizes = new Map<string, number>();
    for (const w of ws) sizes.set(w.cluster + "\u0000" + w.namespace, (sizes.get(w.cluster + "\u0000" + w.namespace) ?? 0) + 1);
    for (const [k, n] of sizes) {
      const [c, ns] = k.split("\u0000");
      this.layout.hint(c, ns, n);
    }
    this.upsert(ws, ev.links ?? []);
    this.knownNamespaces = new Set([...this.workloads.values()].map((w) => w.namespace).filter((n) => n !== ""));
    this.knownClusters = new Set([...this.workloads.values()].map((w) => w.cluster).filter((c) => c !== ""));
  }

  private upsert(ws: Workload[], ls: Link[]): void {
    const cy = this.cy;
    const add: cytoscape.ElementDefinition[] = [];
    const newNodes = new Set<string>();

    const ensureWorkload = (w: Workload) => {
      const prev = this.workloads.get(w.id);
      this.workloads.set(w.id, w);
      const data = nodeData(w);
      if (prev || newNodes.has(w.id)) {
        if (newNodes.has(w.id)) {
          const def = add.find((d) => d.data.id === w.id); // rare: the same id twice in one batch
          if (def) def.data = data;
        } else {
          const n = cy.getElementById(w.id);
          // Moved to another namespace or cluster: a new slot (the box moves below).
          if (prev && (prev.cluster !== w.cluster || prev.namespace !== w.namespace)) this.layout.place(w.id, w.cluster, w.namespace);
          n.data(data);
          n.classes(nodeClasses(w));
        }
        return;
      }
      this.layout.place(w.id, w.cluster, w.namespace);
      newNodes.add(w.id);
      add.push({ group: "nodes", data, classes: nodeClasses(w) });
    };

    for (const w of ws) {
      if (w.namespace) this.knownNamespaces.add(w.namespace);
      if (w.cluster) this.knownClusters.add(w.cluster);
      ensureWorkload(w);
    }
    // A link to a workload we have not been told about yet gets a placeholder box.
    for (const l of ls) {
      for (const end of [l.source, l.destination]) {
        if (!this.workloads.has(end)) ensureWorkload(placeholder(end));
      }
    }

    const pos = this.layout.positions();
    for (const d of add) {
      const p = d.group === "nodes" ? pos.get(d.data.id as string) : undefined;
      if (p) d.position = { x: p.x, y: p.y };
    }
    // Existing boxes only move when a block above them grew or a column to the left widened.
    if (this.workloads.size > newNodes.size) {
      for (const [id, p] of pos) {
        if (newNodes.has(id)) continue;
        const n = cy.getElementById(id);
        if (n.empty()) continue;
        const cur = n.position();
        if (cur.x !== p.x || cur.y !== p.y) n.position({ x: p.x, y: p.y });
      }
    }
    this.syncRegions(add);

    let newLinks = 0;
    for (const l of ls) if (!this.links.has(l.id)) newLinks++;
    const big = this.links.size + newLinks >= BIG_GRAPH_EDGES;
    if (big !== this.big) {
      this.big = big;
      if (big) cy.edges().addClass("big");
      else cy.edges().removeClass("big");
    }
    for (const l of ls) {
      const prev = this.links.has(l.id);
      this.links.set(l.id, l);
      const src = this.workloads.get(l.source)!;
      const dst = this.workloads.get(l.destination)!;
      const cross = src.cluster !== dst.cluster;
      const data = edgeData(l, cross);
      const classes = l.verdict + (cross ? " cross" : "") + (big ? " big" : "");
      if (prev) {
        const e = cy.getElementById(l.id);
        e.data(data);
        e.classes(classes);
      } else {
        add.push({ group: "edges", data, classes });
      }
    }
    if (add.length) cy.add(add);
  }

  /**
   * Cluster regions and namespace blocks: background nodes placed and sized
   * from the layout (added, moved, resized or removed to match it).
   */
  private syncRegions(add: cytoscape.ElementDefinition[]): void {
    const cy = this.cy;
    const widths = this.layout.columnWidths();
    const want = new Set<string>();
    for (const r of this.layout.regions()) {
      want.add(r.id);
      const data: Record<string, unknown> = { id: r.id, label: r.ns || r.cluster, regionCluster: r.cluster, w: r.w, h: r.h };
      if (r.ns === "") {
        data.color = clusterColor(r.cluster);
        data.fontSize = Math.round(Math.max(20, Math.min(110, (widths.get(r.cluster) ?? 0) / 16)));
      } else data.regionNamespace = r.ns;
      const n = cy.getElementById(r.id);
      if (n.empty()) {
        add.push({ group: "nodes", data, position: { x: r.x, y: r.y }, classes: r.ns === "" ? "region cluster-region" : "region ns-region" });
        continue;
      }
      const p = n.position();
      if (p.x !== r.x || p.y !== r.y) n.position({ x: r.x, y: r.y });
      if (n.data("w") !== r.w || n.data("h") !== r.h || n.data("fontSize") !== data.fontSize) n.data(data);
    }
    if (cy.nodes(".region").length !== want.size) cy.nodes(".region").filter((n) => !want.has(n.id())).remove();
  }

  namespaces(): string[] {
    return [...this.knownNamespaces].sort();
  }

  clusters(): string[] {
    return [...this.knownClusters].sort();
  }

  /**
   * Level of detail: a large graph seen from afar drops the link arrows (the
   * most expensive part of drawing 2,000 links); they come back when zoomed in.
   */
  private updateLod(): void {
    const want = this.big && this.cy.zoom() < LOD_ZOOM;
    if (want === this.lod) return;
    this.lod = want;
    this.cy.style(want ? STYLE_LOD : STYLE);
  }

  /**
   * Fits the view from the layout's own positions: cytoscape's fit() on a
   * fresh graph computes every element's bounding box (labels, edges),
   * which costs seconds with thousands of edges.
   */
  private quickFit(): void {
    const ext = this.layout.extent();
    if (!ext) return;
    let { x1, y1, x2, y2 } = ext;
    // Box half-sizes plus the region paddings and labels.
    x1 -= 130;
    x2 += 130;
    y1 -= 110;
    y2 += 70;
    const w = this.cy.width();
    const h = this.cy.height();
    if (w <= 0 || h <= 0) return;
    const pad = 30;
    const zoom = Math.max(this.cy.minZoom(), Math.min(1.25, (w - 2 * pad) / (x2 - x1), (h - 2 * pad) / (y2 - y1)));
    this.cy.viewport({ zoom, pan: { x: w / 2 - zoom * (x1 + x2) / 2, y: h / 2 - zoom * (y1 + y2) / 2 } });
  }

  fit(): void {
    this.userMoved = false;
    const vis = this.cy.elements(":visible");
    this.cy.fit(vis.length ? vis : undefined, 30);
  }

  /** Applies the filters (display) and the selection (highlight) to every element. */
  applyFilters(f: Filters): void {
    const cy = this.cy;
    const narrowing = f.narrowing();
    // Nothing filtered or selected, now or before: new elements are shown as they are.
    const active = narrowing || f.hiddenClusters.size > 0 || f.selection !== null;
    if (!active && !this.filtered) return;
    this.filtered = active;
    const nodeMatch = new Map<string, boolean>();
    const search = f.search;
    const matches = (w: Workload): boolean => {
      let m = nodeMatch.get(w.id);
      if (m !== undefined) return m;
      m =
        f.clusterShown(w.cluster) &&
        (f.namespace === "" || w.namespace === f.namespace) &&
        (f.label === "" || anyIncludes(w.labels, f.label)) &&
        (f.pod === "" || anyIncludes(w.pods, f.pod)) &&
        (search === "" || w.name.toLowerCase().includes(search) || w.namespace.toLowerCase().includes(search) || w.cluster.toLowerCase().includes(search) || anyIncludes(w.pods, search));
      nodeMatch.set(w.id, m);
      return m;
    };
    const visibleNode = new Set<string>();
    const visibleLink = new Set<string>();
    for (const l of this.links.values()) {
      const s = this.workloads.get(l.source);
      const d = this.workloads.get(l.destination);
      if (!s || !d) continue;
      if (!f.clusterShown(s.cluster) || !f.clusterShown(d.cluster)) continue;
      if (f.verdict === "FORWARDED" && !(l.forwarded > 0)) continue;
      if (f.verdict === "DROPPED" && !(l.dropped > 0)) continue;
      if (narrowing && !matches(s) && !matches(d)) continue;
      visibleLink.add(l.id);
      visibleNode.add(s.id);
      visibleNode.add(d.id);
    }
    for (const w of this.workloads.values()) {
      if (visibleNode.has(w.id)) continue;
      // Without a narrowing filter every box of a shown cluster stays, talking or not;
      // with one (except the verdict), boxes that match stay even without a matching link.
      if (!narrowing ? f.clusterShown(w.cluster) : f.verdict === "" && matches(w)) visibleNode.add(w.id);
    }

    // Selection highlight: the selected box or link, its ends and its links.
    const sel = f.selection;
    let focus: Set<string> | null = null;
    if (sel) {
      focus = new Set<string>([sel.id]);
      if (sel.kind === "workload") {
        for (const l of this.links.values()) {
          if (l.source === sel.id || l.destination === sel.id) {
            focus.add(l.id);
            focus.add(l.source);
            focus.add(l.destination);
          }
        }
      } else {
        const l = this.links.get(sel.id);
        if (l) {
          focus.add(l.source);
          focus.add(l.destination);
        }
      }
    }

    cy.batch(() => {
      const regionVisible = new Set<string>();
      for (const id of visibleNode) {
        const w = this.workloads.get(id);
        if (!w || w.cluster === "") continue;
        regionVisible.add("cluster:" + w.cluster);
        if (w.namespace !== "") regionVisible.add(`ns:${w.cluster}/${w.namespace}`);
      }
      cy.nodes().forEach((n) => {
        if (n.hasClass("region")) return;
        const id = n.id();
        setClass(n, "hidden", !visibleNode.has(id));
        setClass(n, "faded", focus !== null && !focus.has(id));
        setClass(n, "focus", sel !== null && sel.id === id);
      });
      cy.nodes(".region").forEach((r) => setClass(r, "hidden", !regionVisible.has(r.id())));
      cy.edges().forEach((e) => {
        const id = e.id();
        setClass(e, "hidden", !visibleLink.has(id));
        setClass(e, "faded", focus !== null && !focus.has(id));
        setClass(e, "focus", sel !== null && sel.id === id);
      });
    });
  }

  workloadCount(): number {
    return this.workloads.size;
  }
}

function setClass(el: cytoscape.NodeSingular | cytoscape.EdgeSingular, cls: string, on: boolean): void {
  if (el.hasClass(cls) !== on) {
    if (on) el.addClass(cls);
    else el.removeClass(cls);
  }
}

function byClusterNsName(a: Workload, b: Workload): number {
  return cmp(a.cluster, b.cluster) || cmp(a.namespace, b.namespace) || cmp(a.name, b.name) || cmp(a.id, b.id);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function placeholder(id: string): Workload {
  const parts = id.split("/");
  const [cluster, namespace, name] =
    parts.length >= 3 ? [parts[0], parts[1], parts.slice(2).join("/")] : parts.length === 2 ? [parts[0], "", parts[1]] : ["", "", id];
  const kind = id === "world" ? "world" : "unknown";
  return { id, cluster, namespace, name, kind, labels: [], identities: [], pods: [], flows: 0 };
}

function shorten(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

function nodeData(w: Workload): Record<string, unknown> {
  const second = w.namespace !== "" ? w.namespace : w.kind === "world" ? "outside the mesh" : w.cluster !== "" ? (w.kind === w.name ? w.cluster : `${w.kind} · ${w.cluster}`) : w.kind;
  const d: Record<string, unknown> = {
    id: w.id,
    cluster: w.cluster,
    namespace: w.namespace,
    kind: w.kind,
    label: w.name || w.id, // the box title (contract); the box shows `display`
    display: shorten(w.name || w.id, 24) + "\n" + shorten(second, 26),
    name: w.name,
    flows: w.flows,
  };
  return d;
}

function nodeClasses(w: Workload): string {
  switch (w.kind) {
    case "world":
    case "host":
    case "remote-node":
    case "health":
    case "unknown":
      return "wl k-" + w.kind;
    default:
      return "wl k-workload";
  }
}

export function linkTitle(l: Link): string {
  const count = l.forwarded + l.dropped + l.other;
  const port = l.port > 0 ? `${l.port}/${l.protocol}` : l.protocol;
  return `${port} ×${count}`;
}

function edgeData(l: Link, cross: boolean): Record<string, unknown> {
  const count = l.forwarded + l.dropped + l.other;
  return {
    id: l.id,
    source: l.source,
    target: l.destination,
    verdict: l.verdict,
    count,
    forwarded: l.forwarded,
    dropped: l.dropped,
    port: l.port,
    protocol: l.protocol,
    label: linkTitle(l),
    cross,
    // Log scale: 1 flow -> ~1.8 px, 1,000 -> ~5 px; cross-cluster links 2 px thicker.
    w: 1.4 + Math.min(4, Math.log10(count + 1) * 1.2) + (cross ? 2 : 0),
  };
}

const FORWARDED = "#5f9e72";
const DROPPED = "#dc2626";
const MIXED = "#ea8a00";
const FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif";

type Block = cytoscape.StylesheetStyle;

/**
 * The stylesheet. With lod (a big graph seen from afar) the labels of boxes
 * and links and the in-cluster link arrows are left out altogether: at that
 * zoom they would be below their min-zoomed-font-size anyway, and every
 * property left out is work cytoscape does not do for 2,500 elements.
 */
function buildStyle(lod: boolean): cytoscape.StylesheetJson {
  const s: Block[] = [
    {
      selector: "node.wl",
      style: {
        shape: "round-rectangle",
        width: BOX_W,
        height: BOX_H,
        "background-color": "#ffffff",
        "border-width": 1.5,
        "border-color": "#94a3b8",
      },
    },
  ];
  if (!lod) {
    s.push({
      selector: "node.wl",
      style: {
        label: "data(display)",
        "text-wrap": "wrap",
        "text-max-width": "158px",
        "text-valign": "center",
        "text-halign": "center",
        "font-size": 11,
        "font-family": FONT,
        color: "#1e293b",
        "line-height": 1.25,
        "min-zoomed-font-size": 6,
      },
    });
  }
  s.push(
    {
      selector: "node.k-world",
      style: { shape: "round-hexagon", width: 150, height: 56, "background-color": "#dbeafe", "border-color": "#2563eb", "border-width": 2, color: "#1e3a8a", "font-weight": "bold" },
    },
    { selector: "node.k-host, node.k-remote-node", style: { "background-color": "#f1f5f9", "border-color": "#475569", "border-style": "dashed" } },
    { selector: "node.k-health", style: { "background-color": "#fdf4ff", "border-color": "#a21caf", "border-style": "dotted" } },
    { selector: "node.k-unknown", style: { "background-color": "#fafafa", "border-color": "#a3a3a3", "border-style": "dashed", color: "#525252" } },
    {
      selector: "node.cluster-region",
      style: {
        shape: "round-rectangle",
        "background-color": "data(color)",
        "background-opacity": 0.06,
        "border-color": "data(color)",
        "border-width": 2,
        "border-opacity": 0.8,
        width: "data(w)",
        height: "data(h)",
        label: "data(label)",
        "text-valign": "top",
        "text-halign": "center",
        "text-margin-y": -6,
        "font-size": "data(fontSize)",
        "font-weight": "bold",
        "font-family": FONT,
        color: "data(color)",
        "min-zoomed-font-size": 3,
        events: "no",
        "z-compound-depth": "bottom",
        "z-index": 0,
      },
    },
    {
      selector: "node.ns-region",
      style: {
        shape: "round-rectangle",
        "background-color": "#ffffff",
        "background-opacity": 0.75,
        "border-color": "#cbd5e1",
        "border-width": 1,
        "border-style": "dashed",
        width: "data(w)",
        height: "data(h)",
        label: "data(label)",
        "text-valign": "top",
        "text-halign": "center",
        "text-margin-y": -3,
        "font-size": 12,
        "font-family": FONT,
        color: "#475569",
        "min-zoomed-font-size": 5,
        events: "no",
        "z-compound-depth": "bottom",
        "z-index": 1,
      },
    },
    {
      selector: "edge",
      style: {
        width: "data(w)",
        "line-color": FORWARDED,
        "curve-style": "bezier",
        opacity: 0.85,
      },
    },
  );
  if (!lod) {
    s.push({
      selector: "edge",
      style: {
        "target-arrow-shape": "triangle",
        "target-arrow-color": FORWARDED,
        label: "data(label)",
        "font-size": 10,
        "min-zoomed-font-size": 9,
        color: "#334155",
        "text-background-color": "#ffffff",
        "text-background-opacity": 0.85,
      },
    });
  } else {
    s.push({ selector: "edge.cross", style: { "target-arrow-shape": "triangle", "target-arrow-color": FORWARDED } });
  }
  s.push(
    { selector: "edge.dropped", style: { "line-color": DROPPED, "target-arrow-color": DROPPED, "z-index": 2 } },
    { selector: "edge.mixed", style: { "line-color": MIXED, "target-arrow-color": MIXED, "line-style": "dashed", "line-dash-pattern": [7, 4], "z-index": 2 } },
    // Cross-cluster links: thicker (see edgeData) and curved, on top.
    { selector: "edge.cross", style: { "curve-style": "unbundled-bezier", "control-point-distances": 60, "control-point-weights": 0.5, "z-index": 3, opacity: 0.95 } },
    // Large graphs: in-cluster links become haystack edges (no per-pair
    // control point work; the arrow sits mid-line, and only when zoomed in).
    { selector: "edge.big", style: { "curve-style": "haystack", "haystack-radius": 0, opacity: 0.6 } },
  );
  if (!lod) {
    s.push(
      { selector: "edge.big", style: { "target-arrow-shape": "none", "mid-target-arrow-shape": "triangle", "mid-target-arrow-color": FORWARDED } },
      { selector: "edge.big.dropped", style: { "mid-target-arrow-color": DROPPED } },
      { selector: "edge.big.mixed", style: { "mid-target-arrow-color": MIXED } },
      { selector: "edge.big.cross", style: { "target-arrow-shape": "triangle", "mid-target-arrow-shape": "none" } },
    );
  }
  s.push(
    { selector: "edge.big.cross", style: { "curve-style": "unbundled-bezier", opacity: 0.9 } },
    { selector: "node.focus", style: { "border-color": "#f59e0b", "border-width": 4 } },
    { selector: "edge.focus", style: { "underlay-color": "#f59e0b", "underlay-opacity": 0.35, "underlay-padding": 4, opacity: 1, "z-index": 9 } },
    { selector: ".faded", style: { opacity: 0.15 } },
    { selector: "node.wl.faded", style: { opacity: 0.3 } },
    { selector: ".hidden", style: { display: "none" } },
  );
  return s;
}

const STYLE = buildStyle(false);
const STYLE_LOD = buildStyle(true);
