/* FlowForge console: the pages, over the HTTP API and the WebSocket API. The run page is
   run.js; both share what window.FlowConsole holds. */
(function () {
  "use strict";
  const BASE = document.body.dataset.base || "";
  const WS_URL = document.body.dataset.wsUrl || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const main = document.getElementById("main");
  const STATUSES = ["running", "waiting", "completed", "failed", "cancelled"];
  const LIVE = new Set(["running", "waiting"]); // a run that has not ended

  // -- small helpers ------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const link = (path, text, attrs) => h("a", { href: BASE + path, ...attrs }, text);
  const badge = (status) => h("span", { class: `badge ${status}`, "data-status": status }, status);
  const json = (value) => JSON.stringify(value, null, 2);
  const shortId = (id) => (id.length > 12 ? id.slice(0, 8) + "…" : id);

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function duration(run) {
    const start = Date.parse(run.created_at);
    const end = run.finished_at ? Date.parse(run.finished_at) : LIVE.has(run.status) ? Date.now() : Date.parse(run.updated_at);
    const ms = Math.max(0, end - start);
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || body?.message || `HTTP ${status}`);
      this.status = status;
      this.code = err.code;
      this.details = err.details;
    }
  }
  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: { accept: "application/json" } };
    if (options.body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
    }
    const response = await fetch(BASE + path, init);
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = { message: text };
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
  function showError(err) {
    main.replaceChildren(h("div", { class: "errorbox" }, h("h2", {}, "Something went wrong"), err.message));
  }

  // -- live updates: one WebSocket, many runs -------------------------------------------
  const live = {
    socket: null,
    handlers: new Map(), // run_id → {after, onEntry, onDone}
    open: false,
    retry: 500,
    badge: document.getElementById("live"),
    connect() {
      if (this.socket || !("WebSocket" in window)) return;
      this.badge.hidden = false;
      const socket = (this.socket = new WebSocket(WS_URL));
      socket.onopen = () => {
        this.open = true;
        this.retry = 500;
        this.badge.textContent = "live";
        this.badge.classList.add("on");
        for (const [runId, handler] of this.handlers) this.send(runId, handler.after);
      };
      socket.onmessage = (event) => this.receive(event.data);
      socket.onclose = () => {
        this.socket = null;
        this.open = false;
        this.badge.textContent = "reconnecting";
        this.badge.classList.remove("on");
        if (this.handlers.size) setTimeout(() => this.connect(), (this.retry = Math.min(this.retry * 2, 10000)));
      };
      socket.onerror = () => {}; // onclose follows and reconnects
    },
    send(runId, after) {
      this.socket.send(JSON.stringify({ action: "subscribe", run_id: runId, after }));
    },
    follow(runId, after, onEntry, onDone) {
      this.handlers.set(runId, { after, onEntry, onDone });
      if (this.open) this.send(runId, after);
      else this.connect();
    },
    unfollow(runId) {
      if (!this.handlers.delete(runId) || !this.open) return;
      this.socket.send(JSON.stringify({ action: "unsubscribe", run_id: runId }));
    },
    receive(data) {
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return;
      }
      const handler = this.handlers.get(message.run_id);
      if (!handler) return;
      if (message.done) {
        this.handlers.delete(message.run_id);
        handler.onDone(message);
      } else if (typeof message.seq === "number" && message.seq > handler.after) {
        handler.after = message.seq; // a seq seen twice (a redelivery) is dropped
        handler.onEntry(message);
      }
    },
  };

  // -- /console ---------------------------------------------------------------------------
  async function homePage() {
    const [graphs, runs] = await Promise.all([api("/graphs?limit=100"), api("/runs?limit=100")]);
    const names = new Map(graphs.graphs.map((g) => [g.graph_id, g.name || shortId(g.graph_id)]));
    let filter = new URLSearchParams(location.search).get("status") || "all";
    const byId = new Map(runs.runs.map((r) => [r.run_id, r]));

    const graphRows = graphs.graphs.map((g) =>
      h("tr", { "data-graph": g.graph_id },
        h("td", {}, link(`/console/graphs/${g.graph_id}`, g.name || "(unnamed)")),
        h("td", { class: "mono muted" }, shortId(g.graph_id)),
        h("td", {}, when(g.created_at)),
        h("td", { class: "num" }, g.nodes ?? ""))
    );
    const runBody = h("tbody", {});
    // The list is updated in place, never rebuilt: live entries re-render it many times a
    // second, and a button or link replaced between a click's mousedown and its mouseup
    // loses the click. Each button, and each run's row, is made once.
    const filterButtons = new Map(["all", ...STATUSES].map((s) => [s,
      h("button", { type: "button", "data-filter": s, onclick: () => { filter = s; history.replaceState(null, "", s === "all" ? location.pathname : `?status=${s}`); renderRuns(); } })]));
    const filters = h("div", { class: "filters", role: "group", "aria-label": "Filter runs by status" }, ...filterButtons.values());
    const noRuns = h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No runs."));
    const rows = new Map(); // run_id → {tr, status, steps, took, shown}
    const setText = (node, text) => { if (node.textContent !== text) node.textContent = text; };
    const rowOf = (r) => {
      let row = rows.get(r.run_id);
      if (!row) {
        row = { status: h("td", {}), steps: h("td", { class: "num" }), took: h("td", { class: "num" }), shown: null };
        row.tr = h("tr", { "data-run": r.run_id }, row.status,
          h("td", { class: "mono" }, link(`/console/runs/${r.run_id}`, shortId(r.run_id))),
          h("td", {}, link(`/console/graphs/${r.graph_id}`, names.get(r.graph_id) || shortId(r.graph_id))),
          h("td", {}, when(r.created_at)), row.steps, row.took);
        rows.set(r.run_id, row);
      }
      const at = r.status === "waiting" && r.waiting ? r.waiting.node : null;
      if (row.shown !== `${r.status} ${at}`) {
        row.shown = `${r.status} ${at}`;
        row.status.replaceChildren(...[badge(r.status), at !== null && h("span", { class: "muted waits-at" }, ` at ${at}`)].filter(Boolean));
      }
      setText(row.steps, String(r.step ?? ""));
      setText(row.took, duration(r));
      return row.tr;
    };
    const counts = {};
    const renderRuns = () => {
      for (const s of ["all", ...STATUSES]) counts[s] = 0;
      for (const r of byId.values()) {
        counts.all++;
        counts[r.status] = (counts[r.status] || 0) + 1;
      }
      for (const [s, button] of filterButtons) {
        button.setAttribute("aria-pressed", String(filter === s));
        setText(button, `${s} (${counts[s] || 0})`);
      }
      const shown = [...byId.values()]
        .filter((r) => filter === "all" || r.status === filter)
        .sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
      const trs = shown.length ? shown.map(rowOf) : [noRuns];
      // Moving a row out and back in is a replacement too: the body changes only when the
      // rows shown, or their order, do.
      if (trs.length !== runBody.children.length || trs.some((tr, i) => runBody.children[i] !== tr)) runBody.replaceChildren(...trs);
    };
    const followRun = (r) => live.follow(r.run_id, r.step - 1,
      (entry) => {
        r.step = Math.max(r.step, entry.seq + 1);
        r.updated_at = entry.started_at || entry.ts || r.updated_at; // a live entry carries ts
        if (entry.status === "waiting") {
          r.status = "waiting";
          r.waiting = { node: entry.node };
          refreshSoon(); // what it waits for comes with the list
        } else if (r.status === "waiting") {
          r.status = "running"; // answered, or its timer went off
        }
        renderRuns();
      },
      (done) => { r.status = done.status; r.finished_at = new Date().toISOString(); refreshSoon(); renderRuns(); });
    let pending = null;
    const refresh = async () => {
      const page = await api("/runs?limit=100");
      for (const r of page.runs) {
        // Keep each run's object: the socket's handlers update the one they were given.
        const known = byId.get(r.run_id);
        if (known) Object.assign(known, r);
        else byId.set(r.run_id, r);
        const run = known || r;
        if (LIVE.has(run.status) && !live.handlers.has(run.run_id) && live.handlers.size < 20) followRun(run);
      }
      renderRuns();
    };
    const refreshSoon = () => { clearTimeout(pending); pending = setTimeout(() => refresh().catch(() => {}), 300); };
    // Running runs first: a waiting run may wait for days.
    [...runs.runs.filter((r) => r.status === "running"), ...runs.runs.filter((r) => r.status === "waiting")]
      .slice(0, 20).forEach(followRun);
    renderRuns();
    setInterval(() => refresh().catch(() => {}), 5000); // new runs, and runs beyond 20 followed

    main.replaceChildren(
      h("div", { class: "pagehead" }, h("h1", {}, "Graphs & runs"), h("span", { class: "spacer" }),
        h("a", { class: "button", href: BASE + "/console/edit" }, "New graph")),
      h("div", { class: "grid cols-home" },
        h("section", { class: "panel" }, h("h2", {}, "Graphs"),
          h("div", { class: "tablewrap" }, h("table", { id: "graphs" },
            h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Id"), h("th", {}, "Created"), h("th", { class: "num" }, "Nodes"))),
            h("tbody", {}, graphRows.length ? graphRows : h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No graphs yet.")))))),
        h("section", { class: "panel" }, h("h2", {}, "Recent runs"), filters,
          h("div", { class: "tablewrap" }, h("table", { id: "runs" },
            h("thead", {}, h("tr", {}, h("th", {}, "Status"), h("th", {}, "Run"), h("th", {}, "Graph"), h("th", {}, "Started"), h("th", { class: "num" }, "Steps"), h("th", { class: "num" }, "Duration"))),
            runBody))))
    );
  }

  // -- /console/graphs/{id} ---------------------------------------------------------------
  // The drawing's key: edge kinds, and on a run's page the node statuses too.
  function legend(statuses) {
    return h("div", { class: "legend" },
      h("span", {}, h("i", {}), "next"), h("span", {}, h("i", { class: "branch" }), "branch"),
      h("span", {}, h("i", { class: "loop" }), "loop"), h("span", {}, h("i", { class: "catch" }), "catch"),
      h("span", {}, h("i", { class: "fork" }), "parallel branch"),
      (statuses || []).map((s) => h("span", { "data-legend": s }, h("b", { class: `swatch st-${s}` }), s === "current" ? "running" : s)));
  }

  async function graphPage(graphId) {
    const graph = await api(`/graph/${encodeURIComponent(graphId)}`);
    const drawing = h("div", { class: "graphbox", id: "drawing" });
    const stateInput = h("textarea", { id: "run-state", rows: 7, spellcheck: "false", "aria-label": "Initial state (JSON)" }, "{}");
    const runError = h("div", { id: "run-error" });
    const runButton = h("button", { class: "primary", type: "submit", id: "run-button" }, "Run");
    const form = h("form", { id: "run-form", onsubmit: async (event) => {
      event.preventDefault();
      runError.replaceChildren();
      let state;
      try {
        state = JSON.parse(stateInput.value || "{}");
      } catch (err) {
        runError.replaceChildren(h("p", { class: "problem" }, `State is not JSON: ${err.message}`));
        return;
      }
      runButton.disabled = true;
      try {
        const run = await api("/graph/run", { method: "POST", body: { graph_id: graphId, state, background: true } });
        location.assign(`${BASE}/console/runs/${run.run_id}`);
      } catch (err) {
        runButton.disabled = false;
        const details = Array.isArray(err.details) ? err.details.map((d) => `${d.path}: ${d.message}`) : [];
        runError.replaceChildren(h("div", { class: "problem" }, err.message, ...details.map((d) => h("div", { class: "mono" }, d))));
      }
    } }, h("h2", {}, "Run"), h("label", { class: "muted", for: "run-state" }, "Initial state (JSON object)"), stateInput,
      h("div", { class: "form-row" }, runButton), runError);

    main.replaceChildren(
      h("div", { class: "pagehead" }, h("h1", {}, graph.name || "(unnamed graph)"), h("span", { class: "spacer" }),
        h("a", { class: "button", id: "edit-as-new", href: `${BASE}/console/edit?from=${encodeURIComponent(graphId)}` }, "Edit as new")),
      h("div", { class: "meta" }, h("span", {}, "id ", h("b", { class: "mono" }, graph.graph_id)),
        h("span", {}, "created ", h("b", {}, when(graph.created_at))), h("span", {}, h("b", {}, graph.nodes), " nodes")),
      h("div", { class: "grid cols-2" },
        h("section", { class: "panel" }, h("h2", {}, "Graph"), drawing, legend()),
        h("div", { class: "stack" },
          h("section", { class: "panel" }, form),
          h("section", { class: "panel" }, h("h2", {}, "Definition"), h("pre", { class: "json", id: "definition" }, json(graph.definition)))))
    );
    FlowGraph.draw(drawing, graph.definition);
  }

  // -- /console/edit ----------------------------------------------------------------------
  const BLANK = { name: "my_graph", start: "first", nodes: { first: { fn: "split_text", next: "second" }, second: { fn: "summarize_chunks" } } };

  async function editPage() {
    const from = new URLSearchParams(location.search).get("from");
    let definition = BLANK;
    if (from) definition = (await api(`/graph/${encodeURIComponent(from)}`)).definition;
    const source = h("textarea", { id: "definition-input", class: "editor-area", rows: 28, spellcheck: "false", "aria-label": "Graph definition (JSON)" }, json(definition));
    const drawing = h("div", { class: "graphbox", id: "drawing" });
    const verdict = h("div", { id: "verdict" });
    const save = h("button", { class: "primary", type: "button", id: "save", disabled: true }, "Save as new graph");
    let seq = 0;
    let timer = null;

    function showProblems(problems) {
      if (!problems.length) {
        verdict.replaceChildren(h("p", { class: "valid", id: "valid" }, "✓ Valid — ready to save."));
        return;
      }
      verdict.replaceChildren(h("p", { class: "muted" }, `${problems.length} problem${problems.length === 1 ? "" : "s"}`),
        h("ul", { class: "problems", id: "problems" }, problems.map((p) =>
          h("li", { "data-path": p.path }, h("code", {}, p.path || "(graph)"), p.message))));
    }
    async function check() {
      const mine = ++seq;
      let parsed;
      try {
        parsed = JSON.parse(source.value);
      } catch (err) {
        save.disabled = true;
        showProblems([{ path: "", message: `not JSON: ${err.message}` }]);
        return;
      }
      let view = null;
      try {
        view = FlowGraph.draw(drawing, parsed);
      } catch (err) {
        drawing.replaceChildren(h("p", { class: "muted" }, "Nothing to draw yet."));
      }
      try {
        const result = await api("/graph/validate", { method: "POST", body: source.value });
        if (mine !== seq) return; // an older answer: the text has changed since
        save.disabled = !result.valid;
        showProblems(result.problems);
        if (view) view.markProblems(new Set(result.problems.map((p) => (p.path.match(/^nodes\.([^.]+)/) || [])[1]).filter(Boolean)));
      } catch (err) {
        if (mine !== seq) return;
        save.disabled = true;
        const details = Array.isArray(err.details) ? err.details : [{ path: "", message: err.message }];
        showProblems(details.map((d) => ({ path: d.path ?? "", message: d.message ?? String(d) })));
      }
    }
    source.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 200); });
    source.addEventListener("keydown", (e) => {
      if (e.key === "Tab" && !e.shiftKey) {
        e.preventDefault();
        source.setRangeText("  ", source.selectionStart, source.selectionEnd, "end");
        source.dispatchEvent(new Event("input"));
      }
    });
    save.addEventListener("click", async () => {
      save.disabled = true;
      try {
        const created = await api("/graph/create", { method: "POST", body: source.value });
        location.assign(`${BASE}/console/graphs/${created.graph_id}`);
      } catch (err) {
        const details = Array.isArray(err.details) ? err.details : [{ path: "", message: err.message }];
        showProblems(details.map((d) => ({ path: d.path ?? "", message: d.message ?? String(d) })));
      }
    });

    main.replaceChildren(
      h("div", { class: "pagehead" }, h("h1", {}, from ? "Edit as new graph" : "New graph"), h("span", { class: "spacer" }), save),
      from ? h("div", { class: "meta" }, h("span", {}, "from ", link(`/console/graphs/${from}`, from, { class: "mono" })), h("span", {}, "graphs are immutable: saving creates a new one")) : null,
      h("div", { class: "grid cols-2" },
        h("section", { class: "panel" }, h("h2", {}, "Drawing"), drawing, legend()),
        h("div", { class: "stack" },
          h("section", { class: "panel" }, h("h2", {}, "Definition"), source),
          h("section", { class: "panel" }, h("h2", {}, "Validation"), verdict)))
    );
    await check();
  }

  // -- routing ------------------------------------------------------------------------------
  async function route() {
    const path = location.pathname.slice(BASE.length).replace(/\/+$/, "");
    const nav = path.startsWith("/console/edit") ? "edit" : path === "/console" ? "home" : "";
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
    let match;
    if (path === "/console") {
      document.title = "FlowForge console";
      return homePage();
    }
    if ((match = path.match(/^\/console\/graphs\/([^/]+)$/))) {
      document.title = "Graph · FlowForge";
      return graphPage(decodeURIComponent(match[1]));
    }
    if ((match = path.match(/^\/console\/runs\/([^/]+)$/))) {
      document.title = "Run · FlowForge";
      return window.FlowConsole.pages.run(decodeURIComponent(match[1]));
    }
    if (path === "/console/edit") {
      document.title = "Editor · FlowForge";
      return editPage();
    }
    main.replaceChildren(h("div", { class: "errorbox" }, "No such console page."));
  }
  window.FlowConsole = { BASE, LIVE, h, link, badge, json, shortId, when, duration, api, live, legend, main, pages: {} };
  // Deferred scripts all run before DOMContentLoaded: run.js has added its page by then.
  document.addEventListener("DOMContentLoaded", () => route().catch(showError));
})();
