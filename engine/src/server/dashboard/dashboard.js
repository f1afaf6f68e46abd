// The dashboard: subscribes to one materialized view over WebSocket (docs/live-views.md),
// keeps its rows by key, shows them in a table and charts one numeric column over time.
"use strict";

const $ = (id) => document.getElementById(id);
const plot = new Plot($("chart"), $("legend"));
const state = {
  socket: null,
  view: null,        // {name, columns, key}
  rows: new Map(),   // identity -> {row, count}
  changed: new Map(),// identity -> time of last change (ms, wall clock)
  updates: 0,
  ts: null,
  dirty: false,
};
window.vibelux = state; // for people poking around in the console, and for the browser test

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}

function identity(row) {
  const key = state.view.key;
  return JSON.stringify(key ? key.map((k) => row[k]) : state.view.columns.map((c) => row[c.name]));
}

const isNumeric = (column) => column.type === "DOUBLE" || column.type === "BIGINT";
const timeColumn = () => {
  const times = state.view.columns.filter((c) => c.type.startsWith("TIMESTAMP"));
  const keyed = times.find((c) => (state.view.key || []).includes(c.name));
  return (keyed || times[0] || {}).name;
};

// The chart's series for a row: the key columns other than time, or the view's name.
function seriesName(row) {
  const time = timeColumn();
  const parts = (state.view.key || []).filter((k) => k !== time && !k.startsWith("window_"));
  return parts.length ? parts.map((k) => row[k]).join(" / ") : state.view.name;
}

function chartPoint(row, diff, ts) {
  const column = $("column").value;
  if (!column) return;
  const time = timeColumn();
  const t = time && (state.view.key || []).includes(time) ? Date.parse(row[time] + "Z") : ts;
  const v = Number(row[column]);
  if (diff > 0) plot.set(seriesName(row), t, v);
  else if (time && (state.view.key || []).includes(time)) plot.remove(seriesName(row), t);
}

function apply(entries, ts) {
  const now = performance.now();
  // Retractions come first in a message; an update is a retraction and an insertion.
  for (const { row, diff } of entries) {
    const id = identity(row);
    const entry = state.rows.get(id) || { row, count: 0 };
    entry.count += diff;
    if (diff > 0) entry.row = row;
    if (entry.count > 0) state.rows.set(id, entry); else state.rows.delete(id);
    state.changed.set(id, now);
    chartPoint(row, diff, ts);
    state.updates += 1;
  }
  state.dirty = true;
}

function render() {
  if (state.dirty && state.view) {
    state.dirty = false;
    const columns = state.view.columns;
    $("rows").tHead.replaceChildren(headerRow(columns));
    const body = document.createElement("tbody");
    const now = performance.now();
    // Newest first (by the time column, e.g. window_start), then by key.
    const time = timeColumn();
    const ids = [...state.rows.keys()].sort((a, b) => {
      const ta = time ? String(state.rows.get(a).row[time]) : "";
      const tb = time ? String(state.rows.get(b).row[time]) : "";
      return ta === tb ? (a < b ? -1 : a > b ? 1 : 0) : ta < tb ? 1 : -1;
    });
    for (const id of ids.slice(0, 500)) {
      const { row, count } = state.rows.get(id);
      for (let i = 0; i < Math.min(count, 5); i++) {
        const tr = document.createElement("tr");
        tr.dataset.key = id;
        if (now - (state.changed.get(id) || 0) < 1000) tr.className = "changed";
        for (const c of columns) {
          const td = document.createElement("td");
          const value = row[c.name];
          td.textContent = value === null ? "∅" : isNumeric(c) ? formatNumber(value) : value;
          if (isNumeric(c)) td.className = "num";
          td.dataset.column = c.name;
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
    }
    $("rows").replaceChild(body, $("rows").tBodies[0]);
    plot.draw();
    const when = state.ts ? new Date(state.ts).toISOString().replace("T", " ").slice(0, 19) : "—";
    setStatus(`${state.rows.size} rows · ${state.updates} changes · as of ${when} UTC`);
  }
  requestAnimationFrame(render);
}

function headerRow(columns) {
  const tr = document.createElement("tr");
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c.unit ? `${c.name} (${c.unit})` : c.name;
    tr.appendChild(th);
  }
  return tr;
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

// An engine started with --auth wants a token. Open the page once as …/#token=TOKEN: the token is
// kept for this tab only (sessionStorage) and taken out of the address bar. A browser cannot set
// headers on a WebSocket, so the subscription carries it as `access_token`.
function readToken() {
  const given = location.hash.match(/^#token=([^&]+)/);
  if (given) {
    sessionStorage.setItem("vibelux-token", decodeURIComponent(given[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("vibelux-token");
}

const accessToken = readToken();

function subscribe(name) {
  if (state.socket) state.socket.close();
  state.rows.clear();
  state.changed.clear();
  plot.clear();
  state.updates = 0;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = accessToken ? `?access_token=${encodeURIComponent(accessToken)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/views/${encodeURIComponent(name)}/subscribe${query}`);
  state.socket = socket;
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    switch (message.type) {
      case "schema":
        state.view = { name: message.view, columns: message.columns, key: message.key };
        fillColumns(message.columns);
        break;
      case "snapshot":
        apply(message.rows, message.ts);
        state.ts = message.ts;
        break;
      case "updates":
        apply(message.updates, message.ts);
        break;
      case "progress":
        state.ts = message.ts;
        state.dirty = true;
        break;
      case "complete":
        state.ts = message.ts;
        state.dirty = true;
        setStatus("the pipeline finished: this view is complete");
        break;
      case "error":
        setStatus(message.reason, true);
        break;
    }
  };
  socket.onclose = () => {
    if (state.socket === socket) setTimeout(() => state.socket === socket && subscribe(name), 2000);
  };
  history.replaceState(null, "", `#${name}`);
}

function fillColumns(columns) {
  const previous = $("column").value;
  const numeric = columns.filter(isNumeric);
  $("column").replaceChildren(...numeric.map((c) => new Option(c.name, c.name)));
  if (numeric.some((c) => c.name === previous)) $("column").value = previous;
}

async function start() {
  let views;
  try {
    const headers = accessToken ? { Authorization: `Bearer ${accessToken}` } : {};
    const response = await fetch("/v1/views", { headers });
    if (response.status === 401 || response.status === 403) {
      const { error } = await response.json();
      setStatus(`${error}. Open this page as ${location.origin}/#token=YOUR_TOKEN`, true);
      return;
    }
    views = (await response.json()).views;
  } catch (error) {
    setStatus(`cannot reach the engine: ${error}`, true);
    return;
  }
  if (!views.length) {
    setStatus("this pipeline has no materialized views (CREATE MATERIALIZED VIEW serves one)", true);
    return;
  }
  $("view").replaceChildren(...views.map((v) => new Option(`${v.name} (${v.rows} rows)`, v.name)));
  const wanted = decodeURIComponent(location.hash.slice(1));
  $("view").value = views.some((v) => v.name === wanted) ? wanted : views[0].name;
  $("view").onchange = () => subscribe($("view").value);
  $("column").onchange = () => {
    plot.clear();
    for (const { row } of state.rows.values()) chartPoint(row, 1, state.ts);
    state.dirty = true;
  };
  subscribe($("view").value);
  requestAnimationFrame(render);
}

start();
