// blobref console: a page of plain JavaScript over the console's JSON API.
// Every value from the API goes into the page as text, never as markup.
"use strict";

const tokenKey = "blobref-console-token";
const reasons = ["malformed", "invalid", "unknown_type", "too_large", "conflict", "digest_mismatch", "claim_missing", "retries_exhausted", "expired"];
let me = null;          // the operator the token stands for: {name, scopes}
let refreshTimer = null; // the current page's auto-refresh

// el builds an element: el("td", {class: "num"}, "text", child, ...).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function main() { return document.getElementById("main"); }

function show(...nodes) {
  main().replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
}

function flash(text, isError) {
  const f = document.getElementById("flash");
  f.textContent = text;
  f.className = isError ? "error" : "";
  f.hidden = !text;
}

class APIError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
  }
}

// api calls the console's API with the operator's token; a 401 asks for a
// token again.
async function api(path, options) {
  const token = sessionStorage.getItem(tokenKey);
  if (!token) { signIn(); throw new APIError(401, "no token"); }
  const resp = await fetch(path, {
    ...(options || {}),
    headers: { "Authorization": "Bearer " + token, "Accept": "application/json" },
  });
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (resp.status === 401) {
    sessionStorage.removeItem(tokenKey);
    signIn(body && body.detail);
    throw new APIError(401, "unauthorized", body && body.detail);
  }
  if (!resp.ok) throw new APIError(resp.status, (body && body.title) || resp.statusText, body && body.detail);
  return body;
}

function can(scope) { return me && me.scopes.includes(scope); }

// Formatting.
function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  if (isNaN(d) || d.getFullYear() < 1971) return "";
  return d.toISOString().replace("T", " ").replace(/\.(\d{3})\d*Z$/, ".$1Z");
}
function ago(t) {
  const d = new Date(t);
  if (!t || isNaN(d) || d.getFullYear() < 1971) return "";
  let s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)}h ago`;
  return `${(s / 86400).toFixed(1)}d ago`;
}
function timeCell(t) { return el("td", { class: "mono", title: ago(t) }, fmtTime(t)); }
function bytes(n) {
  if (n === undefined || n === null || n < 0) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}
function stateBadge(state, id) {
  return el("span", { class: `state state-${state}`, "data-state": state, id }, state);
}
function uploadLink(id) { return el("a", { href: "#/upload/" + encodeURIComponent(id), class: "mono" }, id); }

// Routing: #/search?q=…, #/upload/<id>, #/consumers, #/dead-letters?reason=&subject=.
function route() {
  clearInterval(refreshTimer);
  refreshTimer = null;
  const hash = location.hash.replace(/^#/, "") || "/search";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.nav === (parts[0] === "upload" ? "search" : parts[0]));
  }
  if (!sessionStorage.getItem(tokenKey)) { signIn(); return; }
  const page = {
    search: () => searchPage(params.get("q") || ""),
    upload: () => uploadPage(decodeURIComponent(parts.slice(1).join("/"))),
    consumers: () => consumersPage(),
    "dead-letters": () => deadLettersPage(params),
  }[parts[0]] || (() => show(el("p", {}, "No such page. ", el("a", { href: "#/search" }, "Search"))));
  loadMe().then(page).catch(failed);
}

function failed(err) {
  if (err instanceof APIError && err.status === 401) return;
  show(el("div", { class: "banner", id: "error" }, el("strong", {}, "Error: "), err.message));
}

async function loadMe() {
  if (me) return;
  me = await api("/api/me");
  document.getElementById("who").textContent = `${me.name} (${me.scopes.join(", ")})`;
  document.getElementById("signout").hidden = false;
}

function signIn(why) {
  me = null;
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  const input = el("input", { type: "password", id: "token", name: "token", autocomplete: "off", placeholder: "bearer token", required: true });
  const form = el("form", { id: "signin", class: "card login", onsubmit: (e) => {
    e.preventDefault();
    sessionStorage.setItem(tokenKey, input.value.trim());
    flash("");
    route();
  } },
    el("h1", {}, "Sign in"),
    el("p", { class: "muted" }, "The console's token: a line of CONSOLE_TOKENS_FILE, or an entry of CONSOLE_TOKENS. It stays in this tab only."),
    why ? el("p", { class: "banner" }, why) : null,
    input,
    el("button", { type: "submit", class: "primary" }, "Sign in"));
  show(form);
  input.focus();
}

// Search: by upload id, subject (a trailing * matches those under it) or
// Idempotency-Key.
async function searchPage(q) {
  const input = el("input", { type: "text", id: "q", name: "q", value: q, placeholder: "upload id, subject (users/42/*) or Idempotency-Key", autofocus: true });
  const form = el("form", { id: "search-form", class: "inline", onsubmit: (e) => {
    e.preventDefault();
    location.hash = "#/search?q=" + encodeURIComponent(input.value.trim());
  } }, input, el("button", { type: "submit", class: "primary" }, "Find"));
  const out = el("div", { id: "search-results" });
  show(el("h1", {}, "Find an upload"), form, out);
  input.focus();
  if (!q) {
    out.append(el("p", { class: "muted" }, "Give an upload id, a subject or an Idempotency-Key."));
    return;
  }
  out.append(el("p", { class: "muted" }, "Searching…"));
  const { uploads } = await api("/api/uploads?q=" + encodeURIComponent(q));
  if (!uploads.length) {
    out.replaceChildren(el("p", { id: "no-results" }, `No upload has the id, subject or Idempotency-Key ${q}.`));
    return;
  }
  out.replaceChildren(el("table", { id: "results" },
    el("thead", {}, el("tr", {}, ["Upload", "State", "Subject", "Owner", "Size", "Recorded or accepted", "Dead letter"].map((h) => el("th", {}, h)))),
    el("tbody", {}, uploads.map((u) => {
      const first = (u.steps.find((s) => s.done) || {}).at;
      return el("tr", { "data-id": u.id, "data-state": u.state },
        el("td", {}, uploadLink(u.id)),
        el("td", {}, stateBadge(u.state)),
        el("td", { class: "mono" }, u.subject || ""),
        el("td", {}, u.owner || ""),
        el("td", { class: "num" }, bytes(u.size)),
        timeCell(first),
        el("td", {}, u.deadLetter ? `${u.deadLetter.reason} (${u.deadLetter.step})` : ""));
    }))));
}

// Upload: its facts, steps, dead letters, timeline and events.
async function uploadPage(id) {
  const u = await api("/api/uploads/" + encodeURIComponent(id));
  const facts = [
    ["Subject", u.subject], ["Owner", u.owner], ["Content type", u.contentType],
    ["Size", u.size >= 0 ? `${bytes(u.size)} (${u.size} bytes)` : ""], ["SHA-256", u.sha256],
  ];
  if (u.ingest) {
    facts.push(["ingest caller", u.ingest.caller], ["Idempotency-Key", u.ingest.idempotencyKey],
      ["Claim check", u.ingest.dataref || "inline"], ["Recorded", fmtTime(u.ingest.createdAt)],
      ["Published", u.ingest.publishedAt ? `${fmtTime(u.ingest.publishedAt)} (${u.ingest.publishCount}×)` : "never acknowledged by JetStream"]);
    if (u.ingest.claimedUntil) facts.push(["Publishing", `ingest is publishing it until ${fmtTime(u.ingest.claimedUntil)}`]);
  }
  if (u.reference) {
    facts.push(["Object", u.reference.blob.key], ["Event time", fmtTime(u.reference.eventTime)],
      ["Current reference", u.reference.current ? "yes, its owner's current one for the subject" : "no, a newer upload is current"]);
  }
  const nodes = [
    el("h1", {}, "Upload ", el("code", { id: "upload-id" }, u.id), stateBadge(u.state, "state"),
      el("button", { type: "button", onclick: () => route() }, "Refresh")),
  ];
  if (u.deadLetter) nodes.push(deadBanner(u.deadLetter));
  nodes.push(
    el("ol", { id: "steps", class: "steps" }, u.steps.map((s) => el("li", { class: "step", "data-step": s.name, "data-done": String(s.done) },
      el("div", { class: "name" }, el("span", { class: "mark" }, s.done ? "✓" : "…"), s.name),
      el("div", { class: "mono at" }, s.done ? fmtTime(s.at) : "not yet"),
      s.detail ? el("div", { class: "muted detail" }, s.detail) : null))),
    el("h2", {}, "Facts"),
    el("table", { class: "facts", id: "facts" }, el("tbody", {}, facts.filter(([, v]) => v).map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", { class: k === "SHA-256" || k === "Object" ? "mono" : "" }, v))))),
    el("h2", {}, "Timeline"),
    el("table", { id: "timeline" },
      el("thead", {}, el("tr", {}, ["At", "What", "Detail"].map((h) => el("th", {}, h)))),
      el("tbody", {}, u.timeline.map((e) => el("tr", { class: "kind-" + e.kind, "data-kind": e.kind, "data-what": e.what },
        timeCell(e.at), el("td", {}, e.kind === "dead_letter" ? "dead letter: " + e.what : e.what), el("td", {}, e.detail || ""))))),
  );
  if (u.deadLetters.length) {
    nodes.push(el("h2", {}, "Dead letters"), letterTable(u.deadLetters, "upload-dead-letters", () => route()));
  }
  nodes.push(el("h2", {}, `Events (${(u.events || []).length})`),
    el("div", { id: "events" }, (u.events || []).map(eventView)));
  show(...nodes);
  if (u.state === "pending" || u.state === "stored" || u.state === "recorded") {
    refreshTimer = setInterval(() => refreshUpload(id, u.state), 2000);
  }
}

// refreshUpload shows the upload again once its state changed.
async function refreshUpload(id, state) {
  try {
    const { uploads } = await api("/api/uploads?q=" + encodeURIComponent(id) + "&limit=1");
    if (uploads.length && uploads[0].id === id && uploads[0].state !== state) route();
  } catch (err) { /* shown on the next full load */ }
}

function deadBanner(l) {
  return el("div", { class: "banner", id: "dead-letter", "data-reason": l.reason },
    el("strong", {}, `Dead-lettered: ${l.reason}`),
    ` by step ${l.step} after ${l.deliveries} ${l.deliveries === 1 ? "delivery" : "deliveries"}, ${fmtTime(l.at)} (${l.subject}, UPLOADS_DLQ #${l.seq})`,
    l.error ? el("pre", {}, l.error) : null,
    can("operate") ? redriveButton(l, () => route()) : el("p", { class: "muted" }, "Re-driving needs a token with the operate scope."));
}

function eventView(m) {
  const headers = Object.entries(m.header || {}).sort(([a], [b]) => a.localeCompare(b));
  return el("details", { class: "event", "data-stream": m.stream, "data-seq": m.seq, "data-subject": m.subject },
    el("summary", {}, el("span", { class: "mono" }, `${m.stream} #${m.seq}`), "  ", el("strong", {}, m.subject), "  ",
      el("span", { class: "muted" }, `${fmtTime(m.stored)}, ${bytes(m.size)}`),
      m.deadLetter ? el("span", { class: "state state-failed" }, m.deadLetter.reason) : null),
    el("div", {},
      el("table", { class: "headers" }, el("tbody", {}, headers.map(([k, vs]) => el("tr", {}, el("th", {}, k), el("td", { class: "mono" }, vs.join(", ")))))),
      m.body ? el("pre", {}, m.body) : null));
}

// Consumers: each step's lag and redeliveries, and what the streams hold.
async function consumersPage() {
  const { consumers, streams } = await api("/api/consumers");
  show(
    el("h1", {}, "Consumers", el("span", { class: "muted" }, "refreshes every 2 s")),
    el("table", { id: "consumers" },
      el("thead", {}, el("tr", {}, ["Consumer", "Step", "Filter", "Pending (lag)", "Awaiting ack", "Redelivered", "Waiting pulls", "Delivered", "Ack floor", "Last active", "Max deliveries"].map((h) => el("th", {}, h)))),
      el("tbody", {}, consumers.map((c) => c.missing
        ? el("tr", { "data-consumer": c.name }, el("td", {}, c.name), el("td", {}, c.step), el("td", { colspan: 9, class: "muted" }, "missing: its service never ran, or blobrefctl setup was not run"))
        : el("tr", { "data-consumer": c.name, "data-pending": c.pending, "data-redelivered": c.redelivered },
          el("td", {}, c.name), el("td", {}, c.step), el("td", { class: "mono" }, c.filter),
          el("td", { class: "num pending" + (c.pending > 1000 ? " lag-high" : "") }, c.pending),
          el("td", { class: "num" }, c.ackPending), el("td", { class: "num redelivered" }, c.redelivered),
          el("td", { class: "num" }, c.waiting), el("td", { class: "num" }, c.delivered), el("td", { class: "num" }, c.ackFloor),
          timeCell(c.lastActive), el("td", { class: "num" }, c.maxDeliver))))),
    el("h2", {}, "Streams"),
    el("table", { id: "streams" },
      el("thead", {}, el("tr", {}, ["Stream", "Messages", "Bytes", "First", "Last", "Consumers"].map((h) => el("th", {}, h)))),
      el("tbody", {}, streams.map((s) => el("tr", { "data-stream": s.name },
        el("td", {}, s.name),
        el("td", { class: "num" }, s.missing ? "missing" : s.messages), el("td", { class: "num" }, bytes(s.bytes)),
        el("td", { class: "mono" }, s.messages ? `#${s.firstSeq} ${fmtTime(s.firstTime)}` : ""),
        el("td", { class: "mono" }, s.messages ? `#${s.lastSeq} ${fmtTime(s.lastTime)}` : ""),
        el("td", { class: "num" }, s.consumers)))))
  );
  refreshTimer = setInterval(() => { if (location.hash.startsWith("#/consumers")) consumersPage().catch(failed); }, 2000);
}

// Dead letters: filter by reason and subject, re-drive one by one.
async function deadLettersPage(params) {
  const reason = params.get("reason") || "", subject = params.get("subject") || "";
  const reasonSel = el("select", { id: "reason", name: "reason" }, el("option", { value: "" }, "any reason"),
    reasons.map((r) => el("option", { value: r, selected: r === reason }, r)));
  const subjectIn = el("input", { type: "text", id: "subject", name: "subject", value: subject, placeholder: "uploads.requested.> or uploads.requested.<id>" });
  const form = el("form", { id: "dead-letter-filter", class: "inline", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (reasonSel.value) p.set("reason", reasonSel.value);
    if (subjectIn.value.trim()) p.set("subject", subjectIn.value.trim());
    location.hash = "#/dead-letters" + (p.toString() ? "?" + p : "");
  } }, reasonSel, subjectIn, el("button", { type: "submit", class: "primary" }, "Filter"));
  const p = new URLSearchParams();
  if (reason) p.set("reason", reason);
  if (subject) p.set("subject", subject);
  const { deadLetters, more } = await api("/api/dead-letters?" + p);
  show(el("h1", {}, "Dead letters", el("span", { class: "muted" }, "oldest first, in UPLOADS_DLQ")), form,
    deadLetters.length ? letterTable(deadLetters, "dead-letters", () => route())
      : el("p", { id: "no-dead-letters" }, "No dead letter matches."),
    more ? el("p", { class: "muted" }, "More match: narrow the filter to see them.") : null);
}

function letterTable(letters, id, after) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, ["#", "Dead-lettered", "Reason", "Step", "Deliveries", "Subject", "Upload", "Error", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, letters.map((l) => el("tr", { "data-seq": l.seq, "data-upload": l.uploadId || "", "data-reason": l.reason || "" },
      el("td", { class: "num" }, l.seq), timeCell(l.at),
      el("td", {}, l.unreadable ? "unreadable" : l.reason), el("td", {}, l.step || ""), el("td", { class: "num" }, l.deliveries || ""),
      el("td", { class: "mono" }, l.subject), el("td", {}, l.uploadId ? uploadLink(l.uploadId) : ""),
      el("td", {}, l.unreadable || l.error || ""),
      el("td", {}, !l.unreadable && can("operate") ? redriveButton(l, after) : null)))));
}

function redriveButton(l, after) {
  const b = el("button", { type: "button", class: "redrive", "data-seq": l.seq, onclick: async () => {
    b.disabled = true;
    try {
      const r = await api(`/api/dead-letters/${l.seq}/redrive`, { method: "POST" });
      flash(r.duplicate
        ? `Re-drove UPLOADS_DLQ #${l.seq} to ${r.letter.subject}: already published as ${r.msgId}; dead letter deleted.`
        : `Re-drove UPLOADS_DLQ #${l.seq} to ${r.letter.subject} as UPLOADS #${r.newSeq}; dead letter deleted.`);
      after();
    } catch (err) {
      b.disabled = false;
      flash(`Re-drive of UPLOADS_DLQ #${l.seq} failed: ${err.message}`, true);
    }
  } }, "Re-drive");
  return b;
}

window.addEventListener("hashchange", () => { flash(""); route(); });
document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(tokenKey);
  flash("");
  signIn();
});
route();
