// @ts-check
/**
 * app.js — the bundled web client: sign-in, conversation list, message pane.
 *
 * Protocol work (sessions, resume, dedup, resends) lives in chat-protocol.js and
 * DOM building in view.js. The client's state is in app-state.js, changes to the
 * conversations in conversations.js and painting in render.js; this file holds the
 * user's actions (opening a conversation, sending, searching), sign-in, and wires
 * protocol and DOM events to the rest.
 *
 * URL options:
 * - `/#token=<JWT>` signs in with a host application's token; the fragment is removed
 *   from the address bar at once.
 * - `?nodes=ws://a:8080/ws,ws://b:8080/ws` lists the nodes to use, tried in turn on
 *   every reconnect (default: this page's own node, `/ws`). Only URLs on this page's
 *   own origin or in the node's `server.client_nodes` are taken (the others are
 *   ignored, and the page says so): the stored session goes in `hello`, so a link must
 *   not choose where it is sent. The nodes must allow this page's origin
 *   (`CHAT_SERVER__ALLOWED_ORIGINS`).
 *
 * Request types the server may not implement yet (`conversations`, `users`, `read`,
 * `watch`) degrade: the conversation list is kept in localStorage and peers are
 * reached by pasting their user id.
 */

import { ChatError, compareIds, defaultUrl, newNonce } from './chat-protocol.js';
import { chat, state } from './app-state.js';
import { ensureConv, insertMessage, isWatching, loadLocal, loadNewest, loadOlder, logRefusal, markRead, onMessage, peerOf, refreshWatch, reload, saveLocal } from './conversations.js';
import { $, autosize, render, renderPane, renderState, toast } from './render.js';
import { paintAvatar, searchItem, lastSeen } from './view.js';
import { closeRoom, renderRooms } from './rooms.js';

/**
 * @typedef {import('./app-state.js').Peer} Peer
 * @typedef {import('./app-state.js').Pending} Pending
 * @typedef {import('./app-state.js').Conv} Conv
 */

const TYPING_SHOWN_MS = 5000;
const SUSPENDED = 'This account is suspended. Contact the site if you think this is a mistake.';
const USER_ID = /^[A-Za-z0-9._@|-]{1,128}$/;

/** A WebSocket URL in its normal form, or null. @param {string} s */
function wsUrl(s) {
  try {
    const url = new URL(s);
    return url.protocol === 'ws:' || url.protocol === 'wss:' ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * The `?nodes=` URLs this page may use: its own origin (as ws: or wss:) and the nodes
 * the server lists in index.html's `chat-client-nodes` meta (the same list as the CSP's
 * `connect-src`, so the browser would refuse any other anyway).
 */
function allowedNodes() {
  const own = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/`;
  const meta = document.querySelector('meta[name="chat-client-nodes"]')?.getAttribute('content') ?? '';
  const configured = new Set(meta.split(/\s+/).map(wsUrl).filter(Boolean));
  const asked = (new URLSearchParams(location.search).get('nodes') ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  /** @type {string[]} */
  const ok = [];
  let refused = 0;
  for (const url of asked.map(wsUrl)) {
    if (url && (url.startsWith(own) || configured.has(url))) ok.push(url);
    else refused++;
  }
  return { ok, refused };
}

const { ok: nodes, refused: refusedNodes } = allowedNodes();
if (refusedNodes) {
  document.body.dataset.refusedNodes = String(refusedNodes);
  toast(`Ignored ${refusedNodes} chat server address${refusedNodes > 1 ? 'es' : ''} from the link: not one of this site's servers.`);
}

// ---- user actions -----------------------------------------------------------------

/** @param {Peer} peer */
function openConversation(peer) {
  const conv = ensureConv(peer);
  closeRoom();
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
  delete pending.final;
  conv.pending.set(pending.nonce, pending);
  conv.activity = pending.createdAt;
  renderPane({ stick: true });
  render();
  chat.send(conv.peer.id, pending.body, { nonce: pending.nonce }).catch((e) => {
    if (!conv.pending.has(pending.nonce)) return;
    pending.status = 'failed';
    pending.error = e instanceof ChatError ? errorText(e) : 'Not sent';
    pending.final = e instanceof ChatError && (e.code === 'not_found' || e.code === 'too_large');
    renderPane({});
  });
}

/** @param {ChatError} e */
function errorText(e) {
  return ({ not_found: 'This user does not exist', rate_limited: 'Sending too fast', too_large: 'Too long', unavailable: 'Server busy', unauthorized: 'Signed out' })[e.code] ?? 'Not sent';
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
  // A pasted id is offered only once the server confirms the user exists (the
  // directory found it, or a one-message history with it does not answer not_found).
  if (!found.some((u) => u.id === query) && USER_ID.test(query) && /[0-9@._|-]/.test(query) && query !== state.me?.id) {
    const known = state.convs.get(query);
    const exists = known ? true : await userExists(query);
    if (seq !== searchSeq) return;
    if (exists) {
      found.push({ id: query, name: known?.peer.name ?? query });
      note = '';
    } else if (!found.length) note = /[0-9]/.test(query) && query.length > 12 ? 'No user with this id.' : 'Nobody found.';
  }
  state.results = found;
  const items = found.map((u) => searchItem(u, u.online ? 'online' : u.online === false ? lastSeen(u.last_seen_at ?? u.lastSeenAt) : 'Start a chat'));
  $('search-results').replaceChildren(...items);
  $('search-note').textContent = note;
  $('search-panel').hidden = false;
  refreshWatch();
}

/**
 * Whether a user id exists on this cluster: watching it answers its presence, and a
 * user who exists is online or has a last-seen time (an unknown id has neither).
 * Without `watch` (older servers) every well-formed id is offered.
 * @param {string} id
 */
function userExists(id) {
  const known = state.presence.get(id);
  if (known) return Promise.resolve(known.online || Boolean(known.lastSeenAt));
  if (!chat.supports('watch') || chat.status.state !== 'online') return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      off();
      resolve(true);
    }, 3000);
    const off = chat.on('presence', (/** @type {any} */ p) => {
      if (p.user !== id) return;
      off();
      clearTimeout(timer);
      resolve(p.online || Boolean(p.last_seen_at));
    });
    chat.watch([...chat.watched.filter((u) => u !== id), id]);
  });
}

/** @param {Event} ev */
function onSearchPick(ev) {
  const row = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (ev.target).closest('[data-user-id]'));
  if (!row?.dataset.userId) return;
  const id = row.dataset.userId;
  const hit = state.results.find((u) => u.id === id);
  openConversation(hit ?? { id, name: state.convs.get(id)?.peer.name ?? id });
}


// ---- screens and sign-in -------------------------------------------------------------

/** @param {string} [error] */
function showSignIn(error) {
  state.me = null;
  state.active = null;
  state.activeRoom = null;
  state.convs.clear();
  $('app').hidden = true;
  $('banner').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = error ?? '';
  $('signin-submit').disabled = false;
  $('signin-name').focus();
}

/** What a refused guest sign-in means, in words for people. @param {any} e */
function signInText(e) {
  if (!(e instanceof ChatError)) return 'Could not reach the chat server. Check your connection and try again.';
  if (e.code === 'bad_request') return 'Names can use letters, digits, spaces, dots, dashes and underscores (up to 32 characters).';
  if (e.code === 'unauthorized') return 'Guest sign-in is turned off here. Sign in through your app instead.';
  if (e.code === 'rate_limited') return 'Too many attempts. Wait a moment and try again.';
  return 'Could not sign in. Please try again.';
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
  renderRooms();
}

/** @param {import('./chat-protocol.js').Credential} [credential] */
async function signIn(credential) {
  try {
    await chat.connect(nodes.length ? nodes : [defaultUrl()], credential);
  } catch (e) {
    const message = e instanceof ChatError ? e.message : String(e);
    if (e instanceof ChatError && chat.status.state === 'suspended') return showSignIn(SUSPENDED);
    showSignIn(credential && 'username' in credential ? signInText(e) : `Please sign in again (${message}).`);
  }
}

chat.on('state', renderState);
chat.on('state', (/** @type {any} */ s) => {
  if (s.state === 'signed-out' && state.me) showSignIn('You were signed out. Please sign in again.');
  if (s.state === 'suspended') showSignIn(SUSPENDED);
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
// Room messages (`message.room`) belong to rooms.js.
chat.on('message', ({ message, mine }) => {
  if (!message.room) onMessage(message, mine);
});
chat.on('ack', ({ nonce, message }) => {
  if (message?.room) return;
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
  state.presence.set(user, { online, lastSeenAt: last_seen_at ?? state.presence.get(user)?.lastSeenAt });
  const conv = state.convs.get(user);
  if (conv) {
    conv.peer.online = online;
    if (last_seen_at) conv.peer.lastSeenAt = last_seen_at;
  }
  // A search result keeps it too: opening it then shows the presence already known.
  for (const r of state.results) {
    if (r.id !== user) continue;
    r.online = online;
    if (last_seen_at) r.lastSeenAt = last_seen_at;
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
  if (!username) {
    $('signin-error').textContent = 'Please type a name (spaces alone do not count).';
    $('signin-name').focus();
    return;
  }
  $('signin-submit').disabled = true;
  $('signin-error').textContent = '';
  void signIn({ username });
});
$('signout').addEventListener('click', async () => {
  // The server ends the session first (`logout`), then local storage is forgotten.
  $('signout').disabled = true;
  try {
    await chat.logout();
  } finally {
    $('signout').disabled = false;
  }
  showSignIn('You signed out.');
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
document.addEventListener('chat:pane', () => render());
document.addEventListener('chat:watch', () => refreshWatch());
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
