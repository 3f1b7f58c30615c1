// Headless Chromium (Debian's, driven by playwright-core) through the demo
// system of `portcullis dev`: two people sign in through the gateway's BFF
// on the IAM sign-in page; each sees only the alarm systems at their own
// customer's locations; the operator arms one, the viewer is refused (403,
// shown in the page); the identity panel shows the chain browser session ->
// BFF (gateway) -> security service -> customer service, the last hop with
// the exchanged token's `act`. Exits non-zero at the first failed check.
//
//   node test-demo-browser.mjs GATEWAY_URL ALICE_PASSWORD BOB_PASSWORD [SCREENSHOT_DIR]
//
// With SCREENSHOT_DIR, demo-operator.png and demo-viewer-refused.png are saved there.
// CHROMIUM overrides the browser binary (default /usr/bin/chromium).

import process from "node:process";

import { check, launchChromium, step } from "./lib.mjs";

const [gw, alicePassword, bobPassword, shots] = process.argv.slice(2);
if (!gw || !alicePassword || !bobPassword) {
  console.log("not ok - usage: test-demo-browser.mjs GATEWAY_URL ALICE_PASSWORD BOB_PASSWORD [SCREENSHOT_DIR]");
  process.exit(1);
}
const ACME = ["sys-berlin-dock", "sys-berlin-office", "sys-hamburg-gate"];
const GLOBEX = ["sys-paris-front"];

const browser = await launchChromium();
try {
  await step("alice (operator at Acme) sees Acme's systems and arms one; the chain shows the token exchange", () =>
    operator(),
  );
  await step("bob (viewer at Globex) sees only Globex's system; arming is refused with 403", () => viewer());
} finally {
  await browser.close();
}

async function signIn(user, password) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 1250 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  await page.goto(`${gw}/`);
  await page.waitForSelector("body[data-session='out']");
  await page.click("#sign-in");
  await page.waitForSelector("input[name='username']");
  await page.fill("input[name='username']", user);
  await page.fill("input[name='password']", password);
  await Promise.all([page.waitForURL(`${gw}/`), page.click("button[type='submit']")]);
  await page.waitForSelector("body[data-session='in']");
  await page.waitForSelector("#systems[data-count]");
  check((await page.textContent("#status")) === `Signed in as ${user}`, `signed in as ${user}`);
  return { context, page };
}

async function shownSystems(page) {
  return page.$$eval("#systems tbody tr", (rows) => rows.map((r) => r.dataset.system));
}

async function hop(page, name) {
  const pre = await page.$(`#chain li[data-hop='${name}'] pre`);
  check(pre, `the identity panel has the ${name} hop`);
  return JSON.parse(await pre.textContent());
}

// Clicks the row's button and waits for the answer of that request.
async function press(page, id) {
  const button = `tr[data-system='${id}'] button`;
  const action = (await page.getAttribute(button, "class")) || "";
  await page.click(button);
  await page.waitForFunction(
    (want) => document.getElementById("last").textContent.startsWith(want),
    `POST /systems/${id}/${action}`,
  );
  return { action, status: await page.getAttribute("#last", "data-status"), text: await page.textContent("#last") };
}

async function chainChecks(page) {
  const hops = await page.$$eval("#chain li", (l) => l.map((e) => e.dataset.hop));
  check(
    JSON.stringify(hops) === JSON.stringify(["session", "gateway", "security", "customers"]),
    `the chain is session -> gateway -> security -> customers (got ${hops})`,
  );
  const session = await hop(page, "session");
  const security = await hop(page, "security");
  const customers = await hop(page, "customers");
  check(security.sub === session.sub, "the security service saw the person (the session's sub)");
  check(security.client_id === "demo-bff", "...in the access token the BFF got for them");
  check([].concat(security.aud).includes("security-api"), "...for the security service's audience");
  check(!security.act, "...with no actor yet");
  check(customers.sub === session.sub, "the customer service saw the same person");
  check([].concat(customers.aud).includes("customers-api"), "...in a token for its own audience");
  check(customers.act && customers.act.sub === "security-service", "...naming the security service in act (token exchange)");
  const text = await page.textContent("#chain");
  check(!/eyJ[A-Za-z0-9_-]+\./.test(text), "no raw token in the page");
  return { session, security, customers };
}

async function operator() {
  const { context, page } = await signIn("alice", alicePassword);
  const shown = await shownSystems(page);
  check(JSON.stringify(shown) === JSON.stringify(ACME), `alice sees Acme's systems only (got ${shown})`);
  check((await page.textContent("#caller")).includes("Acme Logistics"), "as an employee of Acme Logistics");
  const { security } = await chainChecks(page);
  check(security.roles.includes("operator"), "her token carries the operator role");
  check(security.scope.split(" ").includes("systems:arm"), "and the systems:arm scope the role grants");

  const id = ACME[0];
  const before = await page.textContent(`tr[data-system='${id}'] td:nth-child(3)`);
  const r = await press(page, id);
  check(r.status === "200", `${r.action} allowed for the operator (${r.text})`);
  await page.waitForFunction(
    ([sel, old]) => document.querySelector(sel).textContent !== old,
    [`tr[data-system='${id}'] td:nth-child(3)`, before],
  );
  const after = await page.textContent(`tr[data-system='${id}'] td:nth-child(3)`);
  check(after === (r.action === "arm" ? "armed" : "disarmed"), `the system is now ${after}`);
  await chainChecks(page);
  // Leave one system armed for the picture.
  if (after !== "armed") {
    const again = await press(page, id);
    check(again.status === "200", "armed again");
    await page.waitForSelector(`tr[data-system='${id}'] td.armed`);
  }
  if (shots) await page.screenshot({ path: `${shots}/demo-operator.png`, fullPage: true });
  await context.close();
}

async function viewer() {
  const { context, page } = await signIn("bob", bobPassword);
  const shown = await shownSystems(page);
  check(JSON.stringify(shown) === JSON.stringify(GLOBEX), `bob sees Globex's system only (got ${shown})`);
  const { security } = await chainChecks(page);
  check(security.roles.includes("viewer") && !security.roles.includes("operator"), "his token carries the viewer role");
  check(!security.scope.split(" ").includes("systems:arm"), "and no systems:arm scope");

  const id = GLOBEX[0];
  const r = await press(page, id);
  check(r.status === "403", `arming refused for the viewer with 403 (${r.text})`);
  check(r.text.includes("access_denied"), "the page shows the refusal");
  check((await page.textContent(`tr[data-system='${id}'] td:nth-child(3)`)) === "disarmed", "the system is unchanged");
  await chainChecks(page);
  if (shots) await page.screenshot({ path: `${shots}/demo-viewer-refused.png`, fullPage: true });

  // Another customer's system is not even there for him.
  const other = await page.evaluate(async (target) => {
    const s = await (await fetch("/auth/session")).json();
    const r = await fetch(`/api/security/systems/${target}/arm`, {
      method: "POST",
      headers: { "x-portcullis-csrf": s.csrf_token },
    });
    return r.status;
  }, ACME[0]);
  check(other === 404, `Acme's system is not found for bob (got ${other})`);
  await context.close();
}
