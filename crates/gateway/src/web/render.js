// @ts-check
/**
 * render.js — puts the client's state on the page: the side panel (list, peer,
 * typing), the open conversation's messages, the connection banner, toasts and the
 * composer's height. Elements are built by view.js; this file decides what is shown.
 */

import { state } from './app-state.js';
import { conversationItem, lastSeen, messageList, paintAvatar } from './view.js';

/** @typedef {import('./app-state.js').Conv} Conv */

/** The element with this id. */
export const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));

let renderQueued = false;
/** Re-renders the side panel on the next frame (coalesces bursts of events). */
export function render() {
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
  $('pane-empty').hidden = Boolean(conv) || Boolean(state.activeRoom);
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
export function renderPane(opts) {
  const conv = state.active ? state.convs.get(state.active) : null;
  if (!conv || !state.me) return;
  const box = $('messages');
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  $('message-list').replaceChildren(...messageList(conv, state.me.id));
  renderHistoryStatus(conv);
  if (opts.stick || nearBottom) box.scrollTop = box.scrollHeight;
}

/** @param {Conv} conv */
export function renderHistoryStatus(conv) {
  const status = $('history-status');
  status.textContent = conv.loading ? 'Loading…' : conv.more === false ? (conv.messages.length ? 'This is the beginning of your conversation.' : 'No messages yet. Say hello!') : '';
}

let bannerTimer = 0;
/** @param {import('./chat-protocol.js').StateEvent} s */
export function renderState(s) {
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
export function toast(message) {
  const node = $('toast');
  node.textContent = message;
  node.hidden = false;
  clearTimeout(Number(node.dataset.timer));
  node.dataset.timer = String(setTimeout(() => (node.hidden = true), 2500));
}

export function autosize() {
  const input = $('composer-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}
