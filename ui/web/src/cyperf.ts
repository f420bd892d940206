// A performance patch for cytoscape (pinned at 3.35.0 in package.json).
//
// Every style property cytoscape applies to an element calls
// dirtyStyleCache(), which nulls a cache field on the element and on its
// connected edges, building a new collection (connectedEdges()) each time:
// with 500 boxes and 2,000 links that is ~20,000 short-lived collections on
// the first draw (about 6% of it, garbage collection included). This
// replacement clears exactly the same fields through the element's private
// list of edges, without allocating. The map has no compound nodes; should
// a graph have some, or a node not have the private list of edges it relies
// on, cytoscape's own function runs.

import type cytoscape from "cytoscape";

interface Priv {
  styleCache: unknown;
  group: "nodes" | "edges";
  edges?: { _private: Priv }[];
}

type Eles = ArrayLike<{ _private: Priv }> & { cy(): { hasCompoundNodes(): boolean } };

export function patchDirtyStyleCache(cy: cytoscape.Core): void {
  const proto = Object.getPrototypeOf(cy.collection()) as Record<string, unknown>;
  const original = proto.dirtyStyleCache as ((this: Eles) => Eles) | undefined;
  if (typeof original !== "function" || typeof (cy as unknown as { hasCompoundNodes?: unknown }).hasCompoundNodes !== "function") return;

  proto.dirtyStyleCache = function (this: Eles) {
    if (this.cy().hasCompoundNodes()) return original.call(this);
    for (let i = 0; i < this.length; i++) {
      const e = this[i]._private;
      e.styleCache = null;
      if (e.group !== "nodes") continue;
      const es = e.edges;
      if (!Array.isArray(es)) return original.call(this); // not the internals we know
      for (let j = 0; j < es.length; j++) es[j]._private.styleCache = null;
    }
    return this;
  };
}
