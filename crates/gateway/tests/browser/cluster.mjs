// Spawns the processes the browser tests need — one redis-server and chat-gateway
// nodes on free ports — and guarantees they are gone when the test ends, passes or not.
// `BrowserRun` is the setup every browser test shares: that cluster with two nodes,
// headless Chromium, pages that record their errors, and steps that stop at the first
// failure.
//
// Environment: CHAT_GATEWAY_BIN (default <CARGO_TARGET_DIR or <repo>/target>/debug/chat-gateway),
// CHAT_ARTIFACTS (screenshots; default <repo>/artifacts/browser),
// CHROMIUM (default /usr/bin/chromium).

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, createWriteStream } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../../..');
/** The gateway binary the nodes run (and the e2e test mints tokens with). */
export const BIN = process.env.CHAT_GATEWAY_BIN ?? path.join(process.env.CARGO_TARGET_DIR ? path.resolve(repo, process.env.CARGO_TARGET_DIR) : path.join(repo, 'target'), 'debug', 'chat-gateway');
/** Where screenshots go. */
export const ARTIFACTS = process.env.CHAT_ARTIFACTS ?? path.join(repo, 'artifacts', 'browser');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** Every child still running, so nothing outlives the test run. */
const children = new Set();

function killAllNow() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }
}
process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    killAllNow();
    process.exit(130);
  });
}

/** A port nobody listens on right now. */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * Polls `fn` until it returns a truthy value or the deadline passes.
 * @template T
 * @param {() => Promise<T>|T} fn
 * @param {{timeoutMs?: number, what: string, everyMs?: number}} opts
 * @returns {Promise<T>}
 */
export async function eventually(fn, { timeoutMs = 15_000, what, everyMs = 100 }) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      last = value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A temp directory, logs and children for one test run. */
export class Cluster {
  constructor() {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'chat-web-e2e-'));
    /** @type {Array<{name: string, child: import('node:child_process').ChildProcess, log: string[]}>} */
    this.procs = [];
  }

  /**
   * @param {string} name
   * @param {string} cmd
   * @param {string[]} args
   * @param {NodeJS.ProcessEnv} env
   */
  start(name, cmd, args, env = {}) {
    // The gateway reads every CHAT_* variable as configuration (an unknown one is an
    // error): only the ones given here reach the child, none from the test's own env.
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHAT_')));
    const child = spawn(cmd, args, { cwd: this.dir, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    child.on('exit', () => children.delete(child));
    const file = createWriteStream(path.join(this.dir, `${name}.log`));
    /** @type {string[]} */
    const log = [];
    const proc = { name, child, log, file };
    for (const stream of [child.stdout, child.stderr]) {
      readline.createInterface({ input: stream }).on('line', (line) => {
        log.push(line);
        if (log.length > 400) log.shift();
        file.write(`${line}\n`);
      });
    }
    this.procs.push(proc);
    return proc;
  }

  /** Starts redis-server on a free port, without persistence; resolves with its URL. */
  async redis() {
    const port = await freePort();
    const proc = this.start('redis', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir]);
    await eventually(() => ping(port), { what: 'redis-server to answer PING', timeoutMs: 10_000 });
    proc.port = port;
    return `redis://127.0.0.1:${port}`;
  }

  /**
   * Starts a chat-gateway node and waits until it is ready.
   * @param {string} bin
   * @param {string} nodeId
   * @param {NodeJS.ProcessEnv} env
   */
  async gateway(bin, nodeId, env) {
    const proc = this.start(nodeId, bin, [], {
      CHAT_SERVER__LISTEN: '127.0.0.1:0',
      CHAT_SERVER__NODE_ID: nodeId,
      CHAT_SERVER__ALLOWED_ORIGINS: '*',
      CHAT_AUTH__GUESTS: 'true',
      RUST_LOG: process.env.RUST_LOG ?? 'info',
      NO_COLOR: '1',
      ...env,
    });
    const exited = once(proc.child, 'exit').then(([code]) => {
      throw new Error(`${nodeId} exited with ${code} before it was ready:\n${proc.log.join('\n')}`);
    });
    exited.catch(() => {});
    const addr = await Promise.race([exited, eventually(() => {
      for (const line of proc.log) {
        const m = /listening on (?:https?:\/\/)?([0-9a-fA-F.:[\]]+:\d+)/.exec(line);
        if (m) return m[1];
      }
      return null;
    }, { what: `${nodeId} to print "listening on <addr>"`, timeoutMs: 20_000 })]);
    const http = `http://${addr}`;
    await Promise.race([exited, eventually(async () => (await fetch(`${http}/readyz`)).ok, { what: `${nodeId} /readyz`, timeoutMs: 20_000 })]);
    return { ...proc, addr, http, ws: `ws://${addr}/ws` };
  }

  /** SIGKILLs one process (a node crash). @param {{child: import('node:child_process').ChildProcess}} proc */
  async kill(proc) {
    if (proc.child.exitCode !== null || proc.child.signalCode) return;
    proc.child.kill('SIGKILL');
    await once(proc.child, 'exit');
  }

  /** Stops everything: SIGTERM, then SIGKILL for whatever is still up after 5 s. */
  async stop() {
    const running = this.procs.filter((p) => p.child.exitCode === null && !p.child.signalCode);
    await Promise.all(running.map(async (p) => {
      const exited = once(p.child, 'exit');
      p.child.kill('SIGTERM');
      const timer = setTimeout(() => p.child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }));
    for (const p of this.procs) p.file.end();
  }

  /** The tail of every process log, for a failure message. */
  logs(lines = 30) {
    return this.procs.map((p) => `--- ${p.name} (${this.dir}/${p.name}.log)\n${p.log.slice(-lines).join('\n')}`).join('\n');
  }

  removeDir() {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * One browser test's setup: a redis-server, two gateway nodes on it (`gw-1`, `gw-2`)
 * and headless Chromium, started in a `before` hook and stopped in an `after` hook,
 * which also screenshots every open page. The logs are printed when a step failed;
 * otherwise the temp directory is removed.
 */
export class BrowserRun {
  /**
   * @param {{apiKey: string, jwtSecret: string, viewport: {width: number, height: number}, shotPrefix?: string}} opts
   *   the nodes' API key and JWT secret, the size of a new page, and what screenshot
   *   names start with (so two tests' screenshots do not overwrite each other)
   */
  constructor({ apiKey, jwtSecret, viewport, shotPrefix = '' }) {
    this.cluster = new Cluster();
    /** @type {import('playwright-core').Browser|null} */
    this.browser = null;
    /** Open pages by name, screenshotted at the end and on a failed step. @type {Record<string, import('playwright-core').Page>} */
    this.pages = {};
    /** Uncaught page errors: a test asserts this stays empty. @type {string[]} */
    this.pageErrors = [];
    /** Dialogs the pages opened (each dismissed): a test may assert none fired. @type {string[]} */
    this.dialogs = [];
    /** Set by the first failing step: later steps depend on it and are not run. */
    this.failed = false;
    this.viewport = viewport;
    this.shotPrefix = shotPrefix;
    /** The two nodes, once `before` has run. @type {any} */
    this.node1 = null;
    /** @type {any} */
    this.node2 = null;
    before(async () => {
      mkdirSync(ARTIFACTS, { recursive: true });
      const redis = await this.cluster.redis();
      // Each node's page may name the other in `?nodes=` only because both are listed
      // in `server.client_nodes`: the ports are chosen first so the list can be given.
      const ports = [await freePort(), await freePort()];
      const env = {
        CHAT_REDIS__URL: redis,
        CHAT_API__KEY: apiKey,
        CHAT_AUTH__JWT_SECRET: jwtSecret,
        CHAT_SERVER__CLIENT_NODES: ports.map((p) => `ws://127.0.0.1:${p}/ws`).join(','),
      };
      const listen = (/** @type {number} */ p) => ({ ...env, CHAT_SERVER__LISTEN: `127.0.0.1:${p}` });
      [this.node1, this.node2] = await Promise.all([this.cluster.gateway(BIN, 'gw-1', listen(ports[0])), this.cluster.gateway(BIN, 'gw-2', listen(ports[1]))]);
      this.browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
      });
    });
    after(async () => {
      await this.screenshotAll('');
      await this.browser?.close().catch(() => {});
      await this.cluster.stop();
      if (this.failed) console.log(this.cluster.logs());
      else this.cluster.removeDir();
    });
  }

  /** Screenshots every open page as `<prefix><page><suffix>.png`, ignoring failures. @param {string} suffix */
  async screenshotAll(suffix) {
    for (const [name, page] of Object.entries(this.pages)) {
      await page.screenshot({ path: path.join(ARTIFACTS, `${this.shotPrefix}${name}${suffix}.png`) }).catch(() => {});
    }
  }

  /**
   * Opens a page in `context` (a fresh one, with its own storage, when absent) and
   * records its uncaught errors and dialogs.
   * @param {string} name
   * @param {string} url
   * @param {import('playwright-core').BrowserContext} [context]
   */
  openPage = async (name, url, context) => {
    const ctx = context ?? await /** @type {import('playwright-core').Browser} */ (this.browser).newContext({ viewport: this.viewport });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => this.pageErrors.push(`${name}: ${e.message}`));
    page.on('dialog', async (d) => {
      this.dialogs.push(`${name}: ${d.type()} ${d.message()}`);
      await d.dismiss().catch(() => {});
    });
    await page.goto(url);
    this.pages[name] = page;
    return page;
  };

  /**
   * Runs one step as a subtest. Steps build on each other, so after a failure the rest
   * are skipped (and screenshots of the failure are saved).
   * @param {import('node:test').TestContext} t
   * @param {string} name
   * @param {(t: import('node:test').TestContext) => Promise<void>|void} fn
   */
  step = (t, name, fn) => t.test(name, async (st) => {
    if (this.failed) {
      st.skip('an earlier step failed');
      return;
    }
    try {
      await fn(st);
    } catch (e) {
      this.failed = true;
      await this.screenshotAll('-failure');
      throw e;
    }
  });
}

/**
 * Signs in as a guest on the sign-in form and waits until the client is online.
 * @param {import('playwright-core').Page} page
 * @param {string} username
 * @returns {Promise<string>} the user id the page shows
 */
export async function signIn(page, username) {
  await page.fill('#signin-name', username);
  await page.click('#signin-submit');
  await page.waitForFunction(() => document.body.dataset.connection === 'online' && document.getElementById('me-id')?.textContent, null, { timeout: 15_000 });
  return /** @type {string} */ (await page.textContent('#me-id'));
}

/** Whether a Redis on this port answers PING. @param {number} port */
function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(1000);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      socket.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    socket.on('error', () => resolve(false));
    socket.on('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}
