// @ts-check
/**
 * app.js — the bundled web client: sign-in, conversation list, message pane.
 *
 * Protocol work (sessions, resume, dedup, resends) lives in chat-protocol.js and
 * DOM building in view.js; this file holds the client's state and wires events.
 *
 * URL options:
 * - `/#token=<JWT>` signs in with a host application's token; the fragment is removed
 *   from the address bar at once.
 * - `?nodes=ws://a:8080/ws,ws://b:8080/ws` lists the nodes to use, tried in turn on
 *   every reconnect (default: this page's own node, `/ws`). The nodes must allow this
 *   page's origin (`CHAT_SERVER__ALLOWED_ORIGINS`).
 *
 * Request types the server may not implement yet (`conversations`, `users`, `read`,
 * `watch`) degrade: the conversation list is kept in localStorage and peers are
 * reached by pasting their user id.
 */

import { ChatConnection, ChatError, compareIds, defaultUrl, newNonce } from './chat-protocol.js';
import { conversationItem, lastSeen, messageList, paintAvatar, searchItem } from './view.js';

/**
 * @typedef {import('./chat-protocol.js').Message} Message
 * @typedef {{id: string, name: string, online?: boolean, lastSeenAt?: string}} Peer
 * @typedef {{nonce: string, body: string, status: 'sending'|'failed', error?: string, createdAt: string}} Pending
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

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
const PAGE = 50;
const TYPING_SHOWN_MS = 5000;
const USER_ID = /^[A-Za-z0-9._@-]{1,64}$/;

const nodes = (new URLSearchParams(location.search).get('nodes') ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => /^wss?:\/\//.test(s));
const chat = new ChatConnection({ client: 'chat-web/1' });

const state = {
  /** @type {{id: string, name: string}|null} */
  me: null,
  /** @type {Map<string, Conv>} peer id → conversation */
  convs: new Map(),
  /** @type {string|null} */
  active: null,
  maxBody: 4000,
  /** @type {Array<Peer>} */
  results: [],
};

// ---- local persistence (the conversation list when the server has no `conversations`)

function localKey() {
  return `chat-web:${location.origin}:${state.me?.id}`;
}

function saveLocal() {
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

function loadLocal() {
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
function ensureConv(peer) {
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
  return conv;
}

/** Inserts a message in id order; false if it was already there. @param {Conv} conv @param {Message} m */
function insertMessage(conv, m) {
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
function peerOf(m) {
  return m.from === state.me?.id ? m.to : m.from;
}

function isWatching(/** @type {Conv} */ conv) {
  return state.active === conv.peer.id && document.visibilityState === 'visible';
}

/** @param {Message} message @param {boolean} mine */
function onMessage(message, mine) {
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
function markRead(conv) {
  const incoming = [...conv.messages].reverse().find((m) => m.from === conv.peer.id);
  conv.unread = 0;
  if (!incoming || (conv.readUpTo && compareIds(incoming.id, conv.readUpTo) <= 0)) return;
  // Offline, the marker stays behind and goes out on the next call (e.g. after reconnect).
  if (chat.markRead(conv.peer.id, incoming.id) || !chat.supports('read')) conv.readUpTo = incoming.id;
}

function refreshWatch() {
  if (!chat.supports('watch') || chat.status.state !== 'online') return;
  chat.watch([...state.convs.keys(), ...state.results.map((r) => r.id)]);
}

// ---- loading from the server -------------------------------------------------------

/** Everything the list needs after a sign-in or a failed recovery. @param {boolean} reset */
async function reload(reset) {
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
function logRefusal(what, e) {
  if (e instanceof ChatError && !chat.supports(what)) console.info(`chat: this server has no "${what}" request yet`);
  else console.warn(`chat: ${what} failed`, e);
}

/** @param {Conv} conv */
async function loadNewest(conv) {
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
async function loadOlder(conv) {
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

// ---- user actions -----------------------------------------------------------------

/** @param {Peer} peer */
function openConversation(peer) {
  const conv = ensureConv(peer);
  state.active = conv.peer.id;
  document.body.classList.add('show-chat');
  $('search').value = '';
  state.results = [];
  $('search-panel').hidden = true;
  markRead(conv);
  saveLocal();
  render();
  renderPane({ stick: true });
  if (conv.more === null && !conv.loading) void loadNewest(conv);
  $('composer-input').focus();
}

function submitComposer() {
  const input = $('composer-input');
  const conv = state.active ? state.convs.get(state.active) : null;
  const body = input.value.trim();
  if (!conv || !body) return;
  if ([...body].length > state.maxBody) {
    toast(`Messages are limited to ${state.maxBody} characters.`);
    return;
  }
  input.value = '';
  autosize();
  send(conv, { nonce: newNonce(), body, status: 'sending', createdAt: new Date().toISOString() });
}

/** @param {Conv} conv @param {Pending} pending */
function send(conv, pending) {
  pending.status = 'sending';
  delete pending.error;
  conv.pending.set(pending.nonce, pending);
  conv.activity = pending.createdAt;
  renderPane({ stick: true });
  render();
  chat.send(conv.peer.id, pending.body, { nonce: pending.nonce }).catch((e) => {
    if (!conv.pending.has(pending.nonce)) return;
    pending.status = 'failed';
    pending.error = e instanceof ChatError ? errorText(e) : 'Not sent';
    renderPane({});
  });
}

/** @param {ChatError} e */
function errorText(e) {
  return ({ not_found: 'No such user', rate_limited: 'Sending too fast', too_large: 'Too long', unavailable: 'Server busy', unauthorized: 'Signed out' })[e.code] ?? 'Not sent';
}

let searchSeq = 0;
let searchTimer = 0;
function onSearchInput() {
  clearTimeout(searchTimer);
  searchTimer = window.setTimeout(runSearch, 200);
}

async function runSearch() {
  const query = $('search').value.trim();
  const seq = ++searchSeq;
  if (!query) {
    state.results = [];
    $('search-panel').hidden = true;
    return;
  }
  /** @type {Peer[]} */
  let found = [];
  let note = '';
  if (chat.supports('users')) {
    try {
      found = (await chat.users(query, 20)).filter((u) => u.id !== state.me?.id);
    } catch (e) {
      logRefusal('users', e);
    }
  }
  if (seq !== searchSeq) return;
  if (!chat.supports('users')) note = 'Directory search is not available on this server yet. Paste a user id to start a chat.';
  else if (found.length === 0) note = 'Nobody found.';
  state.results = found;
  const items = found.map((u) => searchItem(u, u.online ? 'online' : u.id));
  // Offer the raw id when it may be one: no directory, nothing found, or id-like text.
  const idLike = !chat.supports('users') || found.length === 0 || /[0-9@._-]/.test(query);
  if (idLike && USER_ID.test(query) && query !== state.me?.id && !found.some((u) => u.id === query)) {
    const known = state.convs.get(query);
    items.push(searchItem({ id: query, name: known?.peer.name ?? query }, 'Start a chat with this user id'));
    if (note === 'Nobody found.') note = '';
  }
  $('search-results').replaceChildren(...items);
  $('search-note').textContent = note;
  $('search-panel').hidden = false;
  refreshWatch();
}

/** @param {Event} ev */
function onSearchPick(ev) {
  const row = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (ev.target).closest('[data-user-id]'));
  if (!row?.dataset.userId) return;
  const id = row.dataset.userId;
  const hit = state.results.find((u) => u.id === id);
  openConversation(hit ?? { id, name: state.convs.get(id)?.peer.name ?? id });
}

// ---- rendering -------------------------------------------------------------------

let renderQueued = false;
/** Re-renders the side panel on the next frame (coalesces bursts of events). */
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderList();
    renderPeer();
    renderTyping();
  });
}

function renderList() {
  const convs = [...state.convs.values()].sort((a, b) => (a.activity < b.activity ? 1 : a.activity > b.activity ? -1 : 0));
  const me = state.me?.id ?? '';
  $('conversations').replaceChildren(...convs.map((c) => conversationItem(c, { active: c.peer.id === state.active, me })));
  $('conversations-empty').hidden = convs.length > 0;
  const unread = convs.reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Chat` : 'Chat';
}

function renderPeer() {
  const conv = state.active ? state.convs.get(state.active) : null;
  $('pane-empty').hidden = Boolean(conv);
  $('pane-chat').hidden = !conv;
  if (!conv) return;
  paintAvatar($('peer-avatar'), conv.peer);
  $('peer-name').textContent = conv.peer.name || conv.peer.id;
  const status = $('peer-status');
  if (conv.peer.online === undefined) status.textContent = conv.peer.id;
  else status.textContent = conv.peer.online ? 'online' : lastSeen(conv.peer.lastSeenAt);
  status.classList.toggle('online', Boolean(conv.peer.online));
}

function renderTyping() {
  const conv = state.active ? state.convs.get(state.active) : null;
  const typing = Boolean(conv && conv.typingUntil > Date.now());
  $('typing').textContent = typing && conv ? `${conv.peer.name || conv.peer.id} is typing…` : '';
  $('typing').classList.toggle('visible', typing);
}

/** @param {{stick?: boolean}} opts stick: scroll to the newest message */
function renderPane(opts) {
  const conv = state.active ? state.convs.get(state.active) : null;
  if (!conv || !state.me) return;
  const box = $('messages');
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  $('message-list').replaceChildren(...messageList(conv, state.me.id));
  renderHistoryStatus(conv);
  if (opts.stick || nearBottom) box.scrollTop = box.scrollHeight;
}

/** @param {Conv} conv */
function renderHistoryStatus(conv) {
  const status = $('history-status');
  status.textContent = conv.loading ? 'Loading…' : conv.more === false ? (conv.messages.length ? 'This is the beginning of your conversation.' : 'No messages yet. Say hello!') : '';
}

let bannerTimer = 0;
/** @param {import('./chat-protocol.js').StateEvent} s */
function renderState(s) {
  document.body.dataset.connection = s.state;
  const banner = $('banner');
  const text = $('banner-text');
  const retry = $('banner-retry');
  clearInterval(bannerTimer);
  banner.className = `banner ${s.state}`;
  retry.hidden = s.state !== 'reconnecting';
  $('node-dot').className = `dot ${s.state === 'online' ? 'online' : ''}`;
  switch (s.state) {
    case 'online':
      $('node-label').textContent = `Connected · ${s.node ?? ''}`;
      if (!banner.hidden && banner.dataset.was !== 'connecting-first') {
        text.textContent = 'Back online';
        bannerTimer = window.setTimeout(() => (banner.hidden = true), 1500);
      } else banner.hidden = true;
      break;
    case 'connecting':
      banner.hidden = !state.me;
      text.textContent = s.attempt ? 'Reconnecting…' : 'Connecting…';
      $('node-label').textContent = 'Connecting…';
      break;
    case 'reconnecting': {
      banner.hidden = !state.me;
      const tick = () => {
        const left = Math.max(0, Math.ceil(((s.retryAt ?? 0) - Date.now()) / 1000));
        text.textContent = `Connection lost. Reconnecting in ${left} s`;
      };
      tick();
      bannerTimer = window.setInterval(tick, 250);
      $('node-label').textContent = 'Disconnected';
      break;
    }
    case 'offline':
      banner.hidden = false;
      text.textContent = 'You are offline. Waiting for the network…';
      $('node-label').textContent = 'Offline';
      break;
    default:
      banner.hidden = true;
      $('node-label').textContent = 'Not connected';
  }
  banner.dataset.was = s.state === 'connecting' && !s.attempt ? 'connecting-first' : s.state;
}

/** @param {string} message */
function toast(message) {
  const node = $('toast');
  node.textContent = message;
  node.hidden = false;
  clearTimeout(Number(node.dataset.timer));
  node.dataset.timer = String(setTimeout(() => (node.hidden = true), 2500));
}

function autosize() {
  const input = $('composer-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

// ---- screens and sign-in -------------------------------------------------------------

/** @param {string} [error] */
function showSignIn(error) {
  state.me = null;
  state.active = null;
  state.convs.clear();
  $('app').hidden = true;
  $('banner').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = error ?? '';
  $('signin-submit').disabled = false;
  $('signin-name').focus();
}

/** @param {{id: string, name: string}} user */
function showApp(user) {
  const changed = state.me?.id !== user.id;
  state.me = user;
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = user.name;
  $('me-id').textContent = user.id;
  paintAvatar($('me-avatar'), user);
  if (changed) {
    const active = loadLocal();
    if (active && state.convs.has(active)) state.active = active;
    if (matchMedia('(max-width: 720px)').matches && !state.active) document.body.classList.remove('show-chat');
  }
  render();
}

/** @param {import('./chat-protocol.js').Credential} [credential] */
async function signIn(credential) {
  try {
    await chat.connect(nodes.length ? nodes : [defaultUrl()], credential);
  } catch (e) {
    const message = e instanceof ChatError ? e.message : String(e);
    showSignIn(credential && 'username' in credential ? message : `Please sign in again (${message}).`);
  }
}

chat.on('state', renderState);
chat.on('state', (/** @type {any} */ s) => {
  if (s.state === 'signed-out' && state.me) showSignIn('You were signed out. Please sign in again.');
});
chat.on('welcome', ({ welcome, first }) => {
  state.maxBody = welcome.limits?.max_body ?? state.maxBody;
  showApp(welcome.user);
  for (const u of welcome.unread ?? []) {
    const conv = ensureConv(u.peer);
    if (u.last) insertMessage(conv, u.last);
    if (state.active !== conv.peer.id) conv.unread = u.count;
  }
  if (first) void reload(false);
  const active = state.active ? state.convs.get(state.active) : null;
  if (active && isWatching(active)) markRead(active);
});
chat.on('resync', () => void reload(true));
chat.on('message', ({ message, mine }) => onMessage(message, mine));
chat.on('ack', ({ nonce, message }) => {
  const conv = state.convs.get(peerOf(message));
  if (!conv) return;
  conv.pending.delete(nonce);
  insertMessage(conv, message);
  saveLocal();
  if (state.active === conv.peer.id) renderPane({});
  render();
});
chat.on('read', ({ conversation, by, up_to }) => {
  const conv = [...state.convs.values()].find((c) => c.conversation === conversation);
  if (!conv) return;
  if (by === state.me?.id) {
    if (!conv.readUpTo || compareIds(up_to, conv.readUpTo) > 0) conv.readUpTo = up_to;
    if (conv.last && compareIds(up_to, conv.last.id) >= 0) conv.unread = 0;
  } else if (!conv.peerReadUpTo || compareIds(up_to, conv.peerReadUpTo) > 0) {
    conv.peerReadUpTo = up_to;
    if (state.active === conv.peer.id) renderPane({});
  }
  saveLocal();
  render();
});
chat.on('typing', ({ from }) => {
  const conv = state.convs.get(from);
  if (!conv) return;
  conv.typingUntil = Date.now() + TYPING_SHOWN_MS;
  render();
  setTimeout(render, TYPING_SHOWN_MS + 50);
});
chat.on('presence', ({ user, online, last_seen_at }) => {
  const conv = state.convs.get(user);
  if (conv) {
    conv.peer.online = online;
    if (last_seen_at) conv.peer.lastSeenAt = last_seen_at;
  }
  for (const row of document.querySelectorAll(`.search-result[data-user-id="${CSS.escape(user)}"] .presence`)) row.classList.toggle('online', online);
  render();
});
chat.on('unsupported', ({ type }) => {
  document.body.dataset[`no${type[0].toUpperCase()}${type.slice(1)}`] = 'true';
  if (type === 'users' && $('search').value.trim()) void runSearch();
});

// ---- DOM wiring ------------------------------------------------------------------

$('signin-form').addEventListener('submit', (/** @type {Event} */ ev) => {
  ev.preventDefault();
  const username = $('signin-name').value.trim();
  if (!username) return;
  $('signin-submit').disabled = true;
  $('signin-error').textContent = '';
  void signIn({ username });
});
$('signout').addEventListener('click', () => {
  chat.signOut();
  showSignIn();
});
$('me-id').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(state.me?.id ?? '');
    toast('User id copied');
  } catch {
    getSelection()?.selectAllChildren($('me-id'));
  }
});
$('banner-retry').addEventListener('click', () => chat.reconnectNow());
$('search').addEventListener('input', onSearchInput);
$('search').addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
  if (ev.key === 'Enter') {
    ev.preventDefault();
    clearTimeout(searchTimer);
    void runSearch().then(() => $('search-results').firstElementChild?.click());
  } else if (ev.key === 'Escape') {
    $('search').value = '';
    void runSearch();
  }
});
$('search-results').addEventListener('click', onSearchPick);
for (const listId of ['conversations', 'search-results']) {
  $(listId).addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      /** @type {HTMLElement} */ (ev.target).click();
    }
  });
}
$('conversations').addEventListener('click', (/** @type {Event} */ ev) => {
  const row = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (ev.target).closest('[data-peer-id]'));
  const conv = row?.dataset.peerId ? state.convs.get(row.dataset.peerId) : null;
  if (conv) openConversation(conv.peer);
});
$('back').addEventListener('click', () => {
  document.body.classList.remove('show-chat');
});
$('messages').addEventListener('scroll', () => {
  const conv = state.active ? state.convs.get(state.active) : null;
  if (conv && $('messages').scrollTop < 120) void loadOlder(conv);
});
$('message-list').addEventListener('click', (/** @type {Event} */ ev) => {
  const button = /** @type {HTMLElement} */ (ev.target).closest('button.retry');
  const conv = state.active ? state.convs.get(state.active) : null;
  const pending = conv && button instanceof HTMLElement ? conv.pending.get(button.dataset.nonce ?? '') : null;
  if (conv && pending) send(conv, pending);
});
$('composer').addEventListener('submit', (/** @type {Event} */ ev) => {
  ev.preventDefault();
  submitComposer();
});
$('composer-input').addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    submitComposer();
  }
});
$('composer-input').addEventListener('input', () => {
  autosize();
  if (state.active && $('composer-input').value.trim()) chat.typing(state.active);
});
document.addEventListener('visibilitychange', () => {
  const conv = state.active ? state.convs.get(state.active) : null;
  if (conv && document.visibilityState === 'visible') {
    markRead(conv);
    saveLocal();
    render();
  }
});

// ---- start -------------------------------------------------------------------------

const token = new URLSearchParams(location.hash.slice(1)).get('token');
if (token) {
  // Keep the token out of the address bar, history and screenshots.
  history.replaceState(null, '', location.pathname + location.search);
  void signIn({ token });
} else if (chat.hasStoredSession()) {
  const known = chat.storedUser();
  if (known) showApp(known);
  void signIn();
} else {
  showSignIn();
}

/** For debugging from the console and for the browser test. */
Object.defineProperty(window, 'chatClient', { value: { chat, state } });
