// @ts-check
/**
 * rooms.js — the rooms section of the web client (protocol 1.1): joining or creating a
 * room by name, the room list with unread badges, the open room's timeline (messages
 * with enter/leave notices inline), its member list with presence dots and a count,
 * sending, leaving, and per-room recovery (chat-protocol.js keeps each room's last
 * event id next to the 1:1 cursor and sends `hello.rooms`; a room it could not recover
 * is reloaded here with `history`).
 *
 * The open room is kept in localStorage so a reload reopens it.
 */

import { chat, state } from './app-state.js';
import { ChatError, compareIds, newNonce } from './chat-protocol.js';
import { $, toast } from './render.js';
import { avatar, el, roomTimeline } from './view.js';

/**
 * @typedef {import('./chat-protocol.js').Message} Message
 * @typedef {{id: string, name: string, online?: boolean}} Member
 * @typedef {{kind: 'notice', id: string, event: 'joined'|'left', user: {id: string, name: string}}} Notice
 * @typedef {object} Room
 * @property {string} id
 * @property {string} name
 * @property {number} memberCount
 * @property {Map<string, Member>} members known members (the first pages)
 * @property {Message[]} messages ascending id
 * @property {Notice[]} notices enter/leave notices seen live or replayed
 * @property {Map<string, import('./app-state.js').Pending>} pending
 * @property {boolean|null} more
 * @property {boolean} loading
 * @property {Message|null} last
 * @property {number} unread
 * @property {string|null} readUpTo
 */

/** Room ids: 1–64 of a-z 0-9 _ - (protocol). */
const ROOM_ID = /^[a-z0-9_-]{1,64}$/;
const PAGE = 50;

/** @type {Map<string, Room>} */
export const rooms = new Map();

function activeKey() {
  return `chat-web-room:${location.origin}:${state.me?.id}`;
}

function saveActive() {
  try {
    if (state.activeRoom) localStorage.setItem(activeKey(), state.activeRoom);
    else localStorage.removeItem(activeKey());
  } catch {
    // Storage unavailable: a reload shows the conversations.
  }
}

/** The room id a display name maps to: "Team Berlin!" → "team-berlin". @param {string} text */
export function roomIdFor(text) {
  return text.trim().toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 64);
}

/** @param {{id: string, name?: string}} info @returns {Room} */
function ensureRoom(info) {
  let room = rooms.get(info.id);
  if (!room) {
    room = { id: info.id, name: info.name || info.id, memberCount: 0, members: new Map(), messages: [], notices: [], pending: new Map(), more: null, loading: false, last: null, unread: 0, readUpTo: null };
    rooms.set(info.id, room);
  } else if (info.name) room.name = info.name;
  return room;
}

/** @param {Room} room @param {Message} m */
function insert(room, m) {
  const list = room.messages;
  let i = list.length;
  while (i > 0 && compareIds(list[i - 1].id, m.id) > 0) i--;
  if (i > 0 && list[i - 1].id === m.id) return false;
  list.splice(i, 0, m);
  if (!room.last || compareIds(m.id, room.last.id) >= 0) room.last = m;
  return true;
}

function watching(/** @type {Room} */ room) {
  return state.activeRoom === room.id && document.visibilityState === 'visible';
}

/** @param {Room} room */
function markRead(room) {
  room.unread = 0;
  const newest = room.messages[room.messages.length - 1] ?? room.last;
  if (!newest || (room.readUpTo && compareIds(newest.id, room.readUpTo) <= 0)) return;
  if (chat.markRoomRead(room.id, newest.id)) room.readUpTo = newest.id;
}

/** Ids whose presence the page wants: members of the open room. */
export function roomWatchIds() {
  const room = state.activeRoom ? rooms.get(state.activeRoom) : null;
  return room ? [...room.members.keys()].filter((id) => id !== state.me?.id).slice(0, 150) : [];
}

// ---- actions ------------------------------------------------------------------------

/** Joins (or creates) a room from what the user typed. */
export async function joinFromForm() {
  const input = $('room-input');
  const text = input.value;
  const error = $('room-error');
  error.textContent = '';
  if (!text.trim()) {
    error.textContent = 'Type a room name to join or create it.';
    return;
  }
  const id = roomIdFor(text);
  if (!ROOM_ID.test(id)) {
    error.textContent = 'Room names need at least one letter or digit.';
    return;
  }
  try {
    const info = await chat.join(id, text.trim());
    input.value = '';
    applyJoined(info);
    openRoom(id);
  } catch (e) {
    error.textContent = e instanceof ChatError && e.code === 'forbidden' ? 'You may not join this room.' : e instanceof ChatError && e.code === 'rate_limited' ? 'Too many requests, try again in a moment.' : 'Could not join the room. Try again.';
  }
}

/** @param {import('./chat-protocol.js').RoomInfo} info */
function applyJoined(info) {
  const room = ensureRoom(info);
  room.memberCount = info.member_count;
  room.members = new Map(info.members.map((m) => [m.id, m]));
  if (info.last) insert(room, info.last);
  renderRooms();
}

/** @param {string} id */
export function openRoom(id) {
  const room = rooms.get(id);
  if (!room) return;
  state.activeRoom = id;
  state.active = null;
  document.body.classList.add('show-chat');
  saveActive();
  markRead(room);
  void refreshMembers(room);
  if (room.more === null && !room.loading) void loadNewest(room);
  renderRooms();
  document.dispatchEvent(new Event('chat:pane'));
  $('room-composer-input').focus();
}

/** Closes the room pane (a conversation was opened). */
export function closeRoom() {
  if (!state.activeRoom) return;
  state.activeRoom = null;
  saveActive();
  renderRooms();
}

/** Reloads the member list (`members`, paged; at most 5 pages shown). @param {Room} room */
async function refreshMembers(room) {
  try {
    /** @type {Map<string, Member>} */
    const members = new Map();
    let after;
    for (let i = 0; i < 5; i++) {
      const page = await chat.members(room.id, after);
      for (const m of page.items) members.set(m.id, m);
      if (!page.more || page.items.length === 0) {
        if (room.memberCount < members.size || i === 0) room.memberCount = Math.max(room.memberCount, members.size);
        break;
      }
      after = page.items[page.items.length - 1].id;
    }
    room.members = members;
    renderRooms();
    document.dispatchEvent(new Event('chat:watch'));
  } catch (e) {
    if (e instanceof ChatError && e.code === 'forbidden') dropRoom(room.id);
  }
}

/** @param {Room} room */
async function loadNewest(room) {
  room.loading = true;
  renderRoomPane(true);
  try {
    const page = await chat.roomHistory(room.id, { limit: PAGE });
    for (const m of page.messages) insert(room, m);
    room.more = page.more;
    if (watching(room)) markRead(room);
  } catch (e) {
    console.warn('chat: room history failed', e);
  } finally {
    room.loading = false;
  }
  renderRoomPane(true);
}

async function loadOlder() {
  const room = state.activeRoom ? rooms.get(state.activeRoom) : null;
  if (!room || room.loading || !room.more || room.messages.length === 0) return;
  room.loading = true;
  const box = $('room-messages');
  const fromBottom = box.scrollHeight - box.scrollTop;
  try {
    const page = await chat.roomHistory(room.id, { before: room.messages[0].id, limit: PAGE });
    for (const m of page.messages) insert(room, m);
    room.more = page.more;
  } catch (e) {
    console.warn('chat: older room messages failed', e);
  } finally {
    room.loading = false;
  }
  renderRoomPane(false);
  box.scrollTop = box.scrollHeight - fromBottom;
}

function submit() {
  const input = $('room-composer-input');
  const room = state.activeRoom ? rooms.get(state.activeRoom) : null;
  const body = input.value.trim();
  if (!room || !body) return;
  if ([...body].length > state.maxBody) {
    toast(`Messages are limited to ${state.maxBody} characters.`);
    return;
  }
  input.value = '';
  send(room, { nonce: newNonce(), body, status: 'sending', createdAt: new Date().toISOString() });
}

/** @param {Room} room @param {import('./app-state.js').Pending} pending */
function send(room, pending) {
  pending.status = 'sending';
  delete pending.error;
  room.pending.set(pending.nonce, pending);
  renderRoomPane(true);
  chat.sendToRoom(room.id, pending.body, { nonce: pending.nonce }).then((m) => {
    room.pending.delete(pending.nonce);
    insert(room, m);
    markRead(room);
    renderRoomPane(true);
    renderRooms();
  }, (e) => {
    if (!room.pending.has(pending.nonce)) return;
    pending.status = 'failed';
    pending.final = e instanceof ChatError && (e.code === 'forbidden' || e.code === 'too_large');
    pending.error = e instanceof ChatError ? ({ forbidden: 'Not a member', rate_limited: 'Sending too fast', too_large: 'Too long', unavailable: 'Server busy' })[e.code] ?? 'Not sent' : 'Not sent';
    renderRoomPane(false);
  });
}

async function leaveActive() {
  const id = state.activeRoom;
  if (!id) return;
  try {
    await chat.leave(id);
    dropRoom(id);
  } catch {
    toast('Could not leave the room. Try again.');
  }
}

/** @param {string} id */
function dropRoom(id) {
  rooms.delete(id);
  chat.forgetRoom(id);
  if (state.activeRoom === id) {
    state.activeRoom = null;
    saveActive();
  }
  renderRooms();
  document.dispatchEvent(new Event('chat:pane'));
}

// ---- loading ------------------------------------------------------------------------

/** After a sign-in: the server's room list, then the open room. @param {boolean} first */
export async function reloadRooms(first) {
  try {
    const items = await chat.rooms();
    const ids = new Set(items.map((i) => i.id));
    for (const id of [...rooms.keys()]) if (!ids.has(id)) rooms.delete(id);
    for (const item of items) {
      const room = ensureRoom(item);
      room.memberCount = item.member_count;
      if (item.last) insert(room, item.last);
      room.unread = state.activeRoom === room.id && watching(room) ? 0 : item.unread;
    }
  } catch (e) {
    console.warn('chat: rooms failed', e);
  }
  if (first) {
    let saved = null;
    try {
      saved = localStorage.getItem(activeKey());
    } catch {
      saved = null;
    }
    if (saved && rooms.has(saved) && !state.active) openRoom(saved);
  }
  renderRooms();
}

/** @param {string} id */
async function resync(id) {
  const room = rooms.get(id);
  if (!room) return;
  room.messages = [];
  room.notices = [];
  room.more = null;
  if (state.activeRoom === id) await loadNewest(room);
  else {
    try {
      const page = await chat.roomHistory(id, { limit: 1 });
      for (const m of page.messages) insert(room, m);
    } catch {
      // The list keeps what it had.
    }
  }
  renderRooms();
}

// ---- painting -----------------------------------------------------------------------

export function renderRooms() {
  const list = [...rooms.values()].sort((a, b) => ((a.last?.id ?? '') < (b.last?.id ?? '') ? 1 : -1));
  $('rooms').replaceChildren(...list.map((r) => el('li', {
    class: `conversation room-item${r.id === state.activeRoom ? ' active' : ''}${r.unread ? ' has-unread' : ''}`,
    data: { testid: 'room', roomId: r.id },
    attrs: { role: 'button', tabindex: '0' },
  }, [
    el('div', { class: 'avatar room-avatar', text: '#', attrs: { 'aria-hidden': 'true' } }),
    el('div', { class: 'conversation-main' }, [
      el('div', { class: 'conversation-top' }, [el('span', { class: 'conversation-name', text: r.name })]),
      el('div', { class: 'conversation-bottom' }, [
        el('span', { class: 'conversation-preview', text: r.last ? r.last.body.replace(/\s+/g, ' ') : `${r.memberCount} member${r.memberCount === 1 ? '' : 's'}` }),
        r.unread > 0 && el('span', { class: 'badge', text: r.unread > 99 ? '99+' : String(r.unread), data: { testid: 'room-unread' } }),
      ]),
    ]),
  ])));
  $('rooms-empty').hidden = rooms.size > 0;
  const room = state.activeRoom ? rooms.get(state.activeRoom) : null;
  $('pane-room').hidden = !room;
  if (room) {
    $('pane-chat').hidden = true;
    $('pane-empty').hidden = true;
  }
  renderRoomPane(false);
}

/** @param {boolean} stick */
export function renderRoomPane(stick) {
  const room = state.activeRoom ? rooms.get(state.activeRoom) : null;
  if (!room || !state.me) return;
  $('room-name').textContent = room.name;
  $('room-count').textContent = `${room.memberCount} member${room.memberCount === 1 ? '' : 's'}`;
  const members = [...room.members.values()].sort((a, b) => Number(Boolean(b.online)) - Number(Boolean(a.online)) || a.name.localeCompare(b.name));
  $('room-member-list').replaceChildren(...members.map((m) => el('li', { class: 'member', data: { testid: 'member', userId: m.id, online: String(Boolean(m.online)) } }, [
    avatar(m, true),
    el('span', { class: 'member-name', text: m.id === state.me?.id ? `${m.name} (you)` : m.name }),
  ])));
  const box = $('room-messages');
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  $('room-message-list').replaceChildren(...roomTimeline(room, state.me.id));
  $('room-history-status').textContent = room.loading ? 'Loading…' : room.more === false && room.messages.length === 0 ? 'No messages yet. Say hello!' : '';
  if (stick || nearBottom) box.scrollTop = box.scrollHeight;
}

// ---- protocol events ----------------------------------------------------------------

chat.on('message', ({ message, mine }) => {
  if (!message.room) return;
  const room = rooms.get(message.room) ?? ensureRoom({ id: message.room });
  if (!insert(room, message)) return;
  if (!mine && !watching(room) && (!room.readUpTo || compareIds(message.id, room.readUpTo) > 0)) room.unread++;
  if (watching(room)) markRead(room);
  renderRooms();
  if (state.activeRoom === room.id) renderRoomPane(false);
});

chat.on('member', (/** @type {any} */ ev) => {
  const me = ev.user?.id === state.me?.id;
  if (me && ev.event === 'left') {
    dropRoom(ev.room);
    return;
  }
  const room = rooms.get(ev.room) ?? ensureRoom({ id: ev.room });
  if (me && ev.event === 'joined' && room.memberCount === 0) void refreshMembers(room);
  if (!room.notices.some((n) => n.id === ev.id)) room.notices.push({ kind: 'notice', id: ev.id, event: ev.event, user: ev.user });
  if (ev.event === 'joined' && !room.members.has(ev.user.id)) {
    room.members.set(ev.user.id, { ...ev.user, online: true });
    room.memberCount++;
  } else if (ev.event === 'left' && room.members.delete(ev.user.id)) room.memberCount = Math.max(0, room.memberCount - 1);
  else if (ev.event === 'left') room.memberCount = Math.max(0, room.memberCount - 1);
  renderRooms();
  document.dispatchEvent(new Event('chat:watch'));
});

chat.on('presence', ({ user, online }) => {
  let changed = false;
  for (const room of rooms.values()) {
    const m = room.members.get(user);
    if (m && m.online !== online) {
      m.online = online;
      changed = true;
    }
  }
  if (changed) renderRoomPane(false);
});

chat.on('read', (/** @type {any} */ ev) => {
  if (!ev.room) return;
  const room = rooms.get(ev.room);
  if (!room) return;
  if (!room.readUpTo || compareIds(ev.up_to, room.readUpTo) > 0) room.readUpTo = ev.up_to;
  if (room.last && compareIds(ev.up_to, room.last.id) >= 0) room.unread = 0;
  renderRooms();
});

chat.on('welcome', ({ welcome, first }) => {
  for (const u of /** @type {any[]} */ (welcome.unread ?? [])) {
    if (!u.room) continue;
    const room = ensureRoom(u.room);
    if (u.last) insert(room, u.last);
    if (state.activeRoom !== room.id) room.unread = u.count;
  }
  void reloadRooms(first);
});

chat.on('room-resync', ({ room }) => void resync(room));

// ---- DOM wiring ---------------------------------------------------------------------

$('room-join').addEventListener('submit', (/** @type {Event} */ ev) => {
  ev.preventDefault();
  void joinFromForm();
});
$('rooms').addEventListener('click', (/** @type {Event} */ ev) => {
  const row = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (ev.target).closest('[data-room-id]'));
  if (row?.dataset.roomId) openRoom(row.dataset.roomId);
});
$('rooms').addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
  if (ev.key === 'Enter' || ev.key === ' ') {
    ev.preventDefault();
    /** @type {HTMLElement} */ (ev.target).click();
  }
});
$('room-leave').addEventListener('click', () => void leaveActive());
$('room-back').addEventListener('click', () => document.body.classList.remove('show-chat'));
$('room-composer').addEventListener('submit', (/** @type {Event} */ ev) => {
  ev.preventDefault();
  submit();
});
$('room-composer-input').addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    submit();
  }
});
$('room-messages').addEventListener('scroll', () => {
  if ($('room-messages').scrollTop < 120) void loadOlder();
});
$('room-message-list').addEventListener('click', (/** @type {Event} */ ev) => {
  const button = /** @type {HTMLElement} */ (ev.target).closest('button.retry');
  const room = state.activeRoom ? rooms.get(state.activeRoom) : null;
  const pending = room && button instanceof HTMLElement ? room.pending.get(button.dataset.nonce ?? '') : null;
  if (room && pending) send(room, pending);
});
document.addEventListener('visibilitychange', () => {
  const room = state.activeRoom ? rooms.get(state.activeRoom) : null;
  if (room && document.visibilityState === 'visible') {
    markRead(room);
    renderRooms();
  }
});
