// Presenced web client: no framework, no build step. It speaks the same JSON +
// WebSocket API as any other client and publishes the same category instances a
// Microsoft client would (userState, machineState, note), so SIP clients see it.
"use strict";

const STATE_NS = "http://schemas.microsoft.com/2006/09/sip/state";
const XSI_NS = "http://www.w3.org/2001/XMLSchema-instance";
const NOTE_NS = "http://schemas.microsoft.com/2006/09/sip/note";
const USER_STATE_INSTANCE = 0x20000000; // manual user state, as Microsoft clients use
const MACHINE_STATE_BASE = 0x30000000; // per-device machine state
const NOTE_CONTAINERS = [200, 300, 400];
const STATE_CONTAINERS = [2, 3];
const LEVELS = [
  { id: 100, label: "Public" },
  { id: 200, label: "Colleagues" },
  { id: 300, label: "Workgroup" },
  { id: 400, label: "Friends and Family" },
  { id: 32000, label: "Blocked" },
];
const CLASS_LABELS = {
  available: "Available",
  idle: "Inactive",
  busy: "Busy",
  "busy-idle": "Busy (inactive)",
  "do-not-disturb": "Do Not Disturb",
  "be-right-back": "Be Right Back",
  away: "Away",
  offline: "Offline",
};
const PRESENCE_CATEGORIES = ["state", "note", "contactCard"];
const RECONNECT_MAX_MS = 15000;

const $ = (id) => document.getElementById(id);
const app = {
  token: sessionStorage.getItem("presenced.token"),
  user: sessionStorage.getItem("presenced.user"),
  ws: null,
  endpoint: null,
  retryMs: 1000,
  retryTimer: null,
  own: new Map(), // "name/instance/container" -> instance (owner view)
  containers: [],
  subscribers: [],
  contacts: { delta_num: 0, groups: [], contacts: [] },
  presence: new Map(), // uri -> Map(category name -> instances)
  subscribedTo: "",
};

// ---------------------------------------------------------------- helpers

function escapeXml(s) {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function notice(text) {
  $("notice").textContent = text;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => ($("notice").textContent = ""), 6000);
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${app.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await r.json();
  } catch (_) {
    /* empty body */
  }
  if (!r.ok) {
    const err = new Error((data && data.message) || r.statusText);
    err.status = r.status;
    err.code = data && data.error;
    throw err;
  }
  return data;
}

function badge(cls) {
  const c = CLASS_LABELS[cls] ? cls : "offline";
  return el("span", { class: `badge cls-${c}`, "data-class": c }, CLASS_LABELS[c]);
}

function keyOf(i) {
  return `${i.name}/${i.instance}/${i.container}`;
}

function versionOf(name, instance, container) {
  const i = app.own.get(`${name}/${instance}/${container}`);
  return i ? i.version : 0;
}

// ---------------------------------------------------------------- session

function showSignedIn(on) {
  $("login").hidden = on;
  $("app").hidden = !on;
  $("signout").hidden = !on;
  if (!on) setConn("Signed out", false);
}

function setConn(text, online) {
  const c = $("conn");
  c.textContent = text;
  c.classList.toggle("offline", !online);
}

async function signIn(user, password) {
  const r = await fetch("/v1/sessions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, password }),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.message || "sign-in failed");
  app.token = data.token;
  app.user = user.replace(/^sip:/i, "").toLowerCase();
  sessionStorage.setItem("presenced.token", app.token);
  sessionStorage.setItem("presenced.user", app.user);
}

async function signOut() {
  const token = app.token;
  app.token = null;
  sessionStorage.removeItem("presenced.token");
  sessionStorage.removeItem("presenced.user");
  clearTimeout(app.retryTimer);
  if (app.ws) app.ws.close();
  app.ws = null;
  app.presence.clear();
  app.subscribedTo = "";
  showSignedIn(false);
  if (token) await fetch("/v1/sessions", { method: "DELETE", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
}

// ---------------------------------------------------------------- live connection

function connect() {
  clearTimeout(app.retryTimer);
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/v1/stream`);
  app.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ op: "auth", token: app.token }));
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    handle(msg).catch((e) => notice(e.message));
  };
  ws.onclose = () => {
    if (app.ws !== ws) return;
    app.ws = null;
    app.endpoint = null;
    app.machinePublished = null;
    app.subscribedTo = "";
    if (!app.token) return;
    const secs = Math.round(app.retryMs / 1000);
    setConn(`Offline: reconnecting in ${secs} s`, false);
    app.retryTimer = setTimeout(() => {
      setConn("Offline: reconnecting…", false);
      connect();
    }, app.retryMs);
    app.retryMs = Math.min(app.retryMs * 2, RECONNECT_MAX_MS);
  };
}

function send(op) {
  if (app.ws && app.ws.readyState === WebSocket.OPEN) app.ws.send(JSON.stringify(op));
}

async function handle(msg) {
  switch (msg.type) {
    case "hello":
      app.endpoint = msg.endpoint;
      app.retryMs = 1000;
      setConn("Online", true);
      send({ op: "subscribe_self" });
      break;
    case "self":
      applySelf(msg);
      if (msg.containers && msg.subscribers) prefillStatusForm();
      if (msg.containers && msg.subscribers && app.endpoint !== null && app.machinePublished !== app.endpoint) {
        app.machinePublished = app.endpoint;
        await publishMachineState();
      }
      break;
    case "categories":
      applyCategories(msg);
      break;
    case "error":
      if (msg.error === "unauthorized") {
        await signOut();
        $("login-error").textContent = "Your session ended; please sign in again.";
      } else if (msg.error !== "unknown_user") {
        notice(msg.message);
      }
      break;
  }
}

function applySelf(msg) {
  const names = new Set(msg.names || []);
  for (const [k, i] of app.own) if (names.has(i.name)) app.own.delete(k);
  for (const i of msg.categories || []) app.own.set(keyOf(i), i);
  if (msg.containers) app.containers = msg.containers;
  if (msg.subscribers) app.subscribers = msg.subscribers;
  if (msg.contacts) app.contacts = msg.contacts;
  resubscribe();
  render();
}

function applyCategories(msg) {
  let p = app.presence.get(msg.uri);
  if (!p) app.presence.set(msg.uri, (p = new Map()));
  for (const n of msg.names) p.set(n, []);
  for (const i of msg.categories) p.get(i.name).push(i);
  renderContacts();
}

/// Watches every contact's presence; one subscription, replaced when the list changes.
function resubscribe() {
  const uris = app.contacts.contacts.filter((c) => c.subscribed).map((c) => c.uri).sort();
  const key = uris.join(",");
  if (key === app.subscribedTo || !app.ws || app.endpoint === null) return;
  app.subscribedTo = key;
  send({ op: "subscribe", id: "contacts", uris, categories: PRESENCE_CATEGORIES, context: true });
}

// ---------------------------------------------------------------- publishing

async function refreshOwn() {
  const me = await api("GET", "/v1/me");
  app.own.clear();
  for (const i of me.categories) app.own.set(keyOf(i), i);
}

/// Publishes items built from current versions; on a version conflict, reloads the
/// versions once and tries again.
async function publish(build, endpoint) {
  for (let attempt = 0; ; attempt++) {
    const body = { publications: build() };
    if (endpoint !== undefined) body.endpoint = endpoint;
    if (body.publications.length === 0) return;
    try {
      return await api("POST", "/v1/me/publications", body);
    } catch (e) {
      if (e.status !== 409 || attempt > 0) throw e;
      await refreshOwn();
    }
  }
}

function stateXml(type, availability, manual) {
  return `<state xmlns="${STATE_NS}" xmlns:xsi="${XSI_NS}" manual="${manual}" xsi:type="${type}"><availability>${availability}</availability></state>`;
}

async function publishMachineState() {
  const endpoint = app.endpoint;
  const instance = MACHINE_STATE_BASE + (endpoint % 0x10000000);
  await publish(
    () =>
      STATE_CONTAINERS.map((container) => ({
        category: "state",
        instance,
        container,
        version: versionOf("state", instance, container),
        expire_type: "endpoint",
        value: stateXml("machineState", 3500, false),
      })),
    endpoint,
  );
}

async function setStatus(choice) {
  await publish(() =>
    STATE_CONTAINERS.flatMap((container) => {
      const version = versionOf("state", USER_STATE_INSTANCE, container);
      if (choice === "auto") {
        return version
          ? [{ category: "state", instance: USER_STATE_INSTANCE, container, version, expire_type: "static", expires: 0 }]
          : [];
      }
      return [
        {
          category: "state",
          instance: USER_STATE_INSTANCE,
          container,
          version,
          expire_type: "static",
          value: stateXml("userState", Number(choice), true),
        },
      ];
    }),
  );
}

async function setNote(text) {
  await publish(() =>
    NOTE_CONTAINERS.flatMap((container) => {
      const version = versionOf("note", 0, container);
      if (!text) {
        return version ? [{ category: "note", instance: 0, container, version, expire_type: "static", expires: 0 }] : [];
      }
      return [
        {
          category: "note",
          instance: 0,
          container,
          version,
          expire_type: "static",
          value: `<note xmlns="${NOTE_NS}"><body type="personal" uri="">${escapeXml(text)}</body></note>`,
        },
      ];
    }),
  );
}

/// Shows the published user state and note in the form (the full self view arrived).
function prefillStatusForm() {
  const user = app.own.get(`state/${USER_STATE_INSTANCE}/2`);
  const avail = user && user.summary && user.summary.availability;
  const select = $("status-select");
  if (document.activeElement !== select) {
    select.value = avail && [...select.options].some((o) => o.value === String(avail)) ? String(avail) : "auto";
  }
  const note = app.own.get("note/0/200");
  if (document.activeElement !== $("note-input")) $("note-input").value = (note && note.summary && note.summary.note) || "";
}

// ---------------------------------------------------------------- access levels

function levelOf(uri) {
  const holding = app.containers.filter((c) => c.members.some((m) => m.type === "user" && m.value === uri));
  if (holding.some((c) => c.id === 32000)) return 32000;
  const ids = holding.map((c) => c.id).filter((id) => LEVELS.some((l) => l.id === id));
  return ids.length ? Math.max(...ids) : "auto";
}

/// Moves a person to one access level (or to none, "auto") in one all-or-nothing change.
async function setLevel(uri, target) {
  for (let attempt = 0; ; attempt++) {
    const ops = new Map();
    const op = (id) => {
      if (!ops.has(id)) {
        const c = app.containers.find((x) => x.id === id);
        ops.set(id, { id, version: c ? c.version : 0, add: [], remove: [] });
      }
      return ops.get(id);
    };
    const member = { type: "user", value: uri };
    for (const c of app.containers) {
      const listed = c.members.some((m) => m.type === "user" && m.value === uri);
      if (listed && c.id !== target && LEVELS.some((l) => l.id === c.id)) op(c.id).remove.push(member);
    }
    const target_c = app.containers.find((c) => c.id === target);
    if (target !== "auto" && !(target_c && target_c.members.some((m) => m.type === "user" && m.value === uri))) {
      op(target).add.push(member);
    }
    if (ops.size === 0) return;
    try {
      await api("PATCH", "/v1/me/containers", [...ops.values()]);
      return;
    } catch (e) {
      if (e.status !== 409 || attempt > 0) throw e;
      app.containers = await api("GET", "/v1/me/containers");
    }
  }
}

// ---------------------------------------------------------------- rendering

function presenceOf(uri) {
  const p = app.presence.get(uri) || new Map();
  const states = p.get("state") || [];
  const state = states.find((i) => i.instance === 1) || states.find((i) => i.summary && i.summary.availability);
  const notes = (p.get("note") || []).filter((i) => i.summary && i.summary.note);
  const card = (p.get("contactCard") || []).find((i) => i.summary && i.summary.display_name);
  return {
    cls: (state && state.summary && state.summary.availability_class) || "offline",
    activity: state && state.summary && state.summary.activity,
    note: notes.length ? notes[0].summary.note : "",
    displayName: card && card.summary.display_name,
  };
}

function render() {
  $("me-uri").textContent = app.user || "";
  const mine = app.own.get(`state/1/2`);
  const cls = (mine && mine.summary && mine.summary.availability_class) || "offline";
  $("me-badge").replaceWith(Object.assign(badge(cls), { id: "me-badge" }));
  const sel = $("add-contact-group");
  const chosen = sel.value;
  sel.replaceChildren(...app.contacts.groups.map((g) => el("option", { value: g.id }, groupName(g))));
  if (chosen) sel.value = chosen;
  renderContacts();
  renderLevels();
  renderWatchers();
}

function groupName(g) {
  return g.name === "~" ? "Other Contacts" : g.name;
}

function renderContacts() {
  const root = $("contact-groups");
  const sections = app.contacts.groups.map((g) => {
    const members = app.contacts.contacts.filter((c) => c.groups.includes(g.id));
    const title = el("h3", {}, `${groupName(g)} (${members.length})`);
    const head =
      g.id === 1
        ? title
        : el(
            "div",
            { class: "inline" },
            title,
            el("button", { type: "button", class: "secondary", "aria-label": `Delete group ${g.name}`, onclick: () => run(() => api("DELETE", `/v1/me/groups/${g.id}`)) }, "Delete group"),
          );
    return el("div", { class: "group" }, head, el("ul", { class: "plain" }, ...members.map(contactItem)));
  });
  root.replaceChildren(...sections);
}

function contactItem(c) {
  const p = presenceOf(c.uri);
  const name = p.displayName || c.name || c.uri.split("@")[0];
  const selectId = `level-${c.uri}`;
  const level = levelOf(c.uri);
  const options = [el("option", { value: "auto" }, "Automatic")].concat(LEVELS.map((l) => el("option", { value: l.id }, l.label)));
  const select = el("select", { id: selectId, onchange: (e) => run(() => setLevel(c.uri, e.target.value === "auto" ? "auto" : Number(e.target.value))) }, ...options);
  select.value = String(level);
  return el(
    "li",
    { class: "contact", "data-uri": c.uri },
    badge(p.cls),
    el("span", {}, el("span", { class: "who" }, name), " ", el("span", { class: "uri" }, c.uri)),
    p.activity ? el("span", { class: "activity" }, p.activity) : null,
    p.note ? el("span", { class: "note" }, p.note) : null,
    el(
      "div",
      { class: "actions" },
      el("label", { for: selectId }, `Access level for ${name}`),
      select,
      el("button", { type: "button", class: "secondary", "aria-label": `Remove ${name}`, onclick: () => run(() => api("DELETE", `/v1/me/contacts/${encodeURIComponent(c.uri)}`)) }, "Remove"),
    ),
  );
}

function memberText(m) {
  switch (m.type) {
    case "user":
      return m.value;
    case "domain":
      return `Everyone at ${m.value}`;
    case "sameEnterprise":
      return "Everyone in my company";
    case "federated":
      return "People in partner companies";
    case "publicCloud":
      return "People on public IM services";
    default:
      return "Everyone";
  }
}

function renderLevels() {
  const blocks = LEVELS.map((l) => {
    const c = app.containers.find((x) => x.id === l.id) || { members: [] };
    const items = c.members.map((m) =>
      el(
        "li",
        {},
        memberText(m),
        " ",
        m.type === "user"
          ? el("button", { type: "button", class: "secondary", "aria-label": `Remove ${m.value} from ${l.label}`, onclick: () => run(() => setLevel(m.value, "auto")) }, l.id === 32000 ? "Unblock" : "Remove")
          : null,
      ),
    );
    return el("div", { "data-level": l.id }, el("h3", {}, l.label), items.length ? el("ul", { class: "plain" }, ...items) : el("p", { class: "hint" }, "Nobody"));
  });
  $("levels").replaceChildren(...blocks);
}

function renderWatchers() {
  const items = app.subscribers.map((s) =>
    el(
      "li",
      { "data-watcher": s.user },
      `${s.display_name || s.user} (${s.user}) added you. `,
      app.contacts.contacts.some((c) => c.uri === s.user)
        ? null
        : el("button", { type: "button", class: "secondary", onclick: () => run(() => addContact(s.user, 1)) }, "Add to my contacts"),
      " ",
      el("button", { type: "button", onclick: () => run(() => api("POST", `/v1/me/subscribers/${encodeURIComponent(s.user)}/acknowledge`)) }, "Acknowledge"),
    ),
  );
  $("watchers").replaceChildren(...(items.length ? items : [el("li", { class: "hint" }, "Nobody new.")]));
}

// ---------------------------------------------------------------- actions

async function run(action) {
  try {
    await action();
  } catch (e) {
    notice(e.message);
  }
}

async function addContact(uri, group) {
  await api("PUT", `/v1/me/contacts/${encodeURIComponent(uri.trim())}`, { groups: [Number(group)] });
}

async function start() {
  try {
    await refreshOwn();
  } catch (e) {
    if (e.status === 401) return signOut();
    notice(e.message);
  }
  showSignedIn(true);
  render();
  setConn("Connecting…", false);
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      await signIn($("login-user").value.trim(), $("login-password").value);
      $("login-password").value = "";
      await start();
    } catch (e) {
      $("login-error").textContent = e.message;
    }
  });
  $("signout").addEventListener("click", () => run(signOut));
  $("status-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(async () => {
      await setStatus($("status-select").value);
      await setNote($("note-input").value.trim());
      notice("Status saved");
    });
  });
  $("add-contact-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(async () => {
      await addContact($("add-contact-uri").value, $("add-contact-group").value || 1);
      $("add-contact-uri").value = "";
    });
  });
  $("add-group-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(async () => {
      await api("POST", "/v1/me/groups", { name: $("add-group-name").value.trim() });
      $("add-group-name").value = "";
    });
  });
  if (app.token) start();
  else showSignedIn(false);
});
