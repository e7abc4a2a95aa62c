// Frontdesk admin console: a small single-page app over /api/admin (no external scripts).
// Everything shown is built with textContent: call transcripts come from callers.
"use strict";

const WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
let csrf = "";
let config = null;

// --- helpers ---------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && k !== "list") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.errors = (body && body.errors) || {};
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const url = path.startsWith("/api/") ? path : `/api/admin${path}`; // /api/outbound sits beside
  const res = await fetch(url, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401 && path !== "/session") { showLogin(); throw new ApiError(401, data); }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 2500);
}

function field(name, value, attrs = {}) {
  return h("input", { name, value: value ?? "", dataset: { field: name }, ...attrs });
}

function errorSlot(name) { return h("div", { className: "error", dataset: { error: name } }); }

function labelled(text, input, name) {
  return h("label", { className: "grow" }, text, input, errorSlot(name || input.name));
}

function clearErrors(root) {
  root.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
  root.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
}

// Show each message next to its field; anything without a slot goes to the form's own slot.
function showErrors(root, err, prefix = "") {
  clearErrors(root);
  const errors = err.errors || {};
  let unplaced = [];
  for (const [key, message] of Object.entries(errors)) {
    const name = prefix && key.startsWith(prefix) ? key.slice(prefix.length) : key;
    const input = root.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (input) input.classList.add("invalid");
    const slot = root.querySelector(`[data-error="${CSS.escape(name)}"]`);
    if (slot) slot.textContent = message;
    else if (input) input.insertAdjacentElement("afterend", h("div", { className: "error" }, message));
    else unplaced.push(`${key}: ${message}`);
  }
  if (!Object.keys(errors).length) unplaced.push(err.message);
  const general = root.querySelector('[data-error="_form"]');
  if (general && unplaced.length) general.textContent = unplaced.join("; ");
  else if (unplaced.length) toast(unplaced.join("; "));
}

async function save(root, method, path, body, done) {
  try {
    const result = await api(method, path, body);
    clearErrors(root);
    toast("Saved");
    if (done) await done(result);
    return result;
  } catch (err) {
    showErrors(root, err);
    return null;
  }
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function main() { return document.getElementById("main"); }
function page(title, ...children) {
  main().replaceChildren(h("h1", {}, title), ...children.flat().filter((c) => c !== null && c !== undefined));
}
async function reloadConfig() { config = await api("GET", "/config"); document.getElementById("business-name").textContent = config.profile.name; }

// --- sign in ---------------------------------------------------------------------------------

function showLogin() {
  document.getElementById("login-view").hidden = false;
  document.getElementById("app-view").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
}

async function showApp(session) {
  csrf = session.csrf_token;
  document.getElementById("login-view").hidden = true;
  document.getElementById("app-view").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = session.actor;
  const banner = document.getElementById("banner");
  banner.hidden = session.password_set;
  banner.replaceChildren("No admin password yet: ", h("a", { href: "#account" }, "set one"),
    " so you don't need the admin token to sign in.");
  await reloadConfig();
  route();
}

document.addEventListener("DOMContentLoaded", async () => {
  const form = document.getElementById("login-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    try {
      const session = await api("POST", "/session", data);
      form.reset();
      clearErrors(form);
      await showApp(session);
    } catch (err) {
      showErrors(form, { errors: { password: err.message } });
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await api("DELETE", "/session").catch(() => null);
    csrf = "";
    showLogin();
  });
  window.addEventListener("hashchange", route);
  try { await showApp(await api("GET", "/session")); } catch (e) { showLogin(); }
});

// --- routing ---------------------------------------------------------------------------------

const VIEWS = {
  calls: viewCalls, call: viewCall, appointments: viewAppointments, callbacks: viewCallbacks,
  business: viewBusiness, services: viewServices, handling: viewHandling, prompts: viewPrompts,
  kb: viewKb, providers: viewProviders, audit: viewAudit, account: viewAccount,
  outbound: viewOutbound,
};

async function route() {
  if (document.getElementById("app-view").hidden) return;
  const [name, arg] = (location.hash.slice(1) || "calls").split("/");
  document.querySelectorAll("#nav a").forEach((a) =>
    a.classList.toggle("active", a.getAttribute("href") === `#${name === "call" ? "calls" : name}`));
  try { await (VIEWS[name] || viewCalls)(decodeURIComponent(arg || "")); }
  catch (err) { if (err.status !== 401) page("Something went wrong", h("p", {}, err.message)); }
}

// --- review ----------------------------------------------------------------------------------

function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

async function viewCalls() {
  const { calls } = await api("GET", "/calls?limit=200");
  page("Calls", calls.length ? table(["Time", "Caller", "Duration", "Outcome", "Handoff"], calls.map((c) =>
    h("tr", { className: "link", onclick: () => { location.hash = `call/${encodeURIComponent(c.call_sid)}`; } },
      h("td", {}, when(c.started_at)), h("td", {}, c.caller || "(no caller ID)"),
      h("td", {}, c.duration_secs == null ? "in progress" : `${Math.round(c.duration_secs)} s`),
      h("td", {}, c.outcome), h("td", {}, c.handoff || "")))) : h("p", { className: "hint" }, "No calls yet."));
}

function latency(t) {
  const parts = [];
  const m = t.timings || {};
  if (m.voice_to_voice_ms != null) parts.push(`voice-to-voice ${Math.round(m.voice_to_voice_ms)} ms`);
  if (m.stt_ms != null) parts.push(`STT ${Math.round(m.stt_ms)} ms`);
  if (m.llm_first_token_ms != null) parts.push(`LLM first token ${Math.round(m.llm_first_token_ms)} ms`);
  if (m.tts_first_audio_ms != null) parts.push(`TTS ${Math.round(m.tts_first_audio_ms)} ms`);
  return parts.join(" · ");
}

async function viewCall(sid) {
  const c = await api("GET", `/calls/${encodeURIComponent(sid)}`);
  const turns = c.turns.map((t) => h("div", { className: `turn ${t.role}` },
    h("div", { className: "meta" }, `${t.role === "bot" ? "Receptionist" : "Caller"} · ${when(t.at)}`,
      t.interrupted ? " · interrupted" : "", latency(t) ? ` · ${latency(t)}` : ""),
    h("div", {}, t.text)));
  const tools = c.tool_calls.map((t) => h("tr", {},
    h("td", {}, t.name), h("td", {}, h("code", {}, JSON.stringify(t.arguments))),
    h("td", {}, t.ok ? "ok" : `failed (${t.error})`), h("td", {}, (t.result && t.result.say) || ""),
    h("td", {}, `${Math.round(t.duration_ms)} ms`)));
  page(`Call ${c.call_sid}`,
    h("p", {}, h("a", { href: "#calls" }, "← all calls")),
    h("div", { className: "card" },
      h("div", {}, `${when(c.started_at)} · ${c.caller || "no caller ID"} · `,
        c.duration_secs == null ? "in progress" : `${Math.round(c.duration_secs)} s`, ` · ${c.outcome}`,
        c.handoff ? ` · ${c.handoff}` : ""),
      c.recording_url ? h("audio", { controls: true, preload: "metadata", src: c.recording_url, className: "recording" })
        : h("p", { className: "hint" }, "No recording."),
      c.faults.length ? h("pre", {}, c.faults.join("\n")) : null),
    h("h2", {}, "Transcript"), h("div", { className: "card transcript" }, turns.length ? turns : "No speech."),
    h("h2", {}, "Tool calls"), tools.length ? table(["Tool", "Arguments", "Result", "Said", "Time"], tools) : h("p", { className: "hint" }, "None."),
    c.handoffs.length ? h("h2", {}, "Handoffs") : null,
    c.handoffs.length ? table(["Kind", "Reason", "Target", "Outcome"], c.handoffs.map((x) =>
      h("tr", {}, h("td", {}, x.kind), h("td", {}, x.reason), h("td", {}, x.target), h("td", {}, x.outcome)))) : null);
}

async function viewAppointments(scope) {
  scope = scope || "upcoming";
  const { appointments } = await api("GET", `/appointments?scope=${scope}`);
  const picker = h("select", { onchange: (e) => { location.hash = `appointments/${e.target.value}`; } },
    ["upcoming", "past", "all"].map((s) => h("option", { value: s, selected: s === scope }, s)));
  page("Appointments", h("div", { className: "row" }, picker),
    appointments.length ? table(["When", "Service", "With", "Customer", "Phone", "Status"], appointments.map((a) =>
      h("tr", {}, h("td", {}, when(a.starts_at)), h("td", {}, a.service), h("td", {}, a.staff || ""),
        h("td", {}, a.customer), h("td", {}, a.phone), h("td", {}, a.status)))) : h("p", { className: "hint" }, "None."));
}

async function viewCallbacks(status) {
  status = status || "open";
  const { callbacks } = await api("GET", `/callbacks?status=${status}`);
  const picker = h("select", { onchange: (e) => { location.hash = `callbacks/${e.target.value}`; } },
    [["open", "waiting for a callback"], ["all", "all"]].map(([v, t]) => h("option", { value: v, selected: v === status }, t)));
  const mark = (id, outcome) => async () => {
    try { await api("PUT", `/callbacks/${id}`, { outcome }); toast("Saved"); route(); } catch (err) { toast(err.message); }
  };
  const callNow = (id) => async () => {
    try { await api("POST", `/callbacks/${id}/call`); toast("Callback scheduled: see Outbound calls"); } catch (err) { toast(err.message); }
  };
  page("Callback requests", h("div", { className: "row" }, picker),
    callbacks.length ? table(["Left", "Name", "Number", "Message", "Status", ""], callbacks.map((c) =>
      h("tr", {}, h("td", {}, when(c.created_at)), h("td", {}, c.caller_name), h("td", {}, c.caller_number),
        h("td", {}, c.message, c.call_sid ? h("div", {}, h("a", { href: `#call/${encodeURIComponent(c.call_sid)}` }, "call")) : null),
        h("td", {}, c.outcome),
        h("td", {}, c.outcome === "message_taken" ? h("button", { className: "secondary", onclick: mark(c.id, "called_back") }, "Called back") : null,
          c.outcome === "message_taken" ? h("button", { className: "secondary", onclick: callNow(c.id) }, "Call back now") : null)))) :
      h("p", { className: "hint" }, "Nothing waiting."));
}

async function viewOutbound(status) {
  status = status || "all";
  const { calls } = await api("GET", `/api/outbound?status=${status}`);
  const picker = h("select", { onchange: (e) => { location.hash = `outbound/${e.target.value}`; } },
    ["all", "scheduled", "running", "finished"].map((s) => h("option", { value: s, selected: s === status }, s)));
  const cancel = (id) => async () => {
    try { await api("POST", `/api/outbound/${id}/cancel`); toast("Cancelled"); route(); } catch (err) { toast(err.message); }
  };
  page("Outbound calls", h("div", { className: "row" }, picker),
    h("p", { className: "hint" }, "Reminders and callbacks are turned on under Business; calls are placed inside calling hours only."),
    calls.length ? table(["Due", "Purpose", "Number", "Status", "Outcome", "Attempts", "Note", ""], calls.map((c) =>
      h("tr", {}, h("td", {}, when(c.due_at)), h("td", {}, c.purpose), h("td", {}, c.to),
        h("td", {}, c.status), h("td", {}, c.outcome), h("td", {}, `${c.attempts} / ${c.max_attempts}`),
        h("td", {}, c.message || c.last_error,
          c.call_sid ? h("div", {}, h("a", { href: `#call/${encodeURIComponent(c.call_sid)}` }, "call")) : null),
        h("td", {}, c.status === "scheduled" ? h("button", { className: "secondary", onclick: cancel(c.id) }, "Cancel") : null)))) :
      h("p", { className: "hint" }, "None."));
}

// --- configuration ---------------------------------------------------------------------------

function profileForm() {
  const p = config.profile;
  const form = h("form", { className: "card", id: "profile-form" },
    h("h2", {}, "Profile"),
    h("div", { className: "row" }, labelled("Business name", field("name", p.name)),
      labelled("Time zone", field("timezone", p.timezone, { placeholder: "America/New_York" }))),
    h("div", { className: "row" }, labelled("Address", field("address", p.address)),
      labelled("Business phone (this receptionist's number)", field("phone", p.phone))),
    h("div", { className: "row" }, labelled("Appointment grid (minutes)", field("slot_minutes", p.slot_minutes, { type: "number" })),
      labelled("Book up to (days ahead)", field("booking_horizon_days", p.booking_horizon_days, { type: "number" }))),
    h("label", { className: "inline" }, h("input", { type: "checkbox", name: "trust_unverified_caller_id", checked: p.trust_unverified_caller_id }),
      " Trust caller ID the carrier could not verify (easy to fake: callers could hear and change someone else's bookings)"),
    h("h2", {}, "Outbound calls"),
    h("label", { className: "inline" }, h("input", { type: "checkbox", name: "reminders_enabled", checked: p.reminders_enabled }),
      " Call customers to remind them of their appointments"),
    h("label", { className: "inline" }, h("input", { type: "checkbox", name: "auto_callbacks", checked: p.auto_callbacks }),
      " Return callback requests automatically at the time promised to the caller"),
    h("div", { className: "row" }, labelled("Remind (hours before, 1-168)", field("reminder_lead_hours", p.reminder_lead_hours, { type: "number" })),
      labelled("Tries per call (1-10)", field("outbound_max_attempts", p.outbound_max_attempts, { type: "number" }))),
    h("div", { className: "row" }, labelled("Calling hours from (HH:MM, business time zone)", field("calling_hours_start", p.calling_hours_start)),
      labelled("until", field("calling_hours_end", p.calling_hours_end))),
    h("p", { className: "hint" }, "No outbound call is placed outside calling hours or on holidays, nor to a customer who asked not to be called."),
    errorSlot("_form"), h("button", { type: "submit" }, "Save profile"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const d = Object.fromEntries(new FormData(form));
    const checked = (name) => form.querySelector(`[name="${name}"]`).checked;
    save(form, "PUT", "/profile", { ...d, slot_minutes: Number(d.slot_minutes), booking_horizon_days: Number(d.booking_horizon_days),
      trust_unverified_caller_id: checked("trust_unverified_caller_id"), reminders_enabled: checked("reminders_enabled"),
      auto_callbacks: checked("auto_callbacks"), reminder_lead_hours: Number(d.reminder_lead_hours),
      outbound_max_attempts: Number(d.outbound_max_attempts) }, reloadConfig);
  });
  return form;
}

function hoursForm() {
  const form = h("form", { className: "card", id: "hours-form" }, h("h2", {}, "Opening hours"),
    h("p", { className: "hint" }, "24-hour clock, local time. A day without ranges is closed."));
  const days = {};
  const rangeRow = (day, list, r = { opens: "09:00", closes: "17:00" }) => {
    const row = h("div", { className: "row range" },
      h("input", { className: "short", name: "opens", value: r.opens, placeholder: "09:00" }), "–",
      h("input", { className: "short", name: "closes", value: r.closes, placeholder: "17:00" }),
      h("button", { type: "button", className: "secondary", onclick: () => { row.remove(); renumber(day); } }, "Remove"));
    list.append(row);
    renumber(day);
  };
  const renumber = (day) => {
    [...days[day].children].forEach((row, i) => {
      row.querySelector('[name="opens"]').dataset.field = `hours.${day}.${i}.opens`;
      row.querySelector('[name="closes"]').dataset.field = `hours.${day}.${i}.closes`;
    });
  };
  for (const day of WEEKDAYS) {
    const list = h("div", { className: "ranges" });
    days[day] = list;
    form.append(h("div", { className: "day" }, h("strong", {}, day[0].toUpperCase() + day.slice(1)), list,
      h("button", { type: "button", className: "secondary", onclick: () => rangeRow(day, list) }, "Add hours"),
      errorSlot(`hours.${day}`)));
    for (const r of config.hours[day]) rangeRow(day, list, r);
  }
  form.append(errorSlot("_form"), h("button", { type: "submit" }, "Save hours"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const hours = {};
    for (const day of WEEKDAYS) {
      hours[day] = [...days[day].children].map((row) => ({
        opens: row.querySelector('[name="opens"]').value.trim(), closes: row.querySelector('[name="closes"]').value.trim() }));
    }
    save(form, "PUT", "/hours", { hours }, reloadConfig);
  });
  return form;
}

function holidaysForm() {
  const list = h("div", {});
  const form = h("form", { className: "card", id: "holidays-form" }, h("h2", {}, "Holidays and closures"), list);
  const renumber = () => [...list.children].forEach((row, i) => {
    for (const n of ["start", "end", "name"]) row.querySelector(`[name="${n}"]`).dataset.field = `holidays.${i}.${n}`;
  });
  const addRow = (x = { start: "", end: "", name: "" }) => {
    const row = h("div", { className: "row holiday" },
      h("label", {}, "From", h("input", { type: "date", name: "start", value: x.start })),
      h("label", {}, "To", h("input", { type: "date", name: "end", value: x.end })),
      h("label", { className: "grow" }, "Name", h("input", { name: "name", value: x.name })),
      h("button", { type: "button", className: "secondary", onclick: () => { row.remove(); renumber(); } }, "Remove"));
    list.append(row);
    renumber();
  };
  config.holidays.forEach(addRow);
  form.append(h("button", { type: "button", className: "secondary", onclick: () => addRow() }, "Add closure"), " ",
    errorSlot("_form"), h("button", { type: "submit" }, "Save holidays"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const holidays = [...list.children].map((row) => ({
      start: row.querySelector('[name="start"]').value, end: row.querySelector('[name="end"]').value,
      name: row.querySelector('[name="name"]').value }));
    save(form, "PUT", "/holidays", { holidays }, reloadConfig);
  });
  return form;
}

async function viewBusiness() {
  await reloadConfig();
  page("Business", profileForm(), hoursForm(), holidaysForm());
}

function serviceForm(s) {
  const isNew = !s;
  s = s || { name: "", duration_minutes: 30, price: 0, description: "", aliases: "" };
  const form = h("form", { className: "card service" },
    h("div", { className: "row" }, labelled("Service", field("name", s.name)),
      labelled("Minutes", field("duration_minutes", s.duration_minutes, { type: "number", className: "short" })),
      labelled("Price", field("price", s.price, { className: "short" }))),
    labelled("Other words callers use (comma-separated)", field("aliases", s.aliases)),
    labelled("Description", field("description", s.description)),
    errorSlot("_form"),
    h("button", { type: "submit" }, isNew ? "Add service" : "Save"), " ",
    isNew ? null : h("button", { type: "button", className: "danger", onclick: async () => {
      if (!confirm(`Stop offering ${s.name}? Booked appointments are kept.`)) return;
      await save(form, "DELETE", `/services/${s.id}`, undefined, () => viewServices());
    } }, "Remove"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const d = Object.fromEntries(new FormData(form));
    save(form, isNew ? "POST" : "PUT", isNew ? "/services" : `/services/${s.id}`,
      { ...d, duration_minutes: Number(d.duration_minutes) }, () => viewServices());
  });
  return form;
}

function staffForm(m, services) {
  const isNew = !m;
  m = m || { name: "", services: [] };
  const form = h("form", { className: "card staff" },
    h("div", { className: "row" }, labelled("Name", field("name", m.name))),
    h("div", { dataset: { field: "services" } }, services.map((s) => h("label", { className: "inline" },
      h("input", { type: "checkbox", name: "services", value: String(s.id), checked: m.services.includes(s.id) }), s.name))),
    errorSlot("services"), errorSlot("_form"),
    h("button", { type: "submit" }, isNew ? "Add staff member" : "Save"), " ",
    isNew ? null : h("button", { type: "button", className: "danger", onclick: async () => {
      if (!confirm(`Remove ${m.name} from the team?`)) return;
      await save(form, "DELETE", `/staff/${m.id}`, undefined, () => viewServices());
    } }, "Remove"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const checked = [...form.querySelectorAll('input[name="services"]:checked')].map((i) => Number(i.value));
    save(form, isNew ? "POST" : "PUT", isNew ? "/staff" : `/staff/${m.id}`,
      { name: form.querySelector('[name="name"]').value, services: checked }, () => viewServices());
  });
  return form;
}

async function viewServices() {
  await reloadConfig();
  const services = config.services.filter((s) => s.active);
  page("Services & staff",
    h("h2", {}, "Services"), services.map((s) => serviceForm(s)), h("h2", {}, "Add a service"), serviceForm(null),
    h("h2", {}, "Staff"), config.staff.filter((m) => m.active).map((m) => staffForm(m, services)),
    h("h2", {}, "Add a staff member"), staffForm(null, services));
}

const MAX_ESCALATION_NUMBERS = 10;

// The numbers a transfer rings at once: one row each, added and removed in place.
function escalationForm() {
  const esc = config.escalation;
  const list = h("div", { className: "numbers" });
  const add = h("button", { type: "button", className: "secondary", onclick: () => {
    addRow("");
    list.lastElementChild.querySelector("input").focus();
  } }, "Add number");
  const empty = h("p", { className: "hint" }, "No numbers: callers who ask for a person are offered to leave a message.");
  const renumber = () => {
    [...list.children].forEach((row, i) => {
      row.querySelector("input").dataset.field = `escalation_numbers.${i}`;
      row.querySelector(".error").dataset.error = `escalation_numbers.${i}`;
    });
    add.disabled = list.children.length >= MAX_ESCALATION_NUMBERS;
    empty.hidden = list.children.length > 0;
  };
  const addRow = (value) => {
    const row = h("div", { className: "number" },
      h("div", { className: "row" },
        h("input", { name: "escalation_number", value, placeholder: "+1 413 555 0199", className: "grow", type: "tel", autocomplete: "off" }),
        h("button", { type: "button", className: "secondary", onclick: () => { row.remove(); renumber(); } }, "Remove")),
      errorSlot(""));
    list.append(row);
    renumber();
  };
  (esc.escalation_numbers || []).forEach(addRow);
  renumber();
  const form = h("form", { className: "card", id: "escalation-form" }, h("h2", {}, "Transfers to a person"),
    h("p", { className: "hint" }, `Numbers to ring when a caller asks for a person (up to ${MAX_ESCALATION_NUMBERS}); `,
      "they all ring at once and the first to answer takes the call."),
    list, empty, h("div", {}, add), errorSlot("escalation_numbers"), errorSlot("escalation_number"),
    h("label", { className: "inline" }, h("input", { type: "checkbox", name: "warm_transfer", checked: esc.warm_transfer }),
      "Warm transfer: announce the caller and the reason before connecting (off: connect straight away)"),
    errorSlot("_form"), h("div", {}, h("button", { type: "submit" }, "Save")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    save(form, "PUT", "/escalation", {
      escalation_numbers: [...list.children].map((row) => row.querySelector("input").value.trim()),
      warm_transfer: form.querySelector('[name="warm_transfer"]').checked },
    async () => { await reloadConfig(); form.replaceWith(escalationForm()); }); // shows them as saved (E.164)
  });
  return form;
}

async function viewHandling() {
  await reloadConfig();
  const escForm = escalationForm();
  const toolsForm = h("form", { className: "card", id: "tools-form" }, h("h2", {}, "What the receptionist may do"),
    config.tools.map((t) => h("div", { className: "row tool" },
      h("label", { className: "inline" }, h("input", { type: "checkbox", name: t.name, checked: t.enabled, disabled: t.required, dataset: { field: `tools.${t.name}` } }),
        h("strong", {}, t.name)), h("span", { className: "hint grow" }, t.description, t.required ? " (always on)" : ""),
      errorSlot(`tools.${t.name}`))),
    errorSlot("_form"), h("button", { type: "submit" }, "Save tools"));
  toolsForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const enabled = {};
    toolsForm.querySelectorAll('input[type="checkbox"]:not([disabled])').forEach((i) => { enabled[i.name] = i.checked; });
    save(toolsForm, "PUT", "/tools", { enabled }, reloadConfig);
  });
  page("Transfers & tools", escForm, toolsForm,
    h("p", { className: "hint" }, "Changes apply from the next call; calls in progress keep what they started with."));
}

async function viewPrompts() {
  await reloadConfig();
  const p = config.prompts;
  const preview = h("div", { className: "card", id: "preview", hidden: true });
  const form = h("form", { className: "card", id: "prompts-form" },
    labelled("Greeting (the first thing callers hear; empty for the default)", h("textarea", { name: "greeting", value: p.greeting, rows: 2, dataset: { field: "greeting" } }), "greeting"),
    h("p", { className: "hint" }, "Placeholders: ", p.placeholders.greeting.map((x) => `{${x}}`).join(" ")),
    labelled("Persona and extra instructions", h("textarea", { name: "persona", value: p.persona, rows: 6, dataset: { field: "persona" } }), "persona"),
    h("p", { className: "hint" }, "Placeholders: ", p.placeholders.persona.map((x) => `{${x}}`).join(" ")),
    errorSlot("_form"),
    h("button", { type: "button", className: "secondary", id: "preview-button", onclick: async () => {
      const body = Object.fromEntries(new FormData(form));
      try {
        const r = await api("POST", "/prompts/preview", body);
        clearErrors(form);
        preview.hidden = false;
        preview.replaceChildren(h("h2", {}, "Callers hear"), h("p", { className: "greeting-preview" }, r.greeting),
          h("h2", {}, "The model reads"), h("pre", {}, r.system_prompt),
          r.local_llm ? h("p", { className: "hint" }, "The offline model follows its own compact instructions and the facts; the persona shapes cloud models.") : null);
      } catch (err) { showErrors(form, err); }
    } }, "Preview"), " ",
    h("button", { type: "submit" }, "Save"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    save(form, "PUT", "/prompts", Object.fromEntries(new FormData(form)), reloadConfig);
  });
  page("Greeting & persona", form, preview);
}

function articleForm(a, done) {
  const isNew = !a;
  a = a || { title: "", body: "", tags: "" };
  const form = h("form", { className: "card article-form" },
    labelled("Title", field("title", a.title)),
    labelled("Answer (what the receptionist says; the first two sentences are read out)",
      h("textarea", { name: "body", value: a.body, rows: 4, dataset: { field: "body" } }), "body"),
    labelled("Tags (comma-separated words callers might use)", field("tags", a.tags)),
    errorSlot("_form"),
    h("button", { type: "submit" }, isNew ? "Add article" : "Save"), " ",
    isNew ? null : h("button", { type: "button", className: "danger", onclick: async () => {
      if (!confirm(`Delete "${a.title}"?`)) return;
      await save(form, "DELETE", `/kb/${a.id}`, undefined, done);
    } }, "Delete"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    save(form, isNew ? "POST" : "PUT", isNew ? "/kb" : `/kb/${a.id}`, Object.fromEntries(new FormData(form)), done);
  });
  return form;
}

async function viewKb(query) {
  const { articles } = await api("GET", `/kb?q=${encodeURIComponent(query || "")}`);
  const search = h("form", { className: "row", id: "kb-search" },
    h("input", { name: "q", value: query || "", placeholder: "Search as a caller would ask…", className: "grow", type: "search" }),
    h("button", { type: "submit", className: "secondary" }, "Search"));
  search.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = `kb/${encodeURIComponent(search.querySelector("input").value)}`;
  });
  const refresh = () => viewKb(query);
  const list = articles.map((a) => h("details", { className: "card article" },
    h("summary", {}, h("strong", {}, a.title), " ", h("span", { className: "hint" }, a.tags)),
    articleForm(a, refresh)));
  page("Knowledge base", search,
    list.length ? list : h("p", { className: "hint" }, query ? "No article matches." : "No articles yet."),
    h("h2", {}, "Add an article"), articleForm(null, refresh));
}

async function viewProviders() {
  const p = await api("GET", "/providers");
  page("Providers", h("p", { className: "hint" }, p.note),
    table(["Stage", "Provider"], Object.entries(p).filter(([k]) => k !== "note").map(([k, v]) =>
      h("tr", {}, h("td", {}, k), h("td", {}, String(v))))));
}

async function viewAudit() {
  const { entries } = await api("GET", "/audit?limit=200");
  page("Change log", table(["When", "Who", "What", "Details"], entries.map((e) =>
    h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.actor), h("td", {}, `${e.action} ${e.summary || e.entity}`),
      h("td", {}, Object.keys(e.changes || {}).length ? h("details", {}, h("summary", {}, Object.keys(e.changes).join(", ")),
        h("pre", {}, JSON.stringify(e.changes, null, 1))) : "")))));
}

async function viewAccount() {
  const form = h("form", { className: "card narrow", id: "password-form" }, h("h2", {}, "Admin password"),
    labelled("Current password or admin token", field("current", "", { type: "password", autocomplete: "current-password" })),
    labelled("New password (at least 10 characters)", field("password", "", { type: "password", autocomplete: "new-password" })),
    errorSlot("_form"), h("button", { type: "submit" }, "Save password"),
    h("p", { className: "hint" }, "Everyone is signed out when the password changes."));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const ok = await save(form, "PUT", "/password", Object.fromEntries(new FormData(form)));
    if (ok) showLogin();
  });
  page("Account", form);
}
