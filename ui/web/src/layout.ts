// Deterministic, incremental placement of workload boxes.
//
// - Each cluster is a column (in the order clusters are first seen); inside it,
//   one block per namespace (in the order namespaces are first seen), and
//   inside a block a grid filled in arrival order. A block's column count is
//   fixed when the block is created: from the namespace's size in the first
//   snapshot (about sqrt(2n), so big namespaces are wide rather than tall),
//   at least MIN_COLS. A cluster column reserves the width of its widest block.
// - A new workload takes the first free slot of its block (normally the next
//   one), so nobody already placed ever moves relative to the other boxes of
//   its block. When a block gains a row the blocks below it shift down as a
//   whole; a cluster column only gets wider (and the columns to its right
//   shift as a whole) when a new namespace arrives with a bigger block than
//   any before, which after the first snapshot does not happen. Nothing is
//   ever reordered.
// - Everything outside the clusters (the world) is a column left of all regions.
// - On a reset (reconnect), workloads that are gone free their slots (holes are
//   reused by newcomers), so the others keep their place.

export const CELL_W = 214;
export const CELL_H = 78;
export const BOX_W = 164; // a workload box (map.ts draws it this size)
export const BOX_H = 44;
export const MIN_COLS = 3;
export const MAX_COLS = 10;
const NS_HEADER = 30; // room above a namespace block for its label
const NS_GAP = 44; // between namespace blocks
const CLUSTER_GAP = 150; // between cluster columns
const OUTSIDE_GAP = 170; // between the world column and the first cluster
const NS_PAD = 10; // a namespace block's rectangle around its boxes
const NS_LABEL = 18; // room for a namespace label above its rectangle
const CLUSTER_PAD = 22; // a cluster region's rectangle around its namespace blocks

interface Block {
  ns: string;
  cols: number;
  slots: (string | null)[];
}

interface Column {
  cluster: string;
  blocks: Block[];
  usedCols: number; // column count of its widest block so far, never shrinks
}

export interface Pos {
  x: number;
  y: number;
}

/** A background rectangle: a cluster region (ns === "") or a namespace block. Centre and size. */
export interface Region {
  id: string; // "cluster:<name>" or "ns:<cluster>/<ns>"
  cluster: string;
  ns: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

export class Layout {
  private columns: Column[] = [];
  private outside: (string | null)[] = [];
  private where = new Map<string, { cluster: string; ns: string }>();
  private hints = new Map<string, number>();

  /** Expected size of a namespace block not created yet (sets its column count). */
  hint(cluster: string, ns: string, n: number): void {
    this.hints.set(cluster + "/" + ns, n);
  }

  has(id: string): boolean {
    return this.where.has(id);
  }

  /** Places a workload (no-op when it already sits in the right block). */
  place(id: string, cluster: string, ns: string): void {
    const cur = this.where.get(id);
    if (cur) {
      if (cur.cluster === cluster && cur.ns === ns) return;
      this.remove(id);
    }
    this.where.set(id, { cluster, ns });
    if (cluster === "") {
      takeSlot(this.outside, id);
      return;
    }
    let col = this.columns.find((c) => c.cluster === cluster);
    if (!col) {
      col = { cluster, blocks: [], usedCols: 1 };
      this.columns.push(col);
    }
    let block = col.blocks.find((b) => b.ns === ns);
    if (!block) {
      const n = this.hints.get(cluster + "/" + ns) ?? 1;
      block = { ns, cols: Math.max(MIN_COLS, Math.min(MAX_COLS, Math.ceil(Math.sqrt(2 * n)))), slots: [] };
      col.blocks.push(block);
    }
    takeSlot(block.slots, id);
    // A column is as wide as its widest block will ever be (a block's column
    // count is fixed), so a namespace filling up never pushes the clusters on
    // its right.
    col.usedCols = Math.max(col.usedCols, block.cols);
  }

  remove(id: string): void {
    const cur = this.where.get(id);
    if (!cur) return;
    this.where.delete(id);
    const slots = cur.cluster === "" ? this.outside : this.columns.find((c) => c.cluster === cur.cluster)?.blocks.find((b) => b.ns === cur.ns)?.slots;
    if (!slots) return;
    const i = slots.indexOf(id);
    if (i >= 0) slots[i] = null;
    while (slots.length && slots[slots.length - 1] === null) slots.pop();
  }

  /** After a reset: forget empty blocks and columns (the rest shift as a whole). */
  compact(): void {
    for (const col of this.columns) col.blocks = col.blocks.filter((b) => b.slots.length > 0);
    this.columns = this.columns.filter((c) => c.blocks.length > 0);
  }

  /** Every placed workload's centre. */
  positions(): Map<string, Pos> {
    const out = new Map<string, Pos>();
    this.outside.forEach((id, i) => {
      if (id) out.set(id, { x: -OUTSIDE_GAP - CELL_W / 2, y: NS_HEADER + i * CELL_H * 1.6 + CELL_H / 2 });
    });
    let x0 = 0;
    for (const col of this.columns) {
      let y = 0;
      for (const b of col.blocks) {
        const top = y + NS_HEADER;
        const cols = b.cols;
        b.slots.forEach((id, i) => {
          if (!id) return;
          out.set(id, { x: x0 + (i % cols) * CELL_W + CELL_W / 2, y: top + Math.floor(i / cols) * CELL_H + CELL_H / 2 });
        });
        y = top + Math.ceil(b.slots.length / cols) * CELL_H + NS_GAP;
      }
      x0 += col.usedCols * CELL_W + CLUSTER_GAP;
    }
    return out;
  }

  /**
   * The rectangles drawn behind the boxes: one per namespace block (around
   * its boxes), one per cluster (around its blocks and their labels).
   * Derived from the same grid as positions(), so boxes sit inside them.
   */
  regions(): Region[] {
    const out: Region[] = [];
    let x0 = 0;
    for (const col of this.columns) {
      let y = 0;
      let cx1 = Infinity;
      let cy1 = Infinity;
      let cx2 = -Infinity;
      let cy2 = -Infinity;
      for (const b of col.blocks) {
        const top = y + NS_HEADER;
        const n = b.slots.length;
        const rows = Math.ceil(n / b.cols);
        y = top + rows * CELL_H + NS_GAP;
        if (n === 0) continue;
        // Boxes without a namespace (host, remote-node) sit in the cluster region itself.
        const pad = b.ns === "" ? 0 : NS_PAD;
        const x1 = x0 + CELL_W / 2 - BOX_W / 2 - pad;
        const x2 = x0 + (Math.min(b.cols, n) - 1) * CELL_W + CELL_W / 2 + BOX_W / 2 + pad;
        const y1 = top + CELL_H / 2 - BOX_H / 2 - pad;
        const y2 = top + (rows - 1) * CELL_H + CELL_H / 2 + BOX_H / 2 + pad;
        if (b.ns !== "") out.push({ id: `ns:${col.cluster}/${b.ns}`, cluster: col.cluster, ns: b.ns, x: (x1 + x2) / 2, y: (y1 + y2) / 2, w: x2 - x1, h: y2 - y1 });
        cx1 = Math.min(cx1, x1);
        cy1 = Math.min(cy1, b.ns === "" ? y1 : y1 - NS_LABEL);
        cx2 = Math.max(cx2, x2);
        cy2 = Math.max(cy2, y2);
      }
      if (cx1 !== Infinity) {
        cx1 -= CLUSTER_PAD;
        cy1 -= CLUSTER_PAD;
        cx2 += CLUSTER_PAD;
        cy2 += CLUSTER_PAD;
        out.push({ id: "cluster:" + col.cluster, cluster: col.cluster, ns: "", x: (cx1 + cx2) / 2, y: (cy1 + cy2) / 2, w: cx2 - cx1, h: cy2 - cy1 });
      }
      x0 += col.usedCols * CELL_W + CLUSTER_GAP;
    }
    return out;
  }

  /** The area the layout reserves (box centres), room to grow included: the first fit shows it all. */
  extent(): { x1: number; y1: number; x2: number; y2: number } | null {
    const pos = this.positions();
    if (pos.size === 0) return null;
    let y2 = -Infinity;
    for (const p of pos.values()) y2 = Math.max(y2, p.y);
    let x2 = CELL_W / 2;
    for (const c of this.columns) x2 += c.usedCols * CELL_W + CLUSTER_GAP;
    x2 -= CLUSTER_GAP + CELL_W;
    const x1 = this.outside.some((id) => id) ? -OUTSIDE_GAP - CELL_W / 2 : CELL_W / 2;
    return { x1, y1: NS_HEADER + CELL_H / 2, x2: Math.max(x1, x2), y2 };
  }

  /** Width of each cluster column (for the region label size). */
  columnWidths(): Map<string, number> {
    return new Map(this.columns.map((c) => [c.cluster, c.usedCols * CELL_W]));
  }

  clear(): void {
    this.columns = [];
    this.outside = [];
    this.where.clear();
  }
}

function takeSlot(slots: (string | null)[], id: string): void {
  const hole = slots.indexOf(null);
  if (hole >= 0) slots[hole] = id;
  else slots.push(id);
}
