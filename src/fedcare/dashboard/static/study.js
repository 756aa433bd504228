// fedcare dashboard: the study page's live parts (learning curves, round timeline, status).
// Data comes from the page's <script type="application/json" id="study-data"> block, then
// from the study's event stream (/api/v1/studies/{id}/events): no reload, no inline script.
"use strict";
(function () {
  const block = document.getElementById("study-data");
  if (!block) return;
  const data = JSON.parse(block.textContent);
  const study = data.study;
  const rounds = new Map(); // round number -> RoundEntry
  for (const entry of data.rounds) rounds.set(entry.round, entry);

  const STATUS_WORDS = {
    pending: "waiting to start", running: "running", completed: "finished",
    failed: "failed", cancelled: "cancelled",
  };
  const SITE_WORDS = {
    "sent": "task sent, waiting for the reply",
    "replied": "replied",
    "aggregated": "replied; its update was used",
    "not used": "replied, but its update was not used",
    "refused": "refused",
    "failed": "failed",
    "timed out": "no reply in time",
  };
  const REPLY_WORDS = {
    fit: "model update", evaluate: "evaluation result", stats: "summary statistics",
    analytics: "aggregate results",
  };
  const PREFERRED = ["auroc", "accuracy", "c_index", "r2", "f1", "loss", "rmse"];

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  function size(bytes) {
    if (bytes === null || bytes === undefined) return "—";
    if (bytes < 1024) return bytes + " bytes";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function clock(iso) {
    if (!iso) return "—";
    return iso.slice(0, 19).replace("T", " ") + " UTC";
  }

  function sorted() {
    return Array.from(rounds.values()).sort((a, b) => a.round - b.round);
  }

  function renderTimeline() {
    const body = document.querySelector("#timeline tbody");
    if (!body) return;
    body.replaceChildren();
    const all = sorted().reverse(); // newest first
    for (const entry of all) {
      const sites = Object.keys(entry.sites).sort();
      sites.forEach(function (site, i) {
        const part = entry.sites[site];
        const row = document.createElement("tr");
        row.dataset.round = String(entry.round);
        row.dataset.site = site;
        row.dataset.status = part.status;
        if (i === 0) {
          const label = entry.round === 0 ? "start" : "round " + entry.round;
          const more = entry.status === "completed" ? "" : " (" + entry.status + ")";
          const cell = text("td", label + more);
          cell.rowSpan = sites.length;
          row.appendChild(cell);
        }
        row.appendChild(text("td", site));
        const what = document.createElement("td");
        what.appendChild(text("span", SITE_WORDS[part.status] || part.status,
          "status status-" + part.status.replace(" ", "-")));
        if (part.reason) {
          what.appendChild(document.createElement("br"));
          what.appendChild(text("span", part.reason, "muted"));
        }
        row.appendChild(what);
        let sent = "—";
        if (part.status === "refused" || part.status === "failed") sent = "no data (a " + part.status.replace("refused", "refusal").replace("failed", "failure") + ")";
        else if (part.reply_bytes !== null && part.reply_bytes !== undefined) sent = (part.reply_kind ? (REPLY_WORDS[part.reply_kind] || part.reply_kind) + ", " : "") + size(part.reply_bytes);
        row.appendChild(text("td", sent));
        row.appendChild(text("td", clock(part.replied_at || part.sent_at)));
        body.appendChild(row);
      });
    }
    const empty = document.getElementById("timeline-empty");
    if (empty) empty.hidden = all.length > 0;
  }

  function metricName() {
    const names = new Set();
    for (const entry of rounds.values()) {
      for (const part of Object.values(entry.sites)) {
        for (const name of Object.keys(part.metrics || {})) if (name !== "n") names.add(name);
      }
    }
    for (const name of PREFERRED) if (names.has(name)) return name;
    return names.size ? Array.from(names).sort()[0] : null;
  }

  function renderCurves() {
    const target = document.getElementById("curves");
    if (!target) return;
    const metric = metricName();
    const empty = document.getElementById("curves-empty");
    if (empty) empty.hidden = metric !== null;
    if (metric === null) return;
    const traces = new Map();
    let last = 0;
    for (const entry of sorted()) {
      for (const [site, part] of Object.entries(entry.sites)) {
        const value = (part.metrics || {})[metric];
        if (typeof value !== "number") continue;
        if (!traces.has(site)) traces.set(site, { x: [], y: [], name: site, mode: "lines+markers", type: "scatter" });
        traces.get(site).x.push(entry.round);
        traces.get(site).y.push(value);
        last = Math.max(last, entry.round);
      }
    }
    target.dataset.lastRound = String(last);
    target.dataset.metric = metric;
    if (typeof window.Plotly === "undefined") return;
    const layout = {
      margin: { t: 20, r: 20, b: 50, l: 60 },
      xaxis: { title: { text: "round" }, dtick: 1 },
      yaxis: { title: { text: metric + " on the site's test data" } },
      legend: { orientation: "h" },
    };
    window.Plotly.react(target, Array.from(traces.values()), layout,
      { displaylogo: false, responsive: true });
  }

  function showStatus(brief) {
    const status = document.getElementById("study-status");
    if (status) {
      status.textContent = STATUS_WORDS[brief.status] || brief.status;
      status.className = "status status-" + brief.status;
    }
    const reason = document.getElementById("study-reason");
    if (reason) reason.textContent = brief.reason ? " — " + brief.reason : "";
    const done = document.getElementById("rounds-done");
    if (done) done.textContent = String(brief.rounds_done === null ? 0 : brief.rounds_done);
    const bar = document.getElementById("progress");
    if (bar) bar.value = brief.rounds_done || 0;
  }

  function showModel() { // registered when the study finishes: link it without a reload
    const none = document.getElementById("model-none");
    if (!none) return;
    fetch("/api/v1/models", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (models) {
        const mine = models.filter(function (m) { return m.study_id === study.id; }).pop();
        if (!mine) return;
        const line = document.createElement("p");
        line.append("The study registered model ");
        const link = text("a", mine.version);
        link.href = "/models/" + encodeURIComponent(mine.version);
        link.id = "model-link";
        line.append(link, " (from round " + mine.round + ").");
        none.replaceWith(line);
      })
      .catch(function () { /* shown on the next visit */ });
  }

  function refreshRounds() { // the round in progress (tasks sent, replies) is not an event
    fetch("/api/v1/studies/" + study.id + "/rounds", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (all) {
        for (const entry of all) rounds.set(entry.round, entry);
        renderTimeline();
        renderCurves();
      })
      .catch(function () { /* the next event tries again */ });
  }

  function follow() {
    if (typeof EventSource === "undefined") return;
    const note = document.getElementById("live-note");
    const last = sorted().filter(function (e) { return e.status === "completed"; }).pop();
    const after = last ? last.round : -1;
    const source = new EventSource(data.events + "?after_round=" + after);
    source.addEventListener("open", function () { if (note) note.textContent = "Updates live."; });
    source.addEventListener("status", function (ev) {
      showStatus(JSON.parse(ev.data));
      refreshRounds();
    });
    source.addEventListener("round", function (ev) {
      const entry = JSON.parse(ev.data);
      rounds.set(entry.round, entry);
      renderTimeline();
      renderCurves();
    });
    source.addEventListener("end", function (ev) {
      showStatus(JSON.parse(ev.data));
      source.close();
      refreshRounds();
      showModel();
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.hidden = true;
      if (note) note.textContent = "";
    });
    source.addEventListener("error", function () {
      if (note && source.readyState !== EventSource.CLOSED) note.textContent = "Reconnecting…";
    });
  }

  renderTimeline();
  renderCurves();
  if (!["completed", "failed", "cancelled"].includes(study.status)) follow();
})();
