// @ts-check
/**
 * chat-store.js — what a {@link ChatConnection} (chat-protocol.js) keeps outside any
 * socket: its event listeners and the stored session (session, user, cursors) in
 * `localStorage`, keyed per page origin. Part of chat-protocol.js; import that instead.
 */

/** @typedef {import('./chat-protocol.js').User} User */
/** @typedef {import('./chat-protocol.js').StateEvent} StateEvent */

/** Events and the stored session under {@link ChatLink}. Not used on its own. */
export class ChatStore {
  /** @param {{storageKey?: string, storage?: Storage|null}} options see the ChatLink constructor */
  constructor(options) {
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    this.storageKey = options.storageKey ?? `chat-session@${globalThis.location ? location.origin : 'default'}`;
    /** @type {Storage|null} */
    this.storage = options.storage === undefined ? globalThis.localStorage ?? null : options.storage;
    /** @type {StateEvent} */
    this.status = { state: 'idle' };
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

  /** @returns {{session?: string, user?: User, cursor?: string, rooms?: Record<string, string>}} */
  stored() {
    try {
      const raw = this.storage?.getItem(this.storageKey);
      return raw ? JSON.parse(raw) : {};
    } catch {
      return {};
    }
  }

  /** @param {{session?: string, user?: User, cursor?: string, rooms?: Record<string, string>}} patch */
  store(patch) {
    if (!this.storage) return;
    const next = { ...this.stored(), ...patch };
    try {
      this.storage.setItem(this.storageKey, JSON.stringify(next));
    } catch {
      // Storage full or disabled: resuming will simply start a new session.
    }
  }

  /** Forgets the stored session and cursor. */
  forget() {
    try {
      this.storage?.removeItem(this.storageKey);
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
}
