// The Queues view (#queues): one row per queue from GET /v1/queues, with its counts, its
// state (paused, and by whom) and its limits; a write token may pause, resume and set the
// limits (PUT /v1/queues/{name}). Loaded after dashboard.js, whose helpers it uses.
"use strict";

const queueErrors = {}; // queue name -> the last refusal, shown in its row until it acts again

// dashboard.js's queueState also names the limits; here they have columns of their own.
function runState(q) {
  return q.paused ? pausedState(q) : "running";
}

function breakerText(breaker) {
  if (!breaker) return "off";
  return `${breaker.failures} failures in ${breaker.window} s; cooldown ${breaker.cooldown} s`;
}

// "N/S" as the CLI's --rate takes it (N tasks per S seconds); empty is unlimited.
function parseRate(text) {
  const value = text.trim();
  if (!value) return null;
  const match = /^([0-9]+)\s*\/\s*([0-9]*\.?[0-9]+)$/.exec(value);
  if (!match) {
    throw new Error(`rate "${value}" is not N/S (N tasks per S seconds), nor empty`);
  }
  return { limit: Number(match[1]), per: Number(match[2]) };
}

function parseConcurrency(text) {
  const value = text.trim();
  if (!value) return null;
  if (!/^[0-9]+$/.test(value)) {
    throw new Error(`concurrency "${value}" is not a whole number, nor empty`);
  }
  return Number(value);
}

function reportQueue(name) {
  return (message) => {
    if (message) queueErrors[name] = message;
    else delete queueErrors[name];
  };
}

function queueLimitsForm(q, report) {
  const form = el("form", null, "inline limits");
  const concurrency = el("input");
  concurrency.name = "concurrency";
  concurrency.inputMode = "numeric";
  concurrency.placeholder = "unlimited";
  concurrency.title = "concurrency: tasks running at once (empty: unlimited)";
  concurrency.value = q.concurrency === null ? "" : String(q.concurrency);
  concurrency.setAttribute("aria-label", `concurrency of ${q.name}`);
  const rate = el("input");
  rate.name = "rate";
  rate.placeholder = "N/S";
  rate.title = "rate: N tasks per S seconds (empty: unlimited)";
  rate.value = q.rate ? `${q.rate.limit}/${q.rate.per}` : "";
  rate.setAttribute("aria-label", `rate of ${q.name} (N tasks per S seconds)`);
  const save = inlineButton("Set limits", "secondary set-limits", () => api(
    "PUT", `/v1/queues/${encodeURIComponent(q.name)}`,
    { concurrency: parseConcurrency(concurrency.value), rate: parseRate(rate.value) },
  ), report);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    save.click();
  });
  form.append(concurrency, rate, save);
  return form;
}

function queueActions(q) {
  const cell = el("td");
  const box = cell.appendChild(el("div", null, "row-actions"));
  const report = reportQueue(q.name);
  const path = `/v1/queues/${encodeURIComponent(q.name)}`;
  const toggle = q.paused
    ? inlineButton("Resume", "secondary resume", () => api("PUT", path, { paused: false }), report)
    : inlineButton("Pause", "danger pause", () => api("PUT", path, { paused: true }), report);
  box.append(toggle, queueLimitsForm(q, report));
  return cell;
}

function renderQueueList(queues) {
  $("queue-actions-head").hidden = !canWrite;
  const body = $("queue-list").tBodies[0];
  body.replaceChildren();
  for (const q of queues) {
    const row = el("tr");
    row.dataset.queue = q.name;
    const state = el("td", runState(q), q.paused ? "state paused" : "state");
    row.append(
      el("td", q.name),
      state,
      ...STATUSES.map((s) => el("td", count(q.counts[s] || 0))),
      el("td", age(q.oldest_pending_age_seconds)),
      el("td", q.concurrency === null ? "unlimited" : count(q.concurrency)),
      el("td", rateText(q.rate)),
      el("td", breakerText(q.breaker)),
    );
    if (canWrite) row.append(queueActions(q));
    body.appendChild(row);
    if (queueErrors[q.name]) {
      const cell = el("td", queueErrors[q.name], "error-text");
      cell.colSpan = row.cells.length;
      body.appendChild(el("tr", null, "error-row")).appendChild(cell);
    }
  }
  $("queue-list-empty").hidden = queues.length > 0;
}

// Re-read every few seconds like the overview, but not over an edit in progress.
async function loadQueues() {
  const editing = document.activeElement && $("queue-list").contains(document.activeElement)
    && document.activeElement.tagName === "INPUT";
  const queues = await api("GET", "/v1/queues");
  if (!editing) renderQueueList(queues);
}

registerView("queues", loadQueues);
