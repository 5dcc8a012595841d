// qpsmtpd live view: server-sent events in, tables and two small canvas charts out.
// Everything the server sends is data: it goes into the page through textContent only.
"use strict";

(function () {
  const SYMBOL = { accept: "\u2713", refuse: "\u2717", defer: "\u21bb", skip: "\u00b7" };
  const FIXED = [
    ["time", "time"], ["state", "state"], ["client", "client"], ["helo", "HELO"], ["sender", "sender"],
    ["recipients", "recipients"], ["tls", "TLS"], ["auth", "AUTH"], ["size", "size"], ["by", "decided by"],
  ];
  const PALETTE = ["#d2343d", "#7b4fc9", "#1f8fbf", "#e0a100", "#2e9d4f", "#c65d21", "#6b7480"];
  const state = { plugins: [], rows: [], live: [], ticks: [], keep: 100, history: 120, tick: 1 };

  function cell(tr, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.appendChild(td);
    return td;
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    return d.toLocaleTimeString([], { hour12: false });
  }

  function size(bytes) {
    if (!bytes) return "";
    if (bytes < 10240) return bytes + " B";
    if (bytes < 10485760) return Math.round(bytes / 1024) + " KiB";
    return (bytes / 1048576).toFixed(1) + " MiB";
  }

  function columns() {
    const seen = new Set(state.plugins);
    const extra = [];
    for (const row of state.rows.concat(state.live)) {
      for (const plugin of Object.keys(row.verdicts || {})) {
        if (!seen.has(plugin)) { seen.add(plugin); extra.push(plugin); }
      }
    }
    return state.plugins.concat(extra);
  }

  function header(table, plugins) {
    const thead = table.tHead;
    const key = plugins.join("\n");
    if (thead.dataset.key === key) return;
    thead.dataset.key = key;
    thead.textContent = "";
    const tr = document.createElement("tr");
    for (const [, title] of FIXED) {
      const th = document.createElement("th");
      th.textContent = title;
      tr.appendChild(th);
    }
    for (const plugin of plugins) {
      const th = document.createElement("th");
      th.className = "plugin";
      th.textContent = plugin;
      th.title = plugin;
      tr.appendChild(th);
    }
    thead.appendChild(tr);
  }

  function renderRow(row, plugins) {
    const tr = document.createElement("tr");
    tr.dataset.id = row.id;
    tr.dataset.state = row.state;
    cell(tr, clock(row.time));
    cell(tr, row.state + (row.reply ? " " + row.reply : ""));
    const client = cell(tr, row.ip + (row.name ? " " + row.name : ""), "client");
    client.title = row.ip + (row.name ? " (" + row.name + ")" : "");
    cell(tr, row.helo, "helo");
    cell(tr, row.sender, "sender");
    const recipients = row.recipients.join(", ") + (row.more ? " +" + row.more : "");
    cell(tr, recipients, "recipients").title = recipients;
    cell(tr, row.tls, "tls");
    cell(tr, row.auth, "auth");
    cell(tr, size(row.size), "num size");
    cell(tr, row.by, "by");
    for (const plugin of plugins) {
      const verdict = row.verdicts[plugin];
      const td = cell(tr, verdict ? SYMBOL[verdict.v] : "", verdict ? "v v-" + verdict.v : "v v-none");
      td.dataset.plugin = plugin;
      if (verdict) {
        td.dataset.verdict = verdict.v;
        td.title = plugin + ": " + verdict.hooks;
      }
    }
    return tr;
  }

  function renderTables(fresh) {
    const plugins = columns();
    const rowsTable = document.getElementById("rows");
    const liveTable = document.getElementById("live");
    header(rowsTable, plugins);
    header(liveTable, plugins);
    const body = rowsTable.tBodies[0];
    body.textContent = "";
    for (let i = state.rows.length - 1; i >= 0; i--) {
      const tr = renderRow(state.rows[i], plugins);
      if (fresh && fresh.has(state.rows[i].id)) tr.classList.add("fresh");
      body.appendChild(tr);
    }
    const liveBody = liveTable.tBodies[0];
    liveBody.textContent = "";
    for (const row of state.live) liveBody.appendChild(renderRow(row, plugins));
    const sessions = state.sessions || state.live.length;
    document.getElementById("live-count").textContent =
      "(" + (sessions > state.live.length ? state.live.length + " of " + sessions : sessions) + ")";
    document.getElementById("rows-count").textContent = "(" + state.rows.length + ")";
  }

  // -- charts --------------------------------------------------------------------
  function chart(canvas, series) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 22;
    ctx.clearRect(0, 0, w, h);
    let max = 1;
    for (const s of series) for (const v of s.values) if (v > max) max = v;
    ctx.strokeStyle = "#dde1e6";
    ctx.fillStyle = "#6b7480";
    ctx.font = "10px sans-serif";
    ctx.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = h - pad - f * (h - 2 * pad);
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
      ctx.fillText(String(Math.round(max * f * 10) / 10), 2, y + 3);
    }
    const n = Math.max(2, state.history || 120, state.ticks.length);  // a fixed window: new seconds enter on the right
    const step = (w - pad - 4) / (n - 1);
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      let x = 0, y = 0;
      s.values.forEach(function (v, i) {
        x = pad + (i + n - s.values.length) * step;
        y = h - pad - (v / max) * (h - 2 * pad);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
      if (s.values.length) {  // the latest second as a dot: visible from the first tick on
        ctx.beginPath();
        ctx.arc(x - 2, y, 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  }

  function legend(element, series) {
    element.textContent = "";
    for (const s of series) {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color;
      span.appendChild(swatch);
      span.appendChild(document.createTextNode(s.name + " " + (s.values.length ? s.values[s.values.length - 1] : 0)));
      element.appendChild(span);
    }
  }

  function renderCharts() {
    const per = state.tick || 1;
    const pick = (name) => state.ticks.map((t) => (t[name] || 0) / per);
    const messages = [
      { name: "accepted", color: "#2e9d4f", values: pick("accepted") },
      { name: "refused", color: "#d2343d", values: pick("refused") },
      { name: "deferred", color: "#e0a100", values: pick("deferred") },
    ];
    chart(document.getElementById("chart-messages"), messages);
    legend(document.getElementById("legend-messages"), messages);
    const totals = {};
    for (const t of state.ticks) for (const [plugin, n] of Object.entries(t.refusals || {})) {
      totals[plugin] = (totals[plugin] || 0) + n;
    }
    const top = Object.keys(totals).sort((a, b) => totals[b] - totals[a]).slice(0, PALETTE.length);
    const refusals = top.map((plugin, i) => ({
      name: plugin, color: PALETTE[i], values: state.ticks.map((t) => ((t.refusals || {})[plugin] || 0) / per),
    }));
    chart(document.getElementById("chart-refusals"), refusals);
    legend(document.getElementById("legend-refusals"), refusals);
  }

  // -- the stream ----------------------------------------------------------------
  function status(text, name) {
    const element = document.getElementById("status");
    element.textContent = text;
    element.dataset.state = name;
  }

  function onState(event) {
    Object.assign(state, JSON.parse(event.data));
    renderTables(null);
    renderCharts();
    status("live", "live");
  }

  function onUpdate(event) {
    const update = JSON.parse(event.data);
    state.plugins = update.plugins;
    state.live = update.live;
    state.sessions = update.sessions;
    // a row that ended just before this page subscribed comes in the state and again here
    const known = new Set(state.rows.map((r) => r.id));
    const fresh = update.rows.filter((r) => !known.has(r.id));
    state.rows = state.rows.concat(fresh).slice(-state.keep);
    state.ticks.push(update.figures);
    if (state.ticks.length > (state.history || 120)) state.ticks.shift();
    renderTables(new Set(fresh.map((r) => r.id)));
    renderCharts();
    status("live", "live");
  }

  const source = new EventSource("events");
  source.addEventListener("state", onState);
  source.addEventListener("update", onUpdate);
  source.onerror = function () { status("reconnecting", "lost"); };
  window.qpsmtpdLive = state;  // for scripts and tests
})();
