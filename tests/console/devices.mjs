// The console's devices and ledgers pages in a real browser: Debian's
// chromium, driven by playwright-core. Run by tests/it/console_devices.rs,
// which starts the service, makes the keys, devices, messages and a ledger,
// and passes them in the environment:
//
//   CONSOLE_URL            the service, e.g. http://127.0.0.1:41234
//   CONSOLE_ACME_KEY       tenant acme's key (devices:read, devices:write)
//   CONSOLE_AUDIT_KEY      a platform key with audit:read
//   CONSOLE_ACME_IMEI      acme's device: one message from it (52.3867, -0.2938), one to it
//   CONSOLE_GLOBEX_IMEI    tenant globex's device (acme must not see it)
//   CONSOLE_SCREENSHOTS    where to save a screenshot of each page
//   TASKLEDGER_PLAYWRIGHT  the directory holding node_modules/playwright-core
//
// The ledger "bank" has confirmed sequences 1 to 2 and 4: 3 is a hole.
// Exits 0 when every check passed, 1 at the first that failed (saying which).

import assert from "node:assert/strict";

import { begin, consoleUnderTest, env, openConsole, run } from "./browser.mjs";

const acmeKey = env("CONSOLE_ACME_KEY");
const auditKey = env("CONSOLE_AUDIT_KEY");
const acmeImei = env("CONSOLE_ACME_IMEI");
const globexImei = env("CONSOLE_GLOBEX_IMEI");

const target = consoleUnderTest();
const { url } = target;

const { context, close, shot: saveShot, allToOrigin } = await openConsole(target, {
  viewport: { width: 1280, height: 800 },
});
// What the service answered each request.
const answers = new Map();
context.on("response", (response) => answers.set(new URL(response.url()).pathname, response));

// A full-page screenshot for looking at, and (with `view`) one of the
// viewport, the size of the README's.
const shot = (page, name, view = false) => saveShot(page, name, { view });

async function signIn(page, key, next) {
  await page.goto(url(next));
  assert.equal(new URL(page.url()).pathname, "/console/sign-in");
  await page.fill("#key", key);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.equal(new URL(page.url()).pathname, next);
}

await run(async () => {
  const page = context.pages()[0] ?? (await context.newPage());

  begin("acme signs in and comes to the devices page");
  await signIn(page, acmeKey, "/console/devices");

  begin("the list shows acme's device with its counts, and not globex's");
  const row = `tr[data-imei="${acmeImei}"]`;
  assert.ok(await page.$(row), "acme's device is not listed");
  assert.equal(await page.$(`tr[data-imei="${globexImei}"]`), null, "globex's device is listed");
  const cells = await page.$$eval(`${row} td`, (tds) => tds.map((td) => td.textContent.trim()));
  assert.equal(cells[1], "acme");
  assert.match(cells[2], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/, "last seen");
  assert.match(cells[3], /^52\.3867, -0\.2938/);
  assert.deepEqual(cells.slice(4, 6), ["1", "1"], "received and queued");

  begin("the map draws the world's outline and acme's dot where it was last");
  const land = answers.get("/console/assets/world.svg");
  assert.ok(land, "the world's outline was not loaded");
  assert.equal(land.status(), 200);
  assert.match(land.headers()["content-type"], /image\/svg\+xml/);
  const dots = await page.$$eval("svg.world-map circle.dot", (circles) => circles.map((c) => c.dataset.imei));
  assert.deepEqual(dots, [acmeImei]);
  // On the screen, the dot is where the equirectangular projection puts
  // 52.39° N, 0.29° W: a bit left of the middle, well above it.
  const where = await page.evaluate(() => {
    const map = document.querySelector("svg.world-map").getBoundingClientRect();
    const dot = document.querySelector("svg.world-map circle.dot").getBoundingClientRect();
    return {
      x: (dot.x + dot.width / 2 - map.x) / map.width,
      y: (dot.y + dot.height / 2 - map.y) / map.height,
    };
  });
  assert.ok(Math.abs(where.x - (180 - 0.2938) / 360) < 0.005, JSON.stringify(where));
  assert.ok(Math.abs(where.y - (90 - 52.3867) / 180) < 0.005, JSON.stringify(where));
  await shot(page, "devices", true);

  begin("the device's page shows its messages both ways, with their status");
  await Promise.all([page.waitForNavigation(), page.click(`${row} a`)]);
  assert.equal(new URL(page.url()).pathname, `/console/devices/${acmeImei}`);
  const messages = await page.$$eval("table.messages tbody tr", (rows) =>
    rows.map((tr) => ({
      way: tr.className,
      status: tr.querySelector(".badge")?.textContent.trim(),
      payload: tr.querySelector(".payload")?.textContent.trim(),
    })),
  );
  const mo = messages.find((message) => message.way === "mo");
  const mt = messages.find((message) => message.way === "mt");
  assert.deepEqual(mo, { way: "mo", status: "received", payload: "hello from orbit" });
  assert.equal(mt?.payload, "ping", JSON.stringify(messages));
  assert.match(mt.status, /^(queued|sending|sent|failed)$/);
  assert.match(await page.textContent("table.messages"), /MOMSN 42/);
  assert.ok(await page.$(`svg.world-map circle.dot[data-imei="${acmeImei}"]:not(.trail)`));
  await shot(page, "device", true);

  begin("another tenant's device, and a path that is no IMEI, are 'not found' pages");
  for (const imei of [globexImei, "123"]) {
    const response = await page.goto(url(`/console/devices/${imei}`));
    assert.equal(response.status(), 404, imei);
    assert.equal((await page.textContent("h1")).trim(), "Not found");
  }
  await shot(page, "device-not-found");

  begin("a tenant key is refused the ledgers, which span every tenant");
  let response = await page.goto(url("/console/ledgers"));
  assert.equal(response.status(), 403);
  assert.equal((await page.textContent("h1")).trim(), "Forbidden");

  begin("a platform auditor sees the ledger: confirmed through 2, sequence 3 a hole");
  await Promise.all([page.waitForNavigation(), page.click("header button.quiet")]);
  await signIn(page, auditKey, "/console/ledgers");
  const ledger = 'tr[data-ledger="bank"]';
  assert.ok(await page.$(ledger), "the ledger is not listed");
  assert.equal((await page.textContent(`${ledger} .confirmed-through`)).trim(), "2");
  assert.match(await page.textContent(`${ledger} .holes`), /^1:\s*3\b/);
  assert.match(await page.textContent(ledger), /batch-2/);
  assert.ok(Number((await page.textContent(`${ledger} .pending`)).trim()) >= 1);
  assert.equal(await page.$$eval("svg.ledger-bar rect.hole", (rects) => rects.length), 1);
  await shot(page, "ledgers", true);

  begin("the auditor, a platform key without devices:read, is refused the devices");
  response = await page.goto(url("/console/devices"));
  assert.equal(response.status(), 403);

  begin("every request went to the service itself");
  allToOrigin();
}, close);
