// @ts-check
/**
 * view.js — DOM building for the web client. Pure functions from data to elements.
 *
 * Rule: user data (names, ids, bodies) only ever reaches the page through
 * `textContent` or attribute values set with `setAttribute`/`dataset`; never through
 * `innerHTML`. Message bodies are plain text by protocol.
 */

import { compareIds } from './chat-protocol.js';

/**
 * Creates an element with classes, dataset entries and text.
 * @param {string} tag
 * @param {{class?: string, text?: string, data?: Record<string, string>, attrs?: Record<string, string>}} [opts]
 * @param {Array<Node|null|false|undefined>} [children]
 */
export function el(tag, opts = {}, children = []) {
  const node = document.createElement(tag);
  if (opts.class) node.className = opts.class;
  if (opts.text !== undefined) node.textContent = opts.text;
  for (const [k, v] of Object.entries(opts.data ?? {})) node.dataset[k] = v;
  for (const [k, v] of Object.entries(opts.attrs ?? {})) node.setAttribute(k, v);
  for (const child of children) if (child) node.append(child);
  return node;
}

/** A stable hue for a user id, so a person keeps their colour. @param {string} id */
function hue(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

/** Up to two initials of a display name. @param {string} name */
export function initials(name) {
  const words = name.trim().split(/[\s._-]+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]].map((w) => [...w][0]) : [...(words[0] ?? '?')].slice(0, 2);
  return letters.join('').toUpperCase();
}

/**
 * Fills an avatar element for a user.
 * @param {HTMLElement} node
 * @param {{id: string, name: string}} user
 */
export function paintAvatar(node, user) {
  node.textContent = initials(user.name || user.id);
  node.style.setProperty('--hue', String(hue(user.id)));
}

/** @param {{id: string, name: string, online?: boolean}} user @param {boolean} [withPresence] */
export function avatar(user, withPresence = false) {
  const node = el('div', { class: 'avatar', attrs: { 'aria-hidden': 'true' } });
  paintAvatar(node, user);
  if (withPresence) node.append(el('span', { class: `presence ${user.online ? 'online' : ''}`, data: { testid: 'presence' } }));
  return node;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });
const dateYearFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' });
const shortDateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });

/** @param {Date} d */
function dayKey(d) {
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

/** "Today", "Yesterday", a weekday and date, or a full date. @param {Date} d */
export function dayLabel(d) {
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (dayKey(d) === dayKey(today)) return 'Today';
  if (dayKey(d) === dayKey(yesterday)) return 'Yesterday';
  return d.getFullYear() === today.getFullYear() ? dateFmt.format(d) : dateYearFmt.format(d);
}

/** A list timestamp: the time today, else a short date. @param {string} iso */
export function listTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return dayKey(d) === dayKey(new Date()) ? timeFmt.format(d) : shortDateFmt.format(d);
}

/** "last seen 5 min ago" and friends. @param {string|undefined} iso */
export function lastSeen(iso) {
  if (!iso) return 'offline';
  const d = new Date(iso);
  const mins = Math.round((Date.now() - d.getTime()) / 60000);
  if (Number.isNaN(mins)) return 'offline';
  if (mins < 1) return 'last seen just now';
  if (mins < 60) return `last seen ${mins} min ago`;
  return `last seen ${dayLabel(d).toLowerCase()} at ${timeFmt.format(d)}`;
}

/**
 * One conversation row in the side panel.
 * @param {import('./app.js').Conv} conv
 * @param {{active: boolean, me: string}} ctx
 */
export function conversationItem(conv, ctx) {
  const last = conv.last;
  const preview = conv.typingUntil > Date.now() ? 'typing…' : last ? `${last.from === ctx.me ? 'You: ' : ''}${last.body.replace(/\s+/g, ' ')}` : 'No messages yet';
  const row = el('li', {
    class: `conversation${ctx.active ? ' active' : ''}${conv.unread ? ' has-unread' : ''}`,
    data: { testid: 'conversation', peerId: conv.peer.id },
    attrs: { role: 'button', tabindex: '0', 'aria-current': ctx.active ? 'true' : 'false' },
  }, [
    avatar(conv.peer, true),
    el('div', { class: 'conversation-main' }, [
      el('div', { class: 'conversation-top' }, [
        el('span', { class: 'conversation-name', text: conv.peer.name || conv.peer.id }),
        el('span', { class: 'conversation-time', text: last ? listTime(last.sent_at) : '' }),
      ]),
      el('div', { class: 'conversation-bottom' }, [
        el('span', { class: `conversation-preview${conv.typingUntil > Date.now() ? ' is-typing' : ''}`, text: preview }),
        conv.unread > 0 && el('span', { class: 'badge', text: conv.unread > 99 ? '99+' : String(conv.unread), data: { testid: 'unread' } }),
      ]),
    ]),
  ]);
  return row;
}

/**
 * One search result row.
 * @param {{id: string, name: string, online?: boolean}} user
 * @param {string} [subtitle]
 */
export function searchItem(user, subtitle) {
  return el('li', { class: 'search-result', data: { testid: 'search-result', userId: user.id }, attrs: { role: 'button', tabindex: '0' } }, [
    avatar(user, true),
    el('div', { class: 'conversation-main' }, [
      el('div', { class: 'conversation-name', text: user.name || user.id }),
      el('div', { class: 'conversation-preview', text: subtitle ?? user.id }),
    ]),
  ]);
}

/** Status of one of the user's own messages. @typedef {'sending'|'sent'|'read'|'failed'} Status */

/** @type {Record<Status, {mark: string, title: string}>} */
const MARKS = {
  sending: { mark: '◷', title: 'Sending…' },
  sent: { mark: '✓', title: 'Sent' },
  read: { mark: '✓✓', title: 'Read' },
  failed: { mark: '!', title: 'Not sent' },
};

/**
 * A message bubble.
 * @param {{id?: string, nonce?: string, body: string, sent_at: string, mine: boolean, status?: Status, error?: string, author?: string, final?: boolean}} m
 */
function bubble(m) {
  const from = m.author ? el('div', { class: 'author', text: m.author, data: { testid: 'author' } }) : null;
  const time = new Date(m.sent_at);
  const meta = el('span', { class: 'meta' }, [el('time', { text: Number.isNaN(time.getTime()) ? '' : timeFmt.format(time), attrs: { datetime: m.sent_at } })]);
  if (m.mine && m.status) {
    meta.append(el('span', { class: `status status-${m.status}`, text: MARKS[m.status].mark, attrs: { title: m.error ?? MARKS[m.status].title }, data: { testid: 'status' } }));
  }
  const data = /** @type {Record<string, string>} */ ({ testid: 'message' });
  if (m.id) data.id = m.id;
  if (m.nonce) data.nonce = m.nonce;
  if (m.status) data.status = m.status;
  const children = [from, el('div', { class: 'body', text: m.body, data: { testid: 'body' } }), meta].filter((c) => c !== null);
  if (m.status === 'failed') {
    // A refusal that a retry cannot fix (no such user, too long) offers no Retry.
    if (m.final) children.push(el('span', { class: 'retry final', text: m.error ?? 'Not sent', data: { testid: 'send-error' } }));
    else children.push(el('button', { class: 'retry', text: `${m.error ?? 'Not sent'} · Retry`, attrs: { type: 'button' }, data: { nonce: m.nonce ?? '' } }));
  }
  return el('li', { class: `message ${m.mine ? 'mine' : 'theirs'}`, data }, [el('div', { class: 'bubble' }, children)]);
}

/**
 * The whole message list of a conversation: day separators, bubbles, pending sends.
 * @param {import('./app.js').Conv} conv
 * @param {string} me
 */
export function messageList(conv, me) {
  const items = [];
  /** @type {string|null} */
  let day = null;
  const rows = [
    ...conv.messages.map((m) => ({
      id: m.id,
      body: m.body,
      sent_at: m.sent_at,
      mine: m.from === me,
      status: /** @type {Status|undefined} */ (m.from === me ? (conv.peerReadUpTo && compareIds(m.id, conv.peerReadUpTo) <= 0 ? 'read' : 'sent') : undefined),
    })),
    ...[...conv.pending.values()].map((p) => ({ nonce: p.nonce, body: p.body, sent_at: p.createdAt, mine: true, status: p.status, error: p.error, final: p.final })),
  ];
  let previousFrom = null;
  for (const row of rows) {
    const d = new Date(row.sent_at);
    const key = Number.isNaN(d.getTime()) ? day : dayKey(d);
    if (key !== day) {
      day = key;
      previousFrom = null;
      items.push(el('li', { class: 'day', data: { testid: 'day' } }, [el('span', { text: dayLabel(d) })]));
    }
    const node = bubble(row);
    if (previousFrom === row.mine) node.classList.add('continued');
    previousFrom = row.mine;
    items.push(node);
  }
  return items;
}

/**
 * A room's timeline: messages (with the sender's name on others' messages) and the
 * enter/leave notices inline, in id order, then this user's pending sends.
 * @param {import('./rooms.js').Room} room
 * @param {string} me
 */
export function roomTimeline(room, me) {
  /** @type {Array<{id: string, notice?: any, message?: any}>} */
  const rows = [
    ...room.messages.map((m) => ({ id: m.id, message: m })),
    ...room.notices.map((n) => ({ id: n.id, notice: n })),
  ].sort((a, b) => compareIds(a.id, b.id));
  const items = [];
  let previousFrom = null;
  for (const row of rows) {
    if (row.notice) {
      const n = row.notice;
      const who = n.user.id === me ? 'You' : n.user.name || n.user.id;
      items.push(el('li', { class: 'notice', data: { testid: 'notice', event: n.event } }, [el('span', { text: `${who} ${n.event === 'joined' ? 'joined' : 'left'} the room` })]));
      previousFrom = null;
      continue;
    }
    const m = row.message;
    const mine = m.from === me;
    const author = mine ? undefined : room.members.get(m.from)?.name ?? room.notices.find((n) => n.user.id === m.from)?.user.name ?? m.from;
    const node = bubble({ id: m.id, body: m.body, sent_at: m.sent_at, mine, status: mine ? 'sent' : undefined, author: previousFrom === m.from ? undefined : author });
    if (previousFrom === m.from) node.classList.add('continued');
    previousFrom = m.from;
    items.push(node);
  }
  for (const p of room.pending.values()) items.push(bubble({ nonce: p.nonce, body: p.body, sent_at: p.createdAt, mine: true, status: p.status, error: p.error, final: p.final }));
  return items;
}
