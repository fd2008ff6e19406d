// The chat page: a client of the public HTTP API only. Text from the model and from tools is put into the
// page as text nodes (never as HTML); the Markdown subset below builds elements, so nothing can inject markup.
"use strict";

const API = location.pathname.replace(/\/ui\/?$/, ""); // this page is <prefix>/ui (or <prefix>/ui/)
const KEY_STORAGE = "stateful-agent.function-key";
const $ = (id) => document.getElementById(id);
const log = $("log");
const input = $("input");

const state = { session: null, cursor: null, busy: false, pending: new Map(), model: "" };

// -- the API ----------------------------------------------------------------------------------------------

class Problem extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || { title: `HTTP ${status}`, detail: "The app answered without details.", status };
  }
}

async function call(path, options = {}, keyAsked = false) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("x-functions-key", key);
  const response = await fetch(API + path, { ...options, headers, credentials: "same-origin" });
  const type = response.headers.get("content-type") || "";
  if (response.status === 401 && !type.includes("problem+json")) {
    // Not the app's answer: App Service Authentication (the user is not signed in) or the Functions host
    // (the session routes need a function key). Easy Auth has its own /.auth/me; without it, that is a 404.
    const easyAuth = (await fetch("/.auth/me", { credentials: "same-origin" }).catch(() => null))?.status;
    if (easyAuth && easyAuth !== 404) {
      throw new Problem(401, { title: "Sign-in required", detail: "Sign in to use the agent.", code: "unauthenticated" });
    }
    if (!keyAsked && (await askForKey())) return call(path, options, true);
  }
  if (!response.ok) {
    let body = null;
    if (type.includes("json")) body = await response.json().catch(() => null);
    throw new Problem(response.status, body);
  }
  return response;
}

async function json(path, options) {
  return (await call(path, options)).json();
}

// The API path of a session, or of one of its sub-resources ("/turns", "/messages").
function sessionPath(sessionId, rest = "") {
  return `/sessions/${encodeURIComponent(sessionId)}${rest}`;
}

function askForKey() {
  const dialog = $("key-dialog");
  $("key-input").value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const key = $("key-input").value.trim();
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      resolve(Boolean(key));
    }, { once: true });
    dialog.showModal();
  });
}

// -- rendering ------------------------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function add(node) {
  log.append(node);
  log.scrollTop = log.scrollHeight;
  return node;
}

function notice(text) {
  return add(el("p", { class: "notice", text }));
}

function showProblem(error) {
  const body = error instanceof Problem ? error.body : { title: "The request failed", detail: String(error.message || error) };
  const box = el("div", { class: "problem", role: "alert" }, el("strong", { text: body.title || "Error" }));
  if (body.detail) box.append(" ", body.detail);
  if (body.code) box.append(" ", el("span", { class: "muted", text: `(${body.code})` }));
  return add(box);
}

// A safe Markdown subset: fenced code, paragraphs, bulleted and numbered lists, `code`, **bold** and
// http(s) links. Built from elements and text nodes only.
function markdown(text) {
  const fragment = document.createDocumentFragment();
  const parts = text.split(/^```[^\n]*\n?/m);
  parts.forEach((part, index) => {
    if (index % 2 === 1) {
      fragment.append(el("pre", {}, el("code", { text: part.replace(/\n$/, "") })));
      return;
    }
    for (const block of part.split(/\n\s*\n/)) {
      const lines = block.split("\n").filter((line) => line.trim() !== "");
      if (!lines.length) continue;
      const bulleted = lines.every((line) => /^\s*[-*]\s+/.test(line));
      const numbered = lines.every((line) => /^\s*\d+[.)]\s+/.test(line));
      if (bulleted || numbered) {
        const list = el(bulleted ? "ul" : "ol");
        for (const line of lines) list.append(inline(el("li"), line.replace(/^\s*(?:[-*]|\d+[.)])\s+/, "")));
        fragment.append(list);
      } else {
        const paragraph = el("p");
        lines.forEach((line, i) => {
          if (i) paragraph.append(el("br"));
          inline(paragraph, line);
        });
        fragment.append(paragraph);
      }
    }
  });
  return fragment;
}

const INLINE = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

function inline(parent, text) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    parent.append(text.slice(last, match.index));
    if (match[1] !== undefined) parent.append(el("code", { text: match[1] }));
    else if (match[2] !== undefined) parent.append(el("strong", { text: match[2] }));
    else parent.append(link(match[3] ?? match[5], match[4] ?? match[5]));
    last = match.index + match[0].length;
  }
  parent.append(text.slice(last));
  return parent;
}

function link(text, href) {
  return el("a", { href, rel: "noopener noreferrer", target: "_blank", text });
}

function userMessage(text) {
  return add(el("div", { class: "msg user", text }));
}

function assistantMessage(text) {
  const node = el("div", { class: "msg assistant" });
  node.append(markdown(text));
  return add(node);
}

function usageLine(usage) {
  if (!usage) return null;
  return el("span", { class: "usage", text: `${usage.input_tokens} tokens in · ${usage.output_tokens} out` });
}

// The box of a tool call already shown, by its id (a call is shown once, whatever reports it again).
function callBox(id) {
  return id ? [...log.querySelectorAll(".tool[data-call]")].find((node) => node.dataset.call === id) : undefined;
}

function toolCall(call) {
  const args = JSON.stringify(call.arguments ?? {}, null, 1);
  const box = el("div", { class: "tool", "data-call": call.id || "" },
    "Tool call ", el("span", { class: "name", text: call.name || "tool" }), el("pre", { text: args }));
  const shown = callBox(call.id);
  if (!shown) return add(box);
  shown.replaceWith(box);
  return box;
}

function toolResult(result) {
  const name = result.name || callBox(result.id || result.tool_call_id)?.querySelector(".name")?.textContent;
  return add(el("div", { class: "tool result" },
    "Result of ", el("span", { class: "name", text: name || "tool" }), el("pre", { text: String(result.result ?? "") })));
}

function approvalCard(approval) {
  if (state.pending.has(approval.id)) return;
  const card = el("div", { class: "approval", role: "group", "aria-label": `Approve ${approval.name}?` });
  const args = JSON.stringify(approval.arguments ?? {}, null, 1);
  const approve = el("button", { type: "button", class: "primary", text: "Approve" });
  const reject = el("button", { type: "button", text: "Reject" });
  card.append(el("div", {}, "The agent wants to run ", el("span", { class: "name", text: approval.name }), ":"),
    el("pre", { text: args }), el("div", { class: "actions" }, approve, reject));
  state.pending.set(approval.id, { approval, card, decision: null });
  approve.addEventListener("click", () => decide(approval.id, true));
  reject.addEventListener("click", () => decide(approval.id, false));
  add(card);
}

function decide(id, approved) {
  const entry = state.pending.get(id);
  if (!entry || state.busy) return;
  entry.decision = approved;
  entry.card.classList.add("answered");
  for (const button of entry.card.querySelectorAll("button")) button.disabled = true;
  entry.card.append(el("span", { class: "muted", text: approved ? " Approved." : " Rejected." }));
  const all = [...state.pending.values()];
  if (all.every((item) => item.decision !== null)) {
    const answers = all.map((item) => ({ id: item.approval.id, approved: item.decision }));
    state.pending.clear();
    turn({ approvals: answers });
  }
}

function view(message) {
  if (message.role === "tool") return toolResult(message);
  if (message.role === "user") {
    if (message.text) userMessage(message.text);
    for (const answer of message.approvals || []) notice(`Tool call ${answer.approved ? "approved" : "rejected"}.`);
    return;
  }
  if (message.text) assistantMessage(message.text);
  for (const call of message.tool_calls || []) toolCall(call);
}

// -- sessions ----------------------------------------------------------------------------------------------------

async function loadSessions(more = false) {
  const query = new URLSearchParams({ limit: "30" });
  if (more && state.cursor) query.set("cursor", state.cursor);
  const page = await json(`/sessions?${query}`);
  const list = $("sessions");
  if (!more) list.replaceChildren();
  for (const session of page.sessions) {
    const button = el("button", { type: "button", "data-session": session.session_id,
      title: `${session.turns} turn(s), updated ${new Date(session.updated_at).toLocaleString()}` });
    button.textContent = session.title || "Untitled conversation";
    if (session.session_id === state.session) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => openSession(session.session_id));
    list.append(el("li", {}, button));
  }
  state.cursor = page.next_cursor;
  $("more").hidden = !page.next_cursor;
}

function select(sessionId, title) {
  state.session = sessionId;
  state.pending.clear();
  log.replaceChildren();
  $("title").textContent = title || "New conversation";
  $("total").textContent = "";
  $("delete").hidden = !sessionId;
  for (const button of document.querySelectorAll("#sessions button")) {
    if (button.dataset.session === sessionId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  history.replaceState(null, "", sessionId ? `#session=${encodeURIComponent(sessionId)}` : location.pathname);
  $("sidebar").classList.remove("open");
  $("toggle").setAttribute("aria-expanded", "false");
}

async function openSession(sessionId) {
  select(sessionId);
  try {
    const summary = await json(sessionPath(sessionId));
    $("title").textContent = summary.title || "Untitled conversation";
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: "200" });
      if (cursor) query.set("cursor", cursor);
      const page = await json(sessionPath(sessionId, `/messages?${query}`));
      page.messages.forEach(view);
      cursor = page.next_cursor;
    } while (cursor);
    if (summary.usage) $("total").textContent = `${summary.usage.total_tokens} tokens in all`;
    for (const approval of summary.pending_approvals || []) approvalCard(approval);
  } catch (error) {
    showProblem(error);
  }
  input.focus();
}

async function newSession() {
  try {
    const created = await json("/sessions", { method: "POST" });
    select(created.session_id, "New conversation");
    notice("A new conversation: it is stored with its first message.");
    echoHint();
  } catch (error) {
    showProblem(error);
  }
  input.focus();
}

async function deleteSession() {
  if (!state.session || !confirm("Delete this conversation? This cannot be undone.")) return;
  try {
    await call(sessionPath(state.session), { method: "DELETE" });
    select(null);
    await loadSessions();
  } catch (error) {
    showProblem(error);
  }
}

// -- turns --------------------------------------------------------------------------------------------------------

async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function send(text) {
  if (!state.session) {
    try {
      const created = await json("/sessions", { method: "POST" });
      select(created.session_id, text.slice(0, 80));
    } catch (error) {
      showProblem(error);
      return;
    }
  }
  const shown = userMessage(text);
  const outcome = await turn({ message: text });
  if (outcome !== "stored") {
    shown.classList.add("unsent");
    shown.append(el("span", { class: "muted", text: outcome === "unsent" ? " (not sent)" : " (no answer)" }));
  }
}

// One turn, streamed: "stored", "unsent" (the app stored nothing) or "unknown" (no answer, even to the retry).
async function turn(body) {
  state.busy = true;
  $("send").disabled = true;
  const key = crypto.randomUUID(); // one key for the request and its retry: a retry never runs a second turn
  try {
    for (let attempt = 1; ; attempt++) {
      const reply = el("div", { class: "msg assistant streaming", "aria-busy": "true" });
      try {
        await stream(body, key, reply);
        break;
      } catch (error) {
        if (error instanceof Problem) {
          await handleProblem(error, body);
          return "unsent";
        }
        if (attempt >= 2) {
          showProblem(new Problem(0, { title: "Network error", detail: "The app did not answer, so this turn may " +
            "or may not have been stored. Reload the conversation to see it as stored before you send it again." }));
          await unsent(body, { text: false });
          return "unknown";
        }
        notice("The connection dropped; retrying with the same Idempotency-Key…");
      }
    }
    loadSessions().catch(() => {});
    return "stored";
  } finally {
    state.busy = false;
    $("send").disabled = false;
  }
}

async function stream(body, key, first) {
  const path = sessionPath(state.session, "/turns");
  const response = await call(path, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream", "idempotency-key": key },
    body: JSON.stringify(body),
  });
  const shown = [];  // what this attempt added to the conversation (removed if it fails)
  let reply = first;  // the assistant's text since the last tool step
  let text = "";
  let streamed = "";
  try {
    for await (const event of events(response)) {
      if (event.name === "delta") {
        if (!reply.isConnected) shown.push(add(reply));
        text += event.data.text;
        streamed += event.data.text;
        reply.textContent = text;
        log.scrollTop = log.scrollHeight;
      } else if (event.name === "tool_call" || event.name === "tool_result") {
        if (text) finish(reply, text);
        reply = el("div", { class: "msg assistant streaming", "aria-busy": "true" });
        text = "";
        shown.push(event.name === "tool_call" ? toolCall(event.data) : toolResult(event.data));
      } else if (event.name === "approval") {
        approvalCard(event.data);
      } else if (event.name === "done") {
        const stored = event.data;
        if (!streamed && stored.reply) text = stored.reply; // a replayed turn sends only its end
        if (text) {
          if (!reply.isConnected) add(reply);
          finish(reply, text);
        }
        const usage = usageLine(stored.usage);
        if (usage) (reply.isConnected ? reply : add(el("div", { class: "notice" }))).append(usage);
        if (response.headers.get("idempotent-replayed")) notice("This turn had been stored already; shown as stored.");
        return;
      } else if (event.name === "error") {
        throw new Problem(event.data.status || 500, event.data);
      }
    }
    throw new Error("the stream ended before the turn did");
  } catch (error) {
    for (const node of shown) node.remove();
    throw error;
  }
}

function finish(reply, text) {
  reply.classList.remove("streaming");
  reply.removeAttribute("aria-busy");
  reply.replaceChildren(markdown(text));
}

async function handleProblem(error, body) {
  const code = error.body.code;
  if (code === "session_conflict" || code === "approval_not_pending") {
    await openSession(state.session);
    notice("This conversation changed elsewhere (another tab or device), so your last message was not sent; it was reloaded.");
    return unsent(body, { approvals: false }); // the reload showed them
  }
  showProblem(error);
  for (const approval of error.body.pending_approvals || []) approvalCard(approval); // approvals_pending
  return unsent(body, { approvals: code !== "approvals_pending" });
}

// A turn that stored nothing (or may not have): its text goes back into the composer, and the approvals it
// answered are asked again if the app still waits for them.
async function unsent(body, { text = true, approvals = true } = {}) {
  if (text && body.message && !input.value) input.value = body.message;
  if (!body.approvals || !approvals) return;
  const summary = await json(sessionPath(state.session)).catch(() => null);
  for (const approval of summary?.pending_approvals || []) approvalCard(approval);
}

// The offline echo model repeats what it is sent; say how to make it call a tool, so a newcomer can try one.
function echoHint() {
  if (!state.model.startsWith("echo")) return;
  const hint = el("p", { class: "notice" }, "Offline echo model: it answers from the conversation. ");
  hint.append("With tools configured (AGENT_TOOLS), ", el("code", { text: 'call get_weather {"city": "Oslo"}' }),
    " or ", el("code", { text: 'call send_payment {"amount_eur": 5, "to": "Ada"}' }), " makes it call one.");
  add(hint);
}

// -- identity and start-up -----------------------------------------------------------------------------------

function authLink(text, path) {
  const anchor = link(text, `${path}${encodeURIComponent(location.pathname)}`);
  anchor.removeAttribute("target");
  return anchor;
}

async function whoAmI() {
  const who = $("who");
  try {
    const me = await json("/me");
    state.model = String(me.model || "");  // which model answers (only callers the app accepts learn it)
    const user = me.user;
    if (!user) {
      who.textContent = "Shared conversations (no sign-in)";
    } else {
      who.replaceChildren(`Signed in as ${user.name || user.id}`);
      if (me.auth_mode === "easyauth") who.append(" · ", authLink("Sign out", "/.auth/logout?post_logout_redirect_uri="));
    }
    return true;
  } catch (error) {
    if (error instanceof Problem && error.body.code === "unauthenticated") {
      who.replaceChildren(authLink("Sign in", "/.auth/login/aad?post_login_redirect_uri="));
      notice("Sign in to see your conversations.");
    }
    showProblem(error);
    return false;
  }
}

function bind() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || state.busy) return;
    input.value = "";
    send(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("new").addEventListener("click", newSession);
  $("delete").addEventListener("click", deleteSession);
  $("more").addEventListener("click", () => loadSessions(true).catch(showProblem));
  $("toggle").addEventListener("click", () => {
    const open = $("sidebar").classList.toggle("open");
    $("toggle").setAttribute("aria-expanded", String(open));
  });
}

async function start() {
  bind();
  if (!(await whoAmI())) return;
  await loadSessions().catch(showProblem);
  const match = location.hash.match(/^#session=(.+)$/);
  if (match) await openSession(decodeURIComponent(match[1]));
  else {
    echoHint();
    input.focus();
  }
}

start();
