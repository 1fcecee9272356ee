// @ts-check
/**
 * chat-wire.js — the small pieces of the chat protocol that need no connection: the
 * error type, the order of message ids, send nonces, the default node URL, a token's
 * subject and what a "not implemented" refusal looks like.
 *
 * Part of chat-protocol.js, which re-exports the public ones; import that instead.
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

/**
 * Whether a `bad_request` reply means "this server does not implement that request",
 * as opposed to a malformed request of ours.
 * @param {string} message
 */
export function isFeatureRefusal(message) {
  return /not (available|supported|implemented)|unknown type/i.test(message ?? '');
}

/**
 * The `sub` claim of a JWT, read without verifying (only to keep a cursor that
 * belongs to the same user).
 * @param {string} token
 */
export function tokenSubject(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), '='))).sub ?? null;
  } catch {
    return null;
  }
}
