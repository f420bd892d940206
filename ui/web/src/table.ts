// The flows table: newest on top, at most MAX_ROWS rows in the DOM, the
// filters applied client-side. The last BUFFER flows stay in memory, so a
// filter change redraws the table from them.

import type { Endpoint, FlowRow, Workload } from "./types";
import { anyIncludes, Filters } from "./filters";
import { clusterColor } from "./colors";

const MAX_ROWS = 1000;
const BUFFER = 5000;
const MAX_LATENCIES = 10000;

interface Entry {
  f: FlowRow;
  rx: number; // local arrival counter
  text?: string; // lower-cased visible text, for the free-text search
  src?: [string, string]; // [name, meta] as shown
  dst?: [string, string];
}

export class FlowsTable {
  private buffer: Entry[] = [];
  private queued: Entry[] = []; // received, not yet in the DOM (oldest first)
  private rx = 0;
  private rowsInDom = 0;
  private paused = false;
  private pauseRx = 0;
  private latencies: number[];

  constructor(
    private tbody: HTMLTableSectionElement,
    private pauseBtn: HTMLButtonElement,
    private filters: Filters,
    private workload: (id: string) => Workload | undefined,
    latencies: number[],
  ) {
    this.latencies = latencies;
    this.updatePauseButton();
  }

  add(flows: FlowRow[]): void {
    for (const f of flows) {
      const e: Entry = { f, rx: ++this.rx };
      this.buffer.push(e);
      if (!this.paused) this.queued.push(e);
    }
    if (this.buffer.length > BUFFER + 500) this.buffer.splice(0, this.buffer.length - BUFFER);
    if (this.queued.length > MAX_ROWS) this.queued.splice(0, this.queued.length - MAX_ROWS);
    if (this.paused) this.updatePauseButton();
  }

  /** Forget everything (a new snapshot replaces the state). */
  reset(): void {
    this.buffer = [];
    this.queued = [];
    this.tbody.textContent = "";
    this.rowsInDom = 0;
    if (this.paused) this.pauseRx = this.rx;
    this.updatePauseButton();
  }

  hasPending(): boolean {
    return this.queued.length > 0;
  }

  /** Puts the queued rows in the DOM (newest on top). */
  flush(): void {
    if (this.queued.length === 0) return;
    const q = this.queued;
    this.queued = [];
    const frag = document.createDocumentFragment();
    const inserted: FlowRow[] = [];
    // q is oldest first; the newest goes on top.
    for (let i = q.length - 1; i >= 0 && inserted.length < MAX_ROWS; i--) {
      const e = q[i];
      if (!this.matches(e)) continue;
      frag.appendChild(this.row(e));
      inserted.push(e.f);
    }
    if (inserted.length === 0) return;
    this.tbody.insertBefore(frag, this.tbody.firstChild);
    this.rowsInDom += inserted.length;
    this.trim();
    this.recordLatencies(inserted);
  }

  /** Redraws the table from the buffer (after a filter change). */
  rebuild(): void {
    this.queued = [];
    const frag = document.createDocumentFragment();
    let n = 0;
    for (let i = this.buffer.length - 1; i >= 0 && n < MAX_ROWS; i--) {
      const e = this.buffer[i];
      if (this.paused && e.rx > this.pauseRx) continue;
      if (!this.matches(e)) continue;
      frag.appendChild(this.row(e));
      n++;
    }
    this.tbody.textContent = "";
    this.tbody.appendChild(frag);
    this.rowsInDom = n;
  }

  togglePause(): void {
    if (!this.paused) {
      this.paused = true;
      this.pauseRx = this.rx;
    } else {
      this.paused = false;
      // Rows received while paused (at most MAX_ROWS of them) go in now.
      const fresh = this.buffer.filter((e) => e.rx > this.pauseRx);
      this.queued = fresh.slice(-MAX_ROWS);
      this.flush();
    }
    this.updatePauseButton();
  }

  isPaused(): boolean {
    return this.paused;
  }

  private updatePauseButton(): void {
    const b = this.pauseBtn;
    b.dataset.paused = String(this.paused);
    if (this.paused) {
      const n = Math.min(MAX_ROWS, this.rx - this.pauseRx);
      b.textContent = n > 0 ? `Resume · ${n} new` : "Resume";
      b.title = "The table is paused (the map keeps updating). Flows received meanwhile are kept (at most 1,000).";
    } else {
      b.textContent = "Pause";
      b.title = "Pause the flows table (the map keeps updating)";
    }
  }

  private trim(): void {
    while (this.rowsInDom > MAX_ROWS && this.tbody.lastChild) {
      this.tbody.removeChild(this.tbody.lastChild);
      this.rowsInDom--;
    }
  }

  private recordLatencies(rows: FlowRow[]): void {
    requestAnimationFrame(() => {
      const now = Date.now();
      const l = this.latencies;
      for (const f of rows) l.push(now - f.time_ms);
      if (l.length > MAX_LATENCIES) l.splice(0, l.length - MAX_LATENCIES);
    });
  }

  private matches(e: Entry): boolean {
    const f = this.filters;
    const s = e.f.source;
    const d = e.f.destination;
    // Cluster rule (see filters.ts): the world is never hidden; every other end must be in a checked cluster.
    if (!f.clusterShown(s.cluster ?? "") || !f.clusterShown(d.cluster ?? "")) return false;
    if (f.namespace !== "" && s.namespace !== f.namespace && d.namespace !== f.namespace) return false;
    if (f.verdict !== "" && e.f.verdict !== f.verdict) return false;
    if (f.label !== "" && !anyIncludes(s.labels, f.label) && !anyIncludes(d.labels, f.label)) return false;
    if (f.pod !== "" && !(s.pod ?? "").toLowerCase().includes(f.pod) && !(d.pod ?? "").toLowerCase().includes(f.pod)) return false;
    const sel = f.selection;
    if (sel) {
      if (sel.kind === "workload" && s.workload !== sel.id && d.workload !== sel.id) return false;
      if (sel.kind === "link" && e.f.link !== sel.id) return false;
    }
    if (f.search !== "" && !this.text(e).includes(f.search)) return false;
    return true;
  }

  private endpoint(ep: Endpoint): [string, string] {
    const w = ep.workload ? this.workload(ep.workload) : undefined;
    let name = ep.pod;
    if (!name) {
      if (w) name = w.kind === "world" ? "world" : w.name || w.kind;
      else name = ep.workload ? lastPart(ep.workload) : ep.ip || "?";
    }
    const meta: string[] = [];
    if (ep.namespace) meta.push(ep.namespace);
    if (!ep.pod && ep.ip) meta.push(ep.ip);
    return [name, meta.join(" · ")];
  }

  private text(e: Entry): string {
    if (e.text === undefined) {
      const f = e.f;
      e.src ??= this.endpoint(f.source);
      e.dst ??= this.endpoint(f.destination);
      e.text = [
        fmtTime(f.time_ms),
        e.src[0],
        e.src[1],
        f.source.cluster,
        e.dst[0],
        e.dst[1],
        f.destination.cluster,
        fmtPort(f),
        f.verdict,
        f.drop_reason ?? "",
        f.node,
      ]
        .join("\u0001")
        .toLowerCase();
    }
    return e.text;
  }

  private row(e: Entry): HTMLTableRowElement {
    const f = e.f;
    e.src ??= this.endpoint(f.source);
    e.dst ??= this.endpoint(f.destination);
    const tr = document.createElement("tr");
    tr.className = "flow";
    const ds = tr.dataset;
    ds.seq = String(f.seq);
    ds.verdict = f.verdict;
    ds.link = f.link ?? "";
    ds.source = f.source.workload ?? "";
    ds.destination = f.destination.workload ?? "";
    ds.clusterSource = f.source.cluster ?? "";
    ds.clusterDestination = f.destination.cluster ?? "";
    tr.appendChild(cell("time", fmtTime(f.time_ms)));
    tr.appendChild(endpointCell("source", e.src, f.source));
    tr.appendChild(endpointCell("destination", e.dst, f.destination));
    tr.appendChild(cell("port", fmtPort(f)));
    const v = cell("verdict", "");
    const badge = document.createElement("span");
    badge.className = "vbadge v-" + f.verdict.toLowerCase();
    badge.textContent = f.verdict;
    v.appendChild(badge);
    tr.appendChild(v);
    tr.appendChild(cell("drop-reason", f.drop_reason ?? ""));
    tr.appendChild(cell("node", f.node));
    if (f.summary) tr.title = f.summary + (f.is_reply ? " (reply)" : "") + (f.direction ? ` · ${f.direction}` : "");
    return tr;
  }
}

function cell(cls: string, text: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.className = cls;
  td.textContent = text;
  return td;
}

function endpointCell(cls: string, [name, meta]: [string, string], ep: Endpoint): HTMLTableCellElement {
  const td = document.createElement("td");
  td.className = cls;
  const n = document.createElement("span");
  n.className = "ep-name";
  n.textContent = name;
  td.appendChild(n);
  if (ep.cluster) {
    const c = document.createElement("span");
    c.className = "ctag";
    c.style.setProperty("--c", clusterColor(ep.cluster));
    c.textContent = ep.cluster;
    td.appendChild(c);
  }
  if (meta) {
    const m = document.createElement("span");
    m.className = "ep-meta";
    m.textContent = meta;
    td.appendChild(m);
  }
  const tip = [ep.ip && `IP ${ep.ip}${ep.port ? ":" + ep.port : ""}`, ep.identity && `identity ${ep.identity}`, ...(ep.labels ?? [])].filter(Boolean);
  td.title = tip.join("\n");
  return td;
}

function lastPart(id: string): string {
  const i = id.lastIndexOf("/");
  return i >= 0 ? id.slice(i + 1) : id;
}

function pad(n: number, w = 2): string {
  return String(n).padStart(w, "0");
}

export function fmtTime(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function fmtPort(f: FlowRow): string {
  return f.port > 0 ? `${f.port}/${f.protocol}` : f.protocol;
}
