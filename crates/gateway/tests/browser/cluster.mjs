// Spawns the processes the browser test needs — one redis-server and chat-gateway
// nodes on free ports — and guarantees they are gone when the test ends, passes or not.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, createWriteStream } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

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
