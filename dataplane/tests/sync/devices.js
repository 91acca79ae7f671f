// Two PouchDB "devices" syncing through a data plane's /api/v1/sync endpoint.
// Run by dataplane/tests/sync.rs with NODE_PATH pointing at an npm install of
// pouchdb and pouchdb-adapter-memory. Input (env): SYNC_URL, TOKEN. Output: one JSON
// object on stdout with what each step observed; the Rust test asserts on it.
'use strict';
const PouchDB = require('pouchdb');
PouchDB.plugin(require('pouchdb-adapter-memory'));

const SYNC_URL = process.env.SYNC_URL;
const TOKEN = process.env.TOKEN;

function remote() {
  return new PouchDB(SYNC_URL, {
    skip_setup: true,
    fetch: (url, opts) => {
      opts.headers.set('Authorization', `Bearer ${TOKEN}`);
      return PouchDB.fetch(url, opts);
    },
  });
}

async function syncOnce(local) {
  const result = await local.sync(remote());
  return {
    pushed: result.push.docs_written,
    pulled: result.pull.docs_written,
    pushFailures: result.push.doc_write_failures,
    errors: result.push.errors.length + result.pull.errors.length,
  };
}

async function main() {
  const out = {};
  const a = new PouchDB('device-a', { adapter: 'memory' });
  const b = new PouchDB('device-b', { adapter: 'memory' });

  // 1. Each device writes; both sync; each sees the other's document.
  await a.put({ _id: 'notes/from-a', collection: 'notes', text: 'written on A' });
  await b.put({ _id: 'notes/from-b', collection: 'notes', text: 'written on B' });
  out.firstA = await syncOnce(a);
  out.firstB = await syncOnce(b);
  out.secondA = await syncOnce(a);
  out.aSeesB = (await a.get('notes/from-b')).text;
  out.bSeesA = (await b.get('notes/from-a')).text;

  // 2. An edit on A arrives on B.
  const doc = await a.get('notes/from-a');
  await a.put({ ...doc, text: 'edited on A' });
  await syncOnce(a);
  await syncOnce(b);
  out.bSeesEdit = (await b.get('notes/from-a')).text;

  // 3. Concurrent edits of one document become a conflict visible on both devices.
  const onA = await a.get('notes/from-b');
  const onB = await b.get('notes/from-b');
  await a.put({ ...onA, text: 'A says' });
  await b.put({ ...onB, text: 'B says' });
  // Push and pull run concurrently, so each device syncs twice to see both sides.
  await syncOnce(a);
  await syncOnce(b);
  await syncOnce(a);
  await syncOnce(b);
  const conflictA = await a.get('notes/from-b', { conflicts: true });
  const conflictB = await b.get('notes/from-b', { conflicts: true });
  out.conflictsA = conflictA._conflicts || [];
  out.conflictsB = conflictB._conflicts || [];
  out.winnerA = conflictA._rev;
  out.winnerB = conflictB._rev;

  // 4. Documents the document API would refuse are refused per item, the rest pass.
  await a.put({ _id: '_design/evil', views: { all: { map: 'function (doc) { emit(doc._id); }' } } });
  await a.put({ _id: 'notes/no-collection-field', text: 'missing collection' });
  await a.put({ _id: 'notes/fine', collection: 'notes', text: 'fine' });
  await a.put({
    _id: 'notes/with-file',
    collection: 'notes',
    _attachments: { 'f.txt': { content_type: 'text/plain', data: Buffer.from('hi').toString('base64') } },
  });
  const denied = [];
  const pushed = await a.replicate.to(remote()).on('denied', (err) => denied.push(err && err.id));
  out.refusedPush = { written: pushed.docs_written, failures: pushed.doc_write_failures, denied };

  // 5. A replication interrupted mid-way resumes from its checkpoint.
  const c = new PouchDB('device-c', { adapter: 'memory' });
  const many = [];
  for (let i = 0; i < 120; i++) {
    many.push({ _id: `bulk/${String(i).padStart(4, '0')}`, collection: 'bulk', n: i });
  }
  await c.bulkDocs(many);
  const first = await new Promise((resolve, reject) => {
    const rep = c.replicate.to(remote(), { batch_size: 10, batches_limit: 1 });
    let batches = 0;
    rep.on('change', () => {
      batches += 1;
      if (batches === 3) rep.cancel();
    });
    rep.on('complete', resolve);
    rep.on('error', reject);
  });
  out.interrupted = { written: first.docs_written, status: first.status };
  const resumed = await c.replicate.to(remote(), { batch_size: 10 });
  out.resumed = { read: resumed.docs_read, written: resumed.docs_written, status: resumed.status };

  // 6. Device B pulls everything written by C.
  await b.replicate.from(remote());
  out.bBulkCount = (await b.allDocs({ startkey: 'bulk/', endkey: 'bulk/\ufff0' })).rows.length;

  out.bDesignDocs = (await b.allDocs({ startkey: '_design/', endkey: '_design/\ufff0' })).rows.length;

  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ fatal: String((err && (err.stack || err.message)) || err), status: err && err.status }));
  process.exit(1);
});
