// The owner console of a Vibe Cloud instance (issue 19; docs/console.md).
//
// Signing in: `vibe console` opens /console/#code=<one-time code>. The page takes the code
// out of the address bar, exchanges it for an owner session (POST /api/v1/console/session)
// and keeps the tokens in this module's memory only: no cookie, no storage. A reload or a
// closed tab ends the page's session. Every request carries `Authorization: Bearer`.
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
function signedOut(reason) {
    tokens = null;
    nav.hidden = true;
    logoutButton.hidden = true;
    showError(null);
    show(h("h1", {}, "Signed out"), h("p", { id: "signed-out-reason" }, reason), h("p", {}, "To open the console, run ", h("code", {}, "vibe console"), " on a computer holding your key, and open the link it prints. Each link works once, for two minutes."));
    main.focus();
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
        signedOut("This console link cannot be used: " + error.message);
        return;
    }
    tokens = await response.json();
    say("Signed in.");
    nav.hidden = false;
    logoutButton.hidden = false;
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
async function setGrant(app, permission, setting) {
    const grants = { ...app.grants, [permission]: setting };
    const permissions = app.permissions.includes(permission) ? app.permissions : [...app.permissions, permission];
    const body = { appId: app.appId, name: app.name, permissions, grants };
    if (app.description)
        body.description = app.description;
    if (app.pictureUrl)
        body.pictureUrl = app.pictureUrl;
    await call("POST", "/api/v1/apps/upsert", body);
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
        if (tokens)
            showError(error.message);
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
        signedOut("Open the console with a link from `vibe console`.");
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
