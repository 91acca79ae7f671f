// One PouchDB "device" for e2e/tests/devices.rs: its own local database (memory
// adapter), driven by JSON-line commands on stdin, one JSON answer per line on stdout.
//
// Run with NODE_PATH pointing at an npm install of pouchdb and pouchdb-adapter-memory
// (deploy/local/install-servers puts one under $VIBE_TOOLS_DIR/pouchdb-client).
//
// Command:  {"req": 1, "op": "put", ...arguments}
// Answer:   {"req": 1, "ok": true, "result": ...} or {"req": 1, "ok": false, "error": "..."}
//
// Operations
//   start {url, authorization}   live two-way replication with url (retrying, with a short
//                                back-off), the Authorization header sent on every request;
//                                answers once the first round has caught up (paused)
//   stop                         cancel the replication
//   put {doc}                    write locally -> {id, rev}
//   remove {id}                  delete the current revision locally -> {id, rev}
//   get {id}                     the winning revision with _conflicts, or null
//   wait {id, rev?|deleted?|leaves?, timeoutMs?}
//                                until the local winner has rev `rev` / the document is
//                                deleted / its leaf revisions (winner + conflicts) include
//                                all of `leaves`; -> the document (null when deleted)
//   waitCount {count, timeoutMs?} until exactly `count` documents exist -> {id: rev}
//   all                          {id: rev} of every local document
//   stats                        replication counters (docs written each way, fatal errors,
//                                denied documents, failed requests to the instance)
//
// Waits are driven by the local database's changes feed, never by polling on a timer.
'use strict';
const readline = require('readline');
const PouchDB = require('pouchdb');
PouchDB.plugin(require('pouchdb-adapter-memory'));

const NAME = process.argv[2] || 'device';
const local = new PouchDB(`${NAME}-${process.pid}`, { adapter: 'memory' });
const log = (...args) => process.stderr.write(`[${NAME}] ${args.join(' ')}\n`);

let replication = null;
const stats = {
  pushed: 0,
  pulled: 0,
  denied: [],
  errors: [],
  pausedWithError: 0,
  // Requests to the instance that failed, by kind ('no answer' or the 5xx status).
  failedRequests: {},
  state: 'stopped',
};

function failed(kind) {
  stats.failedRequests[kind] = (stats.failedRequests[kind] || 0) + 1;
}

function remote(url, authorization) {
  return new PouchDB(url, {
    skip_setup: true,
    fetch: async (target, opts) => {
      opts.headers.set('Authorization', authorization);
      let response;
      try {
        response = await PouchDB.fetch(target, opts);
      } catch (err) {
        // PouchDB aborts its own pending requests when a replication is cancelled.
        if (err.name !== 'AbortError') failed('no answer');
        throw err;
      }
      if (response.status >= 500) {
        failed(String(response.status));
        log(opts.method || 'GET', String(target).replace(/^.*\/api\/v1\/sync\//, ''), '->', response.status);
      }
      return response;
    },
  });
}

// A device reconnects quickly after the instance comes back (PouchDB's default back-off
// doubles up to ten minutes).
function backOff(delay) {
  return delay === 0 ? 200 : Math.min(delay * 2, 1000);
}

function start({ url, authorization }) {
  if (replication) throw new Error('already replicating');
  return new Promise((resolve, reject) => {
    let settled = false;
    replication = local.sync(remote(url, authorization), {
      live: true,
      retry: true,
      back_off_function: backOff,
    });
    replication
      .on('change', (info) => {
        // docs_written counts from the start of this replication, per direction.
        if (info.direction === 'push') stats.pushed = info.change.docs_written;
        else stats.pulled = info.change.docs_written;
      })
      .on('active', () => {
        stats.state = 'active';
      })
      .on('paused', (err) => {
        stats.state = err ? 'retrying' : 'paused';
        if (err) {
          stats.pausedWithError += 1;
          log('paused with error:', err.status || '', err.message || String(err));
        } else if (!settled) {
          settled = true;
          resolve({ state: stats.state });
        }
      })
      .on('denied', (err) => {
        stats.denied.push({ id: err && err.id, reason: err && (err.reason || err.message) });
      })
      .on('error', (err) => {
        stats.state = 'failed';
        stats.errors.push({ status: err && err.status, message: String((err && err.message) || err) });
        log('replication failed:', err && err.status, (err && err.message) || String(err));
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
  });
}

async function getOrNull(id) {
  try {
    return await local.get(id, { conflicts: true });
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

async function allDocs() {
  const rows = (await local.allDocs()).rows.filter((row) => !row.id.startsWith('_design/'));
  const out = {};
  for (const row of rows) out[row.id] = row.value.rev;
  return out;
}

// Resolve with `check()`'s first defined result, re-checking after every local change.
async function waitUntil(what, check, timeoutMs) {
  const since = (await local.info()).update_seq;
  return new Promise((resolve, reject) => {
    let done = false;
    let last;
    const feed = local.changes({ live: true, since });
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      feed.cancel();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(
      () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last seen ${JSON.stringify(last)}; stats ${JSON.stringify(stats)}`)),
      timeoutMs,
    );
    const attempt = async () => {
      try {
        const [met, seen] = await check();
        last = seen;
        if (met) finish(null, seen);
      } catch (err) {
        finish(err);
      }
    };
    feed.on('change', attempt);
    feed.on('error', (err) => finish(err));
    attempt();
  });
}

function leavesOf(doc) {
  return doc ? [doc._rev, ...(doc._conflicts || [])] : [];
}

const operations = {
  start,
  async stop() {
    if (replication) {
      replication.cancel();
      replication = null;
    }
    stats.state = 'stopped';
    return null;
  },
  async put({ doc }) {
    const written = await local.put(doc);
    return { id: written.id, rev: written.rev };
  },
  async remove({ id }) {
    const doc = await local.get(id);
    const removed = await local.remove(doc);
    return { id: removed.id, rev: removed.rev };
  },
  async get({ id }) {
    return getOrNull(id);
  },
  async wait({ id, rev, deleted, leaves, timeoutMs = 30000 }) {
    return waitUntil(
      `${id} ${JSON.stringify({ rev, deleted, leaves })}`,
      async () => {
        const doc = await getOrNull(id);
        let met;
        if (rev) met = doc !== null && doc._rev === rev;
        else if (deleted) met = doc === null;
        else if (leaves) met = leaves.every((l) => leavesOf(doc).includes(l));
        else met = doc !== null;
        return [met, doc];
      },
      timeoutMs,
    );
  },
  async waitCount({ count, timeoutMs = 30000 }) {
    return waitUntil(
      `${count} documents`,
      async () => {
        const docs = await allDocs();
        return [Object.keys(docs).length === count, docs];
      },
      timeoutMs,
    );
  },
  async all() {
    return allDocs();
  },
  async stats() {
    return stats;
  },
};

function answer(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const input = readline.createInterface({ input: process.stdin });
input.on('line', async (line) => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    answer({ req: null, ok: false, error: `not JSON: ${err.message}` });
    return;
  }
  const operation = operations[command.op];
  if (!operation) {
    answer({ req: command.req, ok: false, error: `unknown operation ${command.op}` });
    return;
  }
  try {
    const result = await operation(command);
    answer({ req: command.req, ok: true, result: result === undefined ? null : result });
  } catch (err) {
    answer({
      req: command.req,
      ok: false,
      status: err && err.status,
      error: String((err && (err.message || err.reason)) || err),
    });
  }
});
input.on('close', async () => {
  if (replication) replication.cancel();
  process.exit(0);
});
