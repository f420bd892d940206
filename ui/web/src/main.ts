// clustermesh Hubble UI: wires the live stream (api/events) to the service
// map, the flows table, the global services panel and the header.
// All URLs are relative so the page also works under a path prefix.

import "./app.css";
import type { RenderEntry, ServicesEvent, Status } from "./types";
import { Filters } from "./filters";
import { MapView, linkTitle } from "./map";
import { FlowsTable } from "./table";
import { ctag, renderServices } from "./services";
import { clusterColor, registerClusters } from "./colors";
import * as sanitize from "./sanitize";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error("missing #" + id);
  return e as T;
};

interface Hooks {
  cy: unknown;
  connected: boolean;
  renders: RenderEntry[];
  flowLatenciesMs: number[];
}

const filters = new Filters();
let selectionLabel = "";

const map = new MapView($("map"), {
  onSelect(kind, id) {
    if (kind === null) select(null);
    else if (kind === "workload") {
      const w = map.workloads.get(id);
      select({ kind, id, label: w ? `${w.name}${w.namespace ? " · " + w.namespace : ""}${w.cluster ? " · " + w.cluster : ""}` : id });
    } else {
      const l = map.links.get(id);
      const name = (wid: string) => map.workloads.get(wid)?.name ?? wid;
      select({ kind, id, label: l ? `${name(l.source)} → ${name(l.destination)} ${linkTitle(l)}` : id });
    }
  },
});

const cmui: Hooks = { cy: map.cy, connected: false, renders: [], flowLatenciesMs: [] };
(window as unknown as { cmui: Hooks }).cmui = cmui;

const table = new FlowsTable($("flows").querySelector("tbody")!, $<HTMLButtonElement>("pause"), filters, (id) => map.workloads.get(id), cmui.flowLatenciesMs);

// ---------------------------------------------------------------- state and frame loop

let backendUp = true; // false while the EventSource is down
let status: Status | null = null;
let statusDirty = false;
let services: ServicesEvent | null = null;
let filtersDirty = false;
let frameScheduled = false;
let badEvents = 0;

let rawFlows: string[] = []; // "flows" event data not parsed yet

function takeFlows(): void {
  const raw = rawFlows;
  rawFlows = [];
  for (const data of raw) {
    try {
      table.add(sanitize.flowsEvent(JSON.parse(data), badRecords("flows")).flows);
    } catch (err) {
      bad("flows", err);
    }
  }
}

function schedule(): void {
  if (frameScheduled) return;
  frameScheduled = true;
  requestAnimationFrame(frame);
}

// Map redraws are paced by their own cost: after a redraw that took C ms the
// next map update waits ~1.5 C ms (a 2,000-link graph redraws in 100-300 ms
// on a small machine; a small map still updates every frame or two). Snapshots and
// filter changes are never delayed; the table is not paced.
let mapNotBefore = 0;
let mapFlushStart = 0;
let mapTimer = 0;

function frame(): void {
  frameScheduled = false;
  let mapChanged = false;
  let mapReset = false;
  const now = performance.now();
  try {
    let mapDue = map.hasPending();
    if (mapDue && !map.resetPending() && !filtersDirty && now < mapNotBefore) {
      mapDue = false;
      if (!mapTimer) mapTimer = window.setTimeout(() => ((mapTimer = 0), schedule()), mapNotBefore - now);
    }
    if (mapDue) {
      mapFlushStart = now;
      const r = map.flush();
      mapChanged = r.changed;
      mapReset = r.reset;
      if (r.reset && backendUp) cmui.connected = true;
      if (r.newClusters || r.reset) updateClusterChecks();
      if (r.newNamespaces || r.reset) updateNamespaceSelect();
    }
    if (mapChanged || filtersDirty) {
      if (!mapChanged) mapFlushStart = now;
      map.applyFilters(filters);
      mapChanged = true;
    }
  } catch (err) {
    console.warn("cmui: map update failed", err);
  }
  if (mapChanged && (map.workloadCount() > 0 || cmui.connected)) afterMapRender();
  try {
    if (rawFlows.length && !mapReset) takeFlows();
    if (filtersDirty) table.rebuild();
    else if (!(mapReset && table.hasPending())) table.flush();
    // (a new snapshot is drawn first; the backlog of rows goes in right after the draw)
  } catch (err) {
    console.warn("cmui: table update failed", err);
  }
  filtersDirty = false;
  try {
    if (services) {
      renderServices($("services-list"), services);
      $("services-count").textContent = String(services.services.length);
      services = null;
    }
    if (statusDirty) {
      statusDirty = false;
      renderStatus();
    }
  } catch (err) {
    console.warn("cmui: panel update failed", err);
  }
  $("empty-state").hidden = !(cmui.connected && map.workloadCount() === 0);
}

/** Pushes a renders entry once cytoscape has drawn the change. */
let renderPending = false;
function afterMapRender(): void {
  if (renderPending) return; // one entry for every change made before cytoscape's next draw
  renderPending = true;
  let done = false;
  const push = () => {
    if (done) return;
    done = true;
    renderPending = false;
    map.cy.off("render", push);
    const t = performance.now();
    cmui.renders.push({ t, workloads: map.workloads.size, links: map.links.size });
    mapNotBefore = t + Math.min(2000, Math.max(0, 1.5 * (t - mapFlushStart) - 25));
    if (table.hasPending() || rawFlows.length) schedule();
    if (cmui.renders.length > 1000) cmui.renders.splice(0, cmui.renders.length - 1000);
  };
  map.cy.on("render", push);
  // Nothing to draw (e.g. an empty snapshot): cytoscape may not render at all.
  let frames = 0;
  const fallback = () => {
    if (done) return;
    if (++frames >= 4) push();
    else requestAnimationFrame(fallback);
  };
  requestAnimationFrame(fallback);
}

// ---------------------------------------------------------------- header and banner

function renderStatus(): void {
  const s = status;
  const dot = $("relay-status");
  const banner = $("banner");
  if (s) {
    const r = s.relay;
    dot.dataset.state = r.state;
    $("relay-text").textContent = `Relay ${r.name || "?"} · ${r.state}`;
    dot.title = [`Hubble Relay ${r.name} at ${r.address}: ${r.state}${r.error ? ` (${r.error})` : ""}`, ...s.relays.map((x) => `${x.name} ${x.address}: ${x.state}${x.error ? ` (${x.error})` : ""}`)].join("\n");
    $("flows-rate").textContent = s.flows_per_s.toFixed(s.flows_per_s < 10 ? 1 : 0);
    $("nodes-connected").textContent = String(s.nodes.connected);
    $("nodes-unavailable").textContent = String(s.nodes.unavailable);
    $("nodes-unavailable").parentElement!.classList.toggle("warn", s.nodes.unavailable > 0);
    const nw = $("nodes-warning");
    if (s.nodes.unavailable > 0) {
      const names = s.nodes.unavailable_names;
      nw.textContent = `${s.nodes.unavailable} node${s.nodes.unavailable === 1 ? "" : "s"} unavailable${names.length ? ": " + names.join(", ") : ""}. Their flows are missing from the map and the table.`;
      nw.hidden = false;
    } else nw.hidden = true;
  }
  let text = "";
  let state = "";
  if (!backendUp) {
    state = "backend";
    text = "Lost the connection to the clustermesh-ui backend; reconnecting...";
  } else if (s && s.relay.state !== "connected") {
    const r = s.relay;
    state = r.state;
    if (r.state === "connecting") text = `Connecting to Hubble Relay ${r.name} at ${r.address}...`;
    else {
      const retry = r.retry_in_ms != null ? ` Retrying in ${Math.max(1, Math.round(r.retry_in_ms / 1000))} s.` : " Retrying.";
      text = `Cannot reach Hubble Relay ${r.name} at ${r.address}: ${r.error ?? "unknown error"}.${retry}`;
    }
  }
  if (text) {
    banner.textContent = text;
    banner.dataset.state = state;
    banner.hidden = false;
  } else {
    banner.hidden = true;
    banner.textContent = "";
    delete banner.dataset.state;
  }
  if (!backendUp) {
    dot.dataset.state = "backend";
    $("relay-text").textContent = "Backend disconnected";
  } else if (!s) {
    dot.dataset.state = "connecting";
    $("relay-text").textContent = "Connecting…";
  }
}

// ---------------------------------------------------------------- filters

function updateClusterChecks(): void {
  const known = new Set<string>([...map.clusters(), ...(status?.clusters ?? [])]);
  registerClusters([...known]);
  const box = $("filter-cluster");
  const have = new Set([...box.querySelectorAll<HTMLInputElement>("input.cluster-toggle")].map((i) => i.value));
  const missing = [...known].filter((c) => !have.has(c)).sort();
  if (missing.length === 0) return;
  for (const c of missing) {
    const label = document.createElement("label");
    label.className = "cluster-check";
    const input = document.createElement("input");
    input.type = "checkbox";
    input.className = "cluster-toggle";
    input.value = c;
    input.checked = !filters.hiddenClusters.has(c);
    const t = ctag(c);
    label.append(input, t);
    label.style.setProperty("--c", clusterColor(c));
    box.appendChild(label);
  }
  // Keep them sorted.
  [...box.querySelectorAll("label.cluster-check")]
    .sort((a, b) => ((a.querySelector("input") as HTMLInputElement).value < (b.querySelector("input") as HTMLInputElement).value ? -1 : 1))
    .forEach((l) => box.appendChild(l));
  $("filter-cluster-empty").hidden = true;
}

function updateNamespaceSelect(): void {
  const sel = $<HTMLSelectElement>("filter-namespace");
  const have = new Set([...sel.options].map((o) => o.value));
  const nss = map.namespaces();
  if (nss.every((n) => have.has(n))) return;
  const cur = sel.value;
  for (const n of nss) {
    if (have.has(n)) continue;
    const o = document.createElement("option");
    o.value = n;
    o.textContent = n;
    sel.appendChild(o);
  }
  const opts = [...sel.options].slice(1).sort((a, b) => (a.value < b.value ? -1 : 1));
  opts.forEach((o) => sel.appendChild(o));
  sel.value = cur;
}

function filtersChanged(): void {
  filtersDirty = true;
  schedule();
}

function select(s: Filters["selection"], apply = true): void {
  filters.selection = s;
  selectionLabel = s ? s.label : "";
  const el = $("selection");
  el.textContent = s ? (s.kind === "workload" ? "Workload: " : "Link: ") + selectionLabel : "Nothing selected";
  el.dataset.kind = s ? s.kind : "";
  el.dataset.id = s ? s.id : "";
  el.classList.toggle("active", s !== null);
  $("clear-selection").classList.toggle("active", s !== null);
  if (apply) filtersChanged();
}

$("filter-cluster").addEventListener("change", (e) => {
  const t = e.target as HTMLInputElement;
  if (!t.classList.contains("cluster-toggle")) return;
  if (t.checked) filters.hiddenClusters.delete(t.value);
  else filters.hiddenClusters.add(t.value);
  filtersChanged();
});
$<HTMLSelectElement>("filter-namespace").addEventListener("change", (e) => {
  filters.namespace = (e.target as HTMLSelectElement).value;
  filtersChanged();
});
$<HTMLSelectElement>("filter-verdict").addEventListener("change", (e) => {
  filters.verdict = (e.target as HTMLSelectElement).value;
  filtersChanged();
});
for (const [id, key] of [
  ["filter-label", "label"],
  ["filter-pod", "pod"],
  ["filter-search", "search"],
] as const) {
  $<HTMLInputElement>(id).addEventListener("input", (e) => {
    filters[key] = (e.target as HTMLInputElement).value.trim().toLowerCase();
    filtersChanged();
  });
}
$("clear-selection").addEventListener("click", () => select(null));
$("pause").addEventListener("click", () => table.togglePause());
$("fit").addEventListener("click", () => map.fit());

// ---------------------------------------------------------------- the stream

function bad(kind: string, err: unknown): void {
  badEvents++;
  console.warn(`cmui: ignored a malformed "${kind}" event (${badEvents} so far)`, err);
}

function handle(kind: string, fn: (data: unknown) => void) {
  return (e: Event) => {
    try {
      fn(JSON.parse((e as MessageEvent).data));
    } catch (err) {
      bad(kind, err);
    }
  };
}

const badRecords = (kind: string) => (n: number) => {
  badEvents += n;
  console.warn(`cmui: skipped ${n} malformed record(s) in a "${kind}" event (${badEvents} so far)`);
};

let es: EventSource | null = null;
let reopenDelay = 1000;

/** Set by the inline script in index.html: the stream opened while app.js was loading. */
interface EarlyStream {
  es: EventSource;
  q: MessageEvent[];
  stop(): void;
}

function open(): void {
  const w = window as unknown as { __cmuiEarly?: EarlyStream };
  const early = w.__cmuiEarly;
  w.__cmuiEarly = undefined;
  let replay: MessageEvent[] = [];
  if (early && early.es.readyState !== EventSource.CLOSED) {
    es = early.es;
    replay = early.q;
    early.stop();
  } else {
    early?.es.close();
    es = new EventSource("api/events");
  }
  const src = es;
  src.onopen = () => {
    reopenDelay = 1000;
    if (!backendUp) {
      backendUp = true;
      statusDirty = true;
      schedule();
    }
  };
  src.onerror = () => {
    if (src.readyState === EventSource.OPEN) return;
    cmui.connected = false;
    if (backendUp) {
      backendUp = false;
      statusDirty = true;
      schedule();
    }
    // EventSource retries by itself unless the server answered with an error status; then we retry.
    if (src.readyState === EventSource.CLOSED && es === src) {
      es = null;
      setTimeout(open, reopenDelay);
      reopenDelay = Math.min(10000, reopenDelay * 2);
    }
  };
  const handlers: Record<string, (e: Event) => void> = {
    map: handle("map", (d) => {
      const ev = sanitize.mapEvent(d, badRecords("map"));
      if (ev.reset) {
        // A new snapshot replaces everything; the backlog of flows follows it.
        table.reset();
        rawFlows = [];
        if (!backendUp) {
          backendUp = true;
          statusDirty = true;
        }
      }
      map.enqueue(ev);
      schedule();
    }),
    // Flows are parsed when the table takes them (in the frame), so a big
    // backlog does not hold up the first draw of the map.
    flows: (e: Event) => {
      rawFlows.push((e as MessageEvent).data);
      schedule();
    },
    status: handle("status", (d) => {
      status = sanitize.statusEvent(d);
      statusDirty = true;
      if (status.clusters.some((c) => !document.querySelector(`input.cluster-toggle[value="${CSS.escape(c)}"]`))) updateClusterChecks();
      schedule();
    }),
    services: handle("services", (d) => {
      services = sanitize.servicesEvent(d);
      schedule();
    }),
  };
  for (const [type, h] of Object.entries(handlers)) src.addEventListener(type, h);
  for (const e of replay) handlers[e.type]?.(e);
}

select(null, false);
renderStatus();
open();
