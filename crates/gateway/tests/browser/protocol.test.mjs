// Unit tests of chat-protocol.js with a scripted fake WebSocket: no browser, no server.
// Run with the browser test: `node --test` in this directory.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ChatConnection, compareIds } from '../../src/web/chat-protocol.js';

/** The sockets opened by the connection under test, newest last. */
let sockets = [];

/** Enough of the browser WebSocket for ChatConnection, driven by the test. */
class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} frames the client sent */
    this.sent = [];
    sockets.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.();
    });
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  /** The server sends a frame. */
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  /** The server (or the network) closes the socket. */
  drop(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  last(type) {
    return [...this.sent].reverse().find((f) => f.type === type);
  }
}

class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

function welcome(extra = {}) {
  return { type: 'welcome', session: 's1', user: { id: 'u-a', name: 'A' }, resumed: false, recovered: false, node: 'gw-1', limits: { max_body: 4000 }, unread: [], cursor: '5-0', ...extra };
}

const msg = (id, from = 'u-b', to = 'u-a') => ({ id, conversation: 'dm:u-a:u-b', from, to, body: `m ${id}`, sent_at: '2026-01-01T00:00:00Z' });

function connection(storage = new MemoryStorage()) {
  sockets = [];
  const chat = new ChatConnection({ storage, storageKey: 'k', WebSocket: /** @type {any} */ (FakeSocket), backoffBaseMs: 5, backoffMaxMs: 20, requestTimeoutMs: 200 });
  return { chat, storage };
}

test('signs in, stores session and welcome cursor, then resumes with both', async () => {
  const { chat, storage } = connection();
  const connected = chat.connect(['ws://a/ws', 'ws://b/ws'], { username: 'A' });
  await tick();
  assert.deepEqual(sockets[0].sent[0], { type: 'hello', client: 'chat-web/1', username: 'A' });
  sockets[0].push(welcome());
  assert.equal((await connected).user.id, 'u-a');
  assert.deepEqual(JSON.parse(storage.getItem('k')), { session: 's1', user: { id: 'u-a', name: 'A' }, cursor: '5-0' });

  sockets[0].push({ type: 'message', message: msg('6-0'), cursor: '6-1' });
  const states = [];
  chat.on('state', (s) => states.push(s.state));
  sockets[0].drop(1001);
  await tick(40);
  assert.equal(sockets[1].url, 'ws://b/ws', 'rotates to the next node');
  assert.deepEqual(sockets[1].sent[0], { type: 'hello', client: 'chat-web/1', session: 's1', last_seen: '6-1' });
  assert.deepEqual(states.slice(0, 2), ['reconnecting', 'connecting']);
  chat.close();
});

test('drops duplicate messages by conversation and id', async () => {
  const { chat } = connection();
  const got = [];
  chat.on('message', (e) => got.push(e.message.id));
  const connected = chat.connect('ws://a/ws', { username: 'A' });
  await tick();
  sockets[0].push(welcome());
  await connected;
  for (const id of ['7-0', '7-0', '8-0', '7-0']) sockets[0].push({ type: 'message', message: msg(id), cursor: `${id}x` });
  assert.deepEqual(got, ['7-0', '8-0']);
  chat.close();
});

test('an unacknowledged send is resent with its nonce after a reconnect', async () => {
  const { chat } = connection();
  const connected = chat.connect('ws://a/ws', { username: 'A' });
  await tick();
  sockets[0].push(welcome());
  await connected;
  const sent = chat.send('u-b', 'hello');
  const first = sockets[0].last('send');
  sockets[0].drop(1006);
  await tick(40);
  sockets[1].push(welcome({ recovered: true, resumed: true }));
  const again = sockets[1].last('send');
  assert.equal(again.nonce, first.nonce);
  assert.equal(again.body, 'hello');
  const acks = [];
  chat.on('ack', (a) => acks.push(a.nonce));
  sockets[1].push({ type: 'ack', ref: again.ref, message: msg('9-0', 'u-a', 'u-b') });
  assert.equal((await sent).id, '9-0');
  assert.deepEqual(acks, [first.nonce]);
  chat.close();
});

test('close 4001 forgets the session and reports signed-out', async () => {
  const { chat, storage } = connection();
  const connected = chat.connect('ws://a/ws', { username: 'A' });
  await tick();
  sockets[0].push(welcome());
  await connected;
  const states = [];
  chat.on('state', (s) => states.push(s.state));
  sockets[0].drop(4001, 'signed out');
  await tick(30);
  assert.deepEqual(states, ['signed-out']);
  assert.equal(storage.getItem('k'), null);
  assert.equal(sockets.length, 1, 'no reconnect');
});

test('requests resolve by ref, reject on error and time out; refusals mark features', async () => {
  const { chat } = connection();
  const connected = chat.connect('ws://a/ws', { username: 'A' });
  await tick();
  sockets[0].push(welcome());
  await connected;
  const history = chat.history('u-b', { before: '9-0', limit: 2 });
  const h = sockets[0].last('history');
  assert.deepEqual({ ...h, ref: undefined }, { type: 'history', with: 'u-b', before: '9-0', limit: 2, ref: undefined });
  sockets[0].push({ type: 'history', ref: h.ref, conversation: 'dm:u-a:u-b', messages: [msg('1-0')], more: false });
  assert.equal((await history).messages.length, 1);

  const users = chat.users('al');
  sockets[0].push({ type: 'error', ref: sockets[0].last('users').ref, code: 'bad_request', message: 'this request is not available on this server version yet' });
  await assert.rejects(users, { code: 'bad_request' });
  assert.equal(chat.supports('users'), false);
  await assert.rejects(chat.conversations(), { code: 'timeout' });
  chat.close();
});

test('a failed recovery asks the app to resync; typing is throttled', async () => {
  const { chat } = connection();
  const connected = chat.connect('ws://a/ws', { username: 'A' });
  await tick();
  sockets[0].push(welcome());
  await connected;
  assert.equal(chat.typing('u-b'), true);
  assert.equal(chat.typing('u-b'), false, 'at most every 2 s');
  let resync = 0;
  chat.on('resync', () => resync++);
  sockets[0].drop(1006);
  await tick(40);
  sockets[1].push(welcome({ recovered: false, cursor: '50-0' }));
  assert.equal(resync, 1);
  assert.equal(chat.cursor, '50-0', 'cursor reset to where live delivery starts');
  chat.close();
});

test('ids compare numerically', () => {
  assert.ok(compareIds('9-0', '10-0') < 0);
  assert.ok(compareIds('10-2', '10-10') < 0);
  assert.equal(compareIds('10-1', '10-1'), 0);
});

test('rooms: join, room sends, per-room cursors in hello.rooms, room-resync', async () => {
  const { chat, storage } = connection();
  const connected = chat.connect('ws://a/ws', { username: 'A' });
  await tick();
  sockets[0].push(welcome());
  await connected;

  const joining = chat.join('lobby', 'The lobby');
  const join = sockets[0].last('join');
  assert.deepEqual({ ...join, ref: undefined }, { type: 'join', room: 'lobby', name: 'The lobby', ref: undefined });
  sockets[0].push({ type: 'joined', ref: join.ref, room: { id: 'lobby', name: 'The lobby', member_count: 1, members: [{ id: 'u-a', name: 'A', online: true }], last: null } });
  assert.equal((await joining).member_count, 1);

  const members = [];
  chat.on('member', (e) => members.push(`${e.event}:${e.user.id}`));
  const got = [];
  chat.on('message', (e) => got.push(`${e.message.room}:${e.message.id}`));
  sockets[0].push({ type: 'member', room: 'lobby', event: 'joined', user: { id: 'u-b', name: 'B' }, id: '3-0' });
  const roomMsg = (id) => ({ id, conversation: 'room:lobby', room: 'lobby', from: 'u-b', body: `r ${id}`, sent_at: '2026-01-01T00:00:00Z' });
  sockets[0].push({ type: 'message', message: roomMsg('4-0') });
  sockets[0].push({ type: 'message', message: roomMsg('4-0') });
  assert.deepEqual(members, ['joined:u-b']);
  assert.deepEqual(got, ['lobby:4-0'], 'room messages are de-duplicated too');
  assert.deepEqual(JSON.parse(storage.getItem('k')).rooms, { lobby: '4-0' }, 'room cursor stored next to the 1:1 cursor');
  assert.equal(JSON.parse(storage.getItem('k')).cursor, '5-0');

  const sending = chat.sendToRoom('lobby', 'hi all');
  const send = sockets[0].last('send');
  assert.equal(send.room, 'lobby');
  assert.equal(send.to, undefined);
  sockets[0].push({ type: 'ack', ref: send.ref, message: { ...roomMsg('5-0'), from: 'u-a', body: 'hi all' } });
  assert.equal((await sending).id, '5-0');

  // Another tab moves the shared stored cursor further: this tab still resumes from its own.
  const stored = JSON.parse(storage.getItem('k'));
  storage.setItem('k', JSON.stringify({ ...stored, rooms: { lobby: '9-0', other: '2-0' } }));
  const resyncs = [];
  chat.on('room-resync', (e) => resyncs.push(e.room));
  sockets[0].drop(1006);
  await tick(40);
  const hello = sockets[1].last('hello');
  assert.deepEqual(hello.rooms, { lobby: '4-0', other: '2-0' });
  sockets[1].push(welcome({ recovered: true, rooms: { lobby: { recovered: true }, other: { recovered: false } } }));
  await tick();
  assert.deepEqual(resyncs, ['other']);

  const leaving = chat.leave('lobby');
  const leave = sockets[1].last('leave');
  sockets[1].push({ type: 'left', ref: leave.ref, room: 'lobby' });
  await leaving;
  assert.equal(JSON.parse(storage.getItem('k')).rooms.lobby, undefined, 'a left room is not recovered');
  chat.close();
});

// ---- sessions that end (protocol 1.2) -------------------------------------------------

async function signedIn(options = {}, credential = { token: 'tok-1' }) {
  sockets = [];
  const storage = new MemoryStorage();
  const chat = new ChatConnection({ storage, storageKey: 'k', WebSocket: /** @type {any} */ (FakeSocket), backoffBaseMs: 5, backoffMaxMs: 20, requestTimeoutMs: 200, ...options });
  const connected = chat.connect('ws://a/ws', credential);
  await tick();
  sockets[0].push(welcome());
  await connected;
  const states = [];
  chat.on('state', (s) => states.push(s.state));
  return { chat, storage, states };
}

test('close 4001 of a token sign-in asks getToken and signs in again with the fresh token', async () => {
  let asked = 0;
  const { chat, storage, states } = await signedIn({ getToken: async () => `tok-${++asked + 1}` });
  sockets[0].push({ type: 'message', message: msg('6-0'), cursor: '6-1' });
  sockets[0].drop(4001, 'token expired');
  await tick(30);
  assert.equal(asked, 1);
  assert.equal(sockets.length, 2, 'reconnected');
  assert.deepEqual(sockets[1].sent[0], { type: 'hello', client: 'chat-web/1', token: 'tok-2', last_seen: '6-1' }, 'the fresh token, not the refused session; the cursor kept');
  sockets[1].push(welcome({ session: 's2', resumed: false, recovered: true }));
  assert.equal(chat.status.state, 'online');
  assert.equal(JSON.parse(storage.getItem('k')).session, 's2');
  assert.ok(!states.includes('signed-out'));

  // The fresh token refused too: no loop, signed out.
  sockets[1].drop(4001);
  await tick(30);
  assert.equal(asked, 2, 'asked again after a welcome');
  sockets[2].drop(4001, 'revoked');
  await tick(30);
  assert.equal(asked, 2, 'not asked twice for one refusal');
  assert.equal(sockets.length, 3);
  assert.equal(chat.status.state, 'signed-out');
  assert.equal(storage.getItem('k'), null);
});

test('close 4001 without a fresh token, or of a guest sign-in, signs out', async () => {
  const { chat, states } = await signedIn({ getToken: async () => null });
  sockets[0].drop(4001);
  await tick(30);
  assert.equal(sockets.length, 1, 'no reconnect');
  assert.equal(chat.status.state, 'signed-out');
  assert.equal(states.at(-1), 'signed-out');

  let asked = 0;
  const guest = await signedIn({ getToken: async () => { asked++; return 'tok'; } }, { username: 'A' });
  sockets[0].drop(4001);
  await tick(30);
  assert.equal(asked, 0, 'a guest has no token to refresh');
  assert.equal(guest.chat.status.state, 'signed-out');
});

test('close 4003 (banned) reports suspended and does not reconnect', async () => {
  const { chat, storage, states } = await signedIn({ getToken: async () => 'tok-2' });
  const sending = chat.send('u-b', 'hi');
  sockets[0].push({ type: 'error', code: 'forbidden', message: 'banned' });
  sockets[0].drop(4003, 'banned');
  await assert.rejects(sending, { code: 'forbidden' });
  await tick(40);
  assert.equal(sockets.length, 1, 'no reconnect');
  assert.deepEqual(states, ['suspended']);
  assert.equal(JSON.parse(storage.getItem('k')).session, 's1', 'a ban revokes nothing: the session is kept for when it ends');
});

test('logout sends the frame, then forgets the session and never reconnects', async () => {
  const { chat, storage } = await signedIn();
  const out = chat.logout();
  const frame = sockets[0].last('logout');
  assert.ok(frame?.ref, 'logout frame with a ref');
  assert.ok(storage.getItem('k'), 'storage kept until the server answered');
  sockets[0].push({ type: 'logged_out', ref: frame.ref });
  sockets[0].drop(1000);
  await out;
  await tick(40);
  assert.equal(sockets.length, 1, 'no reconnect');
  assert.equal(storage.getItem('k'), null);
  assert.notEqual(chat.status.state, 'online');

  // A server before 1.2 refuses the frame, another closes at once: both still sign out.
  const refused = await signedIn();
  const out2 = refused.chat.logout();
  sockets[0].push({ type: 'error', ref: sockets[0].last('logout').ref, code: 'bad_request', message: 'unknown type' });
  await out2;
  assert.equal(refused.storage.getItem('k'), null);
  const closed = await signedIn();
  const out3 = closed.chat.logout();
  sockets[0].drop(1000);
  await out3;
  await tick(40);
  assert.equal(sockets.length, 1, 'no reconnect after a close during logout');
  assert.equal(closed.storage.getItem('k'), null);
});
