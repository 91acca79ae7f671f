// The owner console of a Vibe Cloud instance (issue 19; docs/console.md).
//
// Signing in: `vibe console` opens /console/#code=<one-time code>. The page takes the code
// out of the address bar, exchanges it for an owner session (POST /api/v1/console/session)
// and keeps the tokens in this module's memory only: no cookie, no storage. A reload or a
// closed tab ends the page's session. Every request carries `Authorization: Bearer`.
// Without the CLI, the owner can instead choose their key file on the signed-out page: the
// page signs the login challenge with it through WebCrypto and forgets it (see "signing in
// with the key file" below).
//
// Everything shown is built with DOM calls and textContent (never innerHTML), so data from
// the instance (app names, documents, file names) cannot inject markup.
let tokens = null;
let refreshing = null;
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const errorBox = document.getElementById("error");
const statusBox = document.getElementById("status");
const logoutButton = document.getElementById("logout");
// ---------------------------------------------------------------- DOM helpers
function h(tag, attrs = {}, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
        if (typeof value === "function") {
            element.addEventListener(name, value);
        }
        else if (value === true) {
            element.setAttribute(name, "");
        }
        else if (value !== false) {
            element.setAttribute(name, value);
        }
    }
    for (const child of children) {
        if (child === null || child === undefined || child === false)
            continue;
        element.append(child);
    }
    return element;
}
function button(label, onClick, kind = "") {
    return h("button", { type: "button", class: kind, click: onClick }, label);
}
function show(...children) {
    main.replaceChildren(...children.filter((c) => !!c));
}
function say(message) {
    statusBox.textContent = message;
}
function showError(message) {
    errorBox.hidden = message === null;
    errorBox.textContent = message ?? "";
}
function bytes(n) {
    if (n === null || n === undefined)
        return "unknown";
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
        value /= 1024;
        unit += 1;
    }
    return unit === 0 ? `${n} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}
/** A moment (UNIX seconds) in the reader's words, machine-readable in `datetime`. */
function when(seconds) {
    const at = new Date(seconds * 1000);
    return h("time", { datetime: at.toISOString() }, at.toLocaleString());
}
function table(headings, rows, caption) {
    return h("div", { class: "scroll" }, h("table", {}, h("caption", {}, caption), h("thead", {}, h("tr", {}, ...headings.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, 
    // Each cell names its column, shown beside the value when rows stack (phone width).
    ...rows.map((cells) => h("tr", {}, ...cells.map((c, i) => h("td", { "data-label": headings[i] ?? "" }, c)))))));
}
function text(value) {
    return document.createTextNode(value);
}
// ---------------------------------------------------------------- the API
class ApiFailure extends Error {
    status;
    constructor(message, status) {
        super(message);
        this.status = status;
    }
}
async function failure(response) {
    let message = `The instance answered ${response.status} ${response.statusText}.`;
    try {
        const body = await response.json();
        if (body && typeof body.error === "string") {
            message = body.error;
            if (typeof body.details === "string" && body.details !== body.error) {
                message += ` (${body.details})`;
            }
        }
    }
    catch {
        // Not JSON: keep the status line.
    }
    return new ApiFailure(message, response.status);
}
async function refresh() {
    if (!tokens)
        throw new ApiFailure("You are signed out.", 401);
    const response = await fetch("/api/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refreshToken: tokens.refreshToken }),
        credentials: "omit",
    });
    if (!response.ok) {
        const error = await failure(response);
        signedOut("Your console session has ended: " + error.message);
        throw error;
    }
    tokens = await response.json();
}
async function fresh() {
    if (!tokens)
        throw new ApiFailure("You are signed out.", 401);
    if (tokens.accessTokenExpiresIn - Date.now() / 1000 < 60) {
        refreshing ??= refresh().finally(() => (refreshing = null));
        await refreshing;
    }
    if (!tokens)
        throw new ApiFailure("You are signed out.", 401);
    return tokens.accessToken;
}
/** A request with the session's token; an error answer becomes an ApiFailure. */
async function call(method, path, body) {
    const send = async (token) => fetch(path, {
        method,
        headers: {
            Authorization: `Bearer ${token}`,
            ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
    });
    let response = await send(await fresh());
    if (response.status === 401 && tokens) {
        // The access token may have been refused for its age: refresh once and retry.
        await refresh();
        response = await send(await fresh());
    }
    if (!response.ok) {
        const error = await failure(response);
        if (response.status === 401)
            signedOut("Your console session has ended: " + error.message);
        throw error;
    }
    return response;
}
async function getJson(path) {
    return (await call("GET", path)).json();
}
/** Save a response body as a file named `name`. */
async function save(response, name) {
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
// ---------------------------------------------------------------- signing in and out
/** Show the signed-out page. `moveFocus` (a session just ended): the focus goes to the
 *  page's content, so a screen reader reads why; a page just loaded keeps the browser's
 *  own tab order, whose first stop is the skip link. */
function signedOut(reason, moveFocus = true) {
    tokens = null;
    nav.hidden = true;
    logoutButton.hidden = true;
    showError(null);
    show(h("h1", {}, "Signed out"), h("p", { id: "signed-out-reason" }, reason), h("p", {}, "To open the console, run ", h("code", {}, "vibe console"), " on a computer holding your key, and open the link it prints. Each link works once, for two minutes."), keyFileSignIn());
    if (moveFocus)
        main.focus();
}
/** Signed in: show the console (the Overview first). */
function signedIn(message) {
    say(message);
    nav.hidden = false;
    logoutButton.hidden = false;
}
async function exchange(code) {
    say("Signing in…");
    const response = await fetch("/api/v1/console/session", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ code }),
        credentials: "omit",
    });
    if (!response.ok) {
        const error = await failure(response);
        say("");
        signedOut("This console link cannot be used: " + error.message, false);
        return;
    }
    tokens = await response.json();
    signedIn("Signed in.");
}
// ---------------------------------------------------------------- signing in with the key file
//
// For people without the CLI at hand: the page reads the owner's key file (what `vibe
// keygen` writes: a PKCS#8 PEM; or a 32-byte seed, raw, base64 or hex, as `vibe` also
// reads), imports the private key into WebCrypto as a non-extractable Ed25519 key, signs
// the login challenge (`did|nonce|timestamp`) in the page and logs in like `vibe` does
// (POST /api/v1/auth/challenge, /api/v1/auth/login with `client: "console"`). Only the DID,
// the nonce, the timestamp and the signature leave the page. The key is never stored: the
// file input is cleared as soon as it was read, the byte arrays holding key material are
// zeroed after the import, and the CryptoKey is a local of the sign-in that nothing keeps
// once the login answered. No cookie, no storage; a reload forgets everything.
/** A key file the page cannot use, said in words. */
class KeyFileError extends Error {
}
const NOT_A_KEY = "This file is not a Vibe key: choose the key.pem that `vibe keygen` wrote (a PKCS#8 PEM), or a file holding a 32-byte seed.";
/** Larger than any key file (a PEM of an Ed25519 key is about 120 bytes). */
const MAX_KEY_FILE_BYTES = 16 * 1024;
/** DER of PKCS#8 v1 for an Ed25519 seed (RFC 8410): these 16 bytes, then the 32-byte seed. */
const PKCS8_ED25519_PREFIX = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20);
/** The object identifier of Ed25519 (1.3.101.112), DER content bytes. */
const ED25519_OID = Uint8Array.of(0x2b, 0x65, 0x70);
/** A cursor over DER: each `next` reads one element with the expected tag. */
class Der {
    bytes;
    at = 0;
    constructor(bytes) {
        this.bytes = bytes;
    }
    get done() {
        return this.at === this.bytes.length;
    }
    peek() {
        return this.bytes[this.at];
    }
    next(tag) {
        const bytes = this.bytes;
        if (bytes[this.at] !== tag || this.at + 2 > bytes.length)
            throw new KeyFileError(NOT_A_KEY);
        let length = bytes[this.at + 1];
        let start = this.at + 2;
        if (length & 0x80) {
            const count = length & 0x7f;
            if (count < 1 || count > 2 || start + count > bytes.length)
                throw new KeyFileError(NOT_A_KEY);
            length = 0;
            for (let i = 0; i < count; i += 1)
                length = length * 256 + bytes[start + i];
            start += count;
        }
        if (start + length > bytes.length)
            throw new KeyFileError(NOT_A_KEY);
        this.at = start + length;
        return bytes.subarray(start, start + length);
    }
}
function sameBytes(a, b) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
/** The seed (and public key, when present) of a PKCS#8 OneAsymmetricKey for Ed25519. */
function fromPkcs8(der) {
    const outer = new Der(der);
    const body = new Der(outer.next(0x30));
    if (!outer.done)
        throw new KeyFileError(NOT_A_KEY);
    const version = body.next(0x02);
    if (version.length !== 1 || version[0] > 1)
        throw new KeyFileError(NOT_A_KEY);
    const algorithm = new Der(body.next(0x30));
    if (!sameBytes(algorithm.next(0x06), ED25519_OID) || !algorithm.done) {
        throw new KeyFileError("This key file holds another kind of key than Ed25519, which Vibe identities use.");
    }
    const seed = new Der(body.next(0x04)).next(0x04);
    if (seed.length !== 32)
        throw new KeyFileError(NOT_A_KEY);
    if (body.peek() === 0xa0)
        body.next(0xa0); // attributes: not needed
    let publicKey = null;
    if (body.peek() === 0x81 || body.peek() === 0xa1) {
        // [1] publicKey, a BIT STRING (IMPLICIT: its content here; EXPLICIT: wrapped once).
        const bits = body.peek() === 0x81 ? body.next(0x81) : new Der(body.next(0xa1)).next(0x03);
        if (bits.length !== 33 || bits[0] !== 0)
            throw new KeyFileError(NOT_A_KEY);
        publicKey = bits.slice(1);
    }
    if (!body.done)
        throw new KeyFileError(NOT_A_KEY);
    return { seed: seed.slice(), publicKey };
}
/** Bytes of standard or URL-safe base64 (padding optional), or null. */
function fromBase64(text) {
    const standard = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
    if (!/^[A-Za-z0-9+/]*$/.test(standard) || standard.length % 4 === 1)
        return null;
    const binary = atob(standard + "=".repeat((4 - (standard.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}
function toBase64(bytes) {
    return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
}
/** What `vibe` reads as a key file: a PKCS#8 PEM, 32 raw bytes, or a seed in base64 or hex. */
function readKeyFile(bytes) {
    let text = null;
    try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(bytes).trim();
    }
    catch {
        text = null;
    }
    if (text?.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
        throw new KeyFileError("This key file is encrypted with a passphrase; the console reads unencrypted key files like the one `vibe keygen` writes.");
    }
    const pem = text && /^-----BEGIN PRIVATE KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PRIVATE KEY-----$/.exec(text);
    if (pem) {
        const der = fromBase64(pem[1].replace(/\s+/g, ""));
        if (!der)
            throw new KeyFileError(NOT_A_KEY);
        try {
            return fromPkcs8(der);
        }
        finally {
            der.fill(0);
        }
    }
    if (text !== null) {
        const seed = /^[0-9a-fA-F]{64}$/.test(text)
            ? Uint8Array.from(text.match(/../g) ?? [], (pair) => parseInt(pair, 16))
            : fromBase64(text);
        if (seed?.length === 32)
            return { seed, publicKey: null };
        seed?.fill(0);
    }
    if (bytes.length === 32)
        return { seed: bytes.slice(), publicKey: null };
    throw new KeyFileError(NOT_A_KEY);
}
const BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/** Base58 (Bitcoin alphabet) of `bytes`. */
function base58(bytes) {
    const digits = []; // base 58, least significant first
    for (const byte of bytes) {
        let carry = byte;
        for (let i = 0; i < digits.length; i += 1) {
            carry += digits[i] * 256;
            digits[i] = carry % 58;
            carry = Math.floor(carry / 58);
        }
        while (carry > 0) {
            digits.push(carry % 58);
            carry = Math.floor(carry / 58);
        }
    }
    let zeros = 0;
    while (zeros < bytes.length && bytes[zeros] === 0)
        zeros += 1;
    return "1".repeat(zeros) + digits.reverse().map((d) => BASE58[d]).join("");
}
/** The did:vibe of an Ed25519 public key: multibase base58btc of multicodec 0xed01 + key. */
function didOf(publicKey) {
    const prefixed = new Uint8Array(34);
    prefixed.set([0xed, 0x01]);
    prefixed.set(publicKey, 2);
    return `did:vibe:z${base58(prefixed)}`;
}
/** The signing key (non-extractable) and the DID of the key in `file`. */
async function importKeyFile(file) {
    if (!window.isSecureContext || !crypto.subtle) {
        throw new KeyFileError("The browser offers WebCrypto only to pages served over HTTPS (or from this computer). Use `vibe console` instead.");
    }
    if (file.size > MAX_KEY_FILE_BYTES)
        throw new KeyFileError(NOT_A_KEY);
    const bytes = new Uint8Array(await file.arrayBuffer());
    const material = readKeyFile(bytes);
    bytes.fill(0);
    const pkcs8 = new Uint8Array(48);
    pkcs8.set(PKCS8_ED25519_PREFIX);
    pkcs8.set(material.seed, 16);
    material.seed.fill(0);
    const ed25519 = { name: "Ed25519" };
    try {
        const key = await crypto.subtle.importKey("pkcs8", pkcs8, ed25519, false, ["sign"]);
        let publicKey = material.publicKey;
        if (publicKey === null) {
            // A seed alone: WebCrypto gives no public half of a non-extractable key, so a
            // second, extractable import tells it (JWK `x`), and is dropped at once.
            const copy = await crypto.subtle.importKey("pkcs8", pkcs8, ed25519, true, ["sign"]);
            const jwk = await crypto.subtle.exportKey("jwk", copy);
            publicKey = fromBase64(jwk.x ?? "");
            if (publicKey?.length !== 32)
                throw new KeyFileError(NOT_A_KEY);
        }
        return { key, did: didOf(publicKey) };
    }
    catch (error) {
        if (error instanceof KeyFileError)
            throw error;
        if (error instanceof DOMException && error.name === "NotSupportedError") {
            throw new KeyFileError("This browser cannot sign with Ed25519 keys (WebCrypto). Use `vibe console` instead.");
        }
        throw new KeyFileError(NOT_A_KEY);
    }
    finally {
        pkcs8.fill(0);
    }
}
/** Sign in with the key in `file`: challenge, sign in the page, log in as the console. */
async function signInWithKeyFile(file) {
    say("Signing in with your key file…");
    const { key, did } = await importKeyFile(file);
    const challenge = await fetch("/api/v1/auth/challenge", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{}",
        credentials: "omit",
    });
    if (!challenge.ok)
        throw await failure(challenge);
    const { nonce } = (await challenge.json());
    const timestamp = new Date().toISOString();
    const message = new TextEncoder().encode(`${did}|${nonce}|${timestamp}`);
    const signature = toBase64(new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, message)));
    const response = await fetch("/api/v1/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ did, nonce, timestamp, signature, client: "console" }),
        credentials: "omit",
    });
    if (!response.ok)
        throw await failure(response);
    tokens = await response.json();
}
/** The signed-out page's form: choose the key file, sign in with it. */
function keyFileSignIn() {
    const input = h("input", { type: "file", id: "key-file", "aria-describedby": "key-file-help" });
    const start = h("button", { type: "button" }, "Sign in with the key file");
    start.addEventListener("click", async () => {
        const file = input.files?.[0];
        // The page keeps no hold on the file once it is read.
        input.value = "";
        if (!file) {
            showError("Choose your key file first.");
            return;
        }
        showError(null);
        start.disabled = true;
        try {
            await signInWithKeyFile(file);
        }
        catch (error) {
            say("");
            showError(error instanceof KeyFileError
                ? error.message
                : `Signing in with the key file failed: ${error.message}`);
            return;
        }
        finally {
            start.disabled = false;
        }
        signedIn("Signed in with your key file.");
        history.replaceState(null, "", location.pathname + "#overview");
        await route();
        main.focus();
    });
    return h("section", { class: "card", "aria-labelledby": "key-file-heading" }, h("h2", { id: "key-file-heading" }, "Sign in with your key file"), h("p", { id: "key-file-help" }, "Without vibe at hand, choose your key file (", h("code", {}, "key.pem"), " in vibe's configuration folder, e.g. ", h("code", {}, "~/.config/vibe/key.pem"), "). This page signs in with it here: the key is not sent to the instance, not stored, and forgotten once you are signed in."), h("p", {}, h("label", { for: "key-file" }, "Owner key file"), " ", input), h("p", {}, start));
}
async function logout() {
    if (!tokens)
        return;
    try {
        await call("POST", "/api/v1/auth/logout", { refreshToken: tokens.refreshToken });
    }
    catch (error) {
        showError(`Logging out failed: ${error.message}`);
        return;
    }
    signedOut("You logged out of the console.");
}
/** The last backup in words: when, how it ended, how big, where. */
function backupText(last, succeeded) {
    if (last === null)
        return "none recorded on this instance";
    const at = new Date(last.finishedAt).toLocaleString();
    if (last.outcome === "Succeeded") {
        return `${at}: succeeded, ${bytes(last.size)}${last.objectKey ? ` (${last.objectKey})` : ""}`;
    }
    const before = succeeded ? `; the last that succeeded: ${new Date(succeeded.finishedAt).toLocaleString()}` : "; none succeeded yet";
    return `${at}: failed (${last.message ?? "no reason given"})${before}`;
}
async function overviewPage() {
    const o = await getJson("/api/v1/console/overview");
    const used = o.storage.blobsBytes ?? 0;
    const quota = o.storage.blobQuotaBytes;
    const services = h("ul", { class: "services" }, ...o.services.map((s) => h("li", { class: s.ok ? "ok" : "down" }, h("strong", {}, s.name === "couchdb" ? "CouchDB" : s.name.toUpperCase()), s.ok ? ": working" : `: not working (${s.reason ?? "no answer"})`)));
    const storage = h("div", { class: "storage" }, h("p", {}, `Documents: ${bytes(o.storage.documentsBytes)}`), quota === null
        ? h("p", {}, "Blob storage is not configured on this instance.")
        : h("div", {}, h("label", { for: "quota" }, `Blobs: ${bytes(used)} of ${bytes(quota)}`), h("progress", { id: "quota", max: String(quota), value: String(used) }, `${bytes(used)}`)));
    return [
        h("h1", {}, "Overview"),
        h("dl", { class: "facts" }, h("dt", {}, "Owner"), h("dd", { class: "mono", id: "owner-did" }, o.ownerDid), h("dt", {}, "Instance"), h("dd", { class: "mono" }, o.instanceUrl), h("dt", {}, "Version"), h("dd", {}, o.version), h("dt", {}, "Last backup"), h("dd", { id: "last-backup" }, backupText(o.lastBackup, o.lastSuccessfulBackup))),
        h("h2", {}, "Health"),
        services,
        h("h2", {}, "Storage"),
        storage,
    ];
}
function lastSeen(at) {
    return at === null ? "never" : new Date(at).toLocaleString();
}
/**
 * Set one permission of one app, and nothing else: the instance changes that grant in the
 * registration as stored now, so a change made elsewhere since the page loaded (the CLI,
 * another tab) is kept. `expected` is the setting the page showed; when it is no longer
 * so, nothing changes and the instance says why (409).
 */
async function setGrant(app, permission, setting) {
    const expected = app.grants[permission] ?? "ask";
    await call("POST", "/api/v1/apps/grant", { appId: app.appId, permission, setting, expected });
}
async function appsPage() {
    const { apps } = await getJson("/api/v1/apps");
    if (apps.length === 0)
        return [h("h1", {}, "Apps"), h("p", {}, "No app is registered.")];
    const cards = apps.map((app) => {
        const permissions = [...new Set([...app.permissions, ...Object.keys(app.grants)])].sort();
        const rows = permissions.map((permission) => {
            const granted = app.grants[permission] === "always";
            const state = granted ? "granted" : app.grants[permission] === "never" ? "refused" : "not granted";
            const action = granted
                ? button("Revoke", () => act(`Revoke “${permission}” from ${app.name}? Its open connections lose it at once.`, () => setGrant(app, permission, "never"), `Revoked ${permission} from ${app.name}.`), "danger")
                : button("Grant", () => act(null, () => setGrant(app, permission, "always"), `Granted ${permission} to ${app.name}.`));
            action.setAttribute("aria-label", `${granted ? "Revoke" : "Grant"} ${permission} for ${app.name}`);
            return [h("code", {}, permission), text(state), action];
        });
        return h("section", { class: "card", "aria-label": app.name }, h("h2", {}, app.name), h("p", { class: "mono" }, app.appId), app.description ? h("p", {}, app.description) : null, h("p", {}, `Last seen: ${lastSeen(app.lastSeenAt)}`), h("p", { class: "muted" }, `Registered ${new Date(app.registeredAt).toLocaleString()}; grants changed ${new Date(app.grantsUpdatedAt).toLocaleString()}.`), rows.length ? table(["Permission", "State", "Action"], rows, `Permissions of ${app.name}`) : h("p", {}, "It asks for no permission."), h("p", {}, button(`Delete ${app.name}`, () => act(`Delete the app ${app.name}? Its tokens, devices and open connections stop working at once.`, () => call("DELETE", `/api/v1/apps/${encodeURIComponent(app.appId)}`).then(() => undefined), `Deleted ${app.name}.`), "danger")));
    });
    return [h("h1", {}, "Apps"), ...cards];
}
async function devicesPage() {
    const { devices } = await getJson("/api/v1/devices");
    if (devices.length === 0)
        return [h("h1", {}, "Devices"), h("p", {}, "No device is trusted to sync.")];
    const rows = devices.map((d) => {
        const revoke = button("Revoke", () => act(`Revoke the device ${d.name}? It stops syncing at once.`, () => call("DELETE", `/api/v1/devices/${encodeURIComponent(d.deviceId)}`).then(() => undefined), `Revoked ${d.name}.`), "danger");
        revoke.setAttribute("aria-label", `Revoke ${d.name}`);
        return [
            text(d.name),
            text(d.appId ?? "your own device"),
            text(d.scopes.join(", ")),
            text(new Date(d.createdAt).toLocaleString()),
            text(lastSeen(d.lastSeenAt)),
            revoke,
        ];
    });
    return [
        h("h1", {}, "Devices"),
        table(["Name", "Acts as", "Scopes", "Registered", "Last seen", "Action"], rows, "Trusted devices"),
    ];
}
async function dataPage(params) {
    const collection = params.get("c");
    const id = params.get("id");
    if (collection && id)
        return documentPage(collection, id);
    if (collection)
        return collectionPage(collection, params.get("after"));
    const { collections, truncated } = await getJson("/api/v1/console/collections");
    if (collections.length === 0)
        return [h("h1", {}, "Data"), h("p", {}, "There are no documents yet.")];
    const rows = collections.map((c) => [
        h("a", { href: `#data?c=${encodeURIComponent(c.name)}` }, c.name),
        text(String(c.count)),
    ]);
    return [
        h("h1", {}, "Data"),
        truncated ? h("p", {}, "Counting stopped early on this large instance: the counts are at least these.") : null,
        table(["Collection", "Documents"], rows, "Collections"),
    ].filter((n) => !!n);
}
async function collectionPage(collection, after) {
    const query = new URLSearchParams({ limit: "20" });
    if (after)
        query.set("after", after);
    const page = await getJson(`/api/v1/console/collections/${encodeURIComponent(collection)}/documents?${query}`);
    const rows = page.docs.map((doc) => {
        const docId = String(doc._id);
        const fields = Object.keys(doc).filter((k) => !k.startsWith("_") && k !== "collection");
        const summary = fields
            .slice(0, 3)
            .map((k) => `${k}: ${JSON.stringify(doc[k])}`)
            .join(", ");
        return [
            h("a", { href: `#data?c=${encodeURIComponent(collection)}&id=${encodeURIComponent(docId)}` }, docId),
            text(summary.length > 120 ? summary.slice(0, 117) + "…" : summary),
        ];
    });
    const pager = h("p", { class: "pager" }, after ? h("a", { href: `#data?c=${encodeURIComponent(collection)}` }, "First page") : null, page.next
        ? h("a", { href: `#data?c=${encodeURIComponent(collection)}&after=${encodeURIComponent(page.next)}`, rel: "next" }, "Next page")
        : h("span", { class: "muted" }, "Last page"));
    return [
        h("p", {}, h("a", { href: "#data" }, "All collections")),
        h("h1", {}, `Collection ${collection}`),
        rows.length ? table(["Id", "Fields"], rows, `Documents of ${collection}`) : h("p", {}, "No documents."),
        pager,
    ];
}
async function documentPage(collection, id) {
    const rest = id.startsWith(`${collection}/`) ? id.slice(collection.length + 1) : id;
    const path = rest.split("/").map(encodeURIComponent).join("/");
    const doc = await getJson(`/api/v1/console/collections/${encodeURIComponent(collection)}/documents/${path}`);
    return [
        h("p", {}, h("a", { href: `#data?c=${encodeURIComponent(collection)}` }, `Back to ${collection}`)),
        h("h1", {}, `Document ${id}`),
        h("pre", { class: "json", id: "document-json", tabindex: "0", "aria-label": "The document as JSON" }, JSON.stringify(doc, null, 2)),
    ];
}
async function blobsPage(params) {
    const after = params.get("after");
    const query = new URLSearchParams({ limit: "50" });
    if (after)
        query.set("after", after);
    const page = await getJson(`/api/v1/console/blobs?${query}`);
    if (page.blobs.length === 0 && !after)
        return [h("h1", {}, "Blobs"), h("p", {}, "There are no blobs.")];
    const rows = page.blobs.map((b) => {
        const download = button("Download", () => act(null, async () => save(await call("GET", `/api/v1/console/blobs/content/${b.objectKey}`), b.filename), `Downloaded ${b.filename}.`, false));
        download.setAttribute("aria-label", `Download ${b.filename}`);
        const remove = button("Delete", () => act(`Delete ${b.filename} (${bytes(b.size)}) for good?`, () => call("DELETE", `/api/v1/console/blobs/${b.objectKey}`).then(() => undefined), `Deleted ${b.filename}.`), "danger");
        remove.setAttribute("aria-label", `Delete ${b.filename}`);
        return [
            text(b.filename),
            text(b.collection),
            text(b.contentType),
            text(bytes(b.size)),
            text(new Date(b.uploadedAt).toLocaleString()),
            h("span", { class: "actions" }, download, remove),
        ];
    });
    return [
        h("h1", {}, "Blobs"),
        table(["File", "Collection", "Type", "Size", "Uploaded", "Actions"], rows, "Blobs"),
        h("p", { class: "pager" }, after ? h("a", { href: "#blobs" }, "First page") : null, page.next ? h("a", { href: `#blobs?after=${encodeURIComponent(page.next)}`, rel: "next" }, "Next page") : null),
    ];
}
async function sessionsPage() {
    const { sessions } = await getJson("/api/v1/console/sessions");
    const rows = sessions.map((s) => [
        text(s.kind === "console" ? "Console" : "Signed login (vibe, an agent)"),
        when(s.createdAt),
        s.expiresAt === undefined ? text("not recorded") : when(s.expiresAt),
        text(s.current ? "this page" : ""),
    ]);
    const everywhere = button("Log out everywhere", async () => {
        if (!window.confirm("Log out everywhere? Every session ends, this one too, and apps lose the tokens made from them."))
            return;
        try {
            const answer = await (await call("POST", "/api/v1/console/sessions/logout-all", {})).json();
            signedOut(`You logged out everywhere (${answer.revoked} sessions ended).`);
        }
        catch (error) {
            showError(`Logging out everywhere failed: ${error.message}`);
        }
    }, "danger");
    return [
        h("h1", {}, "Sessions"),
        h("p", {}, "Each time you log in (with vibe, an agent, or this console) a session starts. Sessions neither logged out nor expired are listed here; each ends when it expires unless it is used again before."),
        table(["Kind", "Started", "Expires", ""], rows, "Your sessions"),
        h("p", {}, everywhere),
    ];
}
async function exportPage() {
    const encrypt = h("input", { type: "checkbox", id: "export-encrypt", checked: true });
    const blobs = h("input", { type: "checkbox", id: "export-blobs", checked: true });
    const start = button("Download export", () => act(null, async () => {
        const query = new URLSearchParams({ blobs: String(blobs.checked) });
        if (encrypt.checked)
            query.set("encrypt", "owner");
        say("Preparing the export…");
        const response = await call("GET", `/api/v1/export?${query}`);
        const disposition = response.headers.get("Content-Disposition") ?? "";
        const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? (encrypt.checked ? "export.vibe.age" : "export.vibe");
        await save(response, name);
    }, "The export was downloaded.", false));
    return [
        h("h1", {}, "Export"),
        h("p", {}, "One archive of the whole instance: documents with every revision, apps and grants, and blobs. ", h("code", {}, "vibe import"), " reads it into a new instance."),
        h("p", {}, h("label", {}, encrypt, " Encrypt to my key (only the holder of the key can read it)")),
        h("p", {}, h("label", {}, blobs, " Include blobs")),
        h("p", {}, start),
    ];
}
// ---------------------------------------------------------------- actions and routing
/** Run a change after an optional confirmation, report it in words, then redraw. */
async function act(question, work, done, redraw = true) {
    if (question !== null && !window.confirm(question))
        return;
    showError(null);
    try {
        await work();
        say(done);
        if (redraw)
            await route();
    }
    catch (error) {
        if (!tokens)
            return;
        showError(error.message);
        // A conflict means the page showed something that changed meanwhile: show what is so now.
        if (redraw && error instanceof ApiFailure && error.status === 409)
            await route();
    }
}
const pages = {
    overview: overviewPage,
    apps: appsPage,
    devices: devicesPage,
    data: dataPage,
    blobs: blobsPage,
    sessions: sessionsPage,
    export: exportPage,
};
async function route() {
    const hash = location.hash.slice(1);
    if (hash.startsWith("code=")) {
        const code = decodeURIComponent(hash.slice(5));
        // The code leaves the address bar (and the history) before anything else happens.
        history.replaceState(null, "", location.pathname + "#overview");
        await exchange(code);
        if (!tokens)
            return;
    }
    if (!tokens) {
        signedOut("Open the console with a link from `vibe console`, or sign in with your key file below.", false);
        return;
    }
    const [name, query] = (location.hash.slice(1) || "overview").split("?", 2);
    const page = pages[name] ?? overviewPage;
    for (const link of nav.querySelectorAll("a")) {
        if (link.getAttribute("href") === `#${name}`)
            link.setAttribute("aria-current", "page");
        else
            link.removeAttribute("aria-current");
    }
    const title = name in pages ? name[0].toUpperCase() + name.slice(1) : "Overview";
    document.title = `${title} · Vibe Cloud console`;
    main.setAttribute("aria-busy", "true");
    try {
        const content = await page(new URLSearchParams(query ?? ""));
        if (tokens)
            show(...content);
    }
    catch (error) {
        if (tokens) {
            showError(error.message);
            show(h("h1", {}, title), h("p", {}, "This page could not be loaded."));
        }
    }
    finally {
        main.removeAttribute("aria-busy");
    }
}
window.addEventListener("hashchange", () => {
    showError(null);
    say("");
    void route().then(() => main.focus());
});
logoutButton.addEventListener("click", () => void logout());
void route();
export {};
