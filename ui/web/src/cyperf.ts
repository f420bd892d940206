// A performance patch for cytoscape (pinned at 3.35.0 in package.json).
//
// Every style property cytoscape applies to an element calls
// dirtyStyleCache(), which, in a graph with compound nodes, builds four
// collections (self + descendants + parents + their connected edges) just to
// null a cache field on each. With 500 boxes in 12 compounds and 2,000 edges
// that is ~300,000 short-lived collections on the first draw (about half of
// the first render's time). This replacement clears exactly the same caches
// by walking the same private links, without allocating collections.
// If the internals it relies on are not there, it leaves cytoscape alone.

import type cytoscape from "cytoscape";

interface Priv {
  styleCache: unknown;
  group: "nodes" | "edges";
  parent?: { _private: Priv } | null;
  children?: { _private: Priv }[];
  edges?: { _private: Priv }[];
}

export function patchDirtyStyleCache(cy: cytoscape.Core): void {
  const proto = Object.getPrototypeOf(cy.collection()) as Record<string, unknown>;
  const probe = cy.add({ group: "nodes", data: { id: "__cmui_probe__" } });
  const p = (probe[0] as unknown as { _private?: Priv })._private;
  const ok = typeof proto.dirtyStyleCache === "function" && p && Array.isArray(p.children) && Array.isArray(p.edges) && "parent" in p;
  cy.remove(probe);
  if (!ok) return;

  const clearNode = (n: Priv) => {
    n.styleCache = null;
    const es = n.edges!;
    for (let i = 0; i < es.length; i++) es[i]._private.styleCache = null;
  };
  const clearDown = (n: Priv) => {
    const ch = n.children!;
    for (let i = 0; i < ch.length; i++) {
      const c = ch[i]._private;
      clearNode(c);
      if (c.children!.length) clearDown(c);
    }
  };
  proto.dirtyStyleCache = function (this: ArrayLike<{ _private: Priv }>) {
    for (let i = 0; i < this.length; i++) {
      const e = this[i]._private;
      if (e.group !== "nodes") {
        e.styleCache = null;
        continue;
      }
      clearNode(e);
      if (e.children!.length) clearDown(e);
      for (let q = e.parent; q; q = q._private.parent) clearNode(q._private);
    }
    return this;
  };
}
