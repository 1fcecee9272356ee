// @ts-check
/**
 * chat-protocol.js — a small browser client for the chat wire protocol, version 1.1
 * (docs/protocol.md). No dependencies, no build step: import it as an ES module.
 *
 * What it does for a host application:
 * - signs in (`username`, `token` or a stored `session`) and keeps the session and the
 *   last event cursor in `localStorage`, keyed per page origin (or `options.storageKey`);
 * - resumes after every disconnect with `hello.session` + `hello.last_seen`, rotating
 *   through the node URLs it was given, with jittered exponential backoff;
 * - matches replies to requests by `ref` (promises with timeouts);
 * - drops duplicate `message` events (by conversation + id): delivery is at-least-once;
 * - keeps unacknowledged sends and resends them with their original `nonce` after a
 *   reconnect, so a message is stored once even if the ack was lost;
 * - on close 4001 forgets the session and reports state `signed-out`, unless the host
 *   page gave `options.getToken`: then a token sign-in asks it for a fresh token and
 *   signs in again; on close 4003 (banned) reports `suspended` and does not reconnect;
 * - `logout()` ends the session on the server (protocol 1.2), then forgets it;
 * - on `welcome.recovered === false` emits `resync`: reload conversations and history.
 * - rooms (protocol 1.1): `join`, `leave`, `members`, `rooms`, room sends, history and
 *   read; keeps each room's last seen event id in storage next to the 1:1 cursor, sends
 *   them as `hello.rooms` on every reconnect and emits `room-resync` for each room the
 *   server could not recover (`welcome.rooms[id].recovered === false`): reload its history.
 *
 * It never touches the DOM and never interprets message bodies.
 *
 * Four files, one module: this one is the entry point and holds what rides on the
 * connection (sends, de-duplication, history, read, typing, watch); chat-link.js holds
 * the connection life under it (sockets, sign-in, backoff, requests by `ref`),
 * chat-store.js its events and stored session, and chat-wire.js the small values
 * (errors, id order, nonces). A host application copies all four and imports this one.
 *
 * @example
 *   import { ChatConnection } from '/chat-protocol.js';
 *   const chat = new ChatConnection();
 *   chat.on('message', ({ message }) => console.log(message.from, message.body));
 *   chat.on('state', (s) => console.log(s.state, s.retryInMs));
 *   await chat.connect(['wss://chat.example/ws'], { username: 'alice' });
 *   await chat.send('bob-id', 'hello');
 */

/** @typedef {{id: string, name: string}} User */
/** @typedef {{id: string, conversation: string, from: string, to?: string, room?: string, body: string, sent_at: string}} Message */
/** @typedef {{id: string, name: string, online?: boolean}} Member */
/** @typedef {{id: string, name: string, member_count: number, members: Member[], last: Message|null}} RoomInfo */
/** @typedef {{id: string, name: string, member_count: number, unread: number, last: Message|null}} RoomItem */
/** @typedef {{room: string, event: 'joined'|'left', user: User, id: string}} MemberEvent */
/** @typedef {{username: string} | {token: string} | {session: string}} Credential */
/**
 * @typedef {object} Welcome
 * @property {string} session
 * @property {User} user
 * @property {boolean} resumed
 * @property {boolean} recovered
 * @property {string} node
 * @property {{max_body: number, max_frame: number, send_per_second: number, send_burst: number}} limits
 * @property {Array<{peer: User, count: number, last: Message}>} [unread]
 * @property {string} [cursor]
 */
/**
 * Connection states, emitted as `state` events:
 * - `idle`: not started, or closed by the application;
 * - `connecting`: a socket is opening or waiting for `welcome`;
 * - `online`: signed in;
 * - `reconnecting`: waiting `retryInMs` before the next attempt (`retryAt` is a timestamp);
 * - `offline`: the browser reports no network; the next attempt starts when it returns;
 * - `signed-out`: the credential was refused (close 4001) or the user logged out: the
 *   stored session is gone;
 * - `suspended`: the user is banned (close 4003); nothing reconnects.
 * @typedef {{state: 'idle'|'connecting'|'online'|'reconnecting'|'offline'|'signed-out'|'suspended',
 *   retryInMs?: number, retryAt?: number, attempt?: number, url?: string, node?: string,
 *   reason?: string}} StateEvent
 */

import { ChatLink } from './chat-link.js';
import { compareIds, newNonce } from './chat-wire.js';

export { ChatError, compareIds, defaultUrl, newNonce } from './chat-wire.js';

/** How many ids per conversation the de-duplication remembers. */
const SEEN_PER_CONVERSATION = 2000;
/** Typing notices to one peer are sent at most this often (protocol: 2 s). */
const TYPING_EVERY_MS = 2000;

/**
 * One signed-in connection to the chat cluster, kept alive across disconnects.
 *
 * Events (subscribe with {@link ChatConnection#on}):
 * - `state` {@link StateEvent}
 * - `welcome` `{welcome, first}` after every successful sign-in (`first`: the first one
 *   of this `connect()` call);
 * - `resync` `{welcome}` when the server could not replay what was missed: reload;
 * - `message` `{message, cursor?, mine, via}` once per conversation + id
 *   (`via`: `live`, `ack` or `history`);
 * - `ack` `{nonce, message}` when one of this client's sends was stored;
 * - `read` `{conversation, by, up_to}`; `typing` `{from}`;
 *   `presence` `{user, online, last_seen_at?}`;
 * - `error` `{code, message, ref?}` for error frames no request is waiting for;
 * - `unsupported` `{type}` the first time the server refuses a request type;
 * - `member` {@link MemberEvent}: someone (this user's other tabs included) joined or
 *   left a room this user is in; a room message is a `message` event whose
 *   `message.room` is set;
 * - `room-resync` `{room}`: the room's missed events could not be replayed: reload it.
 *
 * Options: see the {@link ChatLink} constructor.
 */
export class ChatConnection extends ChatLink {
  /** @param {ConstructorParameters<typeof ChatLink>[0]} [options] */
  constructor(options = {}) {
    super(options);
    /** Unacknowledged sends by nonce, in the order they were made. */
    /** @type {Map<string, {to: string, body: string, nonce: string, ref: string|null, resolve: Function, reject: Function}>} */
    this.outbox = new Map();
    /** @type {Map<string, Set<string>>} conversation → ids already emitted */
    this.seen = new Map();
    /** @type {Map<string, number>} peer → when a typing notice was last sent */
    this.typingSentAt = new Map();
    /** @type {Map<string, string>} peer → highest `up_to` sent in a read */
    this.readSent = new Map();
    /** @type {string[]} the current watch list, sent again after each reconnect */
    this.watched = [];
    /** @type {Map<string, string>} room → highest `up_to` sent in a read */
    this.roomReadSent = new Map();
    /**
     * room → the last room event id this connection object saw. Storage is shared by
     * every tab of the origin, so another tab may have moved the stored cursor past
     * events this tab never got: a reconnecting tab resumes from its own.
     * @type {Map<string, string>}
     */
    this.roomSeen = new Map();
  }

  // ---- incoming frames ------------------------------------------------------------

  /**
   * Handles the frames about messages, reads, typing and presence; the rest (welcome,
   * errors, replies) goes to {@link ChatLink#onFrame}.
   * @param {any} frame
   */
  onFrame(frame) {
    switch (frame.type) {
      case 'ack':
        return this.onAck(frame);
      case 'message':
        if (frame.message) this.deliver(frame.message, 'live');
        if (frame.message?.room) this.noteRoomEvent(frame.message.room, frame.message.id);
        if (frame.cursor) this.store({ cursor: frame.cursor });
        return;
      case 'member':
        // A room event with an id from the room's sequence (and a `ref` never).
        if (frame.ref) return super.onFrame(frame);
        this.noteRoomEvent(frame.room, frame.id);
        if (frame.event === 'left' && frame.user?.id === this.user?.id) this.forgetRoom(frame.room);
        return this.emit('member', { room: frame.room, event: frame.event, user: frame.user, id: frame.id });
      case 'read':
        if (frame.room) return this.emit('read', { conversation: `room:${frame.room}`, room: frame.room, by: frame.by ?? this.user?.id, up_to: frame.up_to });
        this.emit('read', { conversation: frame.conversation, by: frame.by, up_to: frame.up_to });
        if (frame.cursor) this.store({ cursor: frame.cursor });
        return;
      case 'typing':
        return this.emit('typing', { from: frame.from });
      case 'presence':
        return this.emit('presence', { user: frame.user, online: frame.online, last_seen_at: frame.last_seen_at });
      default:
        return super.onFrame(frame);
    }
  }

  /** @param {any} frame */
  onAck(frame) {
    const message = frame.message;
    for (const [nonce, pending] of this.outbox) {
      if (pending.ref === frame.ref) {
        this.outbox.delete(nonce);
        this.emit('ack', { nonce, message });
        pending.resolve(message);
        break;
      }
    }
    if (message) this.deliver(message, 'ack');
  }

  /**
   * Emits a message unless this conversation + id was already emitted.
   * @param {Message} message
   * @param {'live'|'ack'|'history'} via
   */
  deliver(message, via) {
    if (!this.markSeen(message)) return;
    this.emit('message', { message, via, mine: message.from === this.user?.id });
  }

  /** @param {Message} message @returns {boolean} true the first time */
  markSeen(message) {
    let ids = this.seen.get(message.conversation);
    if (!ids) {
      ids = new Set();
      this.seen.set(message.conversation, ids);
    }
    if (ids.has(message.id)) return false;
    ids.add(message.id);
    if (ids.size > SEEN_PER_CONVERSATION) ids.delete(ids.values().next().value);
    return true;
  }

  // ---- sign-in (hooks called by ChatLink) -------------------------------------------

  forgetPreviousUser() {
    this.seen.clear();
    this.readSent.clear();
    this.roomReadSent.clear();
    this.roomSeen.clear();
    this.store({ rooms: undefined });
  }

  /**
   * This tab's own room cursors over the stored ones (the stored ones cover rooms this
   * tab has not heard from since it loaded).
   * @param {Record<string, string>} stored
   */
  roomsForHello(stored) {
    return { ...stored, ...Object.fromEntries(this.roomSeen) };
  }

  resumeAfterWelcome() {
    const rooms = /** @type {any} */ (this.welcome)?.rooms ?? {};
    for (const [room, r] of Object.entries(rooms)) {
      if (r && r.recovered === false) this.emit('room-resync', { room });
    }
    if (this.watched.length) this.notify({ type: 'watch', users: this.watched });
    // Unacknowledged sends go out again with their original nonce: stored once.
    for (const pending of this.outbox.values()) this.transmit(pending);
  }

  // ---- sends ------------------------------------------------------------------------

  /**
   * Sends a message. Resolves with the stored message (from the `ack`); survives
   * disconnects: an unacknowledged send is resent with the same nonce on reconnect.
   * Rejects on an `error` reply (nothing was stored) or on sign-out.
   * @param {string} to peer user id
   * @param {string} body
   * @param {{nonce?: string}} [opts] pass a nonce to retry an earlier failed send
   * @returns {Promise<Message>}
   */
  send(to, body, opts = {}) {
    const nonce = opts.nonce ?? newNonce();
    return new Promise((resolve, reject) => {
      const pending = { to, body, nonce, ref: /** @type {string|null} */ (null), resolve, reject };
      this.outbox.set(nonce, pending);
      if (this.status.state === 'online') this.transmit(pending);
    });
  }

  /**
   * Sends a message to a room (protocol 1.1); like {@link ChatConnection#send}.
   * @param {string} room @param {string} body @param {{nonce?: string}} [opts]
   * @returns {Promise<Message>}
   */
  sendToRoom(room, body, opts = {}) {
    return this.send(`room:${room}`, body, opts);
  }

  /** @param {{to: string, body: string, nonce: string, ref: string|null}} pending */
  transmit(pending) {
    pending.ref = this.nextRef('s');
    const target = pending.to.startsWith('room:') ? { room: pending.to.slice(5) } : { to: pending.to };
    this.rawSend({ type: 'send', ref: pending.ref, ...target, body: pending.body, nonce: pending.nonce });
  }

  /** Nonces of sends still waiting for their ack. */
  pendingSends() {
    return [...this.outbox.values()].map(({ to, body, nonce }) => ({ to, body, nonce }));
  }

  holdSends() {
    for (const pending of this.outbox.values()) pending.ref = null;
  }

  /** @param {import('./chat-wire.js').ChatError} error */
  failSends(error) {
    for (const pending of this.outbox.values()) pending.reject(error);
    this.outbox.clear();
  }

  /** @param {string} ref @param {import('./chat-wire.js').ChatError} error */
  refuseSend(ref, error) {
    for (const [nonce, pending] of this.outbox) {
      if (pending.ref === ref) {
        this.outbox.delete(nonce);
        pending.reject(error);
        return true;
      }
    }
    return false;
  }

  // ---- requests ---------------------------------------------------------------------

  /**
   * Loads history with a peer: the newest messages, or those older than `before`.
   * Every returned message counts as seen, so a late duplicate is not emitted.
   * @param {string} peer
   * @param {{before?: string, limit?: number}} [opts]
   * @returns {Promise<{conversation: string, messages: Message[], more: boolean}>}
   */
  async history(peer, opts = {}) {
    /** @type {Record<string, any>} */
    const frame = { type: 'history', with: peer, limit: opts.limit ?? 50 };
    if (opts.before) frame.before = opts.before;
    const reply = await this.request(frame);
    for (const m of reply.messages ?? []) this.markSeen(m);
    return { conversation: reply.conversation, messages: reply.messages ?? [], more: Boolean(reply.more) };
  }

  /** The user's conversations, newest activity first. @returns {Promise<any[]>} */
  async conversations() {
    const reply = await this.request({ type: 'conversations' });
    return reply.items ?? [];
  }

  /**
   * Directory lookup by name prefix.
   * @param {string} query @param {number} [limit]
   * @returns {Promise<Array<{id: string, name: string, online: boolean}>>}
   */
  async users(query, limit = 20) {
    const reply = await this.request({ type: 'users', query, limit });
    return reply.items ?? [];
  }

  /**
   * Moves the read marker with a peer forward; repeated or older markers are not sent.
   * @param {string} peer @param {string} upTo message id
   */
  markRead(peer, upTo) {
    const sent = this.readSent.get(peer);
    if (sent && compareIds(upTo, sent) <= 0) return false;
    if (!this.notify({ type: 'read', with: peer, up_to: upTo })) return false;
    this.readSent.set(peer, upTo);
    return true;
  }

  /** Tells a peer this user is typing; throttled to once per 2 s per peer. @param {string} peer */
  typing(peer) {
    const now = Date.now();
    if (now - (this.typingSentAt.get(peer) ?? 0) < TYPING_EVERY_MS) return false;
    if (!this.notify({ type: 'typing', to: peer })) return false;
    this.typingSentAt.set(peer, now);
    return true;
  }

  // ---- rooms (protocol 1.1) ---------------------------------------------------------

  /**
   * Remembers the newest room event id seen, sent back as `hello.rooms` on reconnect.
   * @param {string} room @param {string} id
   */
  noteRoomEvent(room, id) {
    if (!room || !id) return;
    const mine = this.roomSeen.get(room);
    if (!mine || compareIds(id, mine) > 0) this.roomSeen.set(room, id);
    const rooms = { ...(this.stored().rooms ?? {}) };
    if (rooms[room] && compareIds(id, rooms[room]) <= 0) return;
    rooms[room] = id;
    this.store({ rooms });
  }

  /** Stops recovering a room (after leaving it). @param {string} room */
  forgetRoom(room) {
    this.roomSeen.delete(room);
    const rooms = { ...(this.stored().rooms ?? {}) };
    delete rooms[room];
    this.store({ rooms });
  }

  /** The stored per-room cursors. @returns {Record<string, string>} */
  roomCursors() {
    return this.stored().rooms ?? {};
  }

  /**
   * Joins (or creates) a room; joining again changes nothing. `name` is used only when
   * the join creates the room. Rejects with `forbidden` when the token may not join.
   * @param {string} room id: 1–64 of a-z 0-9 _ - @param {string} [name]
   * @returns {Promise<RoomInfo>} with at most 100 `members`; page the rest with {@link ChatConnection#members}
   */
  async join(room, name) {
    /** @type {Record<string, any>} */
    const frame = { type: 'join', room };
    if (name) frame.name = name;
    const reply = await this.request(frame);
    const info = reply.room;
    if (info?.last) this.markSeen(info.last);
    return info;
  }

  /** Leaves a room: nothing more arrives from it. @param {string} room */
  async leave(room) {
    await this.request({ type: 'leave', room });
    this.forgetRoom(room);
  }

  /**
   * One page of a room's members, after the member id `after`.
   * @param {string} room @param {string} [after]
   * @returns {Promise<{items: Member[], more: boolean}>}
   */
  async members(room, after) {
    /** @type {Record<string, any>} */
    const frame = { type: 'members', room };
    if (after) frame.after = after;
    const reply = await this.request(frame);
    return { items: reply.items ?? [], more: Boolean(reply.more) };
  }

  /** The user's rooms, newest activity first. @returns {Promise<RoomItem[]>} */
  async rooms() {
    const reply = await this.request({ type: 'rooms' });
    return reply.items ?? [];
  }

  /**
   * A room's history, like {@link ChatConnection#history}.
   * @param {string} room @param {{before?: string, limit?: number}} [opts]
   * @returns {Promise<{conversation: string, messages: Message[], more: boolean}>}
   */
  async roomHistory(room, opts = {}) {
    /** @type {Record<string, any>} */
    const frame = { type: 'history', room, limit: opts.limit ?? 50 };
    if (opts.before) frame.before = opts.before;
    const reply = await this.request(frame);
    for (const m of reply.messages ?? []) this.markSeen(m);
    return { conversation: reply.conversation ?? `room:${room}`, messages: reply.messages ?? [], more: Boolean(reply.more) };
  }

  /** Moves this member's read marker in a room forward. @param {string} room @param {string} upTo */
  markRoomRead(room, upTo) {
    const sent = this.roomReadSent.get(room);
    if (sent && compareIds(upTo, sent) <= 0) return false;
    if (!this.notify({ type: 'read', room, up_to: upTo })) return false;
    this.roomReadSent.set(room, upTo);
    return true;
  }

  /** Replaces the presence watch list (at most 200 ids; kept across reconnects). @param {string[]} users */
  watch(users) {
    const next = [...new Set(users)].slice(0, 200);
    if (next.length === this.watched.length && next.every((u, i) => u === this.watched[i])) return;
    this.watched = next;
    this.notify({ type: 'watch', users: next });
  }
}
