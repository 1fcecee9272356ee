// Browser test of the web client's rooms (protocol 1.1) and of the first-time-user
// fixes: a real redis-server, two chat-gateway nodes, Debian's Chromium. One room
// across both nodes, three users, Alice with two tabs (one per node, sharing storage).
//
//   cargo build -p chat-gateway --bins
//   cd crates/gateway/tests/browser && npm ci && node --test
//
// Screenshots go to CHAT_ARTIFACTS (default <repo>/artifacts/browser): room-*.png.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';

import { ARTIFACTS, BrowserRun, eventually, signIn } from './cluster.mjs';

const API_KEY = 'rooms-e2e-api-key-0123456789abcdef';
const JWT_SECRET = 'rooms-e2e-jwt-secret-with-enough-length-0123456789';
const ROOM = 'team-room';

const run = new BrowserRun({ apiKey: API_KEY, jwtSecret: JWT_SECRET, viewport: { width: 1200, height: 760 }, shotPrefix: 'room-' });
const { openPage, step, pageErrors } = run;

function roomBodies(page) {
  return page.$$eval('#room-message-list [data-testid="body"]', (els) => els.map((e) => e.textContent));
}

function notices(page) {
  return page.$$eval('#room-message-list [data-testid="notice"]', (els) => els.map((e) => e.textContent));
}

function waitForRoomBody(page, text, what) {
  return eventually(async () => (await roomBodies(page)).includes(text), { what });
}

async function sendInRoom(page, text) {
  await page.fill('#room-composer-input', text);
  await page.press('#room-composer-input', 'Enter');
}

async function joinRoom(page, name) {
  await page.fill('#room-input', name);
  await page.click('#room-join-submit');
  await page.waitForSelector('#pane-room:not([hidden])', { timeout: 10_000 });
}

function roomCount(page) {
  return page.textContent('#room-count');
}

test('rooms in the web client across two nodes', { timeout: 240_000 }, async (t) => {
  let a1;
  let a2;
  let b;
  let c;
  let alice;
  let bob;
  let carol;
  let aliceContext;

  await step(t, 'sign-in explains a blank name and an invalid name in plain words', async () => {
    a1 = await openPage('alice-1', `${run.node1.http}/`);
    aliceContext = a1.context();
    await a1.waitForSelector('#signin-name');
    await a1.fill('#signin-name', '    ');
    await a1.click('#signin-submit');
    await eventually(async () => /type a name/i.test(await a1.textContent('#signin-error') ?? ''), { what: 'blank-name message' });
    assert.equal(await a1.evaluate(() => document.body.dataset.connection), 'idle', 'nothing was sent for a blank name');
    await a1.fill('#signin-name', 'Al<i>ce');
    await a1.click('#signin-submit');
    await eventually(async () => (await a1.textContent('#signin-error') ?? '').length > 0, { what: 'invalid-name message' });
    const text = await a1.textContent('#signin-error');
    assert.doesNotMatch(text, /username must be|bad_request/, 'no raw server text');
    assert.match(text, /Names can use letters, digits/);
  });

  await step(t, 'three users on two nodes; the sign-out button shows a sign-out icon', async () => {
    alice = await signIn(a1, 'Alice');
    b = await openPage('bob', `${run.node2.http}/`);
    bob = await signIn(b, 'Bob');
    c = await openPage('carol', `${run.node1.http}/?nodes=${run.node2.ws}`);
    carol = await signIn(c, 'Carol');
    assert.equal(new Set([alice, bob, carol]).size, 3);
    assert.equal(await a1.locator('#signout path[data-icon="sign-out"]').count(), 1);
    assert.match(await c.textContent('#node-label'), /gw-2/);
  });

  await step(t, 'search offers only users that exist; offline users say so', async () => {
    await b.fill('#search', 'g-doesnotexist-1234567890');
    await eventually(async () => /No user with this id/.test(await b.textContent('#search-note') ?? ''), { what: 'no-such-id note' });
    assert.equal(await b.locator('#search-results [data-testid="search-result"]').count(), 0, 'nothing offered for an unknown id');
    assert.doesNotMatch(await b.textContent('#search-panel') ?? '', /Start a chat with this user id/);
    await b.fill('#search', alice);
    await b.waitForSelector(`#search-results [data-user-id="${alice}"]`, { timeout: 10_000 });
    await b.fill('#search', '');
    await b.press('#search', 'Escape');
  });

  await step(t, 'Alice creates a room; her second tab (other node) lists it', async () => {
    await joinRoom(a1, 'Team Room');
    assert.equal(await a1.textContent('#room-name'), 'Team Room');
    assert.equal(await roomCount(a1), '1 member');
    a2 = await openPage('alice-2', `${run.node1.http}/?nodes=${run.node2.ws}`, aliceContext);
    await a2.waitForFunction(() => document.body.dataset.connection === 'online', null, { timeout: 15_000 });
    assert.match(await a2.textContent('#node-label'), /gw-2/);
    await a2.waitForSelector(`#rooms [data-room-id="${ROOM}"]`, { timeout: 10_000 });
    await a2.click(`#rooms [data-room-id="${ROOM}"]`);
    await a2.waitForSelector('#pane-room:not([hidden])');
  });

  await step(t, 'a blank room name gets a clear message', async () => {
    await b.fill('#room-input', '   ');
    await b.click('#room-join-submit');
    await eventually(async () => /Type a room name/.test(await b.textContent('#room-error') ?? ''), { what: 'blank room name message' });
  });

  await step(t, 'Bob (node 2) and Carol join: enter notices, count and presence dots', async () => {
    await joinRoom(b, ROOM);
    await joinRoom(c, ROOM);
    for (const [page, what] of [[a1, 'alice tab 1'], [a2, 'alice tab 2']]) {
      await eventually(async () => {
        const n = await notices(page);
        return n.includes('Bob joined the room') && n.includes('Carol joined the room');
      }, { what: `enter notices on ${what}` });
      await eventually(async () => (await roomCount(page)) === '3 members', { what: `member count on ${what}` });
    }
    assert.equal(await roomCount(c), '3 members');
    await eventually(async () => (await a1.locator(`#room-member-list [data-user-id="${bob}"] .presence.online`).count()) === 1, { what: 'bob online dot' });
    await eventually(async () => (await a1.locator('#room-member-list [data-testid="member"]').count()) === 3, { what: 'three members listed' });
    assert.equal(await c.locator(`#room-member-list [data-user-id="${alice}"] .presence.online`).count(), 1);
  });

  await step(t, 'messages reach every member and both of Alice\'s tabs', async () => {
    await sendInRoom(b, 'hello room from bob');
    for (const [page, what] of [[a1, 'alice 1'], [a2, 'alice 2'], [b, 'bob'], [c, 'carol']]) await waitForRoomBody(page, 'hello room from bob', what);
    await sendInRoom(a2, 'hi from alice tab 2');
    for (const [page, what] of [[a1, 'alice 1'], [a2, 'alice 2'], [b, 'bob'], [c, 'carol']]) await waitForRoomBody(page, 'hi from alice tab 2', what);
    // No duplicates in the sender's other tab.
    assert.equal((await roomBodies(a1)).filter((x) => x === 'hi from alice tab 2').length, 1);
    assert.equal((await roomBodies(a2)).filter((x) => x === 'hi from alice tab 2').length, 1);
    const authors = await c.$$eval('#room-message-list [data-testid="author"]', (els) => els.map((e) => e.textContent));
    assert.ok(authors.includes('Bob') && authors.includes('Alice'), `sender names shown: ${authors}`);
  });

  await step(t, 'a member looking elsewhere gets an unread badge', async () => {
    // Carol opens a 1:1 conversation with Bob (an existing user: offered by id).
    await c.fill('#search', bob);
    await c.waitForSelector(`#search-results [data-user-id="${bob}"]`, { timeout: 10_000 });
    await c.click(`#search-results [data-user-id="${bob}"]`);
    await c.waitForSelector('#pane-room', { state: 'hidden' });
    await c.waitForSelector('#pane-chat:not([hidden])');
    await sendInRoom(b, 'while carol looks away');
    await eventually(async () => (await c.textContent(`#rooms [data-room-id="${ROOM}"] [data-testid="room-unread"]`).catch(() => null)) === '1', { what: 'carol unread badge' });
    await c.screenshot({ path: path.join(ARTIFACTS, 'room-carol-unread.png') });
    await c.click(`#rooms [data-room-id="${ROOM}"]`);
    await waitForRoomBody(c, 'while carol looks away', 'carol opens the room');
    await eventually(async () => (await c.locator(`#rooms [data-room-id="${ROOM}"] [data-testid="room-unread"]`).count()) === 0, { what: 'badge cleared' });
  });

  await step(t, 'a reloaded tab keeps the room and recovers what was sent while away', async () => {
    await a2.goto('about:blank');
    await sendInRoom(b, 'sent while tab 2 was away');
    await waitForRoomBody(a1, 'sent while tab 2 was away', 'alice tab 1 live');
    const stored = await a1.evaluate(() => JSON.parse(localStorage.getItem(`chat-session@${location.origin}`) ?? '{}'));
    assert.ok(stored.rooms && stored.rooms['team-room'], `room cursor stored next to the 1:1 cursor: ${JSON.stringify(stored)}`);
    assert.ok(stored.cursor, '1:1 cursor still stored');
    await a2.goto(`${run.node1.http}/?nodes=${run.node2.ws}`);
    await a2.waitForSelector('#pane-room:not([hidden])', { timeout: 15_000 });
    assert.equal(await a2.textContent('#room-name'), 'Team Room');
    await waitForRoomBody(a2, 'sent while tab 2 was away', 'alice tab 2 after reload');
    assert.equal((await roomBodies(a2)).filter((x) => x === 'sent while tab 2 was away').length, 1);
  });

  await step(t, 'a dropped connection resumes with hello.rooms and replays the room exactly', async () => {
    /** @type {any[]} */
    const hellos = [];
    a1.on('websocket', (ws) => ws.on('framesent', (f) => {
      const text = typeof f.payload === 'string' ? f.payload : '';
      if (text.includes('"hello"')) hellos.push(JSON.parse(text));
    }));
    // Drop tab 1's socket; while it is away Bob sends two messages.
    await a1.evaluate(() => {
      const { chat } = /** @type {any} */ (window).chatClient;
      chat.options.backoffBaseMs = 1500;
      chat.ws?.close();
    });
    await sendInRoom(b, 'during the gap 1');
    await sendInRoom(b, 'during the gap 2');
    await a1.waitForFunction(() => document.body.dataset.connection === 'online', null, { timeout: 20_000 });
    await waitForRoomBody(a1, 'during the gap 2', 'alice tab 1 replay');
    assert.ok(hellos.some((h) => h.rooms && h.rooms[ROOM]), `hello.rooms sent: ${JSON.stringify(hellos)}`);
    const list = await roomBodies(a1);
    assert.equal(list.filter((x) => x.startsWith('during the gap')).length, 2, `each once: ${list}`);
    assert.ok(list.indexOf('during the gap 1') < list.indexOf('during the gap 2'), 'in order');
  });

  await step(t, 'Carol leaves: a leave notice, the count drops, her list forgets the room', async () => {
    await c.click('#room-leave');
    await c.waitForSelector(`#rooms [data-room-id="${ROOM}"]`, { state: 'detached', timeout: 10_000 });
    for (const [page, what] of [[a1, 'alice 1'], [a2, 'alice 2'], [b, 'bob']]) {
      await eventually(async () => (await notices(page)).includes('Carol left the room'), { what: `leave notice on ${what}` });
      await eventually(async () => (await roomCount(page)) === '2 members', { what: `count on ${what}` });
    }
    await a1.screenshot({ path: path.join(ARTIFACTS, 'room-alice.png') });
  });

  await step(t, 'an offline user in search says offline or last seen, not a raw id', async () => {
    await c.click('#signout');
    await c.waitForSelector('#signin:not([hidden])');
    await b.fill('#search', 'Carol');
    const row = `#search-results [data-user-id="${carol}"]`;
    await b.waitForSelector(row, { timeout: 10_000 });
    await eventually(async () => /offline|last seen/.test(await b.textContent(`${row} .conversation-preview`) ?? ''), { what: 'offline subtitle' });
    assert.notEqual(await b.textContent(`${row} .conversation-preview`), carol);
    assert.equal(await b.locator(`${row} .presence.online`).count(), 0);
  });

  await step(t, 'no uncaught page errors', async () => {
    assert.deepEqual(pageErrors, []);
  });
});
