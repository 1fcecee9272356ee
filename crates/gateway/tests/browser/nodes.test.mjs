// Browser test: a link cannot send the stored session elsewhere (issue 20). The page
// of a real node is opened with `?nodes=` naming a listener this test runs (plain TCP,
// not a chat node); the page must ignore it, resume on its own node, and its CSP must
// keep even a script from reaching that listener.
//
//   cargo build -p chat-gateway --bins
//   cd crates/gateway/tests/browser && npm ci && node --test nodes.test.mjs

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';

import { BrowserRun, signIn } from './cluster.mjs';

const run = new BrowserRun({
  apiKey: 'nodes-e2e-api-key-0123456789abcdef',
  jwtSecret: 'nodes-e2e-jwt-secret-with-enough-length-0123456789',
  viewport: { width: 1000, height: 700 },
  shotPrefix: 'nodes-',
});
const { openPage, step, pageErrors } = run;

/** The foreign listener: every connection and every byte that reaches it. */
const foreign = { connections: 0, bytes: '' };
const listener = net.createServer((socket) => {
  foreign.connections++;
  socket.on('data', (d) => (foreign.bytes += d.toString()));
  socket.on('error', () => {});
});
listener.listen(0, '127.0.0.1');
after(() => listener.close());

test('a ?nodes= link to a foreign address gets no socket and no session', { timeout: 120_000 }, async (t) => {
  if (!listener.listening) await once(listener, 'listening');
  const foreignWs = `ws://127.0.0.1:${/** @type {net.AddressInfo} */ (listener.address()).port}/ws`;
  let page;
  let me;

  await step(t, "the page's CSP connect-src lists exactly 'self' and server.client_nodes", async () => {
    const res = await fetch(`${run.node1.http}/`);
    const csp = res.headers.get('content-security-policy') ?? '';
    const connect = /connect-src ([^;]*)/.exec(csp)?.[1];
    assert.equal(connect, `'self' ${run.node1.ws} ${run.node2.ws}`, csp);
    assert.match(await res.text(), new RegExp(`<meta name="chat-client-nodes" content="${run.node1.ws} ${run.node2.ws}">`));
  });

  await step(t, 'a guest signs in on the real node: a session is stored', async () => {
    page = await openPage('mallory-target', `${run.node1.http}/`);
    me = await signIn(page, 'Victim');
    const stored = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('chat-session@')));
    assert.equal(stored.length, 1);
  });

  await step(t, 'reloaded with a foreign ?nodes=: ignored, resumes on its own node, nothing reaches the listener', async () => {
    await page.goto(`${run.node1.http}/?nodes=${foreignWs}`);
    // The old client went to the foreign address only (and never came online).
    await page.waitForFunction(() => document.body.dataset.connection === 'online', null, { timeout: 15_000 });
    assert.equal(await page.textContent('#me-id'), me, 'the same session, resumed');
    assert.equal(await page.evaluate(() => document.body.dataset.refusedNodes), '1', 'the page says it ignored the address');
    assert.equal(foreign.connections, 0, `the listener got: ${JSON.stringify(foreign.bytes)}`);
  });

  await step(t, "an allowed node in ?nodes= is used; the CSP stops a script's own socket to the listener", async () => {
    await page.goto(`${run.node1.http}/?nodes=${foreignWs},${run.node2.ws}`);
    await page.waitForFunction(() => document.body.dataset.connection === 'online', null, { timeout: 15_000 });
    assert.match(await page.textContent('#node-label'), /gw-2/);
    const outcome = await page.evaluate((url) => new Promise((resolve) => {
      try {
        const ws = new WebSocket(url);
        ws.onopen = () => resolve('open');
        ws.onerror = () => resolve('error');
      } catch (e) {
        resolve(`threw ${e}`);
      }
    }), foreignWs);
    assert.notEqual(outcome, 'open');
    assert.equal(foreign.connections, 0, `the listener got: ${JSON.stringify(foreign.bytes)}`);
  });

  await step(t, 'no uncaught page errors', async () => {
    assert.deepEqual(pageErrors, []);
  });
});
