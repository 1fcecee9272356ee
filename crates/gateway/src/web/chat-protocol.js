// @ts-check
/**
 * chat-protocol.js — a small browser client for the chat wire protocol, version 1
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
 * - on close 4001 forgets the session and reports state `signed-out`;
 * - on `welcome.recovered === false` emits `resync`: reload conversations and history.
 *
 * It never touches the DOM and never interprets message bodies.
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
/** @typedef {{id: string, conversation: string, from: string, to: string, body: string, sent_at: string}} Message */
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
 * - `signed-out`: the credential was refused (close 4001): the stored session is gone.
 * @typedef {{state: 'idle'|'connecting'|'online'|'reconnecting'|'offline'|'signed-out',
 *   retryInMs?: number, retryAt?: number, attempt?: number, url?: string, node?: string,
 *   reason?: string}} StateEvent
 */

/** An `error` frame, a timeout or a lost connection, as a rejection. */
export class ChatError extends Error {
  /**
   * @param {string} code a protocol error code, or `timeout` / `disconnected` / `closed`
   * @param {string} message human-readable text
   */
  constructor(code, message) {
    super(message);
    this.name = 'ChatError';
    /** @type {string} */
    this.code = code;
  }
}

/**
 * Orders two message ids. Ids are opaque to the protocol except that they increase;
 * this cluster uses `<milliseconds>-<sequence>` (Redis stream ids), compared numerically.
 * Anything else falls back to comparing length, then text.
 * @param {string} a
 * @param {string} b
 * @returns {number} negative, zero or positive
 */
export function compareIds(a, b) {
  if (a === b) return 0;
  const pa = /^(\d+)-(\d+)$/.exec(a);
  const pb = /^(\d+)-(\d+)$/.exec(b);
  if (pa && pb) {
    const ms = BigInt(pa[1]) - BigInt(pb[1]);
    if (ms !== 0n) return ms < 0n ? -1 : 1;
    const seq = BigInt(pa[2]) - BigInt(pb[2]);
    return seq < 0n ? -1 : seq > 0n ? 1 : 0;
  }
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : 1;
}

/** A fresh client nonce for `send` (≤ 64 characters, no spaces). */
export function newNonce() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === 'function') {
    return globalThis.crypto.randomUUID();
  }
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The `ws(s)://<this page's host>/ws` URL. */
export function defaultUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/** Close codes with a meaning for the client (the rest simply reconnect). */
const CLOSE_UNAUTHORIZED = 4001;
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
 * - `unsupported` `{type}` the first time the server refuses a request type.
 */
export class ChatConnection {
  /**
   * @param {object} [options]
   * @param {string} [options.storageKey] where the session and cursor are kept
   *   (default `chat-session@<page origin>`)
   * @param {Storage|null} [options.storage] default `localStorage`; `null` keeps nothing
   * @param {string} [options.client] sent as `hello.client`
   * @param {number} [options.requestTimeoutMs] default 10 000
   * @param {number} [options.helloTimeoutMs] how long to wait for `welcome`, default 10 000
   * @param {number} [options.backoffBaseMs] first retry delay before jitter, default 1 000
   * @param {number} [options.backoffMaxMs] longest retry delay, default 30 000
   * @param {number} [options.pingEveryMs] application ping while idle, default 25 000
   * @param {typeof WebSocket} [options.WebSocket] for tests
   */
  constructor(options = {}) {
    this.options = {
      storageKey: options.storageKey ?? `chat-session@${globalThis.location ? location.origin : 'default'}`,
      storage: options.storage === undefined ? globalThis.localStorage ?? null : options.storage,
      client: options.client ?? 'chat-web/1',
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      helloTimeoutMs: options.helloTimeoutMs ?? 10_000,
      backoffBaseMs: options.backoffBaseMs ?? 1_000,
      backoffMaxMs: options.backoffMaxMs ?? 30_000,
      pingEveryMs: options.pingEveryMs ?? 25_000,
      WebSocket: options.WebSocket ?? globalThis.WebSocket,
    };
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    /** @type {string[]} node URLs, tried in turn */
    this.urls = [];
    this.urlIndex = 0;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {StateEvent} */
    this.status = { state: 'idle' };
    /** @type {User|null} the signed-in user */
    this.user = null;
    /** @type {Welcome|null} the latest welcome */
    this.welcome = null;
    /** The credential for the next hello when there is no stored session. */
    /** @type {Credential|null} */
    this.credential = null;
    this.attempt = 0;
    this.refCounter = 0;
    this.generation = 0;
    this.firstWelcome = true;
    /** @type {Map<string, {type: string, resolve: Function, reject: Function, timer: any}>} */
    this.requests = new Map();
    /** Unacknowledged sends by nonce, in the order they were made. */
    /** @type {Map<string, {to: string, body: string, nonce: string, ref: string|null, resolve: Function, reject: Function}>} */
    this.outbox = new Map();
    /** @type {Map<string, Set<string>>} conversation → ids already emitted */
    this.seen = new Map();
    /** Request types the server refused with `bad_request` (not implemented there). */
    /** @type {Set<string>} */
    this.unsupported = new Set();
    /** @type {Map<string, number>} peer → when a typing notice was last sent */
    this.typingSentAt = new Map();
    /** @type {Map<string, string>} peer → highest `up_to` sent in a read */
    this.readSent = new Map();
    /** @type {string[]} the current watch list, sent again after each reconnect */
    this.watched = [];
    this.timers = { retry: null, hello: null, ping: null, pong: null };
    /** @type {{resolve: Function, reject: Function}|null} the pending connect() promise */
    this.connecting = null;
    this.onBrowserOnline = () => {
      if (this.status.state === 'offline' || this.status.state === 'reconnecting') this.reconnectNow();
    };
    if (globalThis.addEventListener) globalThis.addEventListener('online', this.onBrowserOnline);
  }

  // ---- events ---------------------------------------------------------------------

  /**
   * Subscribes to an event; returns the function that unsubscribes.
   * @param {string} type
   * @param {(detail: any) => void} fn
   */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)?.add(fn);
    return () => this.off(type, fn);
  }

  /** @param {string} type @param {Function} fn */
  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }

  /** @param {string} type @param {any} detail */
  emit(type, detail) {
    for (const fn of [...(this.listeners.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (e) {
        console.error(`chat: ${type} listener failed`, e);
      }
    }
  }

  /** @param {StateEvent} status */
  setState(status) {
    this.status = status;
    this.emit('state', status);
  }

  // ---- stored session ---------------------------------------------------------------

  /** @returns {{session?: string, user?: User, cursor?: string}} */
  stored() {
    try {
      const raw = this.options.storage?.getItem(this.options.storageKey);
      return raw ? JSON.parse(raw) : {};
    } catch {
      return {};
    }
  }

  /** @param {{session?: string, user?: User, cursor?: string}} patch */
  store(patch) {
    if (!this.options.storage) return;
    const next = { ...this.stored(), ...patch };
    try {
      this.options.storage.setItem(this.options.storageKey, JSON.stringify(next));
    } catch {
      // Storage full or disabled: resuming will simply start a new session.
    }
  }

  /** Forgets the stored session and cursor. */
  forget() {
    try {
      this.options.storage?.removeItem(this.options.storageKey);
    } catch {
      // Nothing stored to forget.
    }
  }

  /** Whether a session is stored, so `connect(url)` can sign in without a credential. */
  hasStoredSession() {
    return Boolean(this.stored().session);
  }

  /** The stored user, if any (known before the first `welcome`). */
  storedUser() {
    return this.stored().user ?? null;
  }

  /** The last event cursor kept, if any. */
  get cursor() {
    return this.stored().cursor ?? null;
  }

  // ---- connection life ------------------------------------------------------------

  /**
   * Connects and signs in. Without a credential, the stored session is used.
   * Resolves with the first `welcome`; rejects if the credential is refused. After
   * that the connection keeps itself alive until {@link close} or a 4001.
   * @param {string|string[]} url one node URL or several, tried in turn on reconnects
   * @param {Credential} [credential]
   * @returns {Promise<Welcome>}
   */
  connect(url, credential) {
    this.urls = (Array.isArray(url) ? url : [url]).filter(Boolean);
    if (this.urls.length === 0) this.urls = [defaultUrl()];
    this.urlIndex = 0;
    this.user = null;
    this.credential = credential ?? null;
    if (credential && !('session' in credential)) {
      const known = this.stored();
      // A new identity: the stored session and cursor belong to someone else, unless
      // the token names the same user, whose cursor stays valid.
      const sub = 'token' in credential ? tokenSubject(credential.token) : null;
      if (!sub || known.user?.id !== sub) this.forget();
      else this.store({ session: undefined });
    } else if (credential && 'session' in credential) {
      this.store({ session: credential.session });
    }
    if (!credential && !this.hasStoredSession()) {
      return Promise.reject(new ChatError('unauthorized', 'no stored session: sign in first'));
    }
    this.firstWelcome = true;
    this.attempt = 0;
    this.teardown();
    return new Promise((resolve, reject) => {
      this.connecting = { resolve, reject };
      this.open();
    });
  }

  /** Closes for good (no reconnect); the stored session stays for the next visit. */
  close() {
    this.teardown();
    this.failRequests(new ChatError('closed', 'connection closed'));
    for (const pending of this.outbox.values()) pending.reject(new ChatError('closed', 'connection closed'));
    this.outbox.clear();
    this.setState({ state: 'idle' });
  }

  /** Closes and forgets the session: the next visit signs in again. */
  signOut() {
    this.close();
    this.forget();
    this.user = null;
    this.welcome = null;
  }

  /** Skips the remaining backoff and tries again at once. */
  reconnectNow() {
    if (this.status.state !== 'reconnecting' && this.status.state !== 'offline') return;
    clearTimeout(this.timers.retry);
    this.open();
  }

  /** Stops the socket and every timer, without touching requests or the outbox. */
  teardown() {
    this.generation++;
    for (const key of /** @type {const} */ (['retry', 'hello', 'ping', 'pong'])) {
      clearTimeout(this.timers[key]);
      this.timers[key] = null;
    }
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'client closing');
      } catch {
        // Already closed.
      }
    }
  }

  open() {
    this.teardown();
    const generation = this.generation;
    const url = this.urls[this.urlIndex % this.urls.length];
    this.setState({ state: 'connecting', url, attempt: this.attempt });
    let ws;
    try {
      ws = new this.options.WebSocket(url);
    } catch (e) {
      this.dropped(generation, 0, `cannot open ${url}: ${e}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (generation !== this.generation) return;
      this.sendHello();
      this.timers.hello = setTimeout(() => {
        if (generation === this.generation) this.dropped(generation, 0, 'no welcome in time');
      }, this.options.helloTimeoutMs);
    };
    ws.onmessage = (ev) => {
      if (generation !== this.generation) return;
      this.schedulePing();
      let frame;
      try {
        frame = JSON.parse(typeof ev.data === 'string' ? ev.data : '');
      } catch {
        return;
      }
      if (frame && typeof frame.type === 'string') this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (generation !== this.generation) return;
      this.dropped(generation, ev.code, ev.reason);
    };
  }

  sendHello() {
    const known = this.stored();
    /** @type {Record<string, string>} */
    const hello = { type: 'hello', client: this.options.client };
    if (known.session) hello.session = known.session;
    else if (this.credential && 'token' in this.credential) hello.token = this.credential.token;
    else if (this.credential && 'username' in this.credential) hello.username = this.credential.username;
    else if (this.credential && 'session' in this.credential) hello.session = this.credential.session;
    if (known.cursor) hello.last_seen = known.cursor;
    this.rawSend(hello);
  }

  /**
   * The socket closed or failed: decide between signing out and retrying later.
   * @param {number} generation
   * @param {number} code
   * @param {string} reason
   */
  dropped(generation, code, reason) {
    if (generation !== this.generation) return;
    this.teardown();
    this.failRequests(new ChatError('disconnected', 'connection lost'));
    for (const pending of this.outbox.values()) pending.ref = null;
    if (code === CLOSE_UNAUTHORIZED) {
      this.forget();
      this.user = null;
      const error = new ChatError('unauthorized', reason || 'signed out');
      for (const pending of this.outbox.values()) pending.reject(error);
      this.outbox.clear();
      if (this.connecting) {
        const { reject } = this.connecting;
        this.connecting = null;
        reject(error);
      }
      this.setState({ state: 'signed-out', reason: reason || 'unauthorized' });
      return;
    }
    this.urlIndex = (this.urlIndex + 1) % Math.max(1, this.urls.length);
    if (globalThis.navigator && navigator.onLine === false) {
      this.setState({ state: 'offline', reason });
      return;
    }
    const ceiling = Math.min(this.options.backoffMaxMs, this.options.backoffBaseMs * 2 ** this.attempt);
    // Full jitter on the upper half: nodes restarting together do not get a stampede.
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt = Math.min(this.attempt + 1, 16);
    this.setState({ state: 'reconnecting', retryInMs: delay, retryAt: Date.now() + delay, attempt: this.attempt, reason });
    this.timers.retry = setTimeout(() => this.open(), delay);
  }

  schedulePing() {
    clearTimeout(this.timers.ping);
    clearTimeout(this.timers.pong);
    this.timers.pong = null;
    if (this.status.state !== 'online') return;
    const generation = this.generation;
    this.timers.ping = setTimeout(() => {
      if (generation !== this.generation) return;
      this.rawSend({ type: 'ping', ref: this.nextRef('p') });
      // No answer to our ping: the path is dead even if the socket does not know yet.
      this.timers.pong = setTimeout(() => this.dropped(generation, 0, 'ping timeout'), this.options.requestTimeoutMs);
    }, this.options.pingEveryMs);
  }

  /** @param {any} frame */
  rawSend(frame) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** @param {string} prefix */
  nextRef(prefix) {
    this.refCounter = (this.refCounter + 1) % 1e9;
    return `${prefix}-${this.refCounter}`;
  }

  /** @param {ChatError} error */
  failRequests(error) {
    for (const [ref, pending] of this.requests) {
      clearTimeout(pending.timer);
      pending.reject(error);
      this.requests.delete(ref);
    }
  }

  // ---- incoming frames ------------------------------------------------------------

  /** @param {any} frame */
  onFrame(frame) {
    switch (frame.type) {
      case 'welcome':
        return this.onWelcome(frame);
      case 'ack':
        return this.onAck(frame);
      case 'message':
        if (frame.message) this.deliver(frame.message, 'live');
        if (frame.cursor) this.store({ cursor: frame.cursor });
        return;
      case 'read':
        this.emit('read', { conversation: frame.conversation, by: frame.by, up_to: frame.up_to });
        if (frame.cursor) this.store({ cursor: frame.cursor });
        return;
      case 'typing':
        return this.emit('typing', { from: frame.from });
      case 'presence':
        return this.emit('presence', { user: frame.user, online: frame.online, last_seen_at: frame.last_seen_at });
      case 'error':
        return this.onError(frame);
      default:
        return this.resolveRequest(frame);
    }
  }

  /** @param {Welcome} welcome */
  onWelcome(welcome) {
    clearTimeout(this.timers.hello);
    const known = this.stored();
    const sameUser = known.user?.id === welcome.user.id;
    /** @type {{session: string, user: User, cursor?: string}} */
    const patch = { session: welcome.session, user: welcome.user };
    // Live delivery starts after welcome.cursor: take it unless the replay that follows
    // a successful recovery will move ours forward anyway.
    if (welcome.cursor && (!known.cursor || !sameUser || !welcome.recovered)) patch.cursor = welcome.cursor;
    if (!sameUser) {
      this.seen.clear();
      this.readSent.clear();
    }
    this.store(patch);
    this.user = welcome.user;
    this.welcome = welcome;
    this.attempt = 0;
    this.credential = null;
    this.setState({ state: 'online', node: welcome.node, url: this.urls[this.urlIndex % this.urls.length] });
    this.schedulePing();
    const first = this.firstWelcome;
    this.firstWelcome = false;
    this.emit('welcome', { welcome, first });
    if (!welcome.recovered && !first) this.emit('resync', { welcome });
    if (this.watched.length) this.notify({ type: 'watch', users: this.watched });
    // Unacknowledged sends go out again with their original nonce: stored once.
    for (const pending of this.outbox.values()) this.transmit(pending);
    if (this.connecting) {
      const { resolve } = this.connecting;
      this.connecting = null;
      resolve(welcome);
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

  /** @param {any} frame */
  onError(frame) {
    const error = new ChatError(frame.code, frame.message);
    if (!this.user && this.connecting && (frame.code === 'bad_request' || frame.code === 'unauthorized')) {
      // The hello was refused. `bad_request` leaves the socket open (e.g. an invalid
      // guest name): give up on this attempt so the user can fix it.
      const { reject } = this.connecting;
      this.connecting = null;
      this.teardown();
      if (frame.code === 'unauthorized') this.forget();
      this.setState({ state: 'signed-out', reason: frame.message });
      reject(error);
      return;
    }
    for (const [nonce, pending] of this.outbox) {
      if (frame.ref && pending.ref === frame.ref) {
        this.outbox.delete(nonce);
        pending.reject(error);
        return;
      }
    }
    const request = frame.ref ? this.requests.get(frame.ref) : undefined;
    if (request) {
      this.requests.delete(frame.ref);
      clearTimeout(request.timer);
      if (frame.code === 'bad_request' && isFeatureRefusal(frame.message)) this.markUnsupported(request.type);
      request.reject(error);
      return;
    }
    this.emit('error', { code: frame.code, message: frame.message, ref: frame.ref });
  }

  /** @param {any} frame */
  resolveRequest(frame) {
    const request = frame.ref ? this.requests.get(frame.ref) : undefined;
    if (!request) return;
    this.requests.delete(frame.ref);
    clearTimeout(request.timer);
    request.resolve(frame);
  }

  /** @param {string} type */
  markUnsupported(type) {
    if (this.unsupported.has(type)) return;
    this.unsupported.add(type);
    this.emit('unsupported', { type });
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

  // ---- requests ---------------------------------------------------------------------

  /**
   * Sends a request and resolves with the reply that carries its `ref`. Waits for the
   * connection to be online first (within the timeout).
   * @param {Record<string, any>} frame without `ref`
   * @param {{timeoutMs?: number}} [opts]
   * @returns {Promise<any>}
   */
  request(frame, opts = {}) {
    const timeoutMs = opts.timeoutMs ?? this.options.requestTimeoutMs;
    const ref = this.nextRef('r');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.requests.delete(ref);
        reject(new ChatError('timeout', `no reply to ${frame.type} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.requests.set(ref, { type: frame.type, resolve, reject, timer });
      this.whenOnline(() => {
        if (this.requests.has(ref)) this.rawSend({ ...frame, ref });
      });
    });
  }

  /**
   * Sends a frame that has no reply on success (`read`, `typing`, `watch`). A `ref` is
   * attached so a refusal is recognised: it marks the type unsupported, nothing more.
   * @param {Record<string, any>} frame
   */
  notify(frame) {
    if (this.unsupported.has(frame.type) || this.status.state !== 'online') return false;
    const ref = this.nextRef('n');
    const timer = setTimeout(() => this.requests.delete(ref), this.options.requestTimeoutMs);
    this.requests.set(ref, { type: frame.type, resolve: () => {}, reject: () => {}, timer });
    return this.rawSend({ ...frame, ref });
  }

  /** @param {() => void} fn */
  whenOnline(fn) {
    if (this.status.state === 'online') {
      fn();
      return;
    }
    const off = this.on('welcome', () => {
      off();
      fn();
    });
  }

  /** @param {string} type whether the server has not refused this request type */
  supports(type) {
    return !this.unsupported.has(type);
  }

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

  /** @param {{to: string, body: string, nonce: string, ref: string|null}} pending */
  transmit(pending) {
    pending.ref = this.nextRef('s');
    this.rawSend({ type: 'send', ref: pending.ref, to: pending.to, body: pending.body, nonce: pending.nonce });
  }

  /** Nonces of sends still waiting for their ack. */
  pendingSends() {
    return [...this.outbox.values()].map(({ to, body, nonce }) => ({ to, body, nonce }));
  }

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

  /** Replaces the presence watch list (at most 200 ids; kept across reconnects). @param {string[]} users */
  watch(users) {
    const next = [...new Set(users)].slice(0, 200);
    if (next.length === this.watched.length && next.every((u, i) => u === this.watched[i])) return;
    this.watched = next;
    this.notify({ type: 'watch', users: next });
  }
}

/**
 * Whether a `bad_request` reply means "this server does not implement that request",
 * as opposed to a malformed request of ours.
 * @param {string} message
 */
function isFeatureRefusal(message) {
  return /not (available|supported|implemented)|unknown type/i.test(message ?? '');
}

/**
 * The `sub` claim of a JWT, read without verifying (only to keep a cursor that
 * belongs to the same user).
 * @param {string} token
 */
function tokenSubject(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), '='))).sub ?? null;
  } catch {
    return null;
  }
}
