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
  customers: viewCustomers, customer: viewCustomer,
  business: viewBusiness, services: viewServices, handling: viewHandling, prompts: viewPrompts,
  kb: viewKb, providers: viewProviders, audit: viewAudit, account: viewAccount,
  outbound: viewOutbound,
};

const NAV_OF = { call: "calls", customer: "customers" };

async function route() {
  if (document.getElementById("app-view").hidden) return;
  const [name, arg] = (location.hash.slice(1) || "calls").split("/");
  document.querySelectorAll("#nav a").forEach((a) =>
    a.classList.toggle("active", a.getAttribute("href") === `#${NAV_OF[name] || name}`));
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

// --- front desk: appointments and customers ------------------------------------------------

const ZONED = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" };

// An instant as the business's own day ("2026-12-04") and clock time ("15:00").
function businessParts(iso) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", { ...ZONED, timeZone: config.profile.timezone })
    .formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return { day: `${parts.year}-${parts.month}-${parts.day}`, start: `${parts.hour}:${parts.minute}` };
}

function businessWhen(iso) {
  return new Date(iso).toLocaleString([], { timeZone: config.profile.timezone, weekday: "short", day: "numeric",
    month: "short", year: "numeric", hour: "numeric", minute: "2-digit" });
}

function staffPicker(serviceId, selected) {
  const able = config.staff.filter((m) => m.active && m.services.includes(Number(serviceId)));
  return h("select", { name: "staff_id", dataset: { field: "staff_id" } },
    h("option", { value: "" }, "Anyone free"),
    able.map((m) => h("option", { value: m.id, selected: m.id === selected }, m.name)));
}

// The free start times of the form's service, day and staff member, as buttons filling "start".
async function showFreeTimes(form, serviceId, exclude) {
  const box = form.querySelector(".free-times");
  const day = form.querySelector("[name=day]").value;
  const staff = form.querySelector("[name=staff_id]").value;
  if (!serviceId || !day) { box.replaceChildren(); return; }
  const query = new URLSearchParams({ service_id: serviceId, day });
  if (staff) query.set("staff_id", staff);
  if (exclude) query.set("exclude", exclude);
  try {
    const { times } = await api("GET", `/availability?${query}`);
    const starts = [...new Set(times.map((t) => t.start))];
    box.replaceChildren(starts.length ? "Free: " : "Nothing free that day.",
      ...starts.map((t) => h("button", { type: "button", className: "secondary slot",
        onclick: () => { form.querySelector("[name=start]").value = t; } }, t)));
  } catch (err) {
    box.replaceChildren(err.message);
  }
}

function confirmationNote(result) {
  return { sent: " · confirmation texted", failed: " · the confirmation text could not be sent" }[result.confirmation] || "";
}

function bookForm() {
  const services = config.services.filter((s) => s.active);
  const staffSlot = h("span", { className: "staff-slot" });
  const form = h("form", { className: "card", id: "book-form" }, h("h2", {}, "Book an appointment"),
    h("div", { className: "row" },
      labelled("Customer phone", field("phone", "", { type: "tel", placeholder: "+1 413 555 0123" })),
      labelled("Name", field("name", ""))),
    h("div", { className: "row" },
      labelled("Service", h("select", { name: "service_id", dataset: { field: "service_id" } },
        services.map((s) => h("option", { value: s.id }, `${s.name} (${s.duration_minutes} min)`)))),
      h("label", { className: "grow" }, "With", staffSlot, errorSlot("staff_id")),
      labelled("Day", field("day", businessParts(new Date().toISOString()).day, { type: "date" })),
      labelled("Time", field("start", "", { type: "time", step: 300 }))),
    h("div", { className: "free-times hint" }),
    errorSlot("_form"), errorSlot("status"), h("button", { type: "submit" }, "Book"));
  const service = () => form.querySelector("[name=service_id]").value;
  const refresh = () => showFreeTimes(form, service());
  const pickStaff = () => { staffSlot.replaceChildren(staffPicker(service(), null)); staffSlot.firstChild.addEventListener("change", refresh); refresh(); };
  form.querySelector("[name=service_id]").addEventListener("change", pickStaff);
  form.querySelector("[name=day]").addEventListener("change", refresh);
  pickStaff();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const d = Object.fromEntries(new FormData(form));
    const body = { phone: d.phone, name: d.name, service_id: Number(d.service_id),
      staff_id: d.staff_id ? Number(d.staff_id) : null, day: d.day, start: d.start };
    const made = await save(form, "POST", "/appointments", body);
    if (made) { toast(`Booked${confirmationNote(made)}`); await viewAppointments("upcoming"); }
  });
  return form;
}

function moveForm(a, done) {
  const at = businessParts(a.starts_at);
  const staffSlot = h("span", { className: "staff-slot" }, staffPicker(a.service_id, a.staff_id));
  const form = h("form", { className: "move-form" },
    h("div", { className: "row" },
      labelled("Day", field("day", at.day, { type: "date" })),
      labelled("Time", field("start", at.start, { type: "time", step: 300 })),
      h("label", { className: "grow" }, "With", staffSlot, errorSlot("staff_id"))),
    h("div", { className: "free-times hint" }),
    errorSlot("_form"), errorSlot("status"),
    h("div", { className: "row" }, h("button", { type: "submit" }, "Move"),
      h("button", { type: "button", className: "secondary", onclick: () => form.closest("tr").remove() }, "Close")));
  const refresh = () => showFreeTimes(form, a.service_id, a.id);
  form.querySelector("[name=day]").addEventListener("change", refresh);
  staffSlot.firstChild.addEventListener("change", refresh);
  refresh();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const d = Object.fromEntries(new FormData(form));
    const moved = await save(form, "PUT", `/appointments/${a.id}`,
      { day: d.day, start: d.start, staff_id: d.staff_id ? Number(d.staff_id) : null });
    if (moved) { toast(`Moved${confirmationNote(moved)}`); await done(); }
  });
  return form;
}

// Booked appointments can be moved and cancelled until they start, then marked a no-show.
function appointmentActions(a, done, columns) {
  if (a.status !== "booked") return null;
  const act = (path, verb, question) => async (e) => {
    if (question && !confirm(question)) return;
    try {
      const result = await api("POST", `/appointments/${a.id}/${path}`);
      toast(`${verb}${confirmationNote(result)}`);
      await done();
    } catch (err) { toast(Object.values(err.errors || {})[0] || err.message); }
  };
  if (new Date(a.starts_at) <= new Date()) {
    return h("button", { className: "secondary", onclick: act("no-show", "Marked a no-show") }, "No-show");
  }
  return [
    h("button", { className: "secondary", onclick: (e) => {
      const row = e.target.closest("tr");
      if (row.nextSibling && row.nextSibling.classList.contains("move-row")) return;
      row.after(h("tr", { className: "move-row" }, h("td", { colSpan: columns }, moveForm(a, done))));
    } }, "Move"),
    " ",
    h("button", { className: "danger", onclick: act("cancel", "Cancelled", `Cancel this ${a.service.toLowerCase()}?`) }, "Cancel"),
  ];
}

function appointmentsTable(list, done, withCustomer) {
  const headers = ["When", "Service", "With", ...(withCustomer ? ["Customer", "Phone"] : []), "Status", ""];
  return table(headers, list.map((a) => h("tr", { dataset: { appointment: a.id } },
    h("td", {}, businessWhen(a.starts_at)), h("td", {}, a.service), h("td", {}, a.staff || "anyone"),
    withCustomer ? h("td", {}, h("a", { href: `#customer/${a.customer_id}` }, a.customer || "(no name)"),
      a.booked_name ? h("div", { className: "hint" }, `booked as ${a.booked_name}`) : null) : null,
    withCustomer ? h("td", {}, a.phone) : null,
    h("td", {}, a.status.replace("_", "-"), a.reminder_outcome ? h("div", { className: "hint" }, `reminder: ${a.reminder_outcome}`) : null),
    h("td", {}, appointmentActions(a, done, headers.length)))));
}

async function viewAppointments(scope) {
  scope = scope || "upcoming";
  const { appointments } = await api("GET", `/appointments?scope=${scope}`);
  const picker = h("select", { onchange: (e) => { location.hash = `appointments/${e.target.value}`; } },
    ["upcoming", "past", "all"].map((s) => h("option", { value: s, selected: s === scope }, s)));
  page("Appointments", bookForm(), h("div", { className: "row" }, picker),
    appointments.length ? appointmentsTable(appointments, () => viewAppointments(scope), true)
      : h("p", { className: "hint" }, "None."));
}

async function viewCustomers(query) {
  const form = h("form", { className: "row", id: "customer-search" },
    h("input", { name: "q", value: query || "", placeholder: "Part of a name or a phone number", className: "grow" }),
    h("button", { type: "submit" }, "Find"));
  form.addEventListener("submit", (e) => { e.preventDefault(); location.hash = `customers/${encodeURIComponent(form.q.value.trim())}`; });
  let results = h("p", { className: "hint" }, "Find a customer by part of their name or number.");
  if (query) {
    const { customers } = await api("GET", `/customers?q=${encodeURIComponent(query)}`);
    results = customers.length ? table(["Name", "Phone", "Email", ""], customers.map((c) =>
      h("tr", { className: "link", onclick: () => { location.hash = `customer/${c.id}`; } },
        h("td", {}, c.name || "(no name)"), h("td", {}, c.phone), h("td", {}, c.email),
        h("td", {}, c.do_not_call ? h("span", { className: "badge off" }, "do not call") : null))))
      : h("p", { className: "hint" }, "No customer matches.");
  }
  page("Customers", form, results);
}

async function viewCustomer(id) {
  const c = await api("GET", `/customers/${encodeURIComponent(id)}`);
  const p = c.customer;
  const flip = async () => {
    try {
      await api("PUT", `/customers/${p.id}/do-not-call`, { do_not_call: !p.do_not_call });
      toast("Saved");
      await viewCustomer(id);
    } catch (err) { toast(err.message); }
  };
  const dnc = h("div", { className: "row", id: "do-not-call" },
    p.do_not_call ? h("span", { className: "badge off" }, `Do not call · since ${when(p.do_not_call_at)}`)
      : h("span", { className: "badge" }, "Outbound calls allowed"),
    h("button", { className: "secondary", onclick: flip }, p.do_not_call ? "Allow calls again" : "Do not call"));
  const none = (text) => h("p", { className: "hint" }, text);
  page(p.name || p.phone, h("p", {}, h("a", { href: "#customers" }, "← customers")),
    h("div", { className: "card", id: "customer-card" },
      h("div", {}, p.phone, p.email ? ` · ${p.email}` : "", ` · on file since ${when(p.created_at)}`), dnc),
    h("h2", {}, "Appointments"),
    c.appointments.length ? appointmentsTable(c.appointments, () => viewCustomer(id), false) : none("None."),
    h("h2", {}, "Calls"),
    c.calls.length ? table(["Time", "Direction", "Outcome", ""], c.calls.map((k) => h("tr", {},
      h("td", {}, when(k.started_at)), h("td", {}, k.direction), h("td", {}, k.outcome),
      h("td", {}, h("a", { href: `#call/${encodeURIComponent(k.call_sid)}` }, "record"))))) : none("None."),
    h("h2", {}, "Notes"),
    c.notes.length ? h("ul", {}, c.notes.map((n) => h("li", {}, n.text, h("span", { className: "hint" }, ` · ${when(n.created_at)}`)))) : none("None."),
    h("h2", {}, "Messages and transfers"),
    c.messages.length ? table(["When", "Kind", "Reason", "Outcome", ""], c.messages.map((m) => h("tr", {},
      h("td", {}, when(m.created_at)), h("td", {}, m.kind), h("td", {}, m.reason || m.summary), h("td", {}, m.outcome),
      h("td", {}, m.call_sid ? h("a", { href: `#call/${encodeURIComponent(m.call_sid)}` }, "call") : null)))) : none("None."));
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
    h("label", { className: "inline" }, h("input", { type: "checkbox", name: "sms_confirmations", checked: p.sms_confirmations }),
      " Text customers a confirmation of each booking, change and cancellation",
      h("span", { className: "hint" }, ` (texting: ${config.providers.texting})`)),
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
      trust_unverified_caller_id: checked("trust_unverified_caller_id"), sms_confirmations: checked("sms_confirmations"), reminders_enabled: checked("reminders_enabled"),
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
    labelled("Recording notice (part of the greeting while calls are recorded)", h("textarea", { name: "recording_notice", value: p.recording_notice || p.recording_notice_default, rows: 2, dataset: { field: "recording_notice" } }), "recording_notice"),
    h("p", { className: "hint" }, p.recording
      ? "Calls are recorded, so callers are told: reword it if you like, but it must still say the call is recorded. Default: "
      : "Calls are not recorded (FRONTDESK_RECORDING=0), so callers don't hear it. Default: ",
      p.recording_notice_default),
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
