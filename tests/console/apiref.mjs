// The console's API reference (/console/api) in a real browser: Debian's chromium,
// driven by playwright-core. Run by tests/it/console_apiref.rs, which starts the
// service, makes the keys and the task and passes them in the environment:
//
//   CONSOLE_URL            the service, e.g. http://127.0.0.1:41234
//   CONSOLE_SESSION_KEY    the key to sign in with (it may read no task)
//   CONSOLE_PASTED_KEY     the key pasted into the page for "Try it out" (another tenant's)
//   CONSOLE_PASTED_TASK    a task that key can read (it succeeded)
//   CONSOLE_SCREENSHOTS    where to save the screenshots
//   TASKLEDGER_PLAYWRIGHT  the directory holding node_modules/playwright-core
//
// Exits 0 when every check passed, 1 at the first that failed (saying which).

import assert from "node:assert/strict";
import path from "node:path";

import { begin, consoleUnderTest, env, launch, run, shot as saveShot } from "./browser.mjs";

const sessionKey = env("CONSOLE_SESSION_KEY");
const pastedKey = env("CONSOLE_PASTED_KEY");
const pastedTask = env("CONSOLE_PASTED_TASK");

const { origin, url, shots } = consoleUnderTest();

const { context, close } = await launch({ viewport: { width: 1280, height: 800 } });

// Every request of every page: none may leave the service; the pasted key may
// travel only as the Authorization header of a request to /v1, the session's
// only in the sign-in form.
const requests = [];
const foreign = [];
const keyLeaks = [];
context.on("request", (request) => {
  const address = request.url();
  const authorization = request.headers().authorization ?? "";
  requests.push({ address, authorization });
  if (new URL(address).origin !== origin) foreign.push(address);
  const body = request.postData() ?? "";
  const signIn = request.method() === "POST" && address === `${origin}/console/sign-in`;
  if (`${address} ${body}`.includes(pastedKey)) keyLeaks.push(address);
  if (address.includes(sessionKey) || (body.includes(sessionKey) && !signIn)) keyLeaks.push(address);
  if (authorization.includes(pastedKey) && !address.startsWith(`${origin}/v1/`)) keyLeaks.push(address);
});

// Every CSP violation, as the page's own event reports it and as the console does.
await context.addInitScript(() => {
  document.addEventListener("securitypolicyviolation", (event) => {
    console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI} (${event.sourceFile}:${event.lineNumber})`);
  });
});
const problems = [];
// Expected errors: a "Try it out" answered 401 (where the test sends no key) is
// logged by chromium as a failed load; and Swagger UI, opening a deep link
// (/console/api#/tasks/get_task) whose operation id holds a `_`, as every /v1
// operation id does, logs that it also tries the `_` as a space. Anything else
// is a problem.
const expected = new RegExp(
  [
    "^Failed to load resource: the server responded with a status of 401",
    "^Deprecated: escaping deep link whitespace with `_` is unsupported",
  ].join("|"),
);
function watch(page) {
  page.on("console", (message) => {
    const text = message.text();
    if (message.type() === "error" && !expected.test(text)) problems.push(`console error: ${text}`);
    if (/Content Security Policy|CSP violation/.test(text)) problems.push(`CSP: ${text}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error}`));
}
context.on("page", watch);

const shot = (page, name, fullPage = true) => saveShot(page, shots, name, { fullPage });

// Executes the opened operation and returns its answer's status and body.
async function execute(operation) {
  await operation.locator("button.execute").click();
  const status = operation.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor({ timeout: 15_000 });
  const body = await operation.locator(".live-responses-table .response-col_description pre").first().textContent();
  const text = (await status.textContent()).trim();
  // Clear, so the next answer is not mistaken for this one.
  await operation.locator("button.btn-clear").click();
  await operation.locator(".live-responses-table").waitFor({ state: "detached", timeout: 5_000 });
  return { status: text, body };
}

async function openTryIt(page) {
  const operation = page.locator("#operations-tasks-get_task");
  // Open unless a deep link (the address after a reload) opened it already.
  if (!(await operation.evaluate((element) => element.classList.contains("is-open")))) {
    await operation.locator(".opblock-summary").click();
  }
  await operation.locator("button.try-out__btn").click();
  await operation.locator('tr[data-param-name="id"] input').fill(pastedTask);
  return operation;
}

function sentWithout(pathname) {
  return requests.filter((request) => new URL(request.address).pathname === pathname);
}

await run(async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  watch(page);

  begin("an unsigned visit to /console/api goes to sign-in and comes back after it");
  await page.goto(url("/console/api"));
  let here = new URL(page.url());
  assert.equal(here.pathname, "/console/sign-in");
  assert.equal(here.searchParams.get("next"), "/console/api");
  await page.fill("#key", sessionKey);
  const [response] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  here = new URL(page.url());
  assert.equal(here.pathname, "/console/api");
  assert.equal(response.status(), 200);
  const csp = response.headers()["content-security-policy"];
  assert.equal(csp, "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'");

  begin("Swagger UI lists /v1's operations from /v1/openapi.json");
  await page.waitForSelector(".opblock", { timeout: 20_000 });
  const operations = await page.$$eval(".opblock-summary", (rows) =>
    rows.map((row) => {
      const method = row.querySelector(".opblock-summary-method")?.textContent.trim();
      const where = row.querySelector(".opblock-summary-path")?.getAttribute("data-path");
      return `${method} ${where}`;
    }),
  );
  for (const expectedOperation of ["GET /v1/tasks/{id}", "POST /v1/tasks", "GET /v1/tasks", "GET /v1/openapi.json"]) {
    assert.ok(operations.includes(expectedOperation), `${expectedOperation} is not listed: ${operations.join(", ")}`);
  }
  assert.ok(operations.length >= 30, `only ${operations.length} operations`);
  assert.match(await page.textContent(".swagger-ui .info .title"), /taskledger/);
  assert.equal((await page.textContent("header nav a[href='/console/api']")).trim(), "API");
  await shot(page, "api-top", false);
  await shot(page, "api");

  begin("its icons are files of this origin (the stylesheet's data: images were moved out)");
  const operation = await openTryIt(page);
  const arrow = await page.$eval(".swagger-ui select", (select) => getComputedStyle(select).backgroundImage);
  assert.match(arrow, /\/console\/assets\/api\/image-[0-9a-f]{16}\.svg/);

  begin("without a pasted key, Try it out is refused: the session's key is not used");
  let answer = await execute(operation);
  assert.equal(answer.status, "401", answer.body);
  let tried = sentWithout(`/v1/tasks/${pastedTask}`);
  assert.equal(tried.length, 1, JSON.stringify(tried));
  assert.equal(tried[0].authorization, "", "a request went with a key nobody pasted");

  begin("with the pasted key, Try it out answers 200 with the task's JSON");
  await page.fill("#try-key", pastedKey);
  assert.match(await page.textContent("#try-key-state"), /key set/);
  answer = await execute(operation);
  assert.equal(answer.status, "200", answer.body);
  const task = JSON.parse(answer.body);
  assert.equal(task.id, pastedTask);
  assert.equal(task.status, "succeeded");
  tried = sentWithout(`/v1/tasks/${pastedTask}`);
  assert.equal(tried.length, 2, JSON.stringify(tried));
  assert.equal(tried[1].authorization, `Bearer ${pastedKey}`);
  const specFetches = sentWithout("/v1/openapi.json");
  assert.ok(specFetches.length >= 1 && specFetches.every((request) => request.authorization === ""), JSON.stringify(specFetches));
  // Once more, to leave the answer on the screenshot.
  await operation.locator("button.execute").click();
  await operation.locator(".live-responses-table .response-col_status").first().waitFor();
  await operation.screenshot({ path: path.join(shots, "api-tried.png") });
  await page.locator("section.models").screenshot({ path: path.join(shots, "api-schemas.png") });

  begin("the key is in no cookie, no web storage and not in the page");
  const cookies = await context.cookies();
  assert.ok(!cookies.some((cookie) => cookie.value.includes(pastedKey)), JSON.stringify(cookies));
  const stored = await page.evaluate(() =>
    JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage }, cookie: document.cookie }),
  );
  assert.ok(!stored.includes(pastedKey), `the key is in web storage: ${stored}`);
  assert.ok(!(await page.content()).includes(pastedKey), "the key is written into the page");
  assert.ok(!(await page.content()).includes(sessionKey), "the session's key is in the page");

  begin("reloading forgets it (and the address still opens the operation)");
  assert.equal(new URL(page.url()).hash, "#/tasks/get_task");
  await page.reload();
  await page.waitForSelector("#operations-tasks-get_task.is-open", { timeout: 20_000 });
  assert.equal(await page.inputValue("#try-key"), "");
  answer = await execute(await openTryIt(page));
  assert.equal(answer.status, "401", answer.body);
  assert.equal(sentWithout(`/v1/tasks/${pastedTask}`).at(-1).authorization, "");

  begin("no CSP violation, no script error, no request outside the service, no key elsewhere");
  assert.deepEqual(problems, []);
  assert.deepEqual(foreign, []);
  assert.deepEqual(keyLeaks, []);
  console.log(`ok: ${requests.length} requests, all to ${origin}; screenshots in ${shots}`);
}, close, () => (problems.length ? `problems seen: ${problems.join("\n")}` : ""));
