/* FlowForge console: the run page — a run drawn and followed live; Cancel, Redrive, and
   Approve/Reject for a run waiting at a callback node. Helpers from console.js. */
(function () {
  "use strict";
  const { BASE, LIVE, h, link, badge, json, shortId, when, duration, api, live, legend, main } = window.FlowConsole;

  // -- /console/runs/{id} -----------------------------------------------------------------
  // Redrive: a failed run resumes at the node that failed, its state patched first.
  function redriveControls(runId, onRedriven) {
    const patch = h("textarea", { id: "redrive-patch", rows: 4, spellcheck: "false", placeholder: "{}",
      "aria-label": "State patch (JSON object, optional)" });
    const problem = h("div", { id: "redrive-error" });
    const submit = h("button", { class: "primary", type: "submit", id: "redrive-submit" }, "Redrive");
    const form = h("form", { class: "panel redrive", id: "redrive-form", hidden: true, onsubmit: async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      let statePatch = {};
      try {
        statePatch = patch.value.trim() ? JSON.parse(patch.value) : {};
      } catch (err) {
        problem.replaceChildren(h("p", { class: "problem" }, `The patch is not JSON: ${err.message}`));
        return;
      }
      if (statePatch === null || typeof statePatch !== "object" || Array.isArray(statePatch)) {
        problem.replaceChildren(h("p", { class: "problem" }, "The patch must be a JSON object of state keys."));
        return;
      }
      submit.disabled = true;
      try {
        const view = await api(`/graph/run/${encodeURIComponent(runId)}/redrive`, { method: "POST", body: { state_patch: statePatch } });
        form.hidden = true;
        patch.value = "";
        onRedriven(view);
      } catch (err) {
        const details = Array.isArray(err.details) ? err.details.map((d) => `${d.path}: ${d.message}`) : [];
        problem.replaceChildren(h("div", { class: "problem" }, err.message, ...details.map((d) => h("div", { class: "mono" }, d))));
      } finally {
        submit.disabled = false;
      }
    } }, h("h2", {}, "Redrive"),
      h("label", { class: "muted", for: "redrive-patch" }, "Resume at the node that failed, after setting these state keys (optional JSON object):"),
      patch, h("div", { class: "form-row" }, submit), problem);
    const button = h("button", { type: "button", id: "redrive", hidden: true, onclick: () => {
      form.hidden = !form.hidden;
      if (!form.hidden) patch.focus();
    } }, "Redrive…");
    return {
      button,
      form,
      sync(run) {
        button.hidden = run.status !== "failed";
        if (run.status !== "failed") form.hidden = true;
      },
    };
  }

  // The token of a callback URL (…/callbacks/{token}): the page answers through its own
  // origin's API (BASE), which is the stack itself or `flowforge console` forwarding to it.
  function callbackToken(url) {
    try {
      const match = new URL(url, location.href).pathname.match(/\/callbacks\/([^/]+)\/?$/);
      return match ? decodeURIComponent(match[1]) : null;
    } catch {
      return null;
    }
  }

  // Approve / Reject: the answer to a waiting run's callback, POSTed to /callbacks/{token}.
  // A 409 (answered before, timed out, the run moved on) or 404 (unknown token) is said on
  // the page, and the run is read again.
  function approvalControls(definition, onAnswered, onStale) {
    const output = h("textarea", { id: "approve-output", rows: 4, spellcheck: "false", placeholder: "{}" });
    const reason = h("input", { id: "reject-reason", type: "text", maxlength: 1000, placeholder: "optional", autocomplete: "off" });
    const problem = h("div", { id: "answer-error" });
    const about = h("p", { class: "muted", id: "waiting-about" });
    const lands = h("span", {}); // where the output goes in the state
    let resultKey = null; // the node's callback.result; without one an object's keys are merged
    const approve = h("button", { class: "primary", type: "button", id: "approve" }, "Approve");
    const reject = h("button", { class: "danger", type: "button", id: "reject" }, "Reject");
    const answers = h("div", { class: "answers" },
      h("div", {}, h("label", { for: "approve-output" }, "Output (JSON, optional), ", lands),
        output, h("div", { class: "form-row" }, approve)),
      h("div", {}, h("label", { for: "reject-reason" }, "Reason (optional)"), reason,
        h("div", { class: "form-row" }, reject)));
    const panel = h("section", { class: "panel waiting-panel", id: "approval", hidden: true },
      h("h2", {}, "Waiting"), about, answers, problem);
    const message = h("div", { id: "answer-message", role: "status" }); // outlives the panel
    let token = null;
    let answered = null; // the token this page answered: its buttons do not come back

    async function send(body, button) {
      problem.replaceChildren();
      message.replaceChildren();
      approve.disabled = reject.disabled = true;
      const sent = token;
      try {
        const reply = await api(`/callbacks/${encodeURIComponent(sent)}`, { method: "POST", body });
        answered = sent;
        panel.hidden = true;
        message.replaceChildren(h("p", { class: "notice ok", id: "answered" },
          `${body.status === "approved" ? "Approved" : "Rejected"}: the run goes on.`));
        onAnswered(reply);
      } catch (err) {
        if (err.status === 409 || err.status === 404) {
          const why = err.status === 404 ? "the callback is unknown (its run may be gone)" : err.message.replace(/\.$/, "");
          message.replaceChildren(h("p", { class: "notice", id: "answer-refused", "data-status": err.status },
            `Not ${body.status}: ${why}.`));
          onStale();
        } else {
          problem.replaceChildren(h("div", { class: "problem" }, err.message));
        }
      } finally {
        approve.disabled = reject.disabled = false;
        button.blur();
      }
    }
    approve.addEventListener("click", () => {
      let body = { status: "approved" };
      if (output.value.trim()) {
        try {
          body.output = JSON.parse(output.value);
        } catch (err) {
          problem.replaceChildren(h("p", { class: "problem", id: "output-invalid" },
            `The output is not JSON (${err.message}). Write an object such as {"ok": true}, or a string in double quotes; leave it empty for none.`));
          output.focus();
          return;
        }
        const isObject = body.output !== null && typeof body.output === "object" && !Array.isArray(body.output);
        if (resultKey === null && !isObject) {
          problem.replaceChildren(h("p", { class: "problem", id: "output-invalid" },
            "This node names no callback.result: the output must be a JSON object, its keys merged into the state."));
          output.focus();
          return;
        }
      }
      send(body, approve);
    });
    reject.addEventListener("click", () => {
      const body = { status: "rejected" };
      if (reason.value.trim()) body.reason = reason.value.trim();
      send(body, reject);
    });
    return {
      panel,
      message,
      sync(run) {
        const waiting = run.status === "waiting" ? run.waiting : null;
        const next = waiting && waiting.callback_url ? callbackToken(waiting.callback_url) : null;
        panel.hidden = !waiting || (next !== null && next === answered);
        if (!waiting) {
          token = null;
          return;
        }
        if (next !== token) {
          // a new wait (a rejected draft revised and back in review): a fresh form
          output.value = reason.value = "";
          problem.replaceChildren();
          if (next) message.replaceChildren();
        }
        token = next;
        answers.hidden = !token;
        const spec = definition.nodes[waiting.node] || {};
        resultKey = (spec.callback && spec.callback.result) || null;
        lands.replaceChildren(...(resultKey !== null
          ? ["stored in the state as ", h("code", {}, `state.${resultKey}`)]
          : ["an object whose keys are merged into the state"]));
        about.replaceChildren(...(waiting.until
          ? ["At ", h("b", {}, waiting.node), ` until ${when(waiting.until)}.`]
          : ["At ", h("b", {}, waiting.node), " for an answer", waiting.expires_at ? `, until ${when(waiting.expires_at)}` : "",
            token ? "." : " (this stack signs no callback URLs, so none can be answered here)."]));
      },
    };
  }

  async function runPage(runId) {
    let run = await api(`/graph/state/${encodeURIComponent(runId)}`);
    const entries = [...run.logs];
    while (run.logs_next != null) {
      const page = await api(`/graph/state/${encodeURIComponent(runId)}?after=${run.logs_next}`);
      entries.push(...page.logs);
      run = page;
    }
    const graph = await api(`/graph/${encodeURIComponent(run.graph_id)}`);
    const loops = new Set(Object.entries(graph.definition.nodes).filter(([, n]) => n && n.loop_condition != null).map(([id]) => id));

    const drawing = h("div", { class: "graphbox", id: "drawing" });
    const status = h("span", { id: "run-status" });
    const metaSteps = h("b", {});
    const metaDuration = h("b", {});
    const errorBox = h("div", { id: "run-error" });
    const timeline = h("ol", { class: "timeline", id: "timeline" });
    const detail = h("div", { class: "detail", id: "entry-detail" }, h("p", { class: "muted" }, "Click a log entry to see its result."));
    const statePre = h("pre", { class: "json", id: "run-state" });
    const cancel = h("button", { class: "danger", type: "button", id: "cancel", onclick: async () => {
      cancel.disabled = true;
      try {
        update(await api(`/graph/run/${encodeURIComponent(runId)}/cancel`, { method: "POST" }));
      } catch (err) {
        errorBox.replaceChildren(h("div", { class: "problem" }, err.message));
      }
    } }, "Cancel");
    const redrive = redriveControls(runId, (view) => {
      update(view);
      followLive();
    });
    // Answered: the run goes on (the socket brings its entries); refused: read it again.
    const approval = approvalControls(graph.definition, (reply) => {
      if (reply.status && !LIVE.has(reply.status)) readRun(); // it ended there (its socket says so too)
    }, () => readRun());

    main.replaceChildren(
      h("div", { class: "pagehead" }, h("h1", {}, "Run ", h("span", { class: "mono" }, shortId(runId))), status,
        h("span", { class: "spacer" }), cancel, redrive.button),
      h("div", { class: "meta" }, h("span", {}, "id ", h("b", { class: "mono" }, runId)),
        h("span", {}, "graph ", link(`/console/graphs/${run.graph_id}`, graph.name || shortId(run.graph_id))),
        h("span", {}, "started ", h("b", {}, when(run.created_at))), h("span", {}, "steps ", metaSteps),
        h("span", {}, "duration ", metaDuration)),
      errorBox,
      approval.message,
      approval.panel,
      redrive.form,
      h("div", { class: "grid cols-2" },
        h("section", { class: "panel" }, h("h2", {}, "Graph"), drawing, legend(["ok", "failed", "waiting", "current"])),
        h("div", { class: "stack" },
          h("section", { class: "panel" }, h("h2", {}, "Timeline"), timeline, detail),
          h("section", { class: "panel" }, h("h2", {}, "State"), statePre)))
    );
    const view = FlowGraph.draw(drawing, graph.definition);
    const iterations = new Map();
    let lastSeq = -1; // the last log entry shown

    function select(item, entry) {
      for (const li of timeline.children) li.classList.toggle("selected", li === item);
      const keys = entry.result && typeof entry.result === "object" && !Array.isArray(entry.result) ? Object.keys(entry.result) : [];
      detail.replaceChildren(
        h("h3", {}, `#${entry.seq} ${entry.node} — attempt ${entry.attempt ?? 1}`),
        h("div", { class: "muted" }, `${when(entry.started_at)} · ${entry.duration_ms ?? "?"} ms · next: ${entry.next ?? "(end)"}`),
        h("h3", {}, "State keys changed"),
        keys.length ? h("div", { class: "keys", id: "changed-keys" }, keys.map((k) => h("code", {}, k))) : h("p", { class: "muted" }, "none"),
        h("h3", {}, "Result"), h("pre", { class: "json", id: "entry-result" }, json(entry.result ?? null)),
        entry.error ? [h("h3", {}, "Error"), h("pre", { class: "json" }, json(entry.error))] : null);
    }
    function addEntry(entry) {
      const item = h("li", { "data-seq": entry.seq, "data-node": entry.node, tabindex: 0 },
        h("span", { class: "seq" }, `#${entry.seq}`),
        h("span", { class: "node" }, entry.node, entry.branch != null ? ` › ${entry.branch}` : entry.index != null ? ` [${entry.index}]` : ""),
        h("span", { class: "dur" }, entry.duration_ms != null ? `${Math.round(entry.duration_ms)} ms` : ""), badge(entry.status));
      item.addEventListener("click", () => select(item, entry));
      item.addEventListener("keydown", (e) => { if (e.key === "Enter") select(item, entry); });
      timeline.append(item);
      view.setNodeStatus(entry.node, entry.status);
      if (entry.branch != null) view.setNodeStatus(entry.branch, entry.status); // a parallel branch's own entry
      if (loops.has(entry.node) && entry.status === "ok") {
        iterations.set(entry.node, (iterations.get(entry.node) || 0) + 1);
        view.setIterations(entry.node, iterations.get(entry.node));
      }
      if (run.status === "running") {
        run.current_node = entry.next;
        view.setCurrent(entry.next);
      }
      run.step = Math.max(run.step, entry.seq + 1);
      lastSeq = Math.max(lastSeq, entry.seq);
      metaSteps.textContent = run.step;
    }
    function update(next) {
      const wasCurrent = run.status === "running" ? run.current_node : run.status === "waiting" ? run.waiting?.node : null;
      run = { ...run, ...next };
      status.replaceChildren(badge(run.status));
      cancel.hidden = !LIVE.has(run.status);
      redrive.sync(run);
      approval.sync(run);
      metaSteps.textContent = run.step;
      metaDuration.textContent = duration(run);
      statePre.textContent = json(run.state);
      view.setCurrent(run.status === "running" ? run.current_node : null);
      if (run.status === "cancelled" && wasCurrent) view.setNodeStatus(wasCurrent, "cancelled");
      errorBox.replaceChildren(...(run.error ? [h("div", { class: "errorbox", id: "failure" },
        h("h2", {}, `Failed at ${run.error.node ?? "?"}: ${run.error.type ?? "error"}`), h("div", { class: "mono" }, run.error.message ?? ""))] : []));
    }
    // The run as stored now (a wait's callback URL, or the run moved on): unless an entry
    // came while it was read, as that entry is newer news.
    async function readRun() {
      const seen = lastSeq;
      try {
        const view = await api(`/graph/state/${encodeURIComponent(runId)}?logs=false`);
        if (seen === lastSeq) update(view);
      } catch {
        // the next entry or the final message reads it again
      }
    }
    entries.forEach(addEntry);
    update(run);
    let following = false;
    // Follows a running run over the socket until its final message (again after a redrive).
    function followLive() {
      if (following) return;
      following = true;
      const ticker = setInterval(() => { metaDuration.textContent = duration(run); }, 1000);
      let stateTimer = null;
      let finished = false;
      const refreshState = () => {
        clearTimeout(stateTimer);
        // Only the state: the status changes with the socket's final message, which
        // comes after every entry (a read may see the run finished before they arrive).
        stateTimer = setTimeout(async () => {
          try {
            const view = await api(`/graph/state/${encodeURIComponent(runId)}?logs=false`);
            if (!finished) update({ state: view.state });
          } catch {
            // the next entry or the final message reads it again
          }
        }, 250);
      };
      live.follow(runId, lastSeq,
        (entry) => {
          if (entry.status !== "waiting" && run.status === "waiting") {
            update({ status: "running", current_node: entry.node }); // answered, or its timer went off
          }
          addEntry(entry);
          if (entry.status === "waiting") {
            update({ status: "waiting", current_node: entry.node, waiting: null });
            readRun(); // what it waits for: the callback URL comes with the run's view
          } else {
            refreshState();
          }
        },
        async () => {
          finished = true;
          following = false;
          clearTimeout(stateTimer);
          clearInterval(ticker);
          try {
            update(await api(`/graph/state/${encodeURIComponent(runId)}?logs=false`));
          } catch (err) {
            errorBox.replaceChildren(h("div", { class: "problem" }, `The run ended; reading it failed: ${err.message}. Reload to retry.`));
          }
        });
    }
    if (LIVE.has(run.status)) followLive();
  }

  window.FlowConsole.pages.run = runPage;
})();
