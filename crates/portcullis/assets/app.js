// The demo app's only script. It never sees a token: /auth/session says who
// is signed in (and gives the anti-CSRF token); /api/security/… is proxied by
// the gateway with the person's access token to the security-system service,
// which answers with the claims each hop saw (decoded, never a token).
// Everything is put into the page with textContent, never as markup.
"use strict";
const $ = (id) => document.getElementById(id);
let csrf = null;
let session = null;

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

async function showSession() {
  const r = await fetch("/auth/session", { credentials: "same-origin" });
  const signedIn = r.status === 200;
  if (signedIn) {
    session = await r.json();
    csrf = session.csrf_token;
    $("status").textContent = `Signed in as ${session.preferred_username || session.sub}`;
  } else {
    session = null;
    csrf = null;
    $("status").textContent = "Not signed in";
  }
  $("signed-in").hidden = !signedIn;
  $("signed-out").hidden = signedIn;
  document.body.dataset.session = signedIn ? "in" : "out";
  if (signedIn) await loadSystems();
}

async function call(method, path) {
  const r = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: method === "GET" ? {} : { "x-portcullis-csrf": csrf || "" },
  });
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    body = null;
  }
  return { status: r.status, body };
}

function showLast(what, res) {
  const last = $("last");
  const b = res.body || {};
  const why = b.error ? ` ${b.error}: ${b.error_description || ""}` : " OK";
  last.textContent = `${what}: HTTP ${res.status}${why}`;
  last.dataset.status = String(res.status);
  showChain(b.chain || []);
}

function claimsBlock(claims) {
  return el("pre", JSON.stringify(claims, null, 2));
}

function showChain(chain) {
  const list = $("chain");
  list.replaceChildren();
  const hop = (name, title, via, claims) => {
    const li = el("li", undefined, { "data-hop": name });
    li.append(el("div", title, { class: "hop" }), el("div", via, { class: "via" }));
    if (claims) li.append(claimsBlock(claims));
    list.append(li);
  };
  const s = session || {};
  hop("session", "Browser session", "an opaque HttpOnly cookie; no token in the browser. The BFF's session says:", {
    sub: s.sub,
    preferred_username: s.preferred_username,
    scope: s.scope,
  });
  const [security, customers] = chain;
  hop("gateway", "BFF (gateway)", "looks the session up, refreshes the tokens if due, and forwards the person's access token (Authorization: Bearer …)");
  if (security) {
    hop("security", "Security-system service", `received ${security.received}; validated these claims:`, security.claims);
  }
  if (customers) {
    hop("customers", "Customer service", `called with ${customers.received}; validated these claims:`, customers.claims);
  }
  list.dataset.hops = String(list.children.length);
}

function showSystems(body) {
  const c = body.caller;
  $("caller").textContent = c
    ? `${c.name} at ${c.customer.name} (${c.role})`
    : "You do not work for any customer.";
  const tbody = $("systems").querySelector("tbody");
  tbody.replaceChildren();
  for (const s of body.systems) {
    const tr = el("tr", undefined, { "data-system": s.id });
    const state = el("td", s.armed ? "armed" : "disarmed", { class: s.armed ? "armed" : "disarmed" });
    const changed = s.updated_by ? `${s.updated_by}, ${new Date(s.updated_at * 1000).toLocaleTimeString()}` : "";
    const action = s.armed ? "disarm" : "arm";
    const button = el("button", action === "arm" ? "Arm" : "Disarm", { type: "button", class: action });
    button.addEventListener("click", () => change(s.id, action));
    const cell = el("td");
    cell.append(button);
    tr.append(el("td", s.name), el("td", s.location.name || s.location.id), state, el("td", changed), cell);
    tbody.append(tr);
  }
  $("systems").dataset.count = String(body.systems.length);
}

async function loadSystems() {
  const res = await call("GET", "/api/security/systems");
  showLast("GET /systems", res);
  if (res.status === 200) showSystems(res.body);
}

async function change(id, action) {
  const res = await call("POST", `/api/security/systems/${encodeURIComponent(id)}/${action}`);
  showLast(`POST /systems/${id}/${action}`, res);
  if (res.status === 200) {
    const list = await call("GET", "/api/security/systems");
    if (list.status === 200) showSystems(list.body);
  }
}

$("refresh").addEventListener("click", loadSystems);

$("call-api").addEventListener("click", async () => {
  const out = $("api-result");
  out.dataset.status = "pending";
  const r = await fetch("/api/me", {
    method: "POST",
    credentials: "same-origin",
    headers: { "x-portcullis-csrf": csrf || "" },
  });
  const body = await r.text();
  let shown = body;
  try {
    shown = JSON.stringify(JSON.parse(body), null, 2);
  } catch (_) {
    // not JSON: shown as text
  }
  out.textContent = `HTTP ${r.status}\n${shown}`;
  out.dataset.status = String(r.status);
});

showSession();
