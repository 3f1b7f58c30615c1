// Headless Chromium (Debian's, driven by playwright-core) through the
// gateway's BFF, as a person would use the demo app of `portcullis dev`:
// open the app, sign in on the IAM sign-in page, call the API, survive an
// access-token refresh, sign out (session gone at the BFF and at the IAM
// server). Exits non-zero at the first failed check.
//
//   node test-bff-browser.mjs GATEWAY_URL USER PASSWORD REFRESH_WAIT_MS [DIR/NAME-login-page.png]
//
// With the last argument, screenshots of the sign-in page and (as
// DIR/NAME-demo-app.png) of the signed-in app are saved.
//
// CHROMIUM overrides the browser binary (default /usr/bin/chromium).

import process from "node:process";

import { check, launchChromium, step } from "./lib.mjs";

const [gw, user, password, refreshWaitArg, screenshot] = process.argv.slice(2);
if (!gw || !user || !password || !refreshWaitArg) {
  console.log("not ok - usage: test-bff-browser.mjs GATEWAY_URL USER PASSWORD REFRESH_WAIT_MS [SCREENSHOT.png]");
  process.exit(1);
}
const refreshWait = Number(refreshWaitArg);

const browser = await launchChromium();
try {
  await step("sign in, call the API, survive a refresh, sign out: all through the BFF", () => flow());
} finally {
  await browser.close();
}

async function flow() {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const gwOrigin = new URL(gw).origin;

  // 1. The app, signed out.
  await page.goto(`${gw}/`);
  await page.waitForSelector("body[data-session='out']");
  check((await page.textContent("#status")) === "Not signed in", "the app starts signed out");

  // 2. Sign in: the BFF sends the browser to the IAM sign-in page.
  await page.click("#sign-in");
  await page.waitForSelector("input[name='username']");
  const iamOrigin = new URL(page.url()).origin;
  check(iamOrigin !== gwOrigin, `the sign-in page is the IAM server's (${iamOrigin})`);
  if (screenshot) {
    await page.screenshot({ path: screenshot });
  }
  await page.fill("input[name='username']", user);
  await page.fill("input[name='password']", password);
  await Promise.all([
    page.waitForURL(`${gw}/`),
    page.click("button[type='submit']"),
  ]);
  await page.waitForSelector("body[data-session='in']");
  check(
    (await page.textContent("#status")) === `Signed in as ${user}`,
    "back in the app, signed in",
  );

  // The session cookie is HttpOnly, SameSite=Lax, and opaque; no token is
  // visible to the page.
  const cookies = await context.cookies(gw);
  const session = cookies.find((c) => /portcullis_bff$/.test(c.name));
  check(session && session.httpOnly && session.sameSite === "Lax", "an HttpOnly SameSite=Lax session cookie");
  check(!session.value.includes("."), "the session cookie is opaque, not a JWT");
  const visible = await page.evaluate(() => document.cookie);
  check(!visible.includes("portcullis_bff"), "the page's script cannot read the session cookie");
  const sessionBody = await page.evaluate(async () => (await fetch("/auth/session")).text());
  check(!/eyJ[A-Za-z0-9_-]+\./.test(sessionBody), "/auth/session carries no token");

  // 3. Call the API through the BFF (a POST: the app sends the CSRF header).
  const callApi = async () => {
    await page.click("#call-api");
    await page.waitForFunction(() => {
      const s = document.getElementById("api-result").dataset.status;
      return s && s !== "pending";
    });
    const status = await page.getAttribute("#api-result", "data-status");
    const text = await page.textContent("#api-result");
    check(status === "200", `the API answered 200 (got ${status}: ${text})`);
    return JSON.parse(text.slice(text.indexOf("\n") + 1));
  };
  const first = await callApi();
  if (screenshot) {
    await page.screenshot({ path: screenshot.replace(/login-page\.png$/, "demo-app.png") });
  }
  check(first.client_id === "demo-bff", "the API saw the BFF's access token");
  check(first.scopes.includes("orders:read"), "with the granted scope");

  // 4. The access token expires; the BFF refreshes it behind the scenes.
  await page.waitForTimeout(refreshWait);
  const second = await callApi();
  check(second.subject === first.subject, "the same person after the refresh");
  check(second.token_id !== first.token_id, "a new access token after the refresh");

  // 5. Sign out: the BFF ends its session and sends the browser through the
  // IAM server's end_session_endpoint back to the app.
  await Promise.all([
    page.waitForURL(`${gw}/`),
    page.click("#sign-out"),
  ]);
  await page.waitForSelector("body[data-session='out']");
  check((await page.textContent("#status")) === "Not signed in", "signed out in the app");
  const afterLogout = await page.evaluate(async () => ({
    session: (await fetch("/auth/session")).status,
    api: (await fetch("/api/me")).status,
  }));
  check(afterLogout.session === 401 && afterLogout.api === 401, "the BFF session is gone");
  const left = (await context.cookies(gw)).find((c) => /portcullis_bff$/.test(c.name));
  check(!left, "the session cookie is cleared");

  // The IAM session is gone too: signing in again asks for the password.
  await page.click("#sign-in");
  await page.waitForSelector("input[name='password']");
  check(new URL(page.url()).origin === iamOrigin, "the IAM server asks for the password again");

}
