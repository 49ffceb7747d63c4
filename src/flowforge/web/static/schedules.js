// The Schedules view (#schedules): GET /v1/schedules a page at a time, by name, with each
// one's next and last run; a write token may pause, resume (PUT /v1/schedules/{name}) and
// run one now (POST /v1/schedules/{name}/run). Loaded after dashboard.js.
"use strict";

const SCHEDULE_PAGE = 100; // the most GET /v1/schedules gives at once
const scheduleNotes = {}; // schedule name -> {text, failed}: what its last action said
let schedulePage = 1;

function reportSchedule(name) {
  return (text, failed) => {
    if (text) scheduleNotes[name] = { text, failed };
    else delete scheduleNotes[name];
  };
}

// A due time: in this browser's zone, how far off, the exact value in its tooltip.
function dueCell(iso) {
  const cell = when(iso);
  if (iso) {
    const off = (Date.parse(iso) - Date.now()) / 1000;
    cell.append(el("span", off >= 0 ? ` (in ${age(off)})` : ` (${age(-off)} ago)`, "muted"));
  }
  return cell;
}

function scheduleActions(s) {
  const cell = el("td");
  const box = cell.appendChild(el("div", null, "row-actions"));
  const report = reportSchedule(s.name);
  const path = `/v1/schedules/${encodeURIComponent(s.name)}`;
  const toggle = s.paused
    ? inlineButton("Resume", "secondary resume", () => api("PUT", path, { paused: false }), report)
    : inlineButton("Pause", "danger pause", () => api("PUT", path, { paused: true }), report);
  const run = inlineButton("Run now", "secondary run-now", async () => {
    const task = await api("POST", `${path}/run`);
    return `Run now: created task #${task.id}`;
  }, report);
  box.append(toggle, run);
  return cell;
}

function renderScheduleNote(body, s, columns) {
  const note = scheduleNotes[s.name];
  if (!note) return;
  const cell = el("td", note.text, note.failed ? "error-text" : "muted");
  cell.colSpan = columns;
  body.appendChild(el("tr", null, note.failed ? "error-row" : "note-row")).appendChild(cell);
}

function renderSchedules(schedules, meta) {
  $("schedule-actions-head").hidden = !canWrite;
  const body = $("schedule-list").tBodies[0];
  body.replaceChildren();
  for (const s of schedules) {
    const row = el("tr");
    row.dataset.schedule = s.name;
    row.append(
      el("td", s.name),
      el("td", s.title),
      el("td", s.cron, "mono"),
      el("td", s.timezone),
      el("td", s.queue),
      el("td", s.paused ? "paused" : "active", s.paused ? "state paused" : "state"),
      s.paused ? el("td", "— (paused)", "muted") : dueCell(s.next_run_at),
      dueCell(s.last_run_at),
    );
    if (canWrite) row.append(scheduleActions(s));
    body.appendChild(row);
    renderScheduleNote(body, s, row.cells.length);
  }
  // What was said about a schedule no longer listed (deleted meanwhile) shows below.
  const shown = new Set(schedules.map((s) => s.name));
  const gone = Object.entries(scheduleNotes).filter(([name]) => !shown.has(name));
  $("schedule-gone").replaceChildren(...gone.map(([, note]) => el("p", note.text, "error")));
  const pages = Math.max(1, Math.ceil(meta.total / SCHEDULE_PAGE));
  $("schedule-list-empty").hidden = meta.total > 0;
  $("schedule-pages").hidden = pages <= 1;
  $("schedule-page").textContent = `page ${meta.page} of ${pages} (${count(meta.total)} schedules)`;
  $("schedule-prev").disabled = meta.page <= 1;
  $("schedule-next").disabled = meta.page >= pages;
}

async function loadSchedules() {
  const envelope = await request("GET", `/v1/schedules?limit=${SCHEDULE_PAGE}&page=${schedulePage}`);
  renderSchedules(envelope.data, envelope.meta);
}

for (const [id, step] of [["schedule-prev", -1], ["schedule-next", 1]]) {
  $(id).addEventListener("click", () => {
    schedulePage = Math.max(1, schedulePage + step);
    for (const name of Object.keys(scheduleNotes)) delete scheduleNotes[name];
    refresh();
  });
}

registerView("schedules", loadSchedules);
