// The example host's chat page: plain modules, no build step. It speaks the host's HTTP API
// only (see README "Talking to the example host"); the server sends a strict CSP with it.
import { api, forget, newConversationId, pendingRuns, randomId, remember, store, stored, TERMINAL } from "/page/api.js";
import { addUsage, el, historyNodes, md, showUsage } from "/page/render.js";

const $ = (id) => document.getElementById(id);
const log = $("log");

let agent = stored("agent", "demo");
let conversation = stored("conversation", newConversationId());
let titles = new Map(); // conversation id -> title, from the list
/** The runs shown live in this conversation: run id -> entry (see `track`). */
const live = new Map();
let renderGeneration = 0;

// ---- Requests and errors -----------------------------------------------------------------

const conversationPath = () =>
  `/v1/agents/${encodeURIComponent(agent)}/conversations/${encodeURIComponent(conversation)}`;

function showError(message) {
  const last = $("errors").lastElementChild;
  if (last?.dataset.message === message) return; // the same error again: shown already
  const box = el("div", "error", message);
  box.dataset.message = message;
  const dismiss = el("button", "", "×");
  dismiss.type = "button";
  dismiss.title = "Dismiss";
  dismiss.addEventListener("click", () => box.remove());
  box.prepend(dismiss);
  $("errors").append(box);
}

// ---- Runs in flight -------------------------------------------------------------------------

/** A live entry: the run's bubbles, its text so far, and its event stream. */
function track(run, text) {
  const entry = { run, text: "", usage: null, done: false, source: null, lastSeq: null, at: Date.now() };
  entry.nodes = [];
  if (text) entry.nodes.push(el("div", "msg user", text));
  entry.bubble = el("div", "msg assistant working");
  entry.body = el("div", "body");
  entry.status = el("div", "msg note");
  entry.bubble.append(entry.body);
  entry.nodes.push(entry.bubble);
  live.set(run ?? randomId(), entry);
  return entry;
}

function setStatus(entry, text) {
  entry.status.textContent = text;
  if (text && !entry.status.isConnected) entry.bubble.after(entry.status);
  if (!text) entry.status.remove();
}

let drawQueued = new Set();
function draw(entry) {
  drawQueued.add(entry);
  if (drawQueued.size > 1) return;
  requestAnimationFrame(() => {
    for (const e of drawQueued) e.body.innerHTML = md.render(e.text);
    drawQueued = new Set();
    followBottom();
  });
}

function attach(entry) {
  const key = $("key").value;
  const query = new URLSearchParams();
  if (key) query.set("key", key);
  if (entry.lastSeq !== null) query.set("after", entry.lastSeq);
  const source = new EventSource(`/v1/runs/${encodeURIComponent(entry.run)}/events?${query}`);
  entry.source = source;
  const on = (name, handle) =>
    source.addEventListener(name, (event) => {
      entry.lastSeq = Number(event.lastEventId);
      setStatus(entry, "");
      handle(JSON.parse(event.data));
    });
  on("started", (data) => {
    // A later attempt starts over: the earlier one's output never reached the transcript.
    if (data.attempt > 1) { entry.text = ""; entry.usage = null; draw(entry); }
  });
  on("output", (data) => { entry.text += data.text; draw(entry); });
  on("entry", (data) => {
    const message = data.entry?.type === "message" ? data.entry.message : null;
    if (message?.role === "assistant" && message.usage) {
      entry.usage = addUsage(entry.usage, message.usage);
      showUsage(entry.bubble, entry.usage);
    }
  });
  on("steered", (data) => setStatus(entry, `took in: ${data.payload?.text ?? ""}`));
  on("retrying", (data) => setStatus(entry, `attempt ${data.attempt} failed (${data.error}); retrying`));
  on("requeued", (data) => setStatus(entry, `handed back to the queue (${data.reason})`));
  for (const name of TERMINAL) on(name, (data) => finish(entry, name, data));
  source.addEventListener("error", () => {
    if (entry.done) return;
    if (source.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself, resuming after the last event it saw.
      setStatus(entry, "connection lost; reconnecting…");
      return;
    }
    diagnose(entry); // refused outright (4xx/5xx): ask why
  });
}

/** The stream was refused: the run's status says whether it ended or why we cannot see it. */
async function diagnose(entry) {
  try {
    const status = await api("GET", `/v1/runs/${encodeURIComponent(entry.run)}`);
    if (TERMINAL.includes(status.status)) return finish(entry, status.status, status);
    setStatus(entry, "the event stream was refused; trying again in 5 s");
    setTimeout(() => { if (!entry.done && live.get(entry.run) === entry) attach(entry); }, 5000);
  } catch (e) {
    if (e.status === 404) forget(entry.run);
    setStatus(entry, "");
    fail(entry, `cannot follow this run: ${e.message}`);
    showError(e.message);
  }
}

function fail(entry, message) {
  entry.bubble.classList.remove("working");
  entry.bubble.append(el("div", "run-error", message));
  followBottom();
}

function finish(entry, how, data) {
  entry.done = true;
  entry.source?.close();
  forget(entry.run);
  updateStop();
  if (how === "completed") {
    if (data.output?.steered_into) setStatus(entry, "answered in the running turn");
    // The transcript now holds the turn: show it from there (never twice), and the list.
    refresh();
    return;
  }
  const error = data.error ?? "";
  setStatus(entry, "");
  fail(entry, how === "cancelled" ? `stopped${error ? ` (${error})` : ""}` : `${how}: ${error}`);
}

function updateStop() {
  $("stop").hidden = ![...live.values()].some((e) => !e.done && e.run);
}

// ---- The conversation ----------------------------------------------------------------------

async function loadHistory() {
  const messages = [];
  let cursor = "";
  do {
    const page = await api("GET", `${conversationPath()}/session/messages?limit=200&cursor=${encodeURIComponent(cursor)}`);
    messages.push(...page.messages);
    cursor = page.hasMore ? page.nextCursor : "";
  } while (cursor);
  return messages;
}

/** Show the transcript, then the runs still in flight below it. */
async function render() {
  const generation = ++renderGeneration;
  let nodes;
  try {
    nodes = historyNodes(await loadHistory());
  } catch (e) {
    showError(`loading ${conversation}: ${e.message}`);
    nodes = [...log.querySelectorAll(":scope > .history")]; // keep what was shown
  }
  if (generation !== renderGeneration) return; // a newer render or a switch won
  for (const node of nodes) node.classList.add("history");
  for (const entry of live.values()) {
    if (entry.done && !entry.bubble.querySelector(".run-error")) continue; // in the history now
    const shown = entry.status.textContent ? [...entry.nodes, entry.status] : entry.nodes;
    // A failed run never reaches the transcript: keep it where it happened, before the
    // first message sent after it; runs in flight go last.
    const later = entry.done ? nodes.findIndex((n) => Number(n.dataset.at) > entry.at) : -1;
    nodes.splice(later < 0 ? nodes.length : later, 0, ...shown);
  }
  if (nodes.length === 0) nodes.push(el("p", "muted", "No messages yet. Say something."));
  log.replaceChildren(...nodes);
  for (const [id, entry] of live) if (entry.done && !entry.bubble.isConnected) live.delete(id);
  followBottom(true);
}

async function refresh() {
  await Promise.all([render(), loadConversations()]);
}

/** Open `id`: stop following the previous conversation's runs, reattach this one's. */
async function openConversation(id) {
  for (const entry of live.values()) entry.source?.close();
  live.clear();
  conversation = id;
  store("conversation", id);
  $("title").textContent = titles.get(id) ?? id;
  log.replaceChildren();
  const mine = pendingRuns().filter((r) => r.agent === agent && r.conversation === id);
  // A run that ended while the page was away is in the transcript already (or failed):
  // reattaching to it would show its text a second time.
  const stillRunning = await Promise.all(mine.map(async (r) => {
    try {
      const status = await api("GET", `/v1/runs/${encodeURIComponent(r.run)}`);
      if (!TERMINAL.includes(status.status)) return r;
      forget(r.run);
      if (status.status !== "completed") showError(`a run ${status.status} while away: ${status.error ?? ""}`);
    } catch (e) {
      if (e.status === 404) forget(r.run); else { showError(e.message); return r; }
    }
    return null;
  }));
  if (conversation !== id) return;
  for (const r of stillRunning.filter(Boolean)) attach(track(r.run, r.text));
  updateStop();
  highlightCurrent();
  await render();
}

// ---- The conversation list -----------------------------------------------------------------

async function loadConversations() {
  const list = $("conversations");
  try {
    const items = [];
    let cursor = "";
    for (let pages = 0; pages < 10; pages++) {
      const page = await api("GET", `/v1/agents/${encodeURIComponent(agent)}/conversations?limit=200&cursor=${encodeURIComponent(cursor)}`);
      items.push(...page.conversations);
      if (!page.hasMore) break;
      cursor = page.nextCursor;
    }
    items.sort((a, b) => b.updatedAt.localeCompare(a.updatedAt));
    titles = new Map(items.map((c) => [c.conversationId, c.title || c.conversationId]));
    $("list-state").textContent = items.length ? "" : "No conversations yet.";
    if (!titles.has(conversation)) items.unshift({ conversationId: conversation, title: null, turns: 0 });
    list.replaceChildren(...items.map((c) => {
      const li = el("li", "", c.title || c.conversationId);
      li.dataset.id = c.conversationId;
      li.title = c.conversationId;
      li.append(el("small", "", c.updatedAt ? `${c.turns} turn${c.turns === 1 ? "" : "s"} · ${new Date(c.updatedAt).toLocaleString()}` : "new"));
      li.addEventListener("click", () => openConversation(c.conversationId));
      return li;
    }));
    $("title").textContent = titles.get(conversation) ?? conversation;
    highlightCurrent();
  } catch (e) {
    $("list-state").textContent = "Could not load the conversations.";
    showError(`listing conversations: ${e.message}`);
  }
}

function highlightCurrent() {
  for (const li of $("conversations").children) li.classList.toggle("current", li.dataset.id === conversation);
}

// ---- Scrolling -------------------------------------------------------------------------------

// Follow new text only while the reader is at the bottom: scrolling up to read stops it.
let atBottom = true;
log.addEventListener("scroll", () => {
  atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  $("jump").hidden = atBottom;
});
function followBottom(force = false) {
  if (force) atBottom = true;
  if (atBottom) log.scrollTop = log.scrollHeight;
  else $("jump").hidden = false;
}
$("jump").addEventListener("click", () => followBottom(true));

// ---- Sending, stopping, resetting ------------------------------------------------------------

async function send() {
  const input = $("text");
  const text = input.value;
  if (!text.trim()) return;
  input.value = "";
  grow();
  const entry = track(null, text);
  log.querySelector(":scope > p.muted")?.remove();
  log.append(...entry.nodes);
  followBottom(true);
  const sentTo = conversation;
  try {
    const body = { text, idempotency_key: randomId(), multitask_strategy: $("strategy").value };
    const { run_id: run } = await api("POST", `${conversationPath()}/messages`, body);
    for (const [id, e] of live) if (e === entry) live.delete(id);
    entry.run = run;
    remember({ run, agent, conversation: sentTo, text });
    // Switched away meanwhile: the run is followed when its conversation is opened again.
    if (conversation === sentTo) { live.set(run, entry); attach(entry); }
    updateStop();
    if (!titles.has(sentTo)) loadConversations();
  } catch (e) {
    entry.done = true;
    fail(entry, `not sent: ${e.message}`);
    showError(`sending: ${e.message}`);
    if (!input.value) { input.value = text; grow(); }
  }
}

$("composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
$("text").addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter (and Enter while an input method composes) breaks the line.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
function grow() {
  const input = $("text");
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight + 2}px`;
}
$("text").addEventListener("input", grow);

$("stop").addEventListener("click", async () => {
  for (const entry of live.values()) {
    if (entry.done || !entry.run) continue;
    try {
      await api("POST", `/v1/runs/${encodeURIComponent(entry.run)}/cancel`);
      if (!entry.done) setStatus(entry, "stopping…");
    } catch (e) {
      if (e.status !== 409) showError(`stopping: ${e.message}`); // 409: it had ended already
    }
  }
});

$("reset").addEventListener("click", async () => {
  if (!confirm(`Delete every message of ${conversation}?`)) return;
  const button = $("reset");
  button.disabled = true;
  button.textContent = "Resetting…";
  try {
    await api("DELETE", `${conversationPath()}/session`);
    for (const [id, entry] of live) if (entry.done) live.delete(id); // its failed runs too
  } catch (e) {
    showError(`reset: ${e.message}`);
  }
  button.disabled = false;
  button.textContent = "Reset";
  await refresh();
});

$("new").addEventListener("click", async () => {
  await openConversation(newConversationId());
  await loadConversations();
  $("text").focus();
});

// ---- Settings -------------------------------------------------------------------------------

$("key").value = stored("key", "");
$("agent").value = agent;
$("key").addEventListener("change", () => {
  store("key", $("key").value);
  $("errors").replaceChildren();
  openConversation(conversation).then(loadConversations);
});
$("agent").addEventListener("change", () => {
  agent = $("agent").value.trim() || "demo";
  store("agent", agent);
  openConversation(conversation).then(loadConversations);
});

await loadConversations();
await openConversation(conversation);
