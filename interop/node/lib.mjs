// Shared by the interop scripts: TAP-like steps, checks and error text.
//
// step(name, fn) runs one check and prints "ok - name", or "not ok - name: why"
// and exits 1. A watchdog bounds the whole run: a hung server must not hang
// the harness.

import process from 'node:process';

import * as client from 'openid-client';

export const TIMEOUT_MS = 10_000;
let steps = 0;

setTimeout(() => {
  console.log(`not ok - watchdog: the run took longer than 120 s`);
  process.exit(1);
}, 120_000).unref();

/** Steps run so far. */
export function stepCount() {
  return steps;
}

export class CheckFailed extends Error {}

export function check(cond, why) {
  if (!cond) throw new CheckFailed(why);
}

export async function describe(err) {
  if (err instanceof CheckFailed) return err.message;
  if (err instanceof client.ResponseBodyError) {
    return `OAuth error ${JSON.stringify(err.error)} (HTTP ${err.status}): ${err.error_description ?? ''}`;
  }
  if (err instanceof client.WWWAuthenticateChallengeError) {
    const body = await err.response?.text().catch(() => '');
    return `HTTP ${err.status} with WWW-Authenticate challenge ${JSON.stringify(err.cause)}, body ${body}`;
  }
  const code = err?.code ? ` [${err.code}]` : '';
  const cause = err?.cause ? ` (cause: ${err.cause?.message ?? JSON.stringify(err.cause)})` : '';
  return `${err?.name ?? 'Error'}${code}: ${err?.message ?? String(err)}${cause}`;
}

export async function step(name, fn) {
  steps += 1;
  let result;
  try {
    result = await fn();
  } catch (err) {
    let why = (await describe(err)).replace(/\s+/g, ' ');
    if (why.length > 1500) why = `${why.slice(0, 1500)}...`;
    console.log(`not ok - ${name}: ${why}`);
    console.log(`# ${steps - 1} step(s) passed before the failure`);
    process.exit(1);
  }
  console.log(`ok - ${name}`);
  return result;
}

/** Headless Chromium (CHROMIUM, default Debian's /usr/bin/chromium) through
 * playwright-core, launched as a step. */
export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  return step(`launch ${executablePath} headless`, () =>
    chromium.launch({
      executablePath,
      headless: true,
      args: ["--no-sandbox", "--disable-dev-shm-usage"],
    }),
  );
}
