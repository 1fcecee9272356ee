// Browser test of the bundled web client: a real redis-server, two chat-gateway nodes,
// Debian's Chromium driven by playwright-core, two users on different nodes.
//
//   cargo build -p chat-gateway
//   cd crates/gateway/tests/browser && npm install && node --test
//
// Environment: CHAT_GATEWAY_BIN, CHAT_ARTIFACTS, CHROMIUM (defaults in cluster.mjs,
// which also holds the setup this test shares with rooms.test.mjs).
//
// Every step runs; after a failed step the later ones (which build on it) are
// reported as skipped and the test fails.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';

import { ARTIFACTS, BIN, BrowserRun, eventually, signIn } from './cluster.mjs';

const API_KEY = 'e2e-api-key-0123456789abcdef';
const JWT_SECRET = 'e2e-jwt-secret-with-enough-length-0123456789';

const run = new BrowserRun({ apiKey: API_KEY, jwtSecret: JWT_SECRET, viewport: { width: 1100, height: 720 } });
const { openPage, step, pageErrors, dialogs } = run;

/** @param {string} name */
function shot(name) {
  return (/** @type {import('playwright-core').Page} */ page) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

/** Message bodies in the open conversation, as the page shows them. @param {import('playwright-core').Page} page */
function bodies(page) {
  return page.$$eval('#message-list [data-testid="body"]', (els) => els.map((e) => e.textContent));
}

/** @param {import('playwright-core').Page} page @param {string} text */
async function sendViaComposer(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** @param {import('playwright-core').Page} page @param {string} text @param {string} what */
function waitForBody(page, text, what) {
  return eventually(async () => (await bodies(page)).includes(text), { what });
}

/** A JWT from the gateway's own `token` subcommand (HS256 with the nodes' secret). */
async function mintToken(user, name) {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile(BIN, ['token', '--user', user, '--name', name], { env: { PATH: process.env.PATH, CHAT_AUTH__JWT_SECRET: JWT_SECRET } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`chat-gateway token: ${stderr || err.message}`));
      else resolve(stdout.trim());
    });
  });
}

test('web client against a two-node cluster', { timeout: 240_000 }, async (t) => {
  let alice;
  let bob;
  let a;
  let b;

  await step(t, 'nodes serve the web client with no-cache', async () => {
    const hint = '(is web::routes() merged into the router in http.rs, replacing the old "/" route?)';
    for (const [file, type] of [['/', 'text/html'], ['/app.js', 'text/javascript'], ['/chat-protocol.js', 'text/javascript'], ['/view.js', 'text/javascript'], ['/app.css', 'text/css']]) {
      const res = await fetch(`${run.node1.http}${file}`);
      assert.equal(res.status, 200, `GET ${file} ${hint}`);
      assert.match(res.headers.get('content-type') ?? '', new RegExp(`^${type}`), `content type of ${file} ${hint}`);
      assert.equal(res.headers.get('cache-control'), 'no-cache', `cache-control of ${file} ${hint}`);
    }
  });

  await step(t, 'two guests sign in on different nodes', async () => {
    a = await openPage('alice', `${run.node1.http}/`);
    // Bob's page lists both nodes: node 2 first, node 1 to fail over to.
    b = await openPage('bob', `${run.node2.http}/?nodes=${run.node2.ws},${run.node1.ws}`);
    await a.waitForSelector('#signin-name');
    await shot('signin')(a);
    alice = await signIn(a, 'Alice');
    bob = await signIn(b, 'Bob');
    assert.notEqual(alice, bob);
    assert.match(await a.textContent('#node-label'), /gw-1/);
    assert.match(await b.textContent('#node-label'), /gw-2/);
  });

  await step(t, 'directory search finds the peer by name', async () => {
    await a.fill('#search', 'Bo');
    await a.waitForSelector(`#search-results [data-user-id="${bob}"]`, { timeout: 10_000 });
    await a.fill('#search', '');
    await a.press('#search', 'Escape');
  });

  await step(t, 'alice starts a conversation by pasting bob\'s user id', async () => {
    await a.fill('#search', bob);
    await a.click(`#search-results [data-user-id="${bob}"]`);
    await a.waitForSelector('#pane-chat:not([hidden])');
    assert.equal(await a.isVisible(`#conversations [data-peer-id="${bob}"]`), true);
  });

  await step(t, 'messages are exchanged both ways, acknowledged and de-duplicated', async () => {
    await sendViaComposer(a, 'Hello Bob 👋');
    await waitForBody(a, 'Hello Bob 👋', 'alice to show her own message');
    await a.waitForSelector('#message-list li.mine[data-status="sent"], #message-list li.mine[data-status="read"]', { timeout: 10_000 });
    // Bob sees a new conversation with an unread badge, then opens it.
    await b.waitForSelector(`#conversations [data-peer-id="${alice}"] [data-testid="unread"]`, { timeout: 10_000 });
    await b.click(`#conversations [data-peer-id="${alice}"]`);
    await waitForBody(b, 'Hello Bob 👋', 'bob to see alice\'s message');
    assert.equal(await b.locator(`#conversations [data-peer-id="${alice}"] [data-testid="unread"]`).count(), 0, 'badge cleared once opened');
    await sendViaComposer(b, 'Hi Alice!');
    await waitForBody(a, 'Hi Alice!', 'alice to see bob\'s reply');
    // Shift+Enter is a newline, Enter sends.
    await a.fill('#composer-input', 'line one');
    await a.press('#composer-input', 'Shift+Enter');
    await a.type('#composer-input', 'line two');
    await a.press('#composer-input', 'Enter');
    await waitForBody(b, 'line one\nline two', 'bob to see a two-line message');
    assert.equal((await bodies(a)).filter((x) => x === 'Hello Bob 👋').length, 1, 'own message shown once (ack + echo)');
    assert.ok(await a.isVisible('#message-list .day'), 'a day separator is shown');
    const preview = await b.textContent(`#conversations [data-peer-id="${alice}"] .conversation-preview`);
    assert.match(preview ?? '', /line one line two/);
  });

  await step(t, 'a body with HTML is shown as literal text', async () => {
    const evil = '<img src=x onerror=alert(1)>';
    await sendViaComposer(a, evil);
    await waitForBody(b, evil, 'bob to see the HTML as text');
    await waitForBody(a, evil, 'alice to see the HTML as text');
    for (const page of [a, b]) {
      assert.equal(await page.locator('#message-list img').count(), 0, 'no element was created from a body');
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(dialogs, [], 'no dialog fired');
  });

  await step(t, 'typing indicator reaches the peer', async () => {
    await b.fill('#composer-input', '');
    // Typed at human speed: notices go out at most every 2 s, so a burst right after
    // the previous one may be throttled; a few seconds of typing always gets through.
    await b.type('#composer-input', 'I am writing a longer reply', { delay: 120 });
    await a.waitForFunction(() => /is typing/.test(document.getElementById('typing')?.textContent ?? ''), null, { timeout: 10_000 });
    assert.match(await a.textContent('#typing'), /Bob is typing|is typing/);
    await shot('alice-typing')(a);
    await b.fill('#composer-input', '');
  });

  await step(t, 'read marks: alice sees bob has read her messages', async () => {
    await a.waitForFunction(() => {
      const mine = [...document.querySelectorAll('#message-list li.mine')];
      return mine.length > 0 && mine[mine.length - 1].getAttribute('data-status') === 'read';
    }, null, { timeout: 10_000 });
  });

  await step(t, 'presence: alice sees bob online', async () => {
    await a.waitForSelector(`#conversations [data-peer-id="${bob}"] .presence.online`, { timeout: 10_000 });
  });

  await step(t, 'history loads older pages when scrolling up', async () => {
    // 60 more messages from alice (on a second connection of hers, paced under the
    // rate limit) push the first ones out of the newest page of 50.
    const sent = await a.evaluate(async (url) => {
      const stored = JSON.parse(localStorage.getItem(`chat-session@${location.origin}`) ?? '{}');
      const ws = new WebSocket(url);
      const acks = new Set();
      await new Promise((resolve) => (ws.onopen = resolve));
      let welcome;
      ws.onmessage = (e) => {
        const f = JSON.parse(e.data);
        if (f.type === 'welcome') welcome = f;
        if (f.type === 'ack') acks.add(f.ref);
      };
      ws.send(JSON.stringify({ type: 'hello', session: stored.session }));
      while (!welcome) await new Promise((r) => setTimeout(r, 20));
      const peer = document.querySelector('#conversations [data-peer-id]')?.getAttribute('data-peer-id');
      for (let i = 0; i < 60; i++) {
        ws.send(JSON.stringify({ type: 'send', ref: `b${i}`, to: peer, body: `bulk ${i}`, nonce: `bulk-${i}-${welcome.user.id}` }));
        await new Promise((r) => setTimeout(r, 110));
      }
      const deadline = Date.now() + 10_000;
      while (acks.size < 60 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      ws.close();
      return acks.size;
    }, run.node1.ws);
    assert.equal(sent, 60);
    await waitForBody(b, 'bulk 59', 'bob to receive the bulk messages live');
    await b.reload();
    await b.waitForFunction(() => document.body.dataset.connection === 'online', null, { timeout: 15_000 });
    await waitForBody(b, 'bulk 59', 'bob to see the newest page after reload');
    assert.equal((await bodies(b)).includes('Hello Bob 👋'), false, 'only the newest page is loaded at first');
    await eventually(async () => {
      await b.$eval('#messages', (el) => el.scrollTo(0, 0));
      return (await bodies(b)).includes('Hello Bob 👋');
    }, { what: 'older history to load on scroll-up' });
    const shown = await bodies(b);
    assert.ok(shown.indexOf('Hello Bob 👋') < shown.indexOf('bulk 0'), 'older messages above newer ones');
    assert.equal(new Set(shown).size, shown.length, 'no duplicates after paging');
  });

  await step(t, 'a reload keeps identity and history', async () => {
    await b.reload();
    await b.waitForFunction(() => document.body.dataset.connection === 'online', null, { timeout: 15_000 });
    assert.equal(await b.textContent('#me-id'), bob, 'same user id after reload');
    assert.equal(await b.textContent('#me-name'), 'Bob');
    await waitForBody(b, 'bulk 59', 'history after reload');
    assert.ok(await b.isVisible(`#conversations [data-peer-id="${alice}"]`), 'conversation still listed');
  });

  await step(t, 'conversation list comes from the server', async () => {
    await b.evaluate(() => {
      for (const key of Object.keys(localStorage)) if (key.startsWith('chat-web:')) localStorage.removeItem(key);
    });
    await b.reload();
    await b.waitForSelector(`#conversations [data-peer-id="${alice}"]`, { timeout: 10_000 });
    const name = await b.textContent(`#conversations [data-peer-id="${alice}"] .conversation-name`);
    assert.equal(name, 'Alice', 'peer name from the server');
    await b.click(`#conversations [data-peer-id="${alice}"]`);
    await waitForBody(b, 'bulk 59', 'history after opening');
  });

  await step(t, 'a node crash: the client fails over and catches up', async () => {
    await run.cluster.kill(run.node2);
    await b.waitForFunction(() => document.body.dataset.connection !== 'online', null, { timeout: 5_000 })
      .then(() => shot('bob-reconnecting')(b))
      .catch(() => {});
    // Both sides send while bob is cut off: alice's message must be recovered, bob's
    // (queued or unacknowledged) must be delivered exactly once.
    await sendViaComposer(a, 'While you were away');
    await sendViaComposer(b, 'Sent during the outage');
    await b.waitForFunction(() => document.body.dataset.connection !== 'online' || /gw-1/.test(document.getElementById('node-label')?.textContent ?? ''), null, { timeout: 10_000 });
    await b.waitForFunction(() => document.body.dataset.connection === 'online', null, { timeout: 20_000 });
    assert.match(await b.textContent('#node-label'), /gw-1/, 'reconnected through the other node');
    await waitForBody(b, 'While you were away', 'bob to catch up with what was sent meanwhile');
    await waitForBody(a, 'Sent during the outage', 'alice to get bob\'s queued message');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await bodies(a)).filter((x) => x === 'Sent during the outage').length, 1, 'delivered once');
    assert.equal((await bodies(b)).filter((x) => x === 'Sent during the outage').length, 1, 'shown once on the sender');
    await b.waitForSelector('#message-list li.mine:last-child:is([data-status="sent"],[data-status="read"])', { timeout: 10_000 });
    await sendViaComposer(a, 'Welcome back');
    await waitForBody(b, 'Welcome back', 'live delivery after failover');
  });

  await step(t, 'a host app\'s token in the URL fragment signs in and is removed', async () => {
    const token = await mintToken('carol', 'Carol');
    const c = await openPage('carol', `${run.node1.http}/#token=${token}`);
    await c.waitForFunction(() => document.body.dataset.connection === 'online', null, { timeout: 15_000 });
    assert.equal(await c.textContent('#me-id'), 'carol');
    assert.equal(await c.textContent('#me-name'), 'Carol');
    assert.equal(await c.evaluate(() => location.hash), '', 'token removed from the URL');
    // Directory (when there) or id: carol writes to alice, who sees a new conversation.
    await c.fill('#search', alice);
    await c.click(`#search-results [data-user-id="${alice}"]`);
    await sendViaComposer(c, 'Hi from Carol');
    await a.waitForSelector('#conversations [data-peer-id="carol"] [data-testid="unread"]', { timeout: 10_000 });
    assert.equal(await a.locator('#conversations [data-testid="conversation"]').first().getAttribute('data-peer-id'), 'carol', 'newest conversation first');
  });

  const apiProbe = await fetch(`${run.node1.http}/api/v1/users/nobody/disconnect`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}` } }).catch(() => null);
  await step(t, 'signed out by the host app (close 4001): back to sign-in, session forgotten', async () => {
    const res = await fetch(`${run.node1.http}/api/v1/users/${bob}/disconnect`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}` } });
    assert.equal(res.status, 204);
    await b.waitForSelector('#signin:not([hidden])', { timeout: 10_000 });
    assert.match(await b.textContent('#signin-error'), /signed out/i);
    const stored = await b.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('chat-session@')));
    assert.deepEqual(stored, [], 'stored session cleared');
    await shot('bob-signed-out')(b);
  });

  await step(t, 'no page errors', () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(dialogs, []);
  });
});
