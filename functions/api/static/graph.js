/* FlowForge console: a graph definition drawn as SVG, laid out by dagre (vendored). */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const OPS = { eq: "==", ne: "!=", lt: "<", lte: "<=", gt: ">", gte: ">=", in: "in", contains: "contains" };
  const FONT = '13px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
  const MONO = '11.5px ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace';
  const DEFAULT_MAX_ITERATIONS = 100;
  const LOOP_REACH = 34; // how far a loop's arc reaches right of its node

  /** A condition (a registered name or a declarative rule) as text. */
  function conditionText(cond) {
    if (typeof cond === "string") return cond;
    if (cond === null || typeof cond !== "object") return JSON.stringify(cond);
    if (Array.isArray(cond.all)) return cond.all.map(wrapped).join(" and ");
    if (Array.isArray(cond.any)) return cond.any.map(wrapped).join(" or ");
    if ("not" in cond) return "not " + wrapped(cond.not);
    const name = cond.var;
    for (const op of Object.keys(OPS)) {
      if (op in cond) return `${name} ${OPS[op]} ${JSON.stringify(cond[op])}`;
    }
    if ("exists" in cond) return cond.exists ? `${name} exists` : `${name} missing`;
    if ("truthy" in cond) return cond.truthy ? `${name}` : `not ${name}`;
    return JSON.stringify(cond);
  }
  function wrapped(cond) {
    const text = conditionText(cond);
    return typeof cond === "object" && cond && (cond.all || cond.any) ? `(${text})` : text;
  }

  /** Nodes and edges of a definition; targets that do not exist become "missing" nodes. */
  function describe(def) {
    const nodes = new Map();
    const edges = [];
    const defined = def && typeof def.nodes === "object" && def.nodes && !Array.isArray(def.nodes) ? def.nodes : {};
    const inParallel = new Set();
    for (const spec of Object.values(defined)) {
      if (spec && Array.isArray(spec.parallel)) spec.parallel.forEach((n) => inParallel.add(String(n)));
    }
    for (const [id, spec] of Object.entries(defined)) {
      const node = { id, kind: "task", title: id, lines: [], loop: null };
      const s = spec && typeof spec === "object" ? spec : {};
      if (s.map && typeof s.map === "object") {
        node.kind = "map";
        node.lines.push(`map ${s.map.fn ?? "?"}`);
        node.lines.push(`${s.map.items ?? "?"} → ${s.map.results ?? "?"}`);
        const limits = [];
        if (s.map.max_concurrency != null) limits.push(`≤${s.map.max_concurrency} at once`);
        if (s.map.tolerated_failures != null) limits.push(`tolerates ${s.map.tolerated_failures}`);
        if (limits.length) node.lines.push(limits.join(", "));
      } else if (Array.isArray(s.parallel)) {
        node.kind = "parallel";
        node.lines.push(`parallel ×${s.parallel.length}`);
        if (s.fn) node.lines.push(String(s.fn));
      } else {
        node.lines.push(s.fn != null ? String(s.fn) : "(no fn)");
      }
      if (s.loop_condition != null) {
        node.loop = { text: conditionText(s.loop_condition), max: s.max_iterations ?? DEFAULT_MAX_ITERATIONS };
      }
      nodes.set(id, node);
    }
    const target = (name) => {
      const key = String(name);
      if (!nodes.has(key)) nodes.set(key, { id: key, kind: "missing", title: key, lines: ["unknown node"], loop: null });
      return key;
    };
    nodes.set("__start", { id: "__start", kind: "start", title: "start", lines: [] });
    if (def && def.start != null) edges.push({ from: "__start", to: target(def.start), kind: "next", label: "" });
    let ends = false;
    for (const [id, spec] of Object.entries(defined)) {
      const s = spec && typeof spec === "object" ? spec : {};
      if (Array.isArray(s.parallel)) {
        s.parallel.forEach((n) => edges.push({ from: id, to: target(n), kind: "fork", label: "" }));
      }
      const branches = Array.isArray(s.branches) ? s.branches : [];
      branches.forEach((b) => {
        if (b && b.next != null) {
          edges.push({ from: id, to: target(b.next), kind: "branch", label: "when " + conditionText(b.when) });
        }
      });
      if (s.next != null) edges.push({ from: id, to: target(s.next), kind: "next", label: branches.length ? "else" : "" });
      const catches = Array.isArray(s.catch) ? s.catch : [];
      catches.forEach((c) => {
        if (c && c.next != null) {
          const on = Array.isArray(c.on) ? c.on.join(", ") : "*";
          edges.push({ from: id, to: target(c.next), kind: "catch", label: "catch " + on });
        }
      });
      if (s.next == null && !branches.length && !inParallel.has(id)) {
        edges.push({ from: id, to: "__end", kind: "next", label: "" });
        ends = true;
      }
    }
    if (ends) nodes.set("__end", { id: "__end", kind: "end", title: "end", lines: [] });
    return { nodes: [...nodes.values()], edges };
  }

  let canvas = null;
  function textWidth(text, font) {
    canvas = canvas || document.createElement("canvas");
    const ctx = canvas.getContext("2d");
    ctx.font = font;
    return ctx.measureText(text).width;
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, content, cls) {
    const t = el("text", { x, y, class: cls, "text-anchor": "middle", "dominant-baseline": "central" }, parent);
    t.textContent = content;
    return t;
  }

  function sizeOf(node) {
    if (node.kind === "start" || node.kind === "end") return { w: 30, h: 30, box: 30 };
    const widths = [textWidth(node.title, "600 " + FONT), ...node.lines.map((l) => textWidth(l, MONO))];
    const box = Math.max(120, Math.ceil(Math.max(...widths)) + 30);
    const h = 24 + 17 * (1 + node.lines.length) - 6;
    let reach = 0;
    if (node.loop) {
      const label = Math.max(textWidth("until " + node.loop.text, MONO), textWidth(`max ${node.loop.max} · ×999`, MONO));
      reach = LOOP_REACH + 10 + label;
    }
    // A loop's arc and label sit right of the box; the layout reserves that much on both sides.
    return { w: box + 2 * reach, h, box, reach };
  }

  function edgePath(points) {
    let d = `M${points[0].x},${points[0].y}`;
    if (points.length === 2) return d + ` L${points[1].x},${points[1].y}`;
    for (let i = 1; i < points.length - 1; i++) {
      const mid = { x: (points[i].x + points[i + 1].x) / 2, y: (points[i].y + points[i + 1].y) / 2 };
      const end = i === points.length - 2 ? points[i + 1] : mid;
      d += ` Q${points[i].x},${points[i].y} ${end.x},${end.y}`;
    }
    return d;
  }

  function label(parent, x, y, content, kind) {
    const g = el("g", { class: `g-label ${kind}` }, parent);
    const w = textWidth(content, MONO) + 12;
    el("rect", { x: x - w / 2, y: y - 9, width: w, height: 18, rx: 4 }, g);
    text(g, x, y, content);
    return g;
  }

  /**
   * Draw ``def`` into ``container`` (replacing what was there). Returns a view with
   * ``setNodeStatus(id, status)``, ``setCurrent(id)``, ``setIterations(id, n)``,
   * ``markProblems(ids)`` and ``nodeIds``.
   */
  function draw(container, def) {
    const model = describe(def);
    const g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: "TB", nodesep: 36, ranksep: 54, edgesep: 16, marginx: 16, marginy: 16 });
    g.setDefaultEdgeLabel(() => ({}));
    const sizes = new Map();
    for (const node of model.nodes) {
      const size = sizeOf(node);
      sizes.set(node.id, size);
      g.setNode(node.id, { width: size.w, height: size.h });
    }
    model.edges.forEach((e, i) => {
      if (e.from === e.to) return; // self edges are drawn as the node's loop
      const attrs = {};
      if (e.label) Object.assign(attrs, { label: e.label, width: textWidth(e.label, MONO) + 14, height: 18, labelpos: "c" });
      g.setEdge(e.from, e.to, attrs, "e" + i);
    });
    dagre.layout(g);
    const graph = g.graph();
    const width = Math.ceil(graph.width || 100);
    const height = Math.ceil(graph.height || 60);
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "graph drawing" });
    const defs = el("defs", {}, svg);
    for (const [kind, color] of [["next", "#8792a3"], ["branch", "#5b6bd6"], ["loop", "#2d8a8a"], ["catch", "#c8322b"], ["fork", "#8a4fc6"]]) {
      const marker = el("marker", { id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
      el("path", { d: "M0,0 L10,5 L0,10 z", fill: color }, marker);
    }
    const edgeLayer = el("g", {}, svg);
    const nodeLayer = el("g", {}, svg);
    const labelLayer = el("g", {}, svg);
    const nodeEls = new Map();
    const edgeEls = [];
    model.edges.forEach((e, i) => {
      if (e.from === e.to) return;
      const laid = g.edge({ v: e.from, w: e.to, name: "e" + i });
      const group = el("g", { class: `g-edge ${e.kind}`, "data-from": e.from, "data-to": e.to, "data-kind": e.kind }, edgeLayer);
      el("path", { d: edgePath(laid.points), "marker-end": `url(#arrow-${e.kind})` }, group);
      if (e.label) label(labelLayer, laid.x, laid.y, e.label, e.kind);
      edgeEls.push(group);
    });
    for (const node of model.nodes) {
      const laid = g.node(node.id);
      const size = sizes.get(node.id);
      const group = el("g", { class: `g-node ${node.kind === "start" || node.kind === "end" ? "terminal " + node.kind : node.kind}`, "data-node": node.id }, nodeLayer);
      nodeEls.set(node.id, group);
      if (node.kind === "start") {
        el("circle", { cx: laid.x, cy: laid.y, r: 9 }, group);
        continue;
      }
      if (node.kind === "end") {
        el("circle", { class: "outer", cx: laid.x, cy: laid.y, r: 11 }, group);
        el("circle", { cx: laid.x, cy: laid.y, r: 6 }, group);
        continue;
      }
      const x = laid.x - size.box / 2;
      const y = laid.y - size.h / 2;
      if (node.kind === "map") {
        el("rect", { class: "shadow", x: x + 8, y: y - 8, width: size.box, height: size.h, rx: 8 }, group);
        el("rect", { class: "shadow", x: x + 4, y: y - 4, width: size.box, height: size.h, rx: 8 }, group);
      }
      el("rect", { class: "box", x, y, width: size.box, height: size.h, rx: node.kind === "parallel" ? 2 : 8 }, group);
      if (node.kind === "parallel") {
        el("line", { x1: x, y1: y + size.h - 4, x2: x + size.box, y2: y + size.h - 4, stroke: "#8a4fc6", "stroke-width": 3 }, group);
      }
      let line = y + 18;
      text(group, laid.x, line, node.title, "id");
      for (const sub of node.lines) {
        line += 17;
        text(group, laid.x, line, sub, "fn");
      }
      if (node.loop) {
        const right = x + size.box;
        const top = laid.y - Math.min(12, size.h / 3);
        const bottom = laid.y + Math.min(12, size.h / 3);
        const loop = el("g", { class: "g-edge loop", "data-from": node.id, "data-to": node.id, "data-kind": "loop" }, edgeLayer);
        el("path", { d: `M${right},${bottom} C${right + LOOP_REACH * 1.4},${bottom + 14} ${right + LOOP_REACH * 1.4},${top - 14} ${right + 1},${top}`, "marker-end": "url(#arrow-loop)" }, loop);
        const lx = right + LOOP_REACH + 8;
        const lg = el("g", { class: "g-label loop" }, labelLayer);
        const t1 = el("text", { x: lx, y: laid.y - 8, "dominant-baseline": "central" }, lg);
        t1.textContent = "until " + node.loop.text;
        const t2 = el("text", { x: lx, y: laid.y + 8, "dominant-baseline": "central", "data-loop-of": node.id }, lg);
        t2.textContent = `max ${node.loop.max}`;
        group.loopText = t2;
        group.loopMax = node.loop.max;
      }
      const title = el("title", {}, group);
      title.textContent = node.kind === "missing" ? `${node.id}: no such node` : `${node.id}: ${node.lines.join(" · ")}`;
    }
    container.replaceChildren(svg);
    const nodeIds = model.nodes.filter((n) => !n.id.startsWith("__")).map((n) => n.id);
    return {
      svg,
      nodeIds,
      edges: model.edges,
      setNodeStatus(id, status) {
        const group = nodeEls.get(id);
        if (!group) return;
        for (const name of [...group.classList]) if (name.startsWith("st-")) group.classList.remove(name);
        if (status) group.classList.add("st-" + status);
        group.setAttribute("data-status", status || "");
      },
      setCurrent(id) {
        for (const [nid, group] of nodeEls) group.classList.toggle("current", nid === id);
      },
      setIterations(id, count) {
        const group = nodeEls.get(id);
        if (group && group.loopText) group.loopText.textContent = `max ${group.loopMax} · ×${count}`;
      },
      markProblems(ids) {
        for (const [nid, group] of nodeEls) group.classList.toggle("problem", ids.has(nid));
      },
    };
  }

  window.FlowGraph = { draw, describe, conditionText };
})();
