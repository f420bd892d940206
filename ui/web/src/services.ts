// The global services panel: one card per service, its backends per cluster,
// and for each viewing cluster which cluster(s) serve it now, and why.

import type { ServicesEvent } from "./types";
import { clusterColor } from "./colors";

export function renderServices(root: HTMLElement, ev: ServicesEvent): void {
  const frag = document.createDocumentFragment();
  const services = [...(ev.services ?? [])].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const failing = (ev.sources ?? []).filter((s) => !s.ok);
  if (failing.length) {
    const w = el("div", "services-sources");
    w.textContent = "Not answering: " + failing.map((s) => `${s.cluster}/${s.node}${s.error ? ` (${s.error})` : ""}`).join(", ");
    frag.appendChild(w);
  }
  if (services.length === 0) {
    const e = el("div", "services-empty");
    e.textContent = "No global services.";
    frag.appendChild(e);
  }
  for (const s of services) {
    const card = el("div", "service");
    card.dataset.name = s.name;
    const head = el("div", "svc-head");
    head.appendChild(text("span", "svc-name", s.name));
    head.appendChild(text("span", "svc-frontend", `${s.frontend}${s.protocol ? " " + s.protocol : ""}`));
    card.appendChild(head);

    const backends = el("div", "backends");
    backends.appendChild(text("div", "svc-section", "Backends"));
    for (const b of s.backends ?? []) {
      const bc = el("div", "backend-cluster");
      bc.dataset.cluster = b.cluster;
      bc.appendChild(ctag(b.cluster));
      const addrs = b.addresses ?? [];
      bc.appendChild(text("span", "addresses" + (addrs.length ? "" : " none"), addrs.length ? addrs.join(", ") : "no backends"));
      backends.appendChild(bc);
    }
    if (!s.backends?.length) backends.appendChild(text("div", "addresses none", "no backends in any cluster"));
    card.appendChild(backends);

    const views = el("div", "views");
    views.appendChild(text("div", "svc-section", "Served from (per viewing cluster)"));
    for (const v of s.views ?? []) {
      const row = el("div", "view mode-" + v.mode);
      row.dataset.cluster = v.cluster;
      row.dataset.active = (v.active ?? []).join(",");
      row.dataset.mode = v.mode;
      const line = el("div", "view-line");
      line.appendChild(ctag(v.cluster));
      if (v.node) line.appendChild(text("span", "view-node", v.node));
      line.appendChild(text("span", "arrow", "→"));
      const act = el("span", "view-active");
      if ((v.active ?? []).length === 0) act.textContent = "nobody";
      for (const a of v.active ?? []) act.appendChild(ctag(a));
      line.appendChild(act);
      line.appendChild(text("span", "mode", v.mode));
      row.appendChild(line);
      row.appendChild(text("div", "reason", v.reason));
      views.appendChild(row);
    }
    if (!s.views?.length) views.appendChild(text("div", "addresses none", "no agent answered"));
    card.appendChild(views);
    frag.appendChild(card);
  }
  root.textContent = "";
  root.appendChild(frag);
}

function el(tag: string, cls: string): HTMLElement {
  const e = document.createElement(tag);
  e.className = cls;
  return e;
}

function text(tag: string, cls: string, t: string): HTMLElement {
  const e = el(tag, cls);
  e.textContent = t;
  return e;
}

export function ctag(cluster: string): HTMLElement {
  const t = text("span", "ctag", cluster);
  t.style.setProperty("--c", clusterColor(cluster));
  return t;
}
