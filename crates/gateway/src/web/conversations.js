// @ts-check
/**
 * conversations.js — the conversations and every change to them: creating one for a
 * peer, inserting messages in id order, unread counts and read markers, the watch
 * list, the local copy of the list (for servers without `conversations`), and loading
 * the list and history from the server.
 */

import { chat, state } from './app-state.js';
import { ChatError, compareIds } from './chat-protocol.js';
import { $, render, renderHistoryStatus, renderPane, toast } from './render.js';
import { roomWatchIds } from './rooms.js';

/**
 * @typedef {import('./chat-protocol.js').Message} Message
 * @typedef {import('./app-state.js').Peer} Peer
 * @typedef {import('./app-state.js').Conv} Conv
 */

const PAGE = 50;

// ---- local persistence (the conversation list when the server has no `conversations`)

function localKey() {
  return `chat-web:${location.origin}:${state.me?.id}`;
}

export function saveLocal() {
  if (!state.me) return;
  const convs = [...state.convs.values()].map((c) => ({
    peer: { id: c.peer.id, name: c.peer.name },
    conversation: c.conversation,
    last: c.last,
    unread: c.unread,
    readUpTo: c.readUpTo,
    peerReadUpTo: c.peerReadUpTo,
    activity: c.activity,
  }));
  try {
    localStorage.setItem(localKey(), JSON.stringify({ convs, active: state.active }));
  } catch {
    // Storage full: the list is rebuilt from the server next time.
  }
}

export function loadLocal() {
  state.convs.clear();
  let saved;
  try {
    saved = JSON.parse(localStorage.getItem(localKey()) ?? 'null');
  } catch {
    saved = null;
  }
  for (const c of saved?.convs ?? []) {
    const conv = ensureConv(c.peer);
    Object.assign(conv, { conversation: c.conversation, last: c.last, unread: c.unread ?? 0, readUpTo: c.readUpTo, peerReadUpTo: c.peerReadUpTo, activity: c.activity ?? conv.activity });
  }
  return saved?.active ?? null;
}

// ---- state changes ---------------------------------------------------------------

/** @param {Peer} peer @returns {Conv} */
export function ensureConv(peer) {
  let conv = state.convs.get(peer.id);
  if (!conv) {
    conv = {
      peer: { id: peer.id, name: peer.name || peer.id, online: peer.online },
      conversation: null,
      messages: [],
      pending: new Map(),
      more: null,
      loading: false,
      last: null,
      unread: 0,
      readUpTo: null,
      peerReadUpTo: null,
      activity: new Date().toISOString(),
      typingUntil: 0,
    };
    state.convs.set(peer.id, conv);
    refreshWatch();
  } else if (peer.name && peer.name !== peer.id) {
    conv.peer.name = peer.name;
  }
  if (peer.online !== undefined) conv.peer.online = peer.online;
  else if (conv.peer.online === undefined && state.presence.has(peer.id)) {
    const p = /** @type {{online: boolean, lastSeenAt?: string}} */ (state.presence.get(peer.id));
    conv.peer.online = p.online;
    if (p.lastSeenAt) conv.peer.lastSeenAt = p.lastSeenAt;
  }
  return conv;
}

/** Inserts a message in id order; false if it was already there. @param {Conv} conv @param {Message} m */
export function insertMessage(conv, m) {
  conv.conversation = m.conversation;
  const list = conv.messages;
  let i = list.length;
  while (i > 0 && compareIds(list[i - 1].id, m.id) > 0) i--;
  if (i > 0 && list[i - 1].id === m.id) return false;
  list.splice(i, 0, m);
  if (!conv.last || compareIds(m.id, conv.last.id) >= 0) {
    conv.last = m;
    conv.activity = m.sent_at;
  }
  return true;
}

/** @param {Message} m */
export function peerOf(m) {
  return m.from === state.me?.id ? m.to : m.from;
}

export function isWatching(/** @type {Conv} */ conv) {
  return state.active === conv.peer.id && document.visibilityState === 'visible';
}

/** @param {Message} message @param {boolean} mine */
export function onMessage(message, mine) {
  const conv = ensureConv({ id: peerOf(message), name: '' });
  const isNew = insertMessage(conv, message);
  if (conv.peer.name === conv.peer.id) learnNames(conv.peer.id);
  if (!isNew) return;
  if (!mine) {
    conv.typingUntil = 0;
    if (!isWatching(conv) && (!conv.readUpTo || compareIds(message.id, conv.readUpTo) > 0)) conv.unread++;
    if (isWatching(conv)) markRead(conv);
  }
  saveLocal();
  if (state.active === conv.peer.id) renderPane({});
  render();
}

let namesTimer = 0;
/** Peers whose name was already looked up once. */
const namesAsked = new Set();
/** A peer known only by id (a first message from them): the server's list has names. @param {string} peer */
function learnNames(peer) {
  if (!chat.supports('conversations') || namesAsked.has(peer)) return;
  namesAsked.add(peer);
  clearTimeout(namesTimer);
  namesTimer = window.setTimeout(async () => {
    try {
      for (const item of await chat.conversations()) {
        const conv = state.convs.get(item.peer.id);
        if (conv) conv.peer.name = item.peer.name || conv.peer.name;
      }
      saveLocal();
      render();
    } catch (e) {
      logRefusal('conversations', e);
    }
  }, 300);
}

/** @param {Conv} conv */
export function markRead(conv) {
  const incoming = [...conv.messages].reverse().find((m) => m.from === conv.peer.id);
  conv.unread = 0;
  if (!incoming || (conv.readUpTo && compareIds(incoming.id, conv.readUpTo) <= 0)) return;
  // Offline, the marker stays behind and goes out on the next call (e.g. after reconnect).
  if (chat.markRead(conv.peer.id, incoming.id) || !chat.supports('read')) conv.readUpTo = incoming.id;
}

export function refreshWatch() {
  if (!chat.supports('watch') || chat.status.state !== 'online') return;
  chat.watch([...state.convs.keys(), ...state.results.map((r) => r.id), ...roomWatchIds()]);
}

// ---- loading from the server -------------------------------------------------------

/** Everything the list needs after a sign-in or a failed recovery. @param {boolean} reset */
export async function reload(reset) {
  if (reset) {
    for (const conv of state.convs.values()) {
      conv.messages = [];
      conv.more = null;
    }
  }
  if (chat.supports('conversations')) {
    try {
      for (const item of await chat.conversations()) {
        const conv = ensureConv(item.peer);
        if (item.last) insertMessage(conv, item.last);
        Object.assign(conv, { conversation: item.conversation, unread: item.unread ?? 0, readUpTo: item.read_up_to ?? conv.readUpTo, peerReadUpTo: item.peer_read_up_to ?? conv.peerReadUpTo });
      }
    } catch (e) {
      logRefusal('conversations', e);
    }
  }
  if (!chat.supports('conversations')) {
    // No server-side list: refresh each remembered conversation's newest message.
    await Promise.all([...state.convs.values()].slice(0, 30).map(async (conv) => {
      if (conv.peer.id === state.active) return;
      try {
        const page = await chat.history(conv.peer.id, { limit: 1 });
        for (const m of page.messages) {
          if (insertMessage(conv, m) && m.from !== state.me?.id && (!conv.readUpTo || compareIds(m.id, conv.readUpTo) > 0)) conv.unread = Math.max(conv.unread, 1);
        }
      } catch {
        // A peer unknown to this cluster: the row stays as it was.
      }
    }));
  }
  const active = state.active ? state.convs.get(state.active) : null;
  if (active) await loadNewest(active);
  refreshWatch();
  saveLocal();
  render();
}

/** @param {string} what @param {any} e */
export function logRefusal(what, e) {
  if (e instanceof ChatError && !chat.supports(what)) console.info(`chat: this server has no "${what}" request yet`);
  else console.warn(`chat: ${what} failed`, e);
}

/** @param {Conv} conv */
export async function loadNewest(conv) {
  conv.loading = true;
  try {
    const page = await chat.history(conv.peer.id, { limit: PAGE });
    for (const m of page.messages) insertMessage(conv, m);
    if (conv.more === null || page.messages.length === 0) conv.more = page.more;
    if (isWatching(conv)) markRead(conv);
  } catch (e) {
    if (e instanceof ChatError && e.code === 'not_found') toast('That user does not exist on this cluster.');
  } finally {
    conv.loading = false;
  }
  renderPane({ stick: true });
  fillViewport(conv);
}

/** @param {Conv} conv */
export async function loadOlder(conv) {
  if (conv.loading || !conv.more || conv.messages.length === 0) return;
  conv.loading = true;
  renderHistoryStatus(conv);
  const box = $('messages');
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const page = await chat.history(conv.peer.id, { before: conv.messages[0].id, limit: PAGE });
    for (const m of page.messages) insertMessage(conv, m);
    conv.more = page.more;
  } catch (e) {
    console.warn('chat: loading older messages failed', e);
  } finally {
    conv.loading = false;
  }
  if (state.active !== conv.peer.id) return;
  renderPane({});
  box.scrollTop = box.scrollHeight - fromBottom;
  fillViewport(conv);
}

/** Loads older pages until the pane can scroll, so scrolling up can load more. @param {Conv} conv */
function fillViewport(conv) {
  const box = $('messages');
  if (state.active === conv.peer.id && conv.more && box.scrollHeight <= box.clientHeight + 40) void loadOlder(conv);
}
