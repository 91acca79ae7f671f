// Drives the owner console in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core). Started by e2e/tests/console_browser.rs, which runs the instance, makes
// the data, and checks from the outside what the page changed.
//
// Protocol with the Rust side: this script prints `STEP <name>` on stdout when the page
// has done something the Rust side must check, and waits for one line on stdin: `ok` to go
// on, anything else to fail. It prints `DONE` at the end. Diagnostics go to stderr.
//
// Environment: CONSOLE_URL and LOGOUT_URL (fresh links from `vibe console`), EXPIRED_URL (a
// link whose code has expired), BLOB_NAME and BLOB_TEXT (the blob to download), BACKUP_KEY
// (the object key of the backup made before), KEY_FILE (the owner's key.pem), SEED_FILE
// (the same key as a base64 seed), KEY_SEED_HEX (its seed, to look for in requests),
// OTHER_KEY_FILE (somebody else's key), OWNER_DID, APP_NAME,
// DEVICE_NAME, DOC_ID (a document on the second page of collection `notes`), CHROMIUM
// (default /usr/bin/chromium), SCREENSHOTS (a folder: screenshots of every page at desktop and phone
// width are written there when set).

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function step(name) {
  process.stdout.write(`STEP ${name}\n`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== "ok") throw new Error(`the Rust side refused step ${name}: ${value}`);
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const shots = process.env.SCREENSHOTS;
const sizes = { desktop: { width: 1280, height: 860 }, phone: { width: 390, height: 844 } };
async function screenshot(page, name) {
  if (!shots) return;
  for (const [kind, size] of Object.entries(sizes)) {
    await page.setViewportSize(size);
    await page.screenshot({ path: join(shots, `${name}-${kind}.png`), fullPage: true });
  }
  await page.setViewportSize(sizes.desktop);
}

/** Accept the next confirmation dialog, checking what it asks. */
function confirmNext(page, mustMention) {
  page.once("dialog", async (dialog) => {
    if (dialog.type() !== "confirm" || !dialog.message().includes(mustMention)) {
      console.error(`unexpected dialog: ${dialog.type()} ${dialog.message()}`);
      await dialog.dismiss();
    } else {
      await dialog.accept();
    }
  });
}

async function goTo(page, section) {
  await page.getByRole("navigation", { name: "Console sections" }).getByRole("link", { name: section }).click();
  await page.getByRole("heading", { level: 1, name: section }).waitFor();
}

const profile = mkdtempSync(join(tmpdir(), "vibe-console-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
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
  acceptDownloads: true,
  viewport: sizes.desktop,
});
const violations = [];
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("console", (message) => {
    if (message.type() === "error") violations.push(message.text());
  });

  // The console link logs in, and the code leaves the address bar.
  await page.goto(env("CONSOLE_URL"));
  await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
  expect(!page.url().includes("code="), `the code stayed in the address bar: ${page.url()}`);
  const did = await page.locator("#owner-did").textContent();
  expect(did.startsWith("did:vibe:"), `owner DID shown: ${did}`);
  await page.getByText("CouchDB: working").waitFor();
  // The backup the Rust side ran before: it succeeded, and the page says where it is.
  const lastBackup = await page.locator("#last-backup").textContent();
  expect(/: succeeded, /.test(lastBackup), `the last backup succeeded: ${lastBackup}`);
  expect(lastBackup.includes(`(${env("BACKUP_KEY")})`), `the backup's object key is shown: ${lastBackup}`);
  await screenshot(page, "overview");

  // Apps: revoke one grant (confirmed), then the Rust side checks the app's next request
  // is refused and its subscription ended.
  const app = env("APP_NAME");
  await goTo(page, "Apps");
  // The app made requests before: it was seen (a time, not "never").
  const seen = await page.getByRole("region", { name: app }).getByText(/^Last seen: /).textContent();
  expect(seen !== "Last seen: never", `the app was seen: ${seen}`);
  await screenshot(page, "apps");
  confirmNext(page, "Revoke “read:notes”");
  await page.getByRole("button", { name: `Revoke read:notes for ${app}` }).click();
  await page.getByRole("button", { name: `Grant read:notes for ${app}` }).waitFor();
  await page.getByRole("status").filter({ hasText: "Revoked read:notes" }).waitFor();
  await step("grant-revoked");

  // While the page shows write:notes granted, the owner revokes it with the CLI (the Rust
  // side). A click on another permission in the page must not put it back: the page sends
  // only the one change, and then shows write:notes refused.
  const card = page.getByRole("region", { name: app });
  const writeRow = card.getByRole("row").filter({ has: page.getByText("write:notes", { exact: true }) });
  await card.getByRole("button", { name: `Revoke write:notes for ${app}` }).waitFor();
  await step("cli-revoked-write");
  await page.getByRole("button", { name: `Grant read:notes for ${app}` }).click();
  await page.getByRole("status").filter({ hasText: "Granted read:notes" }).waitFor();
  await page.getByRole("button", { name: `Revoke read:notes for ${app}` }).waitFor();
  await page.getByRole("button", { name: `Grant write:notes for ${app}` }).waitFor();
  const writeState = await writeRow.textContent();
  expect(writeState.includes("refused"), `write:notes stays revoked: ${writeState}`);
  await step("granted-another");

  // Devices: revoke one.
  const device = env("DEVICE_NAME");
  await goTo(page, "Devices");
  // The device synced once before: its row says when.
  const deviceSeen = await page.getByRole("row", { name: new RegExp(device) }).getByRole("cell").nth(4).textContent();
  expect(deviceSeen !== "never" && deviceSeen.length > 0, `the device was seen: ${deviceSeen}`);
  await screenshot(page, "devices");
  confirmNext(page, `Revoke the device ${device}`);
  await page.getByRole("button", { name: `Revoke ${device}` }).click();
  await page.getByText("No device is trusted to sync.").waitFor();
  await step("device-revoked");

  // Data: collections, a page, the next page, one document as JSON.
  await goTo(page, "Data");
  await page.getByRole("link", { name: "notes", exact: true }).click();
  await page.getByRole("heading", { level: 1, name: "Collection notes" }).waitFor();
  await screenshot(page, "data");
  await page.getByRole("link", { name: "Next page" }).click();
  const docId = env("DOC_ID");
  await page.getByRole("link", { name: docId, exact: true }).click();
  await page.getByRole("heading", { level: 1, name: `Document ${docId}` }).waitFor();
  const json = JSON.parse(await page.locator("#document-json").textContent());
  expect(json._id === docId, `document shown: ${JSON.stringify(json)}`);
  await screenshot(page, "document");

  // Blobs: download one, then delete it.
  const blobName = env("BLOB_NAME");
  await goTo(page, "Blobs");
  await screenshot(page, "blobs");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: `Download ${blobName}` }).click(),
  ]);
  expect(download.suggestedFilename() === blobName, `download named ${download.suggestedFilename()}`);
  const saved = readFileSync(await download.path(), "utf8");
  expect(saved === env("BLOB_TEXT"), `downloaded bytes: ${saved}`);
  confirmNext(page, `Delete ${blobName}`);
  await page.getByRole("button", { name: `Delete ${blobName}` }).click();
  await page.getByText("There are no blobs.").waitFor();
  await step("blob-deleted");

  // Export: a plain archive with blobs.
  await goTo(page, "Export");
  await screenshot(page, "export");
  await page.getByLabel("Encrypt to my key").uncheck();
  const [archive] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download export" }).click(),
  ]);
  const archiveBytes = readFileSync(await archive.path());
  expect(archiveBytes.length > 512, `export of ${archiveBytes.length} bytes`);

  // Apps again: delete the app; its socket closes.
  await goTo(page, "Apps");
  confirmNext(page, `Delete the app ${app}`);
  await page.getByRole("button", { name: `Delete ${app}` }).click();
  await page.getByText("No app is registered.").waitFor();
  await step("app-deleted");

  // Errors are shown in words: a document that does not exist.
  await page.goto(new URL("#data?c=notes&id=notes%2Fno-such-document", page.url()).href);
  await page.getByRole("alert").filter({ hasText: "Document not found." }).waitFor();

  // Sessions: log out everywhere (confirmed); the Rust side checks the CLI's session died.
  await goTo(page, "Sessions");
  // Every session says when it expires (a time in the future, after it started; not "not
  // recorded"), and one of them is this page.
  const sessionRows = page.getByRole("table", { name: "Your sessions" }).locator("tbody tr");
  const sessionCount = await sessionRows.count();
  expect(sessionCount >= 2, `the CLI's and the console's sessions are listed: ${sessionCount}`);
  for (let i = 0; i < sessionCount; i += 1) {
    const row = sessionRows.nth(i);
    const started = Date.parse(await row.locator('td[data-label="Started"] time').getAttribute("datetime"));
    const expiresCell = row.locator('td[data-label="Expires"]');
    const expiresText = await expiresCell.textContent();
    expect(expiresText !== "not recorded" && (await expiresCell.locator("time").count()) === 1, `session ${i} expires: ${expiresText}`);
    const expires = Date.parse(await expiresCell.locator("time").getAttribute("datetime"));
    expect(expires > Date.now() && expires > started, `session ${i} expires at ${expires}, started ${started}`);
  }
  await page.getByRole("table", { name: "Your sessions" }).getByRole("cell", { name: "this page" }).waitFor();
  await screenshot(page, "sessions");
  confirmNext(page, "Log out everywhere?");
  await page.getByRole("button", { name: "Log out everywhere" }).click();
  await page.getByRole("heading", { level: 1, name: "Signed out" }).waitFor();
  await screenshot(page, "signed-out");
  await step("logged-out-everywhere");

  // The used link and an expired one are refused, in words.
  for (const url of [env("CONSOLE_URL"), env("EXPIRED_URL")]) {
    await page.goto("about:blank");
    await page.goto(url);
    await page.getByText("This console link cannot be used: Invalid, expired or already used console code.").waitFor();
    expect(await page.getByRole("navigation", { name: "Console sections" }).isHidden(), "navigation hidden");
  }

  // A second console session logs out of itself with the button at the top; its token is
  // then refused (the page says so in words when it tries again).
  await page.goto("about:blank");
  await page.goto(env("LOGOUT_URL"));
  await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await page.getByText("You logged out of the console.").waitFor();
  expect(await page.getByRole("button", { name: "Log out", exact: true }).isHidden(), "log out button hidden");

  // Keyboard only. Signing out moves the focus to the page's content, whose next stop is
  // the key file form (reached without a mouse); a new tab order (the page loaded again,
  // which also forgets any session) reaches the skip link first.
  await page.keyboard.press("Tab");
  const formStop = await page.evaluate(() => document.activeElement?.id);
  expect(formStop === "key-file", `after signing out, the next tab stop: ${formStop}`);
  await page.reload();
  await page.getByRole("heading", { level: 1, name: "Signed out" }).waitFor();
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.textContent);
  expect(focused === "Skip to content", `first tab stop: ${focused}`);

  // Signing in with the key file, for people without the CLI at hand. Every request the
  // page makes from here on is recorded: none may carry the private key in any form.
  const sent = [];
  const record = (request) => sent.push(request);
  page.on("request", record);
  const keyInput = page.getByLabel("Owner key file");
  const keySignIn = page.getByRole("button", { name: "Sign in with the key file" });
  // Somebody else's key is refused, in words; so is a file that is no key at all.
  await keyInput.setInputFiles(env("OTHER_KEY_FILE"));
  await keySignIn.click();
  await page.getByRole("alert").filter({ hasText: "Identity is not the owner of this instance." }).waitFor();
  await keyInput.setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("not a key\n") });
  await keySignIn.click();
  await page.getByRole("alert").filter({ hasText: "This file is not a Vibe key" }).waitFor();
  expect(await page.getByRole("navigation", { name: "Console sections" }).isHidden(), "still signed out");
  // The owner's key file, as `vibe keygen` wrote it (PKCS#8 PEM with the public key), then
  // the same key as a bare seed (base64 text): each makes a console session.
  for (const file of [env("KEY_FILE"), env("SEED_FILE")]) {
    await keyInput.setInputFiles(file);
    await keySignIn.click();
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    const signedInAs = await page.locator("#owner-did").textContent();
    expect(signedInAs === env("OWNER_DID"), `signed in with ${file} as ${signedInAs}`);
    await goTo(page, "Sessions");
    const mine = page.getByRole("table", { name: "Your sessions" }).locator("tbody tr").filter({ hasText: "this page" });
    const kind = await mine.locator('td[data-label="Kind"]').textContent();
    expect(kind === "Console", `the key file's session is a console session: ${kind}`);
    // Nothing was stored: no cookie, no local or session storage.
    const stored = await page.evaluate(() => ({
      local: localStorage.length,
      session: sessionStorage.length,
      cookie: document.cookie,
    }));
    expect(stored.local === 0 && stored.session === 0 && stored.cookie === "", `stored: ${JSON.stringify(stored)}`);
    expect((await browser.cookies()).length === 0, "no cookie in the browser");
    await page.getByRole("button", { name: "Log out", exact: true }).click();
    await page.getByText("You logged out of the console.").waitFor();
  }
  page.off("request", record);
  const seed = Buffer.from(env("KEY_SEED_HEX"), "hex");
  const pemBody = readFileSync(env("KEY_FILE"), "utf8")
    .split("\n")
    .filter((line) => line && !line.startsWith("-----"));
  const secrets = [
    seed.toString("hex"),
    seed.toString("hex").toUpperCase(),
    seed.toString("base64"),
    seed.toString("base64").replace(/=+$/, ""),
    seed.toString("base64url"),
    pemBody.join(""),
    ...pemBody,
    readFileSync(env("SEED_FILE"), "utf8").trim(),
  ];
  const logins = [];
  for (const request of sent) {
    const body = request.postDataBuffer() ?? Buffer.alloc(0);
    const text = [request.url(), JSON.stringify(request.headers()), body.toString("utf8"), body.toString("latin1")].join("\n");
    expect(!body.includes(seed), `the key's bytes were sent to ${request.url()}`);
    for (const secret of secrets) {
      expect(!text.includes(secret) && !text.includes(encodeURIComponent(secret)), `the key was sent to ${request.url()}`);
    }
    if (request.url().endsWith("/api/v1/auth/login")) logins.push(JSON.parse(body.toString("utf8")));
  }
  // Three signed logins left the page (the stranger's and the owner's two), each only
  // a DID, a nonce, a timestamp, a signature and the console's name.
  expect(logins.length === 3, `logins sent: ${logins.length}`);
  for (const login of logins) {
    expect(
      JSON.stringify(Object.keys(login).sort()) === JSON.stringify(["client", "did", "nonce", "signature", "timestamp"]) && login.client === "console",
      `login body: ${JSON.stringify(login)}`,
    );
  }
  console.error(`key file sign-in: ${sent.length} requests checked, none carried the key`);

  const csp = violations.filter((v) => v.includes("Content Security Policy"));
  expect(csp.length === 0, `CSP violations: ${csp.join("; ")}`);
  process.stdout.write("DONE\n");
} catch (error) {
  console.error(`console browser test failed: ${error.stack ?? error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
  process.stdin.destroy();
}
