// What the console's browser scripts share: reading their environment (set by
// tests/it/console.rs's run_browser_script) and launching Debian's chromium the
// same way for each — headless, through the pinned playwright-core, fetching
// nothing in the background, in a profile of its own that close() removes.

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";

// The environment variable `name`; exits 2, naming it, when it is not set.
export function env(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${path.basename(process.argv[1])}: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

// Where the script saves its screenshots (CONSOLE_SCREENSHOTS, made if missing).
export function screenshotDir() {
  const shots = env("CONSOLE_SCREENSHOTS");
  mkdirSync(shots, { recursive: true });
  return shots;
}

// The console under test: its address (CONSOLE_URL) and origin, `url(page)`
// for one of its pages, and where screenshots go.
export function consoleUnderTest() {
  const base = env("CONSOLE_URL");
  return {
    origin: new URL(base).origin,
    url: (page) => new URL(page, base).toString(),
    shots: screenshotDir(),
  };
}

// Chromium (launch's `options`) for the console `target` (consoleUnderTest()),
// watching every request its pages make: `shot(page, name, options)` saves
// into the target's screenshots, `allToOrigin()` asserts every request went
// to the console.
export async function openConsole(target, options) {
  const { context, close } = await launch(options);
  const watched = watchRequests(context, target.origin);
  return {
    context,
    close,
    watched,
    shot: (page, name, options) => shot(page, target.shots, name, options),
    allToOrigin: () => allToOrigin(watched, target.shots),
  };
}

// Chromium with a fresh profile and `options` (playwright's, e.g. the viewport);
// `close()` ends it and removes the profile.
export async function launch(options) {
  const require = createRequire(path.join(env("TASKLEDGER_PLAYWRIGHT"), "package.json"));
  const { chromium } = require("playwright-core");
  const userDataDir = mkdtempSync(path.join(tmpdir(), "taskledger-console-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    ...options,
  });
  const close = async () => {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, close };
}

let step = "launching chromium";

// Names the step under way, and prints it, so that a failure says where it
// happened.
export function begin(name) {
  step = name;
  console.log(`- ${name}`);
}

// Runs `checks`, then `close` whatever happened; a failure prints the step
// it happened in (and `explain()`'s words, if any) and makes the script exit 1.
export async function run(checks, close, explain = () => "") {
  try {
    await checks();
  } catch (error) {
    console.error(`FAILED at: ${step}`);
    console.error(error);
    const more = explain();
    if (more) console.error(more);
    process.exitCode = 1;
  } finally {
    await close();
  }
}

// Records the address of every request `context`'s pages make: `requests`
// all of them, `foreign` those not to `origin`.
export function watchRequests(context, origin) {
  const watched = { origin, requests: [], foreign: [] };
  context.on("request", (request) => {
    watched.requests.push(request.url());
    if (new URL(request.url()).origin !== origin) watched.foreign.push(request.url());
  });
  return watched;
}

// Asserts that every request `watched` (from watchRequests) saw went to its
// origin, and says so.
export function allToOrigin(watched, shots) {
  const { origin, requests, foreign } = watched;
  assert.deepEqual(foreign, []);
  assert.ok(requests.every((request) => request.startsWith(origin)));
  console.log(`ok: ${requests.length} requests, all to ${origin}; screenshots in ${shots}`);
}

// Saves `page` as `{name}.png` in `shots`: the whole page, or with
// `fullPage: false` the viewport; with `view`, also the viewport as
// `{name}-view.png`.
export async function shot(page, shots, name, { fullPage = true, view = false } = {}) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage });
  if (view) await page.screenshot({ path: path.join(shots, `${name}-view.png`) });
}
