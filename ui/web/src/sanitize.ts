// Light validation of incoming events: anything not shaped like the contract
// throws (the caller counts and skips the event); optional fields get defaults
// so one odd record cannot break the map or the table later.

import type { Endpoint, FlowRow, FlowsEvent, Link, MapEvent, ServicesEvent, Status, Workload } from "./types";

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
const str = (v: unknown, d = ""): string => (typeof v === "string" ? v : v == null ? d : String(v));
const num = (v: unknown, d = 0): number => (typeof v === "number" && isFinite(v) ? v : d);
const strs = (v: unknown): string[] => (Array.isArray(v) ? v.map((x) => str(x)) : []);
const arr = (v: unknown, what: string): unknown[] => {
  if (v == null) return [];
  if (!Array.isArray(v)) throw new Error(`${what} is not an array`);
  return v;
};

function workload(v: unknown): Workload | null {
  if (!isObj(v) || typeof v.id !== "string" || v.id === "") return null;
  return {
    id: v.id,
    cluster: str(v.cluster),
    namespace: str(v.namespace),
    name: str(v.name, v.id),
    kind: str(v.kind, "unknown"),
    labels: strs(v.labels),
    identities: Array.isArray(v.identities) ? v.identities.map((x) => num(x)) : [],
    pods: strs(v.pods),
    flows: num(v.flows),
  };
}

function link(v: unknown): Link | null {
  if (!isObj(v) || typeof v.id !== "string" || typeof v.source !== "string" || typeof v.destination !== "string") return null;
  if (v.id === "" || v.source === "" || v.destination === "") return null;
  const forwarded = num(v.forwarded);
  const dropped = num(v.dropped);
  let verdict = str(v.verdict);
  if (verdict !== "forwarded" && verdict !== "dropped" && verdict !== "mixed") verdict = dropped > 0 ? (forwarded > 0 ? "mixed" : "dropped") : "forwarded";
  return {
    id: v.id,
    source: v.source,
    destination: v.destination,
    port: num(v.port),
    protocol: str(v.protocol, "other"),
    forwarded,
    dropped,
    other: num(v.other),
    verdict,
    drop_reason: v.drop_reason == null ? null : str(v.drop_reason),
    last_seen_ms: num(v.last_seen_ms),
  };
}

export function mapEvent(v: unknown, bad: (n: number) => void): MapEvent {
  if (!isObj(v)) throw new Error("map event is not an object");
  const raw = arr(v.workloads, "workloads");
  const rawL = arr(v.links, "links");
  const workloads = raw.map(workload).filter((w): w is Workload => w !== null);
  const links = rawL.map(link).filter((l): l is Link => l !== null);
  const skipped = raw.length - workloads.length + rawL.length - links.length;
  if (skipped) bad(skipped);
  return { reset: v.reset === true, workloads, links };
}

function endpoint(v: unknown): Endpoint {
  const o = isObj(v) ? v : {};
  return {
    cluster: str(o.cluster),
    namespace: str(o.namespace),
    pod: str(o.pod),
    ip: str(o.ip),
    port: num(o.port),
    identity: num(o.identity),
    labels: strs(o.labels),
    workload: str(o.workload),
  };
}

function flow(v: unknown): FlowRow | null {
  if (!isObj(v) || !isObj(v.source) || !isObj(v.destination)) return null;
  return {
    seq: num(v.seq),
    time_ms: num(v.time_ms, Date.now()),
    verdict: str(v.verdict, "VERDICT_UNKNOWN"),
    drop_reason: v.drop_reason == null || v.drop_reason === "" ? null : str(v.drop_reason),
    node: str(v.node),
    source: endpoint(v.source),
    destination: endpoint(v.destination),
    protocol: str(v.protocol),
    port: num(v.port),
    tcp_flags: v.tcp_flags == null ? null : str(v.tcp_flags),
    is_reply: v.is_reply === true,
    direction: str(v.direction),
    summary: str(v.summary),
    link: v.link == null || v.link === "" ? null : str(v.link),
  };
}

export function flowsEvent(v: unknown, bad: (n: number) => void): FlowsEvent {
  if (!isObj(v)) throw new Error("flows event is not an object");
  const raw = arr(v.flows, "flows");
  const flows = raw.map(flow).filter((f): f is FlowRow => f !== null);
  if (flows.length !== raw.length) bad(raw.length - flows.length);
  return { flows };
}

export function statusEvent(v: unknown): Status {
  if (!isObj(v) || !isObj(v.relay)) throw new Error("status event has no relay");
  const r = v.relay;
  const n = isObj(v.nodes) ? v.nodes : {};
  const state = str(r.state);
  return {
    relay: {
      state: state === "connected" || state === "connecting" || state === "unreachable" ? state : "unreachable",
      name: str(r.name),
      address: str(r.address),
      error: r.error == null ? null : str(r.error),
      retry_in_ms: r.retry_in_ms == null ? null : num(r.retry_in_ms),
      since_ms: num(r.since_ms),
    },
    relays: arr(v.relays, "relays")
      .filter(isObj)
      .map((x) => ({ name: str(x.name), address: str(x.address), state: str(x.state), error: x.error == null ? null : str(x.error) })),
    nodes: { connected: num(n.connected), unavailable: num(n.unavailable), unavailable_names: strs(n.unavailable_names) },
    flows_per_s: num(v.flows_per_s),
    flows_seen: num(v.flows_seen),
    clusters: strs(v.clusters),
  };
}

export function servicesEvent(v: unknown): ServicesEvent {
  if (!isObj(v)) throw new Error("services event is not an object");
  return {
    services: arr(v.services, "services")
      .filter((s): s is Record<string, unknown> => isObj(s) && typeof s.name === "string")
      .map((s) => ({
        name: s.name as string,
        frontend: str(s.frontend),
        protocol: str(s.protocol),
        backends: arr(s.backends, "backends")
          .filter(isObj)
          .map((b) => ({ cluster: str(b.cluster), addresses: strs(b.addresses) })),
        views: arr(s.views, "views")
          .filter(isObj)
          .map((w) => ({ cluster: str(w.cluster), node: str(w.node), active: strs(w.active), mode: str(w.mode, "none"), reason: str(w.reason) })),
      })),
    sources: arr(v.sources, "sources")
      .filter(isObj)
      .map((x) => ({ cluster: str(x.cluster), node: str(x.node), ok: x.ok === true, error: x.error == null ? null : str(x.error) })),
  };
}
