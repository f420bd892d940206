// Shapes of the server-sent events, exactly as in ui/API.md.

export type RelayState = "connected" | "connecting" | "unreachable";

export interface RelayStatus {
  state: RelayState;
  name: string;
  address: string;
  error: string | null;
  retry_in_ms: number | null;
  since_ms: number;
}

export interface RelayEntry {
  name: string;
  address: string;
  state: "connected" | "standby" | "unreachable" | string;
  error: string | null;
}

export interface Status {
  relay: RelayStatus;
  relays: RelayEntry[];
  nodes: { connected: number; unavailable: number; unavailable_names: string[] };
  flows_per_s: number;
  flows_seen: number;
  clusters: string[];
}

export type WorkloadKind = "workload" | "world" | "host" | "remote-node" | "health" | "unknown";

export interface Workload {
  id: string;
  cluster: string;
  namespace: string;
  name: string;
  kind: WorkloadKind | string;
  labels: string[];
  identities: number[];
  pods: string[];
  flows: number;
}

export interface Link {
  id: string;
  source: string;
  destination: string;
  port: number;
  protocol: string;
  forwarded: number;
  dropped: number;
  other: number;
  verdict: "forwarded" | "dropped" | "mixed" | string;
  drop_reason: string | null;
  last_seen_ms: number;
}

export interface MapEvent {
  reset: boolean;
  workloads: Workload[];
  links: Link[];
}

export interface Endpoint {
  cluster: string;
  namespace: string;
  pod: string;
  ip: string;
  port: number;
  identity: number;
  labels: string[];
  workload: string;
}

export interface FlowRow {
  seq: number;
  time_ms: number;
  verdict: string;
  drop_reason: string | null;
  node: string;
  source: Endpoint;
  destination: Endpoint;
  protocol: string;
  port: number;
  tcp_flags: string | null;
  is_reply: boolean;
  direction: string;
  summary: string;
  link: string | null;
}

export interface FlowsEvent {
  flows: FlowRow[];
}

export interface ServiceView {
  cluster: string;
  node: string;
  active: string[];
  mode: "local" | "remote" | "failover" | "all" | "local-service" | "none" | string;
  reason: string;
}

export interface GlobalService {
  name: string;
  frontend: string;
  protocol: string;
  backends: { cluster: string; addresses: string[] }[];
  views: ServiceView[];
}

export interface ServicesEvent {
  services: GlobalService[];
  sources: { cluster: string; node: string; ok: boolean; error: string | null }[];
}

export interface RenderEntry {
  t: number;
  workloads: number;
  links: number;
}
