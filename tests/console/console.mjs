// The console in a real browser: Debian's chromium, driven by playwright-core.
// Run by tests/it/console.rs, which starts the service, makes the keys and tasks
// and passes them in the environment:
//
//   CONSOLE_URL            the service, e.g. http://127.0.0.1:41234
//   CONSOLE_ACME_KEY       tenant acme's key (tasks:read, tasks:write)
//   CONSOLE_ACME_TASK      an acme task that succeeded with report.txt
//   CONSOLE_GLOBEX_TASK    a task of tenant globex (acme must not see it)
//   CONSOLE_SCREENSHOTS    where to save a screenshot of each page
//   TASKLEDGER_PLAYWRIGHT  the directory holding node_modules/playwright-core
//
// Exits 0 when every check passed, 1 at the first that failed (saying which).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { begin, consoleUnderTest, env, openConsole, run } from "./browser.mjs";

const acmeKey = env("CONSOLE_ACME_KEY");
const acmeTask = env("CONSOLE_ACME_TASK");
const globexTask = env("CONSOLE_GLOBEX_TASK");

const target = consoleUnderTest();
const { url } = target;

// A task submitted through /v1 (by this script, not the page).
async function submit(script) {
  const response = await fetch(url("/v1/tasks"), {
    method: "POST",
    headers: { authorization: `Bearer ${acmeKey}`, "content-type": "application/json" },
    body: JSON.stringify({ kind: "local-sh", params: { script } }),
  });
  const text = await response.text();
  assert.equal(response.status, 201, text);
  return JSON.parse(text).id;
}

async function v1Task(id) {
  const response = await fetch(url(`/v1/tasks/${id}`), {
    headers: { authorization: `Bearer ${acmeKey}` },
  });
  return response.json();
}

const { context, close, shot, allToOrigin } = await openConsole(target, {
  viewport: { width: 1280, height: 900 },
  acceptDownloads: true,
});

await run(async () => {
  const page = context.pages()[0] ?? (await context.newPage());

  begin("an unsigned visit to a task goes to sign-in, asking to come back");
  let response = await page.goto(url(`/console/tasks/${acmeTask}`));
  let here = new URL(page.url());
  assert.equal(here.pathname, "/console/sign-in");
  assert.equal(here.searchParams.get("next"), `/console/tasks/${acmeTask}`);
  const headers = response.headers();
  assert.match(headers["content-security-policy"], /default-src 'self'/);
  assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
  assert.equal(headers["x-content-type-options"], "nosniff");
  await shot(page, "sign-in");

  begin("a wrong key gets the form again with a clear message and no session");
  await page.fill("#key", "tlk_00000000000000000000000000000000_not-a-real-secret");
  [response] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.equal(response.status(), 401);
  assert.match(await page.textContent(".error"), /not accepted/);
  let cookies = await context.cookies(url("/console/tasks"));
  assert.ok(!cookies.some((cookie) => cookie.name === "tl_console"), JSON.stringify(cookies));
  await shot(page, "sign-in-refused");

  begin("the right key signs in and comes back to the task asked for");
  await page.fill("#key", acmeKey);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  here = new URL(page.url());
  assert.equal(here.pathname, `/console/tasks/${acmeTask}`);
  cookies = await context.cookies(url("/console/tasks"));
  const session = cookies.find((cookie) => cookie.name === "tl_console");
  assert.ok(session, JSON.stringify(cookies));
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(session.path, "/console");
  assert.ok(!cookies.some((cookie) => cookie.value.includes(acmeKey)), "the key is in a cookie");
  assert.ok(!(await page.content()).includes(acmeKey), "the key is in the page");
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
  assert.ok(!stored.includes(acmeKey), "the key is in web storage");

  begin("the task page shows its status, result and timeline");
  assert.equal((await page.textContent(".badge.big")).trim(), "succeeded");
  assert.match(await page.textContent("body"), /"answer": 42/);
  const events = await page.$$eval("ol.timeline li", (items) => items.map((item) => item.textContent));
  assert.ok(events.length >= 3, `only ${events.length} events`);
  assert.match(events[0], /TaskSubmitted/);
  assert.match(events.at(-1), /TaskSucceeded/);
  assert.match(events[0], /hash [0-9a-f]{16}/);
  assert.match(events[0], /#\d+/);
  await shot(page, "task");

  begin("an artifact downloads through the console");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("ul.files a:text('report.txt')"),
  ]);
  assert.equal(readFileSync(await download.path(), "utf8"), "hello from the task\n");

  begin("'as of' the first event shows the task as it was then");
  await Promise.all([page.waitForNavigation(), page.click("ol.timeline li:first-child a")]);
  assert.match(await page.textContent(".notice"), /As it was at event 1/);
  assert.equal((await page.textContent(".badge.big")).trim(), "queued");
  await shot(page, "task-as-of");

  begin("the list shows the tenant's task and not another tenant's");
  await page.goto(url("/console/tasks"));
  assert.ok(await page.$(`tr[data-task="${acmeTask}"]`), "acme's task is not listed");
  assert.equal(await page.$(`tr[data-task="${globexTask}"]`), null, "globex's task is listed");
  assert.match(await page.textContent(".counts"), /succeeded\s*1/);
  await page.waitForSelector("#live-state.on", { timeout: 10_000 });
  await shot(page, "tasks");

  begin("a new task and its status changes appear without a reload");
  await page.evaluate(() => {
    window.notReloaded = true;
  });
  const live = await submit("sleep 2; echo live");
  await page.waitForSelector(`tr[data-task="${live}"]`, { timeout: 15_000 });
  await page.waitForFunction(
    (id) => document.querySelector(`tr[data-task="${id}"] .badge`)?.textContent.trim() === "succeeded",
    live,
    { timeout: 30_000 },
  );
  assert.equal(await page.evaluate(() => window.notReloaded), true, "the page reloaded");
  await shot(page, "tasks-live");

  begin("filters and the CSV export use /v1's listing");
  await page.goto(url("/console/tasks?status=failed"));
  assert.equal(await page.$(`tr[data-task="${acmeTask}"]`), null);
  const csv = await page.evaluate(async () => {
    const response = await fetch("/console/tasks.csv");
    return { status: response.status, type: response.headers.get("content-type"), text: await response.text() };
  });
  assert.equal(csv.status, 200);
  assert.match(csv.type, /text\/csv/);
  assert.ok(csv.text.includes(acmeTask), csv.text);
  assert.ok(!csv.text.includes(globexTask), csv.text);

  begin("another tenant's task is a 'not found' page");
  response = await page.goto(url(`/console/tasks/${globexTask}`));
  assert.equal(response.status(), 404);
  assert.equal((await page.textContent("h1")).trim(), "Not found");
  await shot(page, "not-found");

  begin("a POST without the session's CSRF token is refused and changes nothing");
  const sleeper = await submit("sleep 60");
  // Just submitted: the page waits (min_version) until the read model shows it.
  await page.goto(url(`/console/tasks/${sleeper}?min_version=1`));
  const forged = await page.evaluate(async (id) => {
    const post = (body) =>
      fetch(`/console/tasks/${id}/cancel`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body,
      }).then((response) => response.status);
    return [await post("csrf=forged"), await post("")];
  }, sleeper);
  assert.deepEqual(forged, [403, 403]);
  assert.notEqual((await v1Task(sleeper)).status, "canceled");

  begin("the cancel button (with the token) cancels");
  await Promise.all([page.waitForNavigation(), page.click("button.danger")]);
  assert.equal((await page.textContent(".badge.big")).trim(), "canceled");
  assert.equal((await v1Task(sleeper)).status, "canceled");
  await shot(page, "task-canceled");

  begin("sign-out ends the session");
  await Promise.all([page.waitForNavigation(), page.click("header button.quiet")]);
  assert.match(await page.textContent(".notice"), /signed out/);
  await page.goto(url("/console/tasks"));
  assert.equal(new URL(page.url()).pathname, "/console/sign-in");

  begin("every request went to the service itself");
  allToOrigin();
}, close);
