// @ts-check
/**
 * app-state.js — the web client's state, shared by its modules: the one connection to
 * the cluster (`chat`) and what the page shows (`state`: the signed-in user, the
 * conversations by peer, the open one, search results).
 *
 * conversations.js changes conversations, render.js paints the state, app.js wires
 * events to both.
 */

import { ChatConnection } from './chat-protocol.js';

/**
 * @typedef {import('./chat-protocol.js').Message} Message
 * @typedef {{id: string, name: string, online?: boolean, lastSeenAt?: string}} Peer
 * @typedef {{nonce: string, body: string, status: 'sending'|'failed', error?: string, final?: boolean, createdAt: string}} Pending
 * @typedef {object} Conv
 * @property {Peer} peer
 * @property {string|null} conversation
 * @property {Message[]} messages loaded messages, ascending id
 * @property {Map<string, Pending>} pending unacknowledged sends by nonce
 * @property {boolean|null} more older history exists (null: nothing loaded yet)
 * @property {boolean} loading
 * @property {Message|null} last
 * @property {number} unread
 * @property {string|null} readUpTo
 * @property {string|null} peerReadUpTo
 * @property {string} activity ISO time used to sort the list
 * @property {number} typingUntil
 */

/** The one connection to the cluster. */
export const chat = new ChatConnection({ client: 'chat-web/1' });

/** What the page shows. */
export const state = {
  /** @type {{id: string, name: string}|null} */
  me: null,
  /** @type {Map<string, Conv>} peer id → conversation */
  convs: new Map(),
  /** @type {string|null} the open conversation's peer id */
  active: null,
  /** @type {string|null} the open room's id (rooms.js); never set together with `active` */
  activeRoom: null,
  maxBody: 4000,
  /** @type {Array<Peer>} */
  results: [],
  /** @type {Map<string, {online: boolean, lastSeenAt?: string}>} the latest presence heard per user */
  presence: new Map(),
};
