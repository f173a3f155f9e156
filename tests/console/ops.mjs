// The console's operations pages in a real browser: Debian's chromium, driven
// by playwright-core. Run by tests/it/console_ops.rs, which starts the service,
// makes the keys and tasks, tampers one event and passes them in the environment:
//
//   CONSOLE_URL                the service, e.g. http://127.0.0.1:41234
//   CONSOLE_ADMIN_KEY          a platform key with admin
//   CONSOLE_AUDITOR_KEY        a platform key with audit:read only
//   CONSOLE_TENANT_KEY         tenant acme's key with admin (platform pages refuse it)
//   CONSOLE_TASK               a task (of acme) whose stream is intact
//   CONSOLE_TAMPERED_STREAM    the stream of the event tampered with
//   CONSOLE_TAMPERED_SEQUENCE  that event's sequence (all before it verify)
//   CONSOLE_SCREENSHOTS        where to save a screenshot of each page
//   TASKLEDGER_PLAYWRIGHT      the directory holding node_modules/playwright-core
//
// Exits 0 when every check passed, 1 at the first that failed (saying which).

import assert from "node:assert/strict";

import { begin, consoleUnderTest, env, openConsole, run } from "./browser.mjs";

const adminKey = env("CONSOLE_ADMIN_KEY");
const auditorKey = env("CONSOLE_AUDITOR_KEY");
const tenantKey = env("CONSOLE_TENANT_KEY");
const task = env("CONSOLE_TASK");
const tamperedStream = env("CONSOLE_TAMPERED_STREAM");
const tampered = Number(env("CONSOLE_TAMPERED_SEQUENCE"));

const target = consoleUnderTest();
const { url } = target;

// /v1 as the admin key sees it (from this script, not the page).
async function v1(method, route, body) {
  const response = await fetch(url(route), {
    method,
    headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${route}: ${response.status} ${text}`);
  return JSON.parse(text);
}

const blocked = [];
const { context, close, shot, allToOrigin } = await openConsole(target, { viewport: { width: 1280, height: 800 } });


// Signs in with `key` from the sign-in form `page` was sent to.
async function signIn(page, key) {
  assert.equal(new URL(page.url()).pathname, "/console/sign-in");
  await page.fill("#key", key);
  return (await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]))[0];
}

async function signOut(page) {
  await Promise.all([page.waitForNavigation(), page.click("header button.quiet")]);
}

// Submits the form holding `selector` and waits for the page it answers.
async function submit(page, selector) {
  return (await Promise.all([page.waitForNavigation(), page.click(selector)]))[0];
}

const row = (name) => `tr[data-projection="${name}"]`;
const cell = (name, field) => `${row(name)} [data-field="${field}"]`;

await run(async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => {
    if (message.type() === "error") blocked.push(message.text());
  });

  begin("a tenant key (even with admin) is refused both pages");
  await page.goto(url("/console/projections"));
  let response = await signIn(page, tenantKey);
  assert.equal(new URL(page.url()).pathname, "/console/projections");
  assert.equal(response.status(), 403);
  assert.match(await page.textContent("main"), /needs a platform key/);
  await shot(page, "projections-refused");
  for (const refused of ["/console/audit", "/console/audit/verify?from=1&to=1", `/console/audit/streams/task-${task}`]) {
    response = await page.goto(url(refused));
    assert.equal(response.status(), 403, refused);
    assert.match(await page.textContent("main"), /needs a platform key/, refused);
  }
  const forged = await page.evaluate(async () => {
    const response = await fetch("/console/projections/tasks/pause", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "csrf=forged",
    });
    return response.status;
  });
  assert.equal(forged, 403);
  await signOut(page);

  begin("a platform auditor may audit but not operate the projections");
  await page.goto(url("/console/audit"));
  response = await signIn(page, auditorKey);
  assert.equal(response.status(), 200);
  response = await page.goto(url("/console/projections"));
  assert.equal(response.status(), 403);
  assert.match(await page.textContent("main"), /lacks the scopes? admin/);
  await signOut(page);

  begin("a platform admin sees every projection's version, checkpoint, lag and state");
  await page.goto(url("/console/projections"));
  response = await signIn(page, adminKey);
  assert.equal(response.status(), 200);
  assert.match(response.headers()["content-security-policy"], /default-src 'self'/);
  for (const name of ["tasks", "api_keys", "devices", "ledgers"]) {
    assert.ok(await page.$(row(name)), `${name} is not listed`);
  }
  await page.waitForSelector("#poll-state.on", { timeout: 10_000 });
  await page.waitForFunction(
    (selector) => document.querySelector(selector)?.textContent === "0",
    cell("tasks", "lag_events"),
    { timeout: 30_000 },
  );
  assert.equal((await page.textContent(cell("tasks", "state"))).trim(), "running");
  const projected = await v1("GET", "/v1/projections/tasks");
  assert.equal(Number(await page.textContent(cell("tasks", "version"))), projected.version);

  begin("a projection's own link shows the page at its row");
  await page.goto(url("/console/projections/tasks"));
  assert.equal(new URL(page.url()).pathname, "/console/projections");
  assert.equal(new URL(page.url()).hash, "#projection-tasks");

  begin("a CSRF-less POST is refused and pauses nothing");
  const refused = await page.evaluate(async () => {
    const post = (body) =>
      fetch("/console/projections/tasks/pause", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body,
      }).then((answer) => answer.status);
    return [await post("csrf=forged"), await post("")];
  });
  assert.deepEqual(refused, [403, 403]);
  assert.equal((await v1("GET", "/v1/projections/tasks")).state, "running");

  begin("a rebuild of tasks shows its progress until done");
  await submit(page, `${row("tasks")} button[data-operation="rebuild"]`);
  assert.equal(new URL(page.url()).pathname, "/console/projections");
  await page.waitForSelector('tr[data-rebuild="tasks"]:not([hidden])');
  await page.evaluate(() => {
    // What the bar showed on the way, sampled as the page updates it.
    window.seen = [];
    const line = document.querySelector('tr[data-rebuild="tasks"]');
    const watch = () => {
      const bar = line.querySelector("progress");
      const state = line.querySelector('[data-field="state"]').textContent;
      const last = window.seen.at(-1);
      if (!last || last.state !== state || last.value !== bar.value) {
        window.seen.push({ state, value: bar.value, max: bar.max });
      }
    };
    watch();
    setInterval(watch, 50);
  });
  await shot(page, "projections-rebuilding");
  await page.waitForFunction(
    () => document.querySelector('tr[data-rebuild="tasks"] [data-field="state"]')?.textContent === "done",
    null,
    { timeout: 120_000, polling: 100 },
  );
  const bar = await page.$eval('tr[data-rebuild="tasks"] progress', (element) => ({ value: element.value, max: element.max }));
  assert.ok(bar.max > 20_000, JSON.stringify(bar));
  assert.equal(bar.value, bar.max);
  const summary = await page.textContent('tr[data-rebuild="tasks"] [data-field="summary"]');
  assert.match(summary, /^\d+ of \d+ events · \d+ events\/s$/);
  assert.equal(await page.$eval(`${row("tasks")} button[data-operation="rebuild"]`, (button) => button.disabled), false);
  await page.waitForFunction(() => window.seen.at(-1)?.state === "done");
  const seen = await page.evaluate(() => window.seen);
  console.log(`  the bar showed: ${seen.map(({ state, value, max }) => `${state} ${value}/${max}`).join(", ")}`);
  const rebuilt = await v1("GET", "/v1/projections/tasks");
  assert.equal(rebuilt.rebuild.state, "done");
  console.log(`  rebuilt ${rebuilt.rebuild.position} events at ${rebuilt.rebuild.events_per_s.toFixed(0)} events/s`);

  begin("pausing tasks stops it (its lag grows on the chart); resuming catches up");
  await submit(page, `${row("tasks")} button[data-operation="pause"]`);
  assert.equal((await page.textContent(cell("tasks", "state"))).trim(), "paused");
  assert.equal((await v1("GET", "/v1/projections/tasks")).state, "paused");
  assert.ok(await page.isVisible(`${row("tasks")} button[data-operation="resume"]`));
  assert.ok(!(await page.isVisible(`${row("tasks")} button[data-operation="pause"]`)));
  for (let count = 0; count < 3; count += 1) {
    await v1("POST", "/v1/tasks", { kind: "local-sh", params: { script: "echo lag" }, tenant: "acme" });
  }
  await page.waitForFunction(
    (selector) => Number(document.querySelector(selector)?.textContent) >= 3,
    cell("tasks", "lag_events"),
    { timeout: 30_000 },
  );
  // Let the chart draw a few samples of the lag.
  await page.waitForTimeout(4_000);
  assert.ok((await page.$$("#lag-chart polyline")).length >= 4, "the chart has no lines");
  await shot(page, "projections-paused");
  await submit(page, `${row("tasks")} button[data-operation="resume"]`);
  await page.waitForFunction(
    (selector) => document.querySelector(selector)?.textContent === "0",
    cell("tasks", "lag_events"),
    { timeout: 30_000 },
  );
  assert.equal((await page.textContent(cell("tasks", "state"))).trim(), "running");
  assert.equal((await v1("GET", "/v1/projections/tasks")).state, "running");
  // The samples outlived the form's reload: the paused stretch is still drawn.
  const peak = Number(await page.getAttribute('#lag-chart polyline[data-series="tasks"]', "data-peak"));
  assert.ok(peak >= 3, `the chart's tasks line peaks at ${peak}`);
  await page.waitForTimeout(2_500);
  await shot(page, "projections");

  begin("a verify of the range before the tampered event says verified");
  await page.goto(url("/console/audit"));
  await page.fill("#verify-from", "1");
  await page.fill("#verify-to", String(tampered - 1));
  response = await submit(page, "form.verify button[type=submit]");
  assert.equal(response.status(), 200);
  assert.equal((await page.textContent("#verdict .badge")).trim(), "verified");
  assert.match(await page.textContent("#verdict"), new RegExp(`#1 to #${tampered - 1} verify: ${tampered - 1} events checked`));
  await shot(page, "audit-verified");

  begin("a verify of the whole log names the first bad sequence, linked to its event");
  await page.fill("#verify-from", "");
  await page.fill("#verify-to", "");
  await submit(page, "form.verify button[type=submit]");
  assert.equal((await page.textContent("#verdict .badge")).trim(), "does not verify");
  assert.equal((await page.textContent("#first-bad")).trim(), `#${tampered}`);
  await shot(page, "audit-tampered");
  await submit(page, "a#first-bad");
  const here = new URL(page.url());
  assert.equal(here.pathname, `/console/audit/streams/${tamperedStream}`);
  assert.equal(here.hash, `#seq-${tampered}`);
  const marked = await page.textContent(`li#seq-${tampered}.current`);
  assert.match(marked, /TaskSubmitted/);
  assert.match(marked, /echo tampered/);
  await shot(page, "audit-stream-tampered");

  begin("a verify resumed from the last recorded verification says where it resumed and still names the tampered event");
  await page.goto(url("/console/audit"));
  await page.check("#verify-from-last");
  await submit(page, "form.verify button[type=submit]");
  assert.equal((await page.textContent("#verdict .badge")).trim(), "does not verify");
  assert.equal((await page.textContent("#first-bad")).trim(), `#${tampered}`);
  const resumed = await page.textContent("#resumed");
  assert.match(resumed, new RegExp(`Resumed at #${tampered - 1}, anchored there by the verification recorded at`));
  assert.match(resumed, new RegExp(`#1 to #${tampered - 2} were not re-checked`));
  assert.ok(await page.isChecked("#verify-from-last"), "the tick box kept its state");
  await shot(page, "audit-resumed");

  begin("a verify of a range /v1 refuses says why beside the form");
  response = await page.goto(url("/console/audit/verify?from=5&to=2"));
  assert.equal(response.status(), 422);
  assert.match(await page.textContent(".error"), /from 5 is after to 2/);
  assert.equal(await page.inputValue("#verify-from"), "5");

  begin("any stream can be browsed, like a task's timeline");
  await page.goto(url("/console/audit"));
  await page.fill("#stream-name", `task-${task}`);
  await submit(page, "form[action='/console/audit/streams'] button");
  assert.equal(new URL(page.url()).pathname, `/console/audit/streams/task-${task}`);
  const events = await page.$$eval("ol.timeline li", (items) => items.map((item) => item.textContent));
  assert.ok(events.length >= 3, `only ${events.length} events`);
  assert.match(events[0], /TaskSubmitted/);
  assert.match(events.at(-1), /TaskSucceeded/);
  assert.match(events[0], /hash [0-9a-f]{16}/);
  await shot(page, "audit-stream");
  for (const missing of [`task-${crypto.randomUUID()}`, "not-a-stream"]) {
    response = await page.goto(url(`/console/audit/streams/${missing}`));
    assert.equal(response.status(), 404, missing);
    assert.equal((await page.textContent("h1")).trim(), "Not found");
  }

  begin("no page broke the CSP and every request went to the service itself");
  assert.deepEqual(blocked.filter((text) => /Content Security Policy/i.test(text)), []);
  allToOrigin();
}, close);
