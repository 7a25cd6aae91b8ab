// Presenced web client: no framework, no build step. It speaks the same JSON +
// WebSocket API as any other client and publishes the same category instances a
// Microsoft client would (userState, machineState, note), so SIP clients see it.
"use strict";

const STATE_NS = "http://schemas.microsoft.com/2006/09/sip/state";
const XSI_NS = "http://www.w3.org/2001/XMLSchema-instance";
const NOTE_NS = "http://schemas.microsoft.com/2006/09/sip/note";
const CONTACT_CARD_NS = "http://schemas.microsoft.com/2006/09/sip/contactcard";
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
const SEARCH_DEBOUNCE_MS = 250;
const SEARCH_LIMIT = 20;
const CARD_CATEGORIES = "contactCard,note,state";
const PHONE_LABELS = { work: "Work phone", mobile: "Mobile phone", home: "Home phone", other: "Other phone" };

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
// The "Find colleagues" search: what it shows and which query it answers.
const search = {
  timer: null, // debounce
  retryTimer: null, // after a 429
  seq: 0, // number of the latest query; older answers are dropped
  controller: null, // aborts the query in flight when a newer one starts
  results: [],
  more: false,
  open: false, // the results grid is shown
  active: -1, // index of the active (highlighted) result
  added: new Set(), // URIs added from the results, until the contact list catches up
};
// The contact card dialog.
const card = { uri: null, name: "", categories: null, error: "", seq: 0 };

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

async function api(method, path, body, { signal } = {}) {
  const headers = { Authorization: `Bearer ${app.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
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
    err.retryAfter = Number(r.headers.get("Retry-After")) || 0;
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
  resetSearch();
  $("search-input").value = "";
  if ($("contact-card").open) $("contact-card").close();
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
        await sessionEnded();
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
  if (msg.contacts) {
    app.contacts = msg.contacts;
    search.added.clear();
  }
  resubscribe();
  render();
}

function applyCategories(msg) {
  let p = app.presence.get(msg.uri);
  if (!p) app.presence.set(msg.uri, (p = new Map()));
  for (const n of msg.names) p.set(n, []);
  for (const i of msg.categories) p.get(i.name).push(i);
  renderContacts();
  if (card.uri === msg.uri && card.categories) {
    // Live changes of the open card: same view (container) as the GET that filled it.
    card.categories = card.categories.filter((i) => !msg.names.includes(i.name)).concat(msg.categories);
    renderCard();
  }
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
  return presenceFrom(app.presence.get(uri) || new Map());
}

/// Badge class, activity, note and display name from a map of category name -> instances.
function presenceFrom(p) {
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
  if (search.results.length) renderResults();
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
  const focused = focusKey(root);
  root.replaceChildren(...sections);
  restoreFocus(root, focused);
}

/// Where the focus is in the contact list, so that drawing the list again (on every
/// presence change) does not throw it away.
function focusKey(root) {
  const a = document.activeElement;
  if (!a || a === root || !root.contains(a)) return null;
  const li = a.closest("li.contact");
  return {
    group: [...root.children].indexOf(a.closest(".group")),
    uri: li ? li.dataset.uri : null,
    tag: a.tagName,
    cls: a.className,
    label: a.getAttribute("aria-label"),
  };
}

function restoreFocus(root, k) {
  if (!k) return;
  let scope = root.children[k.group];
  if (scope && k.uri) scope = [...scope.querySelectorAll("li.contact")].find((li) => li.dataset.uri === k.uri);
  if (!scope) return;
  const same = [...scope.querySelectorAll(k.tag)].find((e) => e.className === k.cls && e.getAttribute("aria-label") === k.label);
  if (same) same.focus();
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
    {
      class: "contact",
      "data-uri": c.uri,
      // A click anywhere on the row except its controls opens the card too.
      onclick: (e) => {
        if (!e.target.closest("button, select, label, a, input")) openCard(c.uri, name);
      },
    },
    badge(p.cls),
    el(
      "span",
      {},
      el("button", { type: "button", class: "who", "aria-haspopup": "dialog", onclick: () => openCard(c.uri, name) }, name),
      " ",
      el("span", { class: "uri" }, c.uri),
    ),
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

// ---------------------------------------------------------------- find colleagues

function isContact(uri) {
  return search.added.has(uri) || app.contacts.contacts.some((c) => c.uri === uri);
}

/// Forgets the results and any query in flight or waiting.
function resetSearch() {
  clearTimeout(search.timer);
  clearTimeout(search.retryTimer);
  search.seq++;
  if (search.controller) search.controller.abort();
  search.controller = null;
  search.results = [];
  search.more = false;
  search.open = false;
  search.active = -1;
  renderResults();
  setSearchStatus("");
}

function onSearchInput() {
  clearTimeout(search.timer);
  const q = $("search-input").value.trim();
  if (!q) return resetSearch();
  setActive(-1); // Enter must not add a result of the previous text
  search.timer = setTimeout(() => runSearch(q), SEARCH_DEBOUNCE_MS);
}

async function runSearch(q) {
  clearTimeout(search.retryTimer);
  const seq = ++search.seq;
  if (search.controller) search.controller.abort();
  const controller = new AbortController();
  search.controller = controller;
  let data;
  try {
    data = await api("GET", `/v1/directory?q=${encodeURIComponent(q)}&limit=${SEARCH_LIMIT}`, undefined, { signal: controller.signal });
  } catch (e) {
    if (seq === search.seq && e.name !== "AbortError") await searchFailed(e, q);
    return;
  }
  if (seq !== search.seq || !data) return; // a newer query was sent meanwhile
  search.controller = null;
  search.results = data.results;
  search.more = data.more;
  search.open = true;
  search.active = -1;
  renderResults();
  const n = data.results.length;
  setSearchStatus(
    n === 0 ? "No one found" : `${n} ${n === 1 ? "person" : "people"} found`,
    data.more ? "More results: refine your search" : "",
  );
}

async function searchFailed(e, q) {
  search.results = [];
  search.open = false;
  search.active = -1;
  renderResults();
  if (e.status === 401) return sessionEnded();
  if (e.status === 429) {
    // Throttled: say so kindly, and ask again once the server allows it.
    const secs = Math.max(1, Math.ceil(e.retryAfter || 1));
    setSearchStatus(`Too many searches in a short time. Searching again in ${secs} s…`);
    search.retryTimer = setTimeout(() => {
      if ($("search-input").value.trim() === q) runSearch(q);
    }, secs * 1000);
  } else if (e.status === 413) {
    setSearchStatus("That search is too long: use at most 8 words.");
  } else {
    setSearchStatus(`Search failed: ${e.message}`);
  }
}

function setSearchStatus(text, more = "") {
  $("search-status").replaceChildren(...(text ? [text] : []), ...(more ? [el("span", { class: "more" }, more)] : []));
}

function resultName(r) {
  return r.display_name || r.uri.split("@")[0];
}

function resultRow(r, i) {
  const action =
    r.uri === app.user
      ? el("span", { class: "hint" }, "You")
      : isContact(r.uri)
        ? el("span", { class: "hint" }, "Already a contact")
        : el("button", { type: "button", "aria-label": `Add ${resultName(r)}`, onclick: () => addResult(r) }, "Add");
  return el(
    "div",
    { role: "row", class: "result", "data-uri": r.uri, onclick: () => setActive(i) },
    el(
      "div",
      { role: "gridcell", id: `search-result-${i}`, class: "result-info" },
      el("span", { class: "who" }, resultName(r)),
      " ",
      badge(r.availability_class),
      " ",
      el("span", { class: "uri" }, r.uri),
      r.title ? el("span", { class: "detail" }, r.title) : null,
      r.department ? el("span", { class: "detail" }, r.department) : null,
    ),
    el("div", { role: "gridcell", class: "result-action" }, action),
  );
}

function renderResults() {
  const grid = $("search-results");
  const input = $("search-input");
  // Keep the focus in the search box when a focused Add button is replaced.
  if (grid.contains(document.activeElement)) input.focus();
  grid.replaceChildren(...search.results.map(resultRow));
  const open = search.open && search.results.length > 0;
  grid.hidden = !open;
  input.setAttribute("aria-expanded", String(open));
  if (search.active >= search.results.length) search.active = search.results.length - 1;
  setActive(search.active);
}

/// Highlights one result (-1: none) and points the combobox at it.
function setActive(i) {
  search.active = i;
  const input = $("search-input");
  const rows = [...$("search-results").children];
  rows.forEach((row, n) => {
    row.setAttribute("aria-selected", String(n === i));
    row.classList.toggle("active", n === i);
  });
  if (i >= 0 && search.open && rows[i]) {
    input.setAttribute("aria-activedescendant", `search-result-${i}`);
    rows[i].scrollIntoView({ block: "nearest" });
  } else {
    input.removeAttribute("aria-activedescendant");
  }
}

function closeResults() {
  search.open = false;
  renderResults();
}

function onSearchKey(ev) {
  const n = search.results.length;
  switch (ev.key) {
    case "ArrowDown":
    case "ArrowUp": {
      if (!n) return;
      ev.preventDefault();
      const down = ev.key === "ArrowDown";
      if (!search.open) {
        search.open = true;
        search.active = down ? 0 : n - 1;
        renderResults();
      } else if (search.active < 0) {
        setActive(down ? 0 : n - 1);
      } else {
        setActive((search.active + (down ? 1 : n - 1)) % n);
      }
      break;
    }
    case "Enter":
      if (search.open && search.active >= 0) {
        ev.preventDefault();
        addResult(search.results[search.active]);
      }
      break;
    case "Escape":
      if (search.open && n) {
        ev.preventDefault();
        closeResults();
      } else if ($("search-input").value) {
        ev.preventDefault();
        $("search-input").value = "";
        resetSearch();
      }
      break;
  }
}

/// Adds a result through the same code path as the Add contact form.
async function addResult(r) {
  if (r.uri === app.user) return notice("That is you");
  if (isContact(r.uri)) return notice(`${resultName(r)} is already a contact`);
  await run(async () => {
    await addContact(r.uri, $("add-contact-group").value || 1);
    search.added.add(r.uri);
    renderResults();
    notice(`Added ${resultName(r)} to your contacts`);
  });
}

// ---------------------------------------------------------------- contact card

function parseXml(text) {
  if (!text) return null;
  const doc = new DOMParser().parseFromString(text, "application/xml");
  return doc.getElementsByTagName("parsererror").length ? null : doc.documentElement;
}

function childrenNamed(parent, name) {
  return parent ? [...parent.children].filter((e) => e.localName === name) : [];
}

function textOf(parent, name) {
  const e = childrenNamed(parent, name)[0];
  return e ? e.textContent.trim() : "";
}

/// What the contactCard instances say, merged in instance order (0 is the identity
/// card, 3 the directory's details card); the first value of a field wins.
function cardFields(categories) {
  const f = { name: "", email: "", title: "", department: "", company: "", office: "", phones: [] };
  const set = (k, v) => {
    if (v && !f[k]) f[k] = v;
  };
  const cards = categories.filter((i) => i.name === "contactCard").sort((a, b) => a.instance - b.instance);
  for (const i of cards) {
    const root = parseXml(i.value);
    if (!root || root.localName !== "contactCard" || (root.namespaceURI && root.namespaceURI !== CONTACT_CARD_NS)) continue;
    const identity = childrenNamed(root, "identity")[0];
    set("name", textOf(childrenNamed(identity, "name")[0], "displayName"));
    set("email", textOf(identity, "email"));
    set("email", textOf(root, "email"));
    for (const k of ["title", "department", "company", "office"]) set(k, textOf(root, k));
    for (const p of childrenNamed(root, "phone")) {
      const phone = { type: p.getAttribute("type") || "", uri: textOf(p, "uri"), shown: textOf(p, "displayString") };
      if ((phone.uri || phone.shown) && !f.phones.some((x) => x.type === phone.type && x.uri === phone.uri)) f.phones.push(phone);
    }
  }
  return f;
}

async function openCard(uri, name) {
  const dialog = $("contact-card");
  const seq = ++card.seq;
  Object.assign(card, { uri, name, categories: null, error: "" });
  renderCard();
  if (!dialog.open) dialog.showModal();
  try {
    const data = await api("GET", `/v1/presentities/${encodeURIComponent(uri)}?categories=${CARD_CATEGORIES}`);
    if (seq !== card.seq) return;
    card.categories = data.categories;
  } catch (e) {
    if (seq !== card.seq) return;
    card.error = e.message;
  }
  renderCard();
}

function renderCard() {
  const body = $("card-body");
  if (!card.uri) return body.replaceChildren();
  if (card.error) {
    $("card-title").textContent = card.name || card.uri;
    return body.replaceChildren(el("p", { class: "error" }, `The card could not be loaded: ${card.error}`));
  }
  if (!card.categories) {
    $("card-title").textContent = card.name || card.uri;
    body.setAttribute("aria-busy", "true");
    return body.replaceChildren(el("p", { class: "hint" }, "Loading…"));
  }
  body.removeAttribute("aria-busy");
  const f = cardFields(card.categories);
  const byName = new Map();
  for (const i of card.categories) byName.set(i.name, [...(byName.get(i.name) || []), i]);
  const p = presenceFrom(byName);
  $("card-title").textContent = f.name || card.name || card.uri;
  const rows = [];
  const field = (label, value) => {
    if (value) rows.push(el("dt", {}, label), el("dd", {}, value));
  };
  field("Title", f.title);
  field("Department", f.department);
  field("Company", f.company);
  field("Office", f.office);
  for (const ph of f.phones) {
    const label = PHONE_LABELS[ph.type] || "Phone";
    const shown = ph.shown || ph.uri.replace(/^tel:/i, "");
    // Only tel: URIs become links; anything else is shown as text.
    field(label, /^tel:/i.test(ph.uri) ? el("a", { href: ph.uri }, shown) : shown);
  }
  field("E-mail", f.email ? el("a", { href: `mailto:${f.email}` }, f.email) : "");
  field("Address", card.uri);
  const status = el("p", { class: "card-status" }, badge(p.cls), p.activity ? el("span", { class: "activity" }, p.activity) : null);
  const note = p.note ? [el("p", { class: "note" }, p.note)] : [];
  body.replaceChildren(status, ...note, el("dl", { class: "fields" }, ...rows));
}

function onCardClosed() {
  const uri = card.uri;
  Object.assign(card, { uri: null, categories: null, error: "" });
  card.seq++;
  renderCard();
  // The list may have been drawn again while the card was open: focus the row's
  // current button.
  const row = uri && [...document.querySelectorAll("li.contact")].find((li) => li.dataset.uri === uri);
  const opener = row && row.querySelector("button.who");
  if (opener) opener.focus();
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

async function sessionEnded() {
  await signOut();
  $("login-error").textContent = "Your session ended; please sign in again.";
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
  $("search-input").addEventListener("input", onSearchInput);
  $("search-input").addEventListener("keydown", onSearchKey);
  // Clicks in the results keep the focus in the search box (buttons still click).
  $("search-results").addEventListener("mousedown", (ev) => ev.preventDefault());
  $("search").addEventListener("focusout", (ev) => {
    if (!$("search").contains(ev.relatedTarget) && search.open) closeResults();
  });
  $("card-close").addEventListener("click", () => $("contact-card").close());
  $("contact-card").addEventListener("close", onCardClosed);
  // A click on the backdrop (outside the card's content) closes it too.
  $("contact-card").addEventListener("click", (ev) => {
    if (ev.target === $("contact-card")) $("contact-card").close();
  });
  if (app.token) start();
  else showSignedIn(false);
});
