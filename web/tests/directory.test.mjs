// End-to-end tests of "Find colleagues" and the contact card: the real `presenced`
// binary with users from a directory file, driven through headless Chromium (Debian's
// chromium, driven by playwright-core).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.PRESENCED_BIN ?? path.join(ROOT, "target/debug/presenced");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS_DIR ?? path.join(ROOT, "target/artifacts");
const WAIT = 20_000;

// The directory. Zoë has accents in both names; Zoëlle would match "zoe ang" too, but
// she is disabled; 25 support agents make more results than one page shows.
const USERS = [
  {
    uri: "sip:alice@example.com",
    display_name: "Alice Anders",
    given_name: "Alice",
    surname: "Anders",
    email: "alice.anders@example.com",
    title: "Engineer",
    department: "Research & Development",
    company: "Example",
  },
  { uri: "bob@example.com", display_name: "Bob Berg", given_name: "Bob", surname: "Berg", title: "Designer", department: "Product" },
  {
    uri: "zoe@example.com",
    display_name: "Zoë Ångström",
    given_name: "Zoë",
    surname: "Ångström",
    email: "zoe.angstrom@example.com",
    title: "Principal Scientist",
    department: "Research & Development",
    company: "Example",
    office: "B2 3.07",
    work_phone: "+1 (425) 555-0142",
  },
  { uri: "zoelle@example.com", display_name: "Zoëlle Ångel", title: "Scientist", department: "Research & Development", enabled: false },
  ...Array.from({ length: 25 }, (_, i) => ({
    uri: `agent${i + 1}@example.com`,
    display_name: `Agent ${i + 1}`,
    title: "Support Agent",
    department: "Customer Support",
  })),
];

const tomlString = (s) => JSON.stringify(s); // JSON strings are valid TOML basic strings
function usersToml() {
  return USERS.map(
    (u) =>
      "[[user]]\n" +
      Object.entries(u)
        .map(([k, v]) => `${k} = ${typeof v === "string" ? tomlString(v) : v}`)
        .join("\n"),
  ).join("\n\n");
}

let browser;
const servers = [];

function run(args, input) {
  const r = spawnSync(BIN, args, { input, env: { ...process.env, PRESENCED_LOG: "warn" } });
  assert.equal(r.status, 0, `${args.join(" ")}: ${r.stderr}`);
  return r.stdout.toString();
}

async function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

/// A data directory with local passwords for Alice and Bob and the directory imported,
/// then `presenced serve` with a `[directory]` table on that file.
async function startServer(limits = "") {
  const dir = mkdtempSync(path.join(tmpdir(), "presenced-dir-web-"));
  const usersFile = path.join(dir, "users.toml");
  writeFileSync(usersFile, usersToml());
  // Local accounts first: a directory entry for an existing account keeps its password.
  run(["user", "add", "alice@example.com", "--display-name", "Alice", "--password-stdin", "--data-dir", dir], "pw-alice\n");
  run(["user", "add", "bob@example.com", "--display-name", "Bob", "--password-stdin", "--data-dir", dir], "pw-bob\n");
  // One sync before the server starts, so its search index holds everyone at once.
  const summary = run(["directory", "import", usersFile, "--data-dir", dir]);
  assert.match(summary, /added 29, updated 0, disabled 0, unchanged 0, errors 0/);
  const config = path.join(dir, "presenced.toml");
  writeFileSync(config, `[directory]\nsource = "file"\nfile = ${tomlString(usersFile)}\nsync_interval = 3600\n${limits}`);
  const port = await freePort();
  const proc = spawn(BIN, ["serve", "--config", config, "--http", `127.0.0.1:${port}`, "--sip", "off", "--data-dir", dir], {
    env: { ...process.env, PRESENCED_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = readline.createInterface({ input: proc.stdout });
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no ready line")), WAIT);
    lines.once("line", (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    proc.once("exit", (code) => reject(new Error(`presenced exited with ${code}`)));
  });
  assert.match(ready, /^presenced ready http=127\.0\.0\.1:\d+/);
  const server = { proc, dir, url: `http://127.0.0.1:${port}/` };
  servers.push(server);
  return server;
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  for (const s of servers) {
    if (s.proc.exitCode === null) {
      const exited = new Promise((resolve) => s.proc.once("exit", resolve));
      s.proc.kill("SIGTERM");
      await exited;
    }
    rmSync(s.dir, { recursive: true, force: true });
  }
});

async function signIn(server, user, password, viewport) {
  const context = await browser.newContext(viewport ? { viewport } : {});
  const page = await context.newPage();
  await page.goto(server.url);
  await page.getByLabel("User").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("status").filter({ hasText: "Online" }).waitFor({ timeout: WAIT });
  return page;
}

/// Polls `fn` (in Node) until it returns a truthy value.
async function until(fn, what) {
  const end = Date.now() + WAIT;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const combobox = (page) => page.getByRole("combobox", { name: "Find colleagues" });
const resultsGrid = (page) => page.getByRole("grid", { name: "People found" });
const searchStatus = (page) => page.locator("#search-status");
const isFocused = (locator) => locator.evaluate((e) => e === document.activeElement);

async function selectedRows(page) {
  return page.getByRole("row").evaluateAll((rows) => rows.map((r) => r.getAttribute("aria-selected")));
}

async function search(page, text) {
  await combobox(page).fill(text);
}

test("find colleagues: live results, keyboard, disabled users hidden, contact card", async () => {
  const server = await startServer();
  const alice = await signIn(server, "alice@example.com", "pw-alice");
  const box = combobox(alice);
  assert.equal(await box.getAttribute("aria-expanded"), "false");

  // Typing: one request once typing pauses, not one per key; accents and case do not matter.
  const queries = [];
  alice.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname === "/v1/directory") queries.push(u.searchParams.get("q"));
  });
  await box.pressSequentially("zoe ang");
  const zoeRow = alice.getByRole("row", { name: /Zoë Ångström/ });
  await zoeRow.waitFor({ timeout: WAIT });
  assert.equal(await box.getAttribute("aria-expanded"), "true");
  assert.ok(queries.length < "zoe ang".length, `one request per key: ${JSON.stringify(queries)}`);
  assert.equal(queries.at(-1), "zoe ang");
  // Disabled Zoëlle matches the words too, but is never shown.
  assert.equal(await alice.getByRole("row").count(), 1);
  assert.equal(await alice.getByText("Zoëlle").count(), 0);
  // Same company: the details (title, department) are visible; Zoë has never signed in.
  const zoeText = await zoeRow.innerText();
  for (const s of ["Principal Scientist", "Research & Development", "Offline", "zoe@example.com"]) assert.ok(zoeText.includes(s), `${s} in ${zoeText}`);
  await zoeRow.getByRole("button", { name: "Add Zoë Ångström" }).waitFor();
  await searchStatus(alice).filter({ hasText: "1 person found" }).waitFor();
  await alice.screenshot({ path: path.join(ARTIFACTS, "find-colleagues.png") });

  // Arrow Down makes Zoë the active result; Enter adds her to the contact list.
  await box.press("ArrowDown");
  assert.deepEqual(await selectedRows(alice), ["true"]);
  const activeId = await box.getAttribute("aria-activedescendant");
  assert.ok(activeId, "aria-activedescendant is set");
  assert.equal(await alice.locator(`[id="${activeId}"]`).getAttribute("role"), "gridcell");
  await box.press("Enter");
  const zoeContact = alice.getByRole("button", { name: "Zoë Ångström", exact: true });
  await zoeContact.waitFor({ timeout: WAIT }); // her identity card arrived through the subscription
  await alice.locator('li.contact[data-uri="zoe@example.com"]').waitFor({ timeout: WAIT });
  // The result now says so, and the focus stayed in the search box.
  await zoeRow.getByText("Already a contact").waitFor({ timeout: WAIT });
  assert.equal(await zoeRow.getByRole("button").count(), 0);
  assert.ok(await isFocused(box));

  // Several results: Down, Down, Up move the active row; Up from the first wraps.
  await search(alice, "research");
  await until(async () => (await alice.getByRole("row").count()) === 2, "two results for research");
  assert.equal(await alice.getByRole("row", { name: /Zoëlle/ }).count(), 0);
  // Alice finds herself, marked as such.
  await alice.getByRole("row", { name: /Alice Anders/ }).getByText("You").waitFor();
  await box.press("ArrowDown");
  assert.deepEqual(await selectedRows(alice), ["true", "false"]);
  await box.press("ArrowDown");
  assert.deepEqual(await selectedRows(alice), ["false", "true"]);
  await box.press("ArrowUp");
  assert.deepEqual(await selectedRows(alice), ["true", "false"]);
  await box.press("ArrowUp");
  assert.deepEqual(await selectedRows(alice), ["false", "true"]);
  // Escape closes the list but keeps the text; Down opens it again.
  await box.press("Escape");
  await resultsGrid(alice).waitFor({ state: "hidden" });
  assert.equal(await box.getAttribute("aria-expanded"), "false");
  assert.equal(await box.getAttribute("aria-activedescendant"), null);
  assert.equal(await box.inputValue(), "research");
  await box.press("ArrowDown");
  await resultsGrid(alice).waitFor();
  assert.deepEqual(await selectedRows(alice), ["true", "false"]);

  // More than a page of matches.
  await search(alice, "support");
  await searchStatus(alice).filter({ hasText: "More results: refine your search" }).waitFor({ timeout: WAIT });
  assert.equal(await alice.getByRole("row").count(), 20);
  await alice.getByRole("row").first().getByRole("button", { name: /^Add Agent \d+$/ }).waitFor();

  // No match, and the disabled user by her own name: "No one found".
  for (const q of ["xyzzy", "zoëlle"]) {
    await search(alice, q);
    await searchStatus(alice).filter({ hasText: "No one found" }).waitFor({ timeout: WAIT });
    assert.equal(await alice.getByRole("row").count(), 0);
    await resultsGrid(alice).waitFor({ state: "hidden" });
  }
  // A blank box sends nothing and shows nothing.
  const before = queries.length;
  await search(alice, "   ");
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(queries.length, before);
  assert.equal(await searchStatus(alice).innerText(), "");

  // The contact card: click Zoë's name in the contact list.
  await zoeContact.click();
  const dialog = alice.getByRole("dialog", { name: "Zoë Ångström" });
  await dialog.waitFor({ timeout: WAIT });
  await dialog.getByText("Principal Scientist").waitFor({ timeout: WAIT });
  const fields = await dialog.locator("dl").evaluate((dl) =>
    Object.fromEntries([...dl.querySelectorAll("dt")].map((dt) => [dt.textContent, dt.nextElementSibling.textContent])),
  );
  assert.deepEqual(fields, {
    Title: "Principal Scientist",
    Department: "Research & Development",
    Company: "Example",
    Office: "B2 3.07",
    "Work phone": "+1 (425) 555-0142",
    "E-mail": "zoe.angstrom@example.com",
    Address: "zoe@example.com",
  });
  assert.equal(await dialog.getByRole("link", { name: "+1 (425) 555-0142" }).getAttribute("href"), "tel:+14255550142");
  assert.equal(await dialog.getByRole("link", { name: "zoe.angstrom@example.com" }).getAttribute("href"), "mailto:zoe.angstrom@example.com");
  await dialog.getByText("Offline").waitFor();
  assert.ok(!(await dialog.innerText()).includes("null"), await dialog.innerText());
  // Focus is inside the modal dialog; Escape closes it and the focus returns.
  assert.ok(await isFocused(dialog.getByRole("button", { name: "Close" })));
  await alice.screenshot({ path: path.join(ARTIFACTS, "contact-card.png") });
  await alice.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  assert.ok(await isFocused(zoeContact), "focus back on Zoë's name");

  // Enter on the row's name opens it again; the Close button closes it.
  await alice.keyboard.press("Enter");
  await dialog.waitFor();
  await dialog.getByRole("button", { name: "Close" }).click();
  await dialog.waitFor({ state: "hidden" });
  assert.ok(await isFocused(zoeContact));

  // A colleague online with a note: Bob. His card shows his availability and note.
  const bob = await signIn(server, "bob@example.com", "pw-bob");
  await bob.getByLabel("Personal note").fill("Back at 3");
  await bob.getByRole("button", { name: "Save status" }).click();
  await search(alice, "bob");
  const bobRow = alice.getByRole("row", { name: /Bob Berg/ });
  await bobRow.getByText("Available").waitFor({ timeout: WAIT });
  await bobRow.getByRole("button", { name: "Add Bob Berg" }).click();
  const bobContact = alice.getByRole("button", { name: "Bob Berg", exact: true });
  await bobContact.waitFor({ timeout: WAIT });
  await alice.getByRole("listitem").filter({ has: bobContact }).getByText("Back at 3").waitFor({ timeout: WAIT });
  await bobContact.click();
  const bobCard = alice.getByRole("dialog", { name: "Bob Berg" });
  await bobCard.getByText("Designer").waitFor({ timeout: WAIT });
  await bobCard.getByText("Back at 3").waitFor();
  await bobCard.getByText("Available").waitFor();
  // It follows live changes while open.
  await bob.getByLabel("Availability").selectOption({ label: "Busy" });
  await bob.getByRole("button", { name: "Save status" }).click();
  await bobCard.getByText("Busy").waitFor({ timeout: WAIT });
  await alice.keyboard.press("Escape");
  await bobCard.waitFor({ state: "hidden" });
  assert.ok(await isFocused(bobContact));

  // The page is still usable at phone width with the results open.
  await alice.setViewportSize({ width: 390, height: 844 });
  await search(alice, "zoe");
  await alice.getByRole("row", { name: /Zoë Ångström/ }).waitFor({ timeout: WAIT });
  const overflow = await alice.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page scrolls sideways by ${overflow}px`);
  await alice.screenshot({ path: path.join(ARTIFACTS, "find-colleagues-phone.png"), fullPage: true });
});

test("find colleagues: a throttled search says so and tries again; stale answers are dropped", async () => {
  // One query at once, one more every 2 s.
  const server = await startServer("[limits]\ndirectory_query_burst = 1\ndirectory_queries_per_second = 0.5\n");
  const bob = await signIn(server, "bob@example.com", "pw-bob");
  const box = combobox(bob);
  await search(bob, "zoe");
  await bob.getByRole("row", { name: /Zoë Ångström/ }).waitFor({ timeout: WAIT });
  const answers = [];
  bob.on("response", (r) => {
    if (new URL(r.url()).pathname === "/v1/directory") answers.push({ status: r.status(), retryAfter: r.headers()["retry-after"] });
  });
  await search(bob, "alice");
  await searchStatus(bob).filter({ hasText: "Too many searches in a short time" }).waitFor({ timeout: WAIT });
  assert.equal(await bob.getByRole("row").count(), 0);
  // The page asks again once the server allows it.
  await bob.getByRole("row", { name: /Alice Anders/ }).waitFor({ timeout: WAIT });
  assert.equal(answers[0].status, 429);
  assert.match(answers[0].retryAfter, /^\d+$/);
  assert.equal(answers.at(-1).status, 200);

  // A slow answer to an older query must not replace the answer to a newer one.
  await new Promise((r) => setTimeout(r, 2500)); // let the budget refill (the held answer never reaches the server)
  const held = Date.now();
  await bob.route("**/v1/directory?*", async (route) => {
    if (new URL(route.request().url()).searchParams.get("q") !== "ali") return route.continue();
    await new Promise((r) => setTimeout(r, 3000));
    const body = { results: [{ uri: "stale@example.com", display_name: "Stale Answer", title: null, department: null, availability: null, availability_class: null }], more: false };
    await route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(body) }).catch(() => {});
  });
  await search(bob, "ali");
  await bob.waitForRequest((r) => r.url().includes("q=ali"), { timeout: WAIT });
  await search(bob, "zoe");
  await bob.getByRole("row", { name: /Zoë Ångström/ }).waitFor({ timeout: WAIT });
  assert.ok(Date.now() - held < 3000, "the newer answer came first");
  await new Promise((r) => setTimeout(r, 3500)); // the held answer has come and gone
  assert.equal(await bob.getByText("Stale Answer").count(), 0);
  assert.equal(await bob.getByRole("row").count(), 1);
  assert.equal(await box.inputValue(), "zoe");
});
