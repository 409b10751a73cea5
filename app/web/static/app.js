// imflow demo chat: a plain client of API v1 (no build step, no dependencies).
//
// - live: one WebSocket (/v1/ws); every {type: "message"} frame is merged at once;
// - catch-up: on every (re)connect, /v1/sync page by page (200 a page) with the server-side
//   cursor of this device (no `since`), until has_more is false;
// - history: a conversation opens on its newest 20 messages; "load more" pages
//   /v1/conversations/{cid}/messages backwards, 20 at a time, with before=<oldest shown seq>;
// - unread bubbles from /v1/conversations; opening a conversation marks it read.
// Messages are kept by message_id, so a message seen by push, sync and history is shown once,
// and shown in seq order.
"use strict";

const PAGE = 20;
const SYNC_PAGE = 200;
const $ = (id) => document.getElementById(id);

const state = {
  session: null,          // {token, user, device}
  convs: new Map(),       // cid -> {conversation_id, last_message, unread}
  messages: new Map(),    // cid -> Map(message_id -> message)
  windowStart: new Map(), // cid -> lowest seq shown in the chat view
  hasMore: new Map(),     // cid -> older history exists
  open: null,             // the cid in the chat view
  ws: null,
  retry: 0,
  syncing: null,
  syncAgain: false,
};

// ---------------------------------------------------------------- session and HTTP

function deviceId() {
  let device = localStorage.getItem("imflow.device");
  if (!device) {
    const bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    device = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("imflow.device", device);
  }
  return device;
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + state.session.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const message = data && data.error ? data.error.message : resp.statusText;
    throw new Error(`${method} ${path}: ${resp.status} ${message}`);
  }
  notice(""); // the server answers again: an earlier failure is stale
  return data;
}

function notice(text) {
  // While offline the status says so; a request failing then is no news.
  $("notice").textContent = text && navigator.onLine ? text : "";
}

// ---------------------------------------------------------------- messages

function peerOf(cid) {
  if (cid.startsWith("g:")) return cid;
  const [, a, b] = cid.split(":");
  return a === state.session.user ? b : a;
}

function bucket(cid) {
  let messages = state.messages.get(cid);
  if (!messages) {
    messages = new Map();
    state.messages.set(cid, messages);
  }
  return messages;
}

function sorted(cid) {
  return Array.from(bucket(cid).values()).sort((x, y) => x.seq - y.seq);
}

function merge(message) {
  const cid = message.conversation_id;
  const messages = bucket(cid);
  if (messages.has(message.message_id)) return false;
  messages.set(message.message_id, message);
  const conv = state.convs.get(cid);
  if (!conv || !conv.last_message || conv.last_message.seq < message.seq) {
    state.convs.set(cid, {
      conversation_id: cid, last_message: message,
      unread: conv ? conv.unread + (message.sender === state.session.user ? 0 : 1) : 1,
    });
  }
  return true;
}

function received(messages) {
  let touched = false;
  let openTouched = false;
  for (const message of messages) {
    if (merge(message)) {
      touched = true;
      openTouched = openTouched || message.conversation_id === state.open;
    }
  }
  if (!touched) return;
  if (openTouched) scheduleRead(state.open);
  scheduleRender();
  scheduleConversations();
}

function text(message) {
  const body = message.body;
  if (message.type === "system.members" && body) {
    return `${body.actor} ${body.op === "remove" ? "removed" : body.op === "create"
      ? "created the group with" : "added"} ${(body.members || []).join(", ")}`;
  }
  if (body && typeof body === "object" && typeof body.text === "string") return body.text;
  if (typeof body === "string") return body;
  return JSON.stringify(body);
}

// ---------------------------------------------------------------- rendering

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderConversations();
    renderMessages();
  });
}

function renderConversations() {
  const list = $("conversations");
  const items = Array.from(state.convs.values()).sort((x, y) =>
    (y.last_message ? y.last_message.ts : Infinity) - (x.last_message ? x.last_message.ts : Infinity));
  list.replaceChildren(...items.map((conv) => {
    const cid = conv.conversation_id;
    const li = document.createElement("li");
    li.dataset.testid = "conversation";
    li.dataset.conversationId = cid;
    li.classList.toggle("active", cid === state.open);
    const textBox = document.createElement("div");
    textBox.className = "text";
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = peerOf(cid);
    const last = document.createElement("div");
    last.className = "last";
    last.textContent = conv.last_message ? text(conv.last_message) : "no messages yet";
    textBox.append(who, last);
    const unread = document.createElement("span");
    unread.className = "unread";
    unread.dataset.testid = "unread";
    const count = cid === state.open ? 0 : conv.unread;
    unread.textContent = String(count);
    unread.hidden = count === 0;
    li.append(textBox, unread);
    li.addEventListener("click", () => openConversation(cid));
    return li;
  }));
}

function renderMessages() {
  const cid = state.open;
  const list = $("messages");
  if (!cid) {
    list.replaceChildren();
    $("load-more").hidden = true;
    return;
  }
  const pane = $("history");
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
  const start = state.windowStart.get(cid) ?? 0;
  const shown = sorted(cid).filter((m) => m.seq >= start);
  const previousHeight = pane.scrollHeight;
  const firstBefore = list.firstElementChild ? Number(list.firstElementChild.dataset.seq) : null;
  list.replaceChildren(...shown.map((m) => {
    const li = document.createElement("li");
    li.dataset.testid = "message";
    li.dataset.seq = String(m.seq);
    li.dataset.messageId = m.message_id;
    if (m.type === "system.members") li.className = "system";
    else if (m.sender === state.session.user) li.className = "mine";
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `${m.sender} · #${m.seq} · ${new Date(m.ts).toLocaleTimeString()}`;
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = text(m);
    li.append(meta, body);
    return li;
  }));
  $("load-more").hidden = !state.hasMore.get(cid);
  if (firstBefore !== null && shown.length && shown[0].seq < firstBefore) {
    pane.scrollTop += pane.scrollHeight - previousHeight; // older ones came in above
  } else if (atBottom || firstBefore === null) {
    pane.scrollTop = pane.scrollHeight;
  }
}

function setStatus(online) {
  const status = $("status");
  status.textContent = online ? "online" : "offline";
  status.className = "status " + (online ? "online" : "offline");
}

// ---------------------------------------------------------------- conversations and read

let conversationsTimer = null;
function scheduleConversations() {
  clearTimeout(conversationsTimer);
  conversationsTimer = setTimeout(loadConversations, 150);
}

async function loadConversations() {
  try {
    const data = await api("GET", "/v1/conversations");
    for (const conv of data.conversations) {
      state.convs.set(conv.conversation_id, conv);
      // A conversation first seen in the list: its last message counts as known.
      if (!state.messages.has(conv.conversation_id)) merge(conv.last_message);
    }
    scheduleRender();
  } catch (err) {
    notice(String(err));
  }
}

const readTimers = new Map();
function scheduleRead(cid) {
  clearTimeout(readTimers.get(cid));
  readTimers.set(cid, setTimeout(() => markRead(cid), 100));
}

async function markRead(cid) {
  const messages = sorted(cid);
  if (!messages.length) return;
  try {
    const result = await api("POST", `/v1/conversations/${encodeURIComponent(cid)}/read`,
      { seq: messages[messages.length - 1].seq });
    const conv = state.convs.get(cid);
    if (conv) conv.unread = result.unread;
    scheduleRender();
  } catch (err) {
    notice(String(err));
  }
}

async function openConversation(cid) {
  state.open = cid;
  $("title").textContent = peerOf(cid);
  $("composer").disabled = false;
  $("send").disabled = false;
  if (!state.convs.has(cid)) state.convs.set(cid, { conversation_id: cid, last_message: null, unread: 0 });
  const known = sorted(cid);
  if (!state.windowStart.has(cid)) {
    if (known.length >= PAGE) {
      state.windowStart.set(cid, known[known.length - PAGE].seq);
      state.hasMore.set(cid, known[known.length - PAGE].seq > 1);
    } else {
      try {
        const page = await api("GET", `/v1/conversations/${encodeURIComponent(cid)}/messages?limit=${PAGE}`);
        for (const m of page.messages) merge(m);
        const all = sorted(cid);
        state.windowStart.set(cid, all.length ? all[Math.max(0, all.length - PAGE)].seq : 0);
        state.hasMore.set(cid, page.has_more);
      } catch (err) {
        notice(String(err));
      }
    }
  }
  scheduleRender();
  scheduleRead(cid);
  $("composer").focus();
}

async function loadMore() {
  const cid = state.open;
  if (!cid) return;
  const before = state.windowStart.get(cid);
  const button = $("load-more");
  button.disabled = true;
  try {
    const page = await api("GET",
      `/v1/conversations/${encodeURIComponent(cid)}/messages?limit=${PAGE}&before=${before}`);
    for (const m of page.messages) merge(m);
    if (page.messages.length) {
      state.windowStart.set(cid, Math.min(...page.messages.map((m) => m.seq)));
    }
    state.hasMore.set(cid, page.has_more);
    scheduleRender();
  } catch (err) {
    notice(String(err));
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- live and catch-up

async function catchUp() {
  // One pull at a time; a reconnect during a pull asks for one more round.
  if (state.syncing) {
    state.syncAgain = true;
    return state.syncing;
  }
  state.syncing = (async () => {
    do {
      state.syncAgain = false;
      let more = true;
      while (more) {
        const page = await api("GET", `/v1/sync?limit=${SYNC_PAGE}`);
        received(page.messages);
        more = page.has_more;
      }
    } while (state.syncAgain);
    await loadConversations();
  })();
  try {
    await state.syncing;
  } catch (err) {
    notice(String(err));
  } finally {
    state.syncing = null;
  }
}

function connect() {
  if (state.ws || !state.session) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/v1/ws?token=${encodeURIComponent(state.session.token)}`);
  state.ws = ws;
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "ready") {
      state.retry = 0;
      setStatus(true);
      catchUp();
    } else if (frame.type === "message") {
      received([frame.message]);
    }
  };
  ws.onclose = () => {
    if (state.ws === ws) state.ws = null;
    setStatus(false);
    if (!state.session || !navigator.onLine) return; // the "online" event reconnects
    state.retry = Math.min(state.retry + 1, 5);
    setTimeout(connect, 500 * state.retry);
  };
}

function disconnect() {
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  setStatus(false);
}

window.addEventListener("offline", disconnect);
window.addEventListener("online", connect);

// ---------------------------------------------------------------- forms

async function send(textValue) {
  const cid = state.open;
  const target = cid.startsWith("g:") ? { conversation: cid } : { to: peerOf(cid) };
  const clientMsgId = `${state.session.device}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  await api("POST", "/v1/messages", { ...target, client_msg_id: clientMsgId, body: { text: textValue } });
}

function start(session) {
  state.session = session;
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("logout").hidden = false;
  $("me").textContent = `${session.user} (${session.device})`;
  connect();
  loadConversations();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = $("login-user").value.trim();
  try {
    const resp = await fetch("/demo/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user, device: deviceId() }),
    });
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error ? data.error.message : resp.statusText);
    localStorage.setItem("imflow.session", JSON.stringify(data));
    start(data);
  } catch (err) {
    $("login-error").textContent = String(err.message || err);
  }
});

$("logout").addEventListener("click", () => {
  localStorage.removeItem("imflow.session");
  location.reload();
});

$("new-chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const to = $("new-chat-to").value.trim();
  if (!to) return;
  const me = state.session.user;
  const cid = to.startsWith("g:") ? to : `u:${[me, to].sort().join(":")}`;
  $("new-chat-to").value = "";
  openConversation(cid);
});

$("composer-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("composer");
  const value = input.value;
  if (!value.trim() || !state.open) return;
  input.value = "";
  try {
    await send(value);
    notice("");
  } catch (err) {
    input.value = value;
    notice(String(err));
  }
});

$("load-more").addEventListener("click", loadMore);

const saved = localStorage.getItem("imflow.session");
if (saved) start(JSON.parse(saved));
