// @ts-check
/**
 * chat-link.js — the connection under {@link ChatConnection} (chat-protocol.js): one
 * signed-in socket kept alive across disconnects. It signs in and resumes with the
 * session and cursor kept in storage, rotates through the node URLs with jittered
 * exponential backoff, pings while idle, and matches replies to requests by `ref`.
 *
 * What rides on the link (sends waiting for their ack, de-duplication, read, typing and
 * watch) belongs to ChatConnection, which the link reaches only through the hooks at
 * the end of the class; its events and stored session are in chat-store.js. Close 4001
 * signs out (or, with `getToken`, signs in again with a fresh token), 4003 and a
 * `logout` end it for good. Part of chat-protocol.js; import that instead.
 */

import { ChatStore } from './chat-store.js';
import { ChatError, defaultUrl, isFeatureRefusal, tokenSubject } from './chat-wire.js';

/** @typedef {import('./chat-protocol.js').User} User */
/** @typedef {import('./chat-protocol.js').Credential} Credential */
/** @typedef {import('./chat-protocol.js').Welcome} Welcome */
/** @typedef {import('./chat-protocol.js').StateEvent} StateEvent */

/** Close codes with a meaning for the client (the rest simply reconnect). */
const CLOSE_UNAUTHORIZED = 4001;
const CLOSE_BANNED = 4003;

/**
 * The connection life of a {@link ChatConnection}: events, the stored session, sockets,
 * hello and welcome, backoff, pings and requests by `ref`. Not used on its own.
 */
export class ChatLink extends ChatStore {
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
   * @param {() => Promise<string|null|undefined>} [options.getToken] the host page's
   *   fresh token: on close 4001 of a sign-in that was not a guest's, the link asks for
   *   one and signs in with it (once per refusal; nothing or a throw ends in `signed-out`)
   * @param {typeof WebSocket} [options.WebSocket] for tests
   */
  constructor(options = {}) {
    super(options);
    this.options = {
      client: options.client ?? 'chat-web/1',
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      helloTimeoutMs: options.helloTimeoutMs ?? 10_000,
      backoffBaseMs: options.backoffBaseMs ?? 1_000,
      backoffMaxMs: options.backoffMaxMs ?? 30_000,
      pingEveryMs: options.pingEveryMs ?? 25_000,
      WebSocket: options.WebSocket ?? globalThis.WebSocket,
      getToken: options.getToken ?? null,
    };
    /** How this `connect()` signed in: `username`, `token` or `session` (a stored one). */
    this.signedInWith = 'session';
    /** A fresh token was asked for since the last welcome: a second 4001 ends it. */
    this.tokenRefreshed = false;
    /** Set by {@link logout}: whatever closes the socket now, it is not reopened. */
    this.loggingOut = false;
    /** @type {string[]} node URLs, tried in turn */
    this.urls = [];
    this.urlIndex = 0;
    /** @type {WebSocket|null} */
    this.ws = null;
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
    /** Request types the server refused with `bad_request` (not implemented there). */
    /** @type {Set<string>} */
    this.unsupported = new Set();
    this.timers = { retry: null, hello: null, ping: null, pong: null };
    /** @type {{resolve: Function, reject: Function}|null} the pending connect() promise */
    this.connecting = null;
    this.onBrowserOnline = () => {
      if (this.status.state === 'offline' || this.status.state === 'reconnecting') this.reconnectNow();
    };
    if (globalThis.addEventListener) globalThis.addEventListener('online', this.onBrowserOnline);
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
    this.signedInWith = credential ? Object.keys(credential)[0] : 'session';
    this.tokenRefreshed = false;
    this.loggingOut = false;
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
    this.failSends(new ChatError('closed', 'connection closed'));
    this.setState({ state: 'idle' });
  }

  /** Closes and forgets the session: the next visit signs in again. */
  signOut() {
    this.close();
    this.forget();
    this.user = null;
    this.welcome = null;
  }

  /**
   * Ends this session on the server (`logout`), then forgets it; nothing reconnects.
   * An `error` reply, a close or no answer within `timeoutMs` still forget it here.
   * @param {number} [timeoutMs]
   */
  async logout(timeoutMs = 3000) {
    this.loggingOut = true;
    if (this.status.state === 'online') {
      try {
        await this.request({ type: 'logout' }, { timeoutMs });
      } catch {
        // Refused (a server before 1.2), closed or unanswered: forget it locally anyway.
      }
    }
    this.signOut();
  }

  /** Skips the remaining backoff and tries again at once. */
  reconnectNow() {
    if (this.status.state !== 'reconnecting' && this.status.state !== 'offline') return;
    clearTimeout(this.timers.retry);
    this.open();
  }

  /** Stops the socket and every timer, without touching requests or pending sends. */
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
    // Per room: the last room event id seen (protocol 1.1 room recovery).
    const rooms = this.roomsForHello(known.rooms ?? {});
    if (Object.keys(rooms).length) /** @type {any} */ (hello).rooms = rooms;
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
    this.holdSends();
    const refused = code === CLOSE_UNAUTHORIZED;
    if (refused && this.options.getToken && this.signedInWith !== 'username' && !this.tokenRefreshed) {
      void this.refreshToken(reason);
      return;
    }
    if (refused || code === CLOSE_BANNED || this.loggingOut) {
      this.stop(code, reason);
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

  /**
   * Close 4001 of a token sign-in: asks the host page for a fresh token and signs in
   * with it; the refused session is forgotten, the cursor kept (the same user returns).
   * @param {string} reason
   */
  async refreshToken(reason) {
    this.tokenRefreshed = true;
    this.store({ session: undefined });
    const generation = this.generation;
    this.setState({ state: 'connecting', url: this.urls[this.urlIndex % this.urls.length], attempt: this.attempt, reason });
    let token = null;
    try {
      token = await this.options.getToken?.();
    } catch {
      token = null;
    }
    if (generation !== this.generation) return;
    if (!token) return this.stop(CLOSE_UNAUTHORIZED, reason);
    this.credential = { token };
    this.open();
  }

  /**
   * Nothing reconnects: the credential was refused (4001: the session is forgotten),
   * the user is banned (4003: `suspended`; a ban revokes nothing, so the session is
   * kept for when it ends) or logged out.
   * @param {number} code @param {string} reason
   */
  stop(code, reason) {
    const banned = code === CLOSE_BANNED && !this.loggingOut;
    if (!banned) {
      this.forget();
      this.user = null;
    }
    const error = new ChatError(banned ? 'forbidden' : 'unauthorized', reason || (banned ? 'suspended' : 'signed out'));
    this.failSends(error);
    if (this.connecting) {
      const { reject } = this.connecting;
      this.connecting = null;
      reject(error);
    }
    this.setState({ state: banned ? 'suspended' : 'signed-out', reason: reason || (banned ? 'banned' : this.loggingOut ? 'logged out' : 'unauthorized') });
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

  /**
   * Handles welcome, error frames and replies to requests; ChatConnection handles the
   * other frame types and passes these on.
   * @param {any} frame
   */
  onFrame(frame) {
    switch (frame.type) {
      case 'welcome':
        return this.onWelcome(frame);
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
    if (!sameUser) this.forgetPreviousUser();
    this.store(patch);
    this.user = welcome.user;
    this.welcome = welcome;
    this.attempt = 0;
    this.credential = null;
    this.tokenRefreshed = false;
    this.setState({ state: 'online', node: welcome.node, url: this.urls[this.urlIndex % this.urls.length] });
    this.schedulePing();
    const first = this.firstWelcome;
    this.firstWelcome = false;
    this.emit('welcome', { welcome, first });
    if (!welcome.recovered && !first) this.emit('resync', { welcome });
    this.resumeAfterWelcome();
    if (this.connecting) {
      const { resolve } = this.connecting;
      this.connecting = null;
      resolve(welcome);
    }
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
    if (frame.ref && this.refuseSend(frame.ref, error)) return;
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

  // ---- hooks: what rides on the link (ChatConnection overrides them) ---------------

  /** The user now signing in is not the stored one: forget what belonged to the last. */
  forgetPreviousUser() {}

  /**
   * The `hello.rooms` to send, given the stored per-room cursors.
   * @param {Record<string, string>} stored
   * @returns {Record<string, string>}
   */
  roomsForHello(stored) {
    return stored;
  }

  /** Signed in again (`welcome` and `resync` emitted): send what outlives a socket. */
  resumeAfterWelcome() {}

  /** The socket is gone and will be retried: pending sends wait for the next welcome. */
  holdSends() {}

  /**
   * Nothing more will be sent (closed, or signed out): every pending send fails.
   * @param {ChatError} error
   */
  failSends(error) {}

  /**
   * An `error` frame answered the send that carries this `ref`: fail that send.
   * @param {string} ref
   * @param {ChatError} error
   * @returns {boolean} whether a send was waiting for it
   */
  refuseSend(ref, error) {
    return false;
  }
}
