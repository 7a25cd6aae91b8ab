// End-to-end tests of the web client: the real `presenced` binary, two users in two
// headless Chromium sessions (Debian's chromium, driven by playwright-core).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
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
// Generous: arrival is what is tested here; how fast belongs in the benchmark.
const WAIT = 20_000;

let dataDir;
let port;
let server;
let browser;

function addUser(user, name, password) {
  const r = spawnSync(BIN, ["user", "add", user, "--display-name", name, "--password-stdin", "--data-dir", dataDir], {
    input: `${password}\n`,
    env: { ...process.env, PRESENCED_LOG: "warn" },
  });
  assert.equal(r.status, 0, r.stderr.toString());
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

async function startServer() {
  const proc = spawn(BIN, ["serve", "--http", `127.0.0.1:${port}`, "--sip", "off", "--data-dir", dataDir], {
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
  return proc;
}

async function stopServer(signal = "SIGKILL") {
  const exited = new Promise((resolve) => server.once("exit", resolve));
  server.kill(signal);
  await exited;
}

before(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), "presenced-web-"));
  mkdirSync(ARTIFACTS, { recursive: true });
  addUser("alice@example.com", "Alice Anders", "pw-alice");
  addUser("bob@example.com", "Bob Berg", "pw-bob");
  port = await freePort();
  server = await startServer();
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
  if (server && server.exitCode === null) await stopServer("SIGTERM");
  rmSync(dataDir, { recursive: true, force: true });
});

async function signIn(user, password, viewport) {
  const context = await browser.newContext(viewport ? { viewport } : {});
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.getByLabel("User").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#conn", { hasText: "Online" }).waitFor({ timeout: WAIT });
  return page;
}

async function addContact(page, uri) {
  await page.getByLabel("Add contact").fill(uri);
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.locator(`li.contact[data-uri="${uri}"]`).waitFor({ timeout: WAIT });
}

function badgeOf(page, uri) {
  return page.locator(`li.contact[data-uri="${uri}"] .badge`);
}

async function expectBadge(page, uri, label) {
  await page.locator(`li.contact[data-uri="${uri}"] .badge`, { hasText: label }).waitFor({ timeout: WAIT });
}

test("two users see each other's presence live, blocking shows offline, reconnects after a restart", async () => {
  const alice = await signIn("alice@example.com", "pw-alice");
  const bob = await signIn("bob@example.com", "pw-bob");

  await addContact(alice, "bob@example.com");
  await addContact(bob, "alice@example.com");
  // Both pages are endpoints publishing an active machine state.
  await expectBadge(bob, "alice@example.com", "Available");
  await expectBadge(alice, "bob@example.com", "Available");

  // Alice sets Busy and a note; Bob sees both.
  await alice.getByLabel("Availability").selectOption({ label: "Busy" });
  await alice.getByLabel("Personal note").fill("In a meeting until 3");
  await alice.getByRole("button", { name: "Save status" }).click();
  await expectBadge(bob, "alice@example.com", "Busy");
  await bob.locator('li.contact[data-uri="alice@example.com"] .note', { hasText: "In a meeting until 3" }).waitFor({ timeout: WAIT });
  await alice.locator("#me-badge", { hasText: "Busy" }).waitFor({ timeout: WAIT });
  await bob.screenshot({ path: path.join(ARTIFACTS, "main-page.png"), fullPage: true });

  // Who added me: Bob added Alice, so Alice is told and acknowledges.
  const watcher = alice.locator('li[data-watcher="bob@example.com"]');
  await watcher.waitFor({ timeout: WAIT });
  await watcher.getByRole("button", { name: "Acknowledge" }).click();
  await watcher.waitFor({ state: "detached", timeout: WAIT });

  // Blocking: Bob sees Alice offline, and her note disappears; unblocking restores both.
  await alice.getByLabel("Access level for Bob Berg").selectOption({ label: "Blocked" });
  await expectBadge(bob, "alice@example.com", "Offline");
  await bob.locator('li.contact[data-uri="alice@example.com"] .note').waitFor({ state: "detached", timeout: WAIT });
  await alice.locator('[data-level="32000"] li', { hasText: "bob@example.com" }).waitFor({ timeout: WAIT });
  await alice.getByLabel("Access level for Bob Berg").selectOption({ label: "Automatic" });
  await expectBadge(bob, "alice@example.com", "Busy");

  // Alice resets to automatic: her active machine state shows again.
  await alice.getByLabel("Availability").selectOption({ label: "Automatic" });
  await alice.getByRole("button", { name: "Save status" }).click();
  await expectBadge(bob, "alice@example.com", "Available");

  // Connection loss: the page says so, reconnects on its own and resubscribes.
  await stopServer("SIGKILL");
  await bob.locator("#conn", { hasText: "Offline" }).waitFor({ timeout: WAIT });
  server = await startServer();
  await bob.locator("#conn", { hasText: "Online" }).waitFor({ timeout: WAIT });
  await alice.locator("#conn", { hasText: "Online" }).waitFor({ timeout: WAIT });
  await expectBadge(bob, "alice@example.com", "Available");
  await alice.getByLabel("Availability").selectOption({ label: "Be Right Back" });
  await alice.getByRole("button", { name: "Save status" }).click();
  await expectBadge(bob, "alice@example.com", "Be Right Back");

  // Signing out ends Alice's endpoint: Bob sees her offline.
  await alice.getByRole("button", { name: "Sign out" }).click();
  await alice.getByRole("button", { name: "Sign in" }).waitFor({ timeout: WAIT });
  await expectBadge(bob, "alice@example.com", "Offline");
  assert.equal(await badgeOf(bob, "alice@example.com").getAttribute("data-class"), "offline");
});

test("usable on a phone-sized screen, every control labelled", async () => {
  const page = await signIn("bob@example.com", "pw-bob", { width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page scrolls sideways by ${overflow}px`);
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select")].filter((e) => e.labels.length === 0).map((e) => e.id),
  );
  assert.deepEqual(unlabelled, []);
  await page.screenshot({ path: path.join(ARTIFACTS, "main-page-phone.png"), fullPage: true });
  // Keyboard: the first controls are reachable with Tab.
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.tagName);
  assert.ok(["BUTTON", "SELECT", "INPUT"].includes(focused), `focus landed on ${focused}`);
});

test("wrong password is refused with a message", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.getByLabel("User").fill("alice@example.com");
  await page.getByLabel("Password").fill("nope");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#login-error", { hasText: "unknown user or wrong password" }).waitFor({ timeout: WAIT });
  assert.equal(await page.locator("#app").isHidden(), true);
});
