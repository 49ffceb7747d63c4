// FlowForge operator dashboard: plain JavaScript over the JSON API, no build step.
// The token lives in sessionStorage (this tab only) and goes in an Authorization header
// to this origin only. Text from the API is always set as textContent, never as HTML.
"use strict";

const TOKEN_KEY = "flowforge.token";
const REFRESH_MS = 5000;
const STATUSES = ["pending", "processing", "completed", "failed", "cancelled"];
const $ = (id) => document.getElementById(id);
let timer = null;

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  // The envelope's message and, for a 400, what each field got wrong.
  describe() {
    const details = this.details && typeof this.details === "object"
      ? Object.entries(this.details).map(([k, v]) => `${k}: ${v}`).join("; ")
      : "";
    return details ? `${this.message} (${details})` : this.message;
  }
}

// The whole envelope ({data, error, meta}); `body`, when given, is sent as JSON.
async function request(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let envelope = null;
  try {
    envelope = await response.json();
  } catch (_) {
    throw new ApiError(response.status, "bad_response", `HTTP ${response.status}`);
  }
  if (!response.ok || envelope.error) {
    const error = envelope.error || {};
    throw new ApiError(
      response.status, error.code, error.message || `HTTP ${response.status}`, error.details,
    );
  }
  return envelope;
}

async function api(method, path, body) {
  return (await request(method, path, body)).data;
}

// --- the token's scope --------------------------------------------------------------------
// No route tells a token's scope, so ask the API something only a write token may do and
// that changes nothing: an empty queue-settings PUT. The scope check runs before the body
// is read: a read token gets 403, a write token 400 (no setting sent). Until it answers,
// and for a read token, no action control is drawn.
let canWrite = false;

async function probeScope() {
  try {
    await api("PUT", "/v1/queues/default", {});
    canWrite = true;
  } catch (error) {
    canWrite = error.status !== 403 && error.status !== 401;
  }
}

// A button that asks the API, then re-reads the view; a refusal is reported through
// `report(text, failed)` (shown beside the row it acts on); success clears it or says what
// it made. A 403 means the token is
// read-only after all: the controls go.
function inlineButton(label, cls, run, report) {
  const button = el("button", label, cls);
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const said = await run();
      report(typeof said === "string" ? said : "", false);
    } catch (error) {
      if (error.status === 403) canWrite = false;
      report(`${label} failed: ${error.describe ? error.describe() : error.message}`, true);
    }
    await refresh();
  });
  return button;
}

// --- formatting ---------------------------------------------------------------------------
function count(n) {
  return Number(n).toLocaleString("en-US");
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// A time from the API (ISO 8601) in this browser's zone; the exact value in its tooltip.
function when(iso) {
  if (!iso) return el("td", "—");
  const cell = el("td", new Date(iso).toLocaleString());
  cell.title = iso;
  return cell;
}

function seconds(s) {
  if (s === null || s === undefined) return "—";
  return s < 60 ? `${s.toFixed(3)} s` : age(s);
}

function mebibytes(bytes) {
  return bytes === null || bytes === undefined ? "—" : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function setState(kind, text) {
  const pill = $("state");
  pill.className = `pill pill-${kind}`;
  pill.textContent = text;
}

function showBanner(message) {
  const banner = $("banner");
  banner.textContent = message;
  banner.hidden = !message;
}

// --- sign in and out ----------------------------------------------------------------------
function signedIn() {
  return Boolean(sessionStorage.getItem(TOKEN_KEY));
}

function showSignIn(message) {
  clearTimeout(timer);
  $("board").hidden = true;
  $("signin").hidden = false;
  $("signout").hidden = true;
  $("tabs").hidden = true;
  canWrite = false;
  $("updated").textContent = "";
  setState("idle", "signed out");
  const error = $("signin-error");
  error.textContent = message || "";
  error.hidden = !message;
}

function showBoard() {
  $("signin").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  $("tabs").hidden = false;
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  start();
});

$("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn();
});

// --- the board ----------------------------------------------------------------------------
function renderCounts(stats) {
  const approx = stats.tasks.exact ? "" : "≈ ";
  for (const status of STATUSES) {
    $(`count-${status}`).textContent = approx + count(stats.tasks.by_status[status] || 0);
  }
  const ages = Object.values(stats.oldest_pending_age_seconds);
  $("oldest-pending").textContent = ages.length ? age(Math.max(...ages)) : "—";
  const busy = stats.workers.reduce((sum, w) => sum + w.busy, 0);
  const capacity = stats.workers.reduce((sum, w) => sum + w.capacity, 0);
  $("workers-live").textContent = String(stats.workers.length);
  $("workers-live").title = `${busy} of ${capacity} slots busy`;
}

function renderChart(points) {
  const svg = $("chart");
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const max = Math.max(1, ...points.map((p) => p.completed + p.failed + p.cancelled));
  const width = 600 / points.length;
  points.forEach((p, i) => {
    let y = 120;
    for (const [key, cls] of [["completed", "ok"], ["failed", "bad"], ["cancelled", "cancel"]]) {
      const h = (p[key] / max) * 112;
      if (h <= 0) continue;
      y -= h;
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", String(i * width + 2));
      bar.setAttribute("y", String(y));
      bar.setAttribute("width", String(width - 4));
      bar.setAttribute("height", String(h));
      bar.setAttribute("class", cls);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${new Date(p.minute).toLocaleTimeString()}: ${p[key]} ${key}`;
      bar.appendChild(title);
      svg.appendChild(bar);
    }
  });
  // the last full minute, as tasks a second
  const last = points.length > 1 ? points[points.length - 2] : null;
  $("rate").textContent = last
    ? `— ${((last.completed + last.failed + last.cancelled) / 60).toFixed(1)} tasks/s in the last full minute`
    : "";
}

// A paused queue (GET /v1/queues) in words: by whom (the Queues view says it so too).
function pausedState(q) {
  return q.paused_by === "breaker" ? "paused by its breaker" : "paused";
}

function rateText(rate) {
  return rate ? `${rate.limit} per ${rate.per} s` : "unlimited";
}

// A queue's settings in words: paused and by whom, else its limits.
function queueState(q) {
  if (!q) return "active";
  if (q.paused) return pausedState(q);
  const limits = [];
  if (q.concurrency !== null) limits.push(`${q.concurrency} at once`);
  if (q.rate !== null) limits.push(rateText(q.rate));
  return limits.length ? limits.join(", ") : "active";
}

function renderQueues(stats, queues) {
  const body = $("queues").tBodies[0];
  body.replaceChildren();
  const settings = Object.fromEntries(queues.map((q) => [q.name, q]));
  const none = { pending: 0, processing: 0, failed: 0 };
  const names = [...new Set([...Object.keys(stats.tasks.by_queue), ...Object.keys(settings)])]
    .sort();
  for (const name of names) {
    const c = stats.tasks.by_queue[name] || none;
    const row = el("tr");
    row.dataset.queue = name;
    const state = el("td", queueState(settings[name]));
    if (settings[name] && settings[name].paused) state.className = "paused";
    row.append(
      el("td", name),
      state,
      el("td", count(c.pending)),
      el("td", count(c.processing)),
      el("td", count(c.failed)),
      el("td", age(stats.oldest_pending_age_seconds[name])),
    );
    body.appendChild(row);
  }
  $("queues-empty").hidden = names.length > 0;
}

// A task action; for a read token nothing at all (an empty fragment, so callers append
// alike). A 403 all the same means the scope changed: the controls go, the banner says why.
function actionButton(label, cls, run) {
  if (!canWrite) return document.createDocumentFragment();
  const button = el("button", label, cls);
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await run();
      await refresh();
    } catch (error) {
      button.disabled = false;
      if (error.status === 403) {
        canWrite = false;
        await refresh();
        button.remove();
      }
      showBanner(
        error.status === 403
          ? `${label}: this token is read-only; it needs a write token.`
          : `${label} failed: ${error.message}`,
      );
    }
  });
  return button;
}

function renderFailures(failures) {
  const body = $("failures").tBodies[0];
  body.replaceChildren();
  for (const task of failures) {
    const row = el("tr");
    row.dataset.taskId = String(task.id);
    const id = el("td");
    const link = el("button", `#${task.id}`, "link");
    link.type = "button";
    link.addEventListener("click", () => lookUp(task.id));
    id.appendChild(link);
    const error = el("td", task.last_error || "", "error-text");
    error.title = task.last_error || "";
    const actions = el("td");
    actions.appendChild(
      actionButton("Retry", "secondary retry", () => api("POST", `/v1/tasks/${task.id}/retry`)),
    );
    row.append(
      id,
      el("td", task.title),
      el("td", task.type),
      el("td", task.queue),
      el("td", `${task.attempts}/${task.max_attempts}`),
      error,
      actions,
    );
    body.appendChild(row);
  }
  $("failures-empty").hidden = failures.length > 0;
}

function renderWorkers(workers) {
  const body = $("workers").tBodies[0];
  body.replaceChildren();
  const now = Date.now();
  for (const w of workers) {
    body.appendChild(el("tr")).append(
      el("td", w.host),
      el("td", w.pid),
      el("td", w.queues.join(", ")),
      el("td", `${w.busy}/${w.capacity}`),
      el("td", w.version),
      el("td", w.isolation),
      el("td", `${age((now - Date.parse(w.heartbeat_at)) / 1000)} ago`),
    );
  }
  $("workers-empty").hidden = workers.length > 0;
}

// --- views: the overview here, the others in their own files (queues.js, schedules.js) --
// Each view is a <section data-view=NAME> and a `load` that reads the API and draws it; the
// URL's hash (#queues, #schedules) picks one, and only the shown view is re-read.
const views = {};

function registerView(name, load) {
  views[name] = load;
}

function currentView() {
  const name = location.hash.replace(/^#/, "");
  return Object.hasOwn(views, name) ? name : "overview";
}

function showView() {
  const name = currentView();
  for (const section of document.querySelectorAll("[data-view]")) {
    section.hidden = section.dataset.view !== name;
  }
  for (const tab of document.querySelectorAll("#tabs a")) {
    if (tab.getAttribute("href") === `#${name}`) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
}

async function loadOverview() {
  const [stats, queues] = await Promise.all([api("GET", "/v1/stats"), api("GET", "/v1/queues")]);
  renderCounts(stats);
  renderChart(stats.throughput_per_minute);
  renderQueues(stats, queues);
  renderFailures(stats.recent_failures);
  renderWorkers(stats.workers);
}

registerView("overview", loadOverview);

async function refresh() {
  clearTimeout(timer);
  if (!signedIn()) return showSignIn();
  showView();
  setState("loading", "refreshing");
  try {
    await views[currentView()]();
    showBanner("");
    setState("live", "live");
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      return showSignIn("That token was refused (unknown or revoked).");
    }
    setState("error", "error");
    showBanner(`Cannot load the numbers: ${error.message}. Retrying every ${REFRESH_MS / 1000} s.`);
  }
  if (!document.hidden) timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && signedIn()) refresh();
});

window.addEventListener("hashchange", () => {
  if (signedIn()) refresh();
});

// --- a task's attempts -------------------------------------------------------------------
// One row per attempt, oldest first; a traceback in a collapsed row of its own below it
// (textContent in a <pre>: a handler's text is never HTML).
function renderAttempts(taskId, attempts) {
  $("attempts-of").textContent = `— task #${taskId}, oldest first`;
  const body = $("attempts").tBodies[0];
  body.replaceChildren();
  for (const a of attempts) {
    const row = el("tr");
    row.dataset.attempt = String(a.attempt);
    const took = a.started_at && a.finished_at
      ? (Date.parse(a.finished_at) - Date.parse(a.started_at)) / 1000
      : null;
    const error = el("td", a.error || "", "error-text");
    error.title = a.error || "";
    row.append(
      el("td", `#${a.attempt}`),
      el("td", a.outcome, `status status-${a.outcome}`),
      el("td", a.worker || "—"),
      when(a.started_at),
      when(a.finished_at),
      el("td", seconds(took)),
      el("td", seconds(a.cpu_seconds)),
      el("td", mebibytes(a.max_rss_bytes)),
      el("td", a.exit_signal ?? "—"),
      error,
    );
    body.appendChild(row);
    if (a.traceback) {
      const details = el("details", null, "traceback");
      details.append(el("summary", `traceback of attempt #${a.attempt}`), el("pre", a.traceback));
      const cell = el("td");
      cell.colSpan = row.cells.length;
      cell.appendChild(details);
      body.appendChild(el("tr", null, "traceback-row")).appendChild(cell);
    }
  }
  $("attempts-empty").hidden = attempts.length > 0;
  $("attempts-panel").hidden = false;
}

// --- look-up by id ------------------------------------------------------------------------
async function lookUp(id) {
  const box = $("lookup");
  $("lookup-id").value = String(id);
  box.replaceChildren(el("p", "Loading…", "muted"));
  let task, attempts;
  try {
    [task, attempts] = await Promise.all([
      api("GET", `/v1/tasks/${id}`),
      api("GET", `/v1/tasks/${id}/attempts`),
    ]);
  } catch (error) {
    $("attempts-panel").hidden = true;
    box.replaceChildren(el("p", error.status === 404 ? `No task ${id}.` : error.message, "error"));
    return;
  }
  renderAttempts(task.id, attempts);
  const details = el("dl", null, "task");
  const fields = [
    ["status", task.status + (task.cancel_requested ? " (cancel requested)" : "")],
    ["title", task.title], ["type", task.type], ["queue", task.queue],
    ["priority", task.priority], ["attempts", `${task.attempts}/${task.max_attempts}`],
    ["created", task.created_at], ["started", task.started_at], ["finished", task.completed_at],
    ["worker", task.worker], ["request id", task.request_id], ["last error", task.last_error],
  ];
  for (const [name, value] of fields) {
    if (value === null || value === undefined || value === "") continue;
    details.append(el("dt", name), el("dd", value, name === "status" ? `status status-${task.status}` : ""));
  }
  const parts = [el("h3", `#${task.id}`), details];
  if (task.result !== null && task.result !== undefined) {
    parts.push(el("p", "result", "muted"), el("pre", JSON.stringify(task.result, null, 2)));
  }
  const actions = el("div", null, "actions");
  if (["failed", "cancelled", "completed"].includes(task.status)) {
    actions.appendChild(actionButton("Retry", "secondary retry", async () => {
      await api("POST", `/v1/tasks/${task.id}/retry`);
      await lookUp(task.id);
    }));
  }
  if (["pending", "processing"].includes(task.status) && !task.cancel_requested) {
    actions.appendChild(actionButton("Cancel", "danger cancel", async () => {
      await api("POST", `/v1/tasks/${task.id}/cancel`);
      await lookUp(task.id);
    }));
  }
  parts.push(actions);
  box.replaceChildren(...parts);
}

$("lookup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("lookup-id").value.trim();
  if (/^[0-9]+$/.test(id)) lookUp(id);
});

// --- start (once queues.js and schedules.js, loaded after this file, have registered) ---
async function start() {
  showBoard();
  await probeScope();
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  if (signedIn()) start();
  else showSignIn();
});
