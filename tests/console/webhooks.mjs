// The console's webhook pages in a real browser: Debian's chromium, driven
// by playwright-core. Run by tests/it/console_webhooks.rs, which starts the
// service with the deliverer and real receivers on 127.0.0.1, and passes in
// the environment:
//
//   CONSOLE_URL            the service, e.g. http://127.0.0.1:41234
//   CONSOLE_ACME_KEY       tenant acme's key (webhooks:read, webhooks:write)
//   CONSOLE_FLAKY_HOOK     acme's webhook whose receiver answered 500 once, then 200
//   CONSOLE_DEAD_HOOK      acme's webhook whose receiver always answers 503: disabled
//   CONSOLE_GLOBEX_HOOK    tenant globex's webhook (acme must not see it)
//   CONSOLE_POSITION       the position of the event delivered to the flaky one
//   CONSOLE_SCREENSHOTS    where to save a screenshot of each page
//   TASKLEDGER_PLAYWRIGHT  the directory holding node_modules/playwright-core
//
// Exits 0 when every check passed, 1 at the first that failed (saying which).

import assert from "node:assert/strict";

import { begin, consoleUnderTest, env, openConsole, run } from "./browser.mjs";

const acmeKey = env("CONSOLE_ACME_KEY");
const flaky = env("CONSOLE_FLAKY_HOOK");
const dead = env("CONSOLE_DEAD_HOOK");
const globex = env("CONSOLE_GLOBEX_HOOK");
const position = env("CONSOLE_POSITION");

const target = consoleUnderTest();
const { url } = target;

const { context, close, shot, allToOrigin } = await openConsole(target, { viewport: { width: 1280, height: 800 } });
const time = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/;

await run(async () => {
  const page = context.pages()[0] ?? (await context.newPage());

  begin("acme signs in and comes to the webhooks page, linked from the navigation");
  await page.goto(url("/console/webhooks"));
  assert.equal(new URL(page.url()).pathname, "/console/sign-in");
  await page.fill("#key", acmeKey);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.equal(new URL(page.url()).pathname, "/console/webhooks");
  assert.ok(await page.$('header nav a[href="/console/webhooks"]'), "no Webhooks link");

  begin("the list shows acme's two webhooks with their state, and not globex's");
  assert.ok(await page.$(`tr[data-webhook="${flaky}"]`), "the flaky webhook is not listed");
  assert.equal(await page.$(`tr[data-webhook="${globex}"]`), null, "globex's webhook is listed");
  assert.equal((await page.textContent(`tr[data-webhook="${flaky}"] .badge`)).trim(), "enabled");
  const deadRow = `tr[data-webhook="${dead}"]`;
  assert.equal((await page.textContent(`${deadRow} .badge`)).trim(), "disabled");
  assert.match(await page.textContent(deadRow), /503/, "the reason it was disabled");
  await shot(page, "webhooks");

  begin("the flaky webhook's log shows the failed attempt and the delivered one, under one id");
  await Promise.all([page.waitForNavigation(), page.click(`a[href="/console/webhooks/${flaky}"]`)]);
  assert.equal((await page.textContent("#webhook-state")).trim(), "enabled");
  const attempts = await page.$$eval("table.deliveries tbody tr[data-position]", (rows) =>
    rows.map((tr) => ({
      position: tr.dataset.position,
      attempt: tr.dataset.attempt,
      outcome: tr.dataset.outcome,
      cells: [...tr.querySelectorAll("td")].map((td) => td.textContent.trim()),
    })),
  );
  const about = attempts.filter((row) => row.position === position);
  assert.deepEqual(
    about.map((row) => [row.attempt, row.outcome, row.cells[5]]),
    [
      ["1", "retrying", "500"],
      ["2", "delivered", "200"],
    ],
    JSON.stringify(attempts),
  );
  const [failed, succeeded] = about;
  assert.equal(failed.cells[1], "task.succeeded");
  assert.match(failed.cells[0], time, "when it was attempted");
  assert.match(failed.cells[6], /500/, "the error says what the receiver answered");
  assert.match(failed.cells[9], time, "when the next attempt is due");
  assert.equal(succeeded.cells[9], "", "no next attempt after a delivery");
  assert.equal(failed.cells[3], succeeded.cells[3], "the same webhook-id on both attempts");
  assert.match(failed.cells[3], /^msg_/);
  await shot(page, "webhook-log");

  begin("a replay from the event's position is accepted and comes back to the page");
  await page.fill("#replay input[name=from_position]", position);
  await Promise.all([page.waitForNavigation(), page.click("#replay button")]);
  assert.equal(new URL(page.url()).pathname, `/console/webhooks/${flaky}`);

  begin("the dead webhook is disabled with its reason, and enabling it enables it");
  await page.goto(url(`/console/webhooks/${dead}`));
  assert.equal((await page.textContent("#webhook-state")).trim(), "disabled");
  assert.match(await page.textContent("#disabled-reason"), /503/);
  const outcomes = await page.$$eval("table.deliveries tbody tr[data-outcome]", (rows) =>
    rows.map((tr) => tr.dataset.outcome),
  );
  assert.equal(outcomes.at(-1), "gave_up", JSON.stringify(outcomes));
  assert.equal(await page.$("#replay"), null, "a disabled webhook offers a replay");
  await shot(page, "webhook-disabled");
  await Promise.all([page.waitForNavigation(), page.click("#enable button")]);
  assert.equal(new URL(page.url()).pathname, `/console/webhooks/${dead}`);
  assert.equal((await page.textContent("#webhook-state")).trim(), "enabled");
  assert.equal(await page.$("#disabled-reason"), null);
  assert.equal(await page.$("#enable"), null);

  begin("globex's webhook, and a path that is no id, are 'not found' pages for acme");
  for (const id of [globex, "not-an-id"]) {
    const response = await page.goto(url(`/console/webhooks/${id}`));
    assert.equal(response.status(), 404, id);
    assert.equal((await page.textContent("h1")).trim(), "Not found");
  }

  begin("every request stayed on the service");
  allToOrigin();
}, close);
