// The demo app's only script. It never sees a token: /auth/session says who
// is signed in (and gives the anti-CSRF token), /api/me is proxied by the
// gateway with the person's access token.
"use strict";
const $ = (id) => document.getElementById(id);
let csrf = null;

async function showSession() {
  const r = await fetch("/auth/session", { credentials: "same-origin" });
  const signedIn = r.status === 200;
  if (signedIn) {
    const s = await r.json();
    csrf = s.csrf_token;
    $("status").textContent = `Signed in as ${s.preferred_username || s.sub}`;
  } else {
    csrf = null;
    $("status").textContent = "Not signed in";
  }
  $("signed-in").hidden = !signedIn;
  $("signed-out").hidden = signedIn;
  document.body.dataset.session = signedIn ? "in" : "out";
}

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
