#!/usr/bin/env node
// A client of the Lattice Workers supervisor in Node.js, written from docs/protocol.md
// alone (npm's zeromq 6 and @msgpack/msgpack 3; plain JavaScript, no build step).
//
// It proves the page: tests/node/test_node_client.py starts a real supervisor on a
// scratch project and runs
//
//   node client.js endpoint ROOT...           print the default endpoint of each root
//   node client.js exercise ROOT T1 T2 T3 T4  every request and every error, in turn
//
// `exercise` prints one JSON report on stdout: the request types answered as the page
// says, the error codes provoked (with the cases), and every disagreement with the page
// in `failures` (exit status 1 when there is one). Every reply is checked against the
// page: each top-level field present with its type, the records (RunInfo, WorkerInfo)
// with the fields the page says are always there, and none of the fields the page says
// are left out when they have their default.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const zmq = require("zeromq");
const { Encoder, Decoder } = require("@msgpack/msgpack");

// ---------------------------------------------------------------- the endpoint

/** The default endpoint of a project root ("Transport" in docs/protocol.md). */
function defaultEndpoint(root) {
  const resolved = fs.realpathSync(path.resolve(root));
  const limit = process.platform === "darwin" ? 103 : 107;
  const fits = (p) => Buffer.byteLength(p) <= limit;
  const socket = path.join(resolved, ".lattice", "run", "supervisor.sock");
  if (fits(socket)) return `ipc://${socket}`;
  const hash = crypto.createHash("sha256").update(Buffer.from(resolved)).digest("hex");
  const folder = `lattice-${process.getuid()}-${hash.slice(0, 16)}`;
  const base = process.env.XDG_RUNTIME_DIR || "";
  if (base && path.isAbsolute(base)) {
    const candidate = path.join(base, folder, "supervisor.sock");
    if (fits(candidate)) return `ipc://${candidate}`;
  }
  return `ipc://${path.join("/tmp", folder, "supervisor.sock")}`;
}

// ---------------------------------------------------------------- what the page says

// Replies: every top-level field is always present ("Fields with a default, and nil").
const REPLIES = {
  hello: {
    protocol_version: "int", server_version: "str", pid: "int", root: "str", socket: "str",
    started_at: "float", subscribers: "int",
  },
  workers: { workers: "list:WorkerInfo" },
  run: { run: "RunInfo", created: "bool" },
  ps: { runs: "list:RunInfo" },
  log: { offset: "int", data: "bin" },
  run_event: { kind: "str", run: "RunInfo", lost: "int" },
  ok: { message: "str" },
  end: {},
  error: { code: "str", message: "str", run: "RunInfo|nil" },
};

// The records: always present, left out when equal to the default, absent when unset.
const RECORDS = {
  RunInfo: {
    required: { run_id: "str", task_id: "str", worker: "str", state: "str", actor: "str" },
    defaults: { attempt: ["int", 1], created_at: ["float", 0] },
    optional: {
      short_id: "str", queue_position: "int", requested_by: "str", commit_sha: "str",
      base_ref: "str", merge_base: "str", worktree_path: "str", log_path: "str",
      started_event_id: "str", pid: "int", started_at: "float", ended_at: "float",
      duration_seconds: "float", exit_code: "int", signal: "int", reason: "str",
      error: "str", result: "map", idempotency_key: "str",
    },
  },
  WorkerInfo: {
    required: { name: "str", path: "str", valid: "bool" },
    defaults: { problems: ["list:str", []], worktree: ["bool", true] },
    optional: { engine: "str", description: "str", actor: "str", max_concurrent: "int" },
  },
};
const STATES = ["queued", "preparing", "running", "stopping", "completed", "failed"];
const FINAL = ["completed", "failed"];

function isInt(x) {
  return (typeof x === "number" && Number.isInteger(x)) || typeof x === "bigint";
}

/** Problems of `value` against `type` (a name above), each naming where it is. */
function typeProblems(value, type, where) {
  if (type.endsWith("|nil")) {
    return value === null ? [] : typeProblems(value, type.slice(0, -4), where);
  }
  if (type.startsWith("list:")) {
    if (!Array.isArray(value)) return [`${where}: expected a list, got ${show(value)}`];
    return value.flatMap((item, i) => typeProblems(item, type.slice(5), `${where}[${i}]`));
  }
  if (type in RECORDS) return recordProblems(value, type, where);
  const ok = {
    str: () => typeof value === "string",
    int: () => isInt(value),
    float: () => typeof value === "number",
    bool: () => typeof value === "boolean",
    bin: () => value instanceof Uint8Array,
    map: () => value !== null && typeof value === "object" && !Array.isArray(value)
      && !(value instanceof Uint8Array),
  }[type];
  return ok() ? [] : [`${where}: expected ${type}, got ${show(value)}`];
}

function recordProblems(value, name, where) {
  const spec = RECORDS[name];
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return [`${where}: expected a ${name} map, got ${show(value)}`];
  }
  const problems = [];
  for (const [key, type] of Object.entries(spec.required)) {
    if (!(key in value)) problems.push(`${where}.${key}: missing (the page says always present)`);
    else problems.push(...typeProblems(value[key], type, `${where}.${key}`));
  }
  for (const [key, [type, dflt]] of Object.entries(spec.defaults)) {
    if (!(key in value)) continue;
    problems.push(...typeProblems(value[key], type, `${where}.${key}`));
    if (JSON.stringify(value[key]) === JSON.stringify(dflt)) {
      problems.push(`${where}.${key}: sent with its default ${show(dflt)} (the page says left out)`);
    }
  }
  for (const [key, type] of Object.entries(spec.optional)) {
    if (!(key in value)) continue;
    if (value[key] === null) problems.push(`${where}.${key}: sent as nil (the page says left out)`);
    else problems.push(...typeProblems(value[key], type, `${where}.${key}`));
  }
  return problems; // other keys: a newer server's fields, ignored as the page says
}

/** A record with its left-out fields filled in, as the page tells a client to read it. */
function complete(value, name) {
  const spec = RECORDS[name];
  const out = {};
  for (const key of Object.keys(spec.optional)) out[key] = null;
  for (const [key, [, dflt]] of Object.entries(spec.defaults)) {
    out[key] = Array.isArray(dflt) ? [...dflt] : dflt;
  }
  return Object.assign(out, value);
}

function replyProblems(reply) {
  if (reply === null || typeof reply !== "object" || Array.isArray(reply)) {
    return [`a reply that is not a map: ${show(reply)}`];
  }
  const fields = REPLIES[reply.type];
  if (fields === undefined) return [`a reply of unknown type ${show(reply.type)}`];
  const problems = [];
  for (const [key, type] of Object.entries({ rid: "int", ...fields })) {
    if (!(key in reply)) problems.push(`${reply.type}.${key}: missing`);
    else problems.push(...typeProblems(reply[key], type, `${reply.type}.${key}`));
  }
  return problems;
}

/** Fill in the records' defaults of a checked reply. */
function completeReply(reply) {
  const out = { ...reply };
  if (out.run) out.run = complete(out.run, "RunInfo");
  if (out.runs) out.runs = out.runs.map((r) => complete(r, "RunInfo"));
  if (out.workers) out.workers = out.workers.map((w) => complete(w, "WorkerInfo"));
  return out;
}

function show(x) {
  if (x instanceof Uint8Array) return `<${x.length} bytes>`;
  try {
    return JSON.stringify(x, (_, v) => (typeof v === "bigint" ? `${v}n` : v));
  } catch {
    return String(x);
  }
}

// ---------------------------------------------------------------- the connection

// How long a reply may take: generous, for a loaded CI machine (a reply normally takes
// a millisecond; only a hang should reach this).
const TIMEOUT_MS = 30000;

/** One reply channel: the replies to one rid, in order. */
class Call {
  constructor(rid) {
    this.rid = rid;
    this.queue = [];
    this.takers = [];
  }

  deliver(item) {
    const taker = this.takers.shift();
    if (taker) taker(item);
    else this.queue.push(item);
  }

  next(timeoutMs) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.takers = this.takers.filter((t) => t !== taker);
        reject(new Error(`no reply to rid ${this.rid} within ${timeoutMs} ms`));
      }, timeoutMs);
      const taker = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
      this.takers.push(taker);
    });
  }
}

/**
 * A DEALER connection: any number of requests in flight, matched to replies by rid.
 * Replies that do not match the page land in `problems`; replies to no request
 * waited for land in `stray`.
 */
class Connection {
  constructor(endpoint, { bigint = false } = {}) {
    this.sock = new zmq.Dealer({ linger: 0 });
    this.sock.connect(endpoint);
    this.encoder = new Encoder({ ignoreUndefined: true, useBigInt64: bigint });
    this.decoder = new Decoder({ useBigInt64: bigint });
    this.nextRid = 1; // rid 0 is also the rid of "unreadable": start at 1
    this.calls = new Map();
    this.problems = [];
    this.stray = [];
    this.closed = false;
    this.sending = Promise.resolve();
    this.reading = this.readLoop();
  }

  async readLoop() {
    while (!this.closed) {
      let frames;
      try {
        frames = await this.sock.receive();
      } catch (err) {
        if (!this.closed) this.problems.push(`receive failed: ${err.message}`);
        return;
      }
      if (frames.length !== 1) {
        this.problems.push(`a reply of ${frames.length} frames (the page says one)`);
      }
      let reply;
      try {
        reply = this.decoder.decode(frames[frames.length - 1]);
      } catch (err) {
        this.problems.push(`an undecodable reply: ${err.message}`);
        continue;
      }
      const problems = replyProblems(reply);
      this.problems.push(...problems.map((p) => `rid ${show(reply.rid)}: ${p}`));
      if (problems.length) continue;
      const call = this.calls.get(String(reply.rid));
      if (call) call.deliver(completeReply(reply));
      else this.stray.push(reply);
    }
  }

  /** Send frames (one send at a time: zeromq refuses overlapping sends). */
  send(frames) {
    const sent = this.sending.then(() => this.sock.send(frames));
    this.sending = sent.catch(() => {}); // a failed send does not stop the next ones
    return sent;
  }

  open(rid) {
    const call = new Call(rid);
    this.calls.set(String(rid), call);
    return call;
  }

  /** One request, one reply (an `error` reply is returned, not thrown). */
  async request(body, { timeoutMs = TIMEOUT_MS } = {}) {
    const rid = this.nextRid++;
    const call = this.open(rid);
    try {
      await this.send(this.encoder.encode({ ...body, v: 1, rid }));
      return await call.next(timeoutMs);
    } finally {
      this.calls.delete(String(rid));
    }
  }

  /** A stream: its replies, up to and including `end` or `error`. */
  async collect(body, { timeoutMs = TIMEOUT_MS } = {}) {
    return this.stream(body).all(timeoutMs);
  }

  stream(body, rid = this.nextRid++) {
    const call = this.open(rid);
    const sent = this.send(this.encoder.encode({ ...body, v: 1, rid }));
    sent.catch(() => {}); // reported by next(), if anyone asks
    const conn = this;
    return {
      rid,
      sent,
      async next(timeoutMs = TIMEOUT_MS) {
        await sent;
        const reply = await call.next(timeoutMs);
        if (reply.type === "end" || reply.type === "error") conn.calls.delete(String(rid));
        return reply;
      },
      async all(timeoutMs = TIMEOUT_MS) {
        const out = [];
        for (;;) {
          const reply = await this.next(timeoutMs);
          out.push(reply);
          if (reply.type === "end" || reply.type === "error") return out;
        }
      },
    };
  }

  /** Raw frames, for what no well-behaved client sends; the reply with `rid`. */
  async raw(frames, rid, { timeoutMs = TIMEOUT_MS } = {}) {
    const call = this.open(rid);
    try {
      await this.send(frames);
      return await call.next(timeoutMs);
    } finally {
      this.calls.delete(String(rid));
    }
  }

  close() {
    this.closed = true;
    this.sock.close();
  }
}

// ---------------------------------------------------------------- the exercise

class Report {
  constructor(endpoint) {
    this.endpoint = endpoint;
    this.requests = {};
    this.errors = {};
    this.failures = [];
    this.milliseconds = {}; // how long each part took
    let since = Date.now();
    this.lap = (part) => {
      const now = Date.now();
      this.milliseconds[part] = now - since;
      since = now;
    };
  }

  check(ok, what) {
    if (!ok) this.failures.push(what);
    return ok;
  }

  /** A request answered as the page says: counted under its type. */
  answered(type, reply, expected) {
    if (this.check(reply.type === expected, `${type}: expected ${expected}, got ${show(reply)}`)) {
      this.requests[type] = (this.requests[type] || 0) + 1;
    }
    return reply;
  }

  /** An error the page lists, provoked on purpose. */
  refused(name, reply, code, rid) {
    const ok = this.check(
      reply.type === "error" && reply.code === code,
      `${name}: expected error ${code}, got ${show(reply)}`,
    );
    if (ok && rid !== undefined) {
      this.check(reply.rid === rid, `${name}: error rid ${show(reply.rid)}, expected ${show(rid)}`);
    }
    if (ok) (this.errors[code] = this.errors[code] || []).push(name);
    return reply;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, predicate, timeoutMs = TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A watch stream read in the background into `events`, until `end` or `error`. */
function watch(conn, body) {
  const stream = conn.stream(body);
  const seen = { events: [], last: null, stream };
  seen.done = (async () => {
    for (;;) {
      const reply = await stream.next(4 * TIMEOUT_MS);
      if (reply.type !== "run_event") {
        seen.last = reply;
        return;
      }
      seen.events.push(reply);
    }
  })().catch((err) => {
    seen.last = { type: "failed", error: String(err) };
  });
  return seen;
}

/** One request on a REQ socket (one request at a time, single-reply requests only). */
async function requestOnReq(endpoint, message) {
  const sock = new zmq.Request({ linger: 0, receiveTimeout: TIMEOUT_MS });
  sock.connect(endpoint);
  try {
    await sock.send(new Encoder({ ignoreUndefined: true }).encode(message));
    const frames = await sock.receive();
    const reply = new Decoder().decode(frames[0]);
    const problems = replyProblems(reply);
    if (frames.length !== 1 || problems.length) throw new Error(`REQ: ${show(problems)}`);
    return reply;
  } finally {
    sock.close();
  }
}

function text(chunks) {
  return Buffer.concat(chunks.filter((c) => c.type === "log").map((c) => c.data)).toString();
}

async function exercise(root, [t1, t2, t3, t4]) {
  const endpoint = defaultEndpoint(root);
  const report = new Report(endpoint);
  const c = new Connection(endpoint);
  const connections = [c];
  const connect = (options) => {
    const conn = new Connection(endpoint, options);
    connections.push(conn);
    return conn;
  };
  const check = report.check.bind(report);
  try {
    // -- hello, list_workers
    const hello = report.answered("hello", await c.request({ type: "hello", client: "node" }), "hello");
    check(hello.protocol_version === 1, `hello.protocol_version ${hello.protocol_version}`);
    check(hello.socket === endpoint, `hello.socket ${hello.socket} is not ${endpoint}`);
    check(hello.rid === 1, `the first rid is ${hello.rid}`);
    const big = connect({ bigint: true });
    const bigRid = 2n ** 60n + 1n; // beyond 2^53: 64-bit integers
    const bigHello = await big.raw([big.encoder.encode({ type: "hello", v: 1, rid: bigRid })], bigRid);
    check(bigHello.type === "hello" && bigHello.rid === bigRid, `rid 2^60+1: ${show(bigHello)}`);
    check((await requestOnReq(endpoint, { type: "hello", v: 1, rid: 7 })).rid === 7,
      "a REQ socket gets its reply");

    const workers = report.answered("list_workers", await c.request({ type: "list_workers" }), "workers");
    const byName = Object.fromEntries(workers.workers.map((w) => [w.name, w]));
    check(byName.Broken && !byName.Broken.valid && byName.Broken.problems.length > 0,
      `Broken: ${show(byName.Broken)}`);
    check(byName.Echo && byName.Echo.valid && byName.Echo.problems.length === 0
      && byName.Echo.worktree === false, `Echo: ${show(byName.Echo)}`);
    check(byName.Gate && byName.Gate.worktree === true, `Gate: ${show(byName.Gate)}`);

    report.lap("hello and list_workers");
    // -- two subscriptions: every run, and task t2's only
    const w = watch(connect(), { type: "watch" });
    const w2 = watch(connect(), { type: "watch", task: t2 });
    let subscribers = 0;
    await until("two subscribers", async () => {
      subscribers = (await c.request({ type: "hello" })).subscribers;
      return subscribers >= 2;
    });
    check(subscribers === 2, `subscribers: ${subscribers}`);

    report.lap("subscribe");
    // -- run, idempotency, wait, get, logs, ps
    const runEcho = {
      type: "run", worker: "Echo", task: t1, idempotency_key: "node-1", timeout_minutes: 1,
      requested_by: "human:node-test",
    };
    const first = report.answered("run", await c.request(runEcho), "run");
    const echo = first.run;
    check(first.created === true, `created: ${first.created}`);
    check(echo.actor === "agent:echo", `default actor: ${echo.actor}`);
    check(echo.requested_by === "human:node-test", `requested_by: ${echo.requested_by}`);
    check(echo.idempotency_key === "node-1" && echo.attempt === 1, `run: ${show(echo)}`);
    check(echo.state !== "queued" && STATES.includes(echo.state), `a run with a slot: ${echo.state}`);
    const again = report.answered("run", await c.request(runEcho), "run");
    check(again.created === false && again.run.run_id === echo.run_id, `a retry: ${show(again)}`);

    const waited = await c.collect({ type: "wait", run_ids: [echo.run_id] });
    check(waited.length === 2 && waited[1].type === "end", `wait: ${show(waited)}`);
    const ended = report.answered("wait", waited[0], "run").run;
    check(ended.state === "completed" && ended.exit_code === 0, `ended: ${show(ended)}`);
    check(show(ended.result) === show({ tests: 3 }), `result: ${show(ended.result)}`);
    check(waited[0].created === false, "a wait's run reply has created false");

    const got = report.answered("get", await c.request({ type: "get", run_id: echo.run_id }), "run").run;
    check(got.state === "completed" && got.created_at > 0 && typeof got.log_path === "string"
      && typeof got.duration_seconds === "number", `get: ${show(got)}`);

    const whole = await c.collect({ type: "logs", run_id: echo.run_id });
    report.answered("logs", whole[0], "log");
    check(whole[0].offset === 0 && whole[whole.length - 1].type === "end", `logs: ${show(whole)}`);
    const log = text(whole);
    check(log.includes("hello from echo\nsecond line\n"), `the log: ${show(log)}`);
    const tail = text(await c.collect({ type: "logs", run_id: echo.run_id, tail: 1 }));
    check(tail === "second line\n", `tail 1: ${show(tail)}`);
    const fromSix = await c.collect({ type: "logs", run_id: echo.run_id, offset: 6 });
    check(fromSix[0].offset === 6 && text(fromSix) === log.slice(6), `offset 6: ${show(fromSix)}`);
    const followed = text(await c.collect({ type: "logs", run_id: echo.run_id, follow: true }));
    check(followed === log, `follow of an ended run: ${show(followed)}`);

    const ps = report.answered("ps", await c.request({ type: "ps" }), "ps");
    check(ps.runs.every((r) => !FINAL.includes(r.state)), `ps: ${show(ps)}`);
    const all = report.answered("ps", await c.request({ type: "ps", all: true }), "ps");
    check(all.runs.some((r) => r.run_id === echo.run_id), `ps all: ${show(all)}`);
    const mine = report.answered("ps", await c.request({ type: "ps", all: true, task: t1 }), "ps");
    check(mine.runs.length > 0 && mine.runs.every((r) => r.task_id === echo.task_id),
      `ps task: ${show(mine)}`);

    report.lap("run, wait, get, logs, ps");
    // -- live runs: a duplicate, the queue, cancel
    const sleeperA = report.answered("run", await c.request({
      type: "run", worker: "Sleeper", task: t2, actor: "human:node", timeout_minutes: 0.5,
    }), "run").run;
    check(sleeperA.actor === "human:node", `actor: ${sleeperA.actor}`);
    const dup = report.refused("a second live run of a key",
      await c.request({ type: "run", worker: "sleeper", task: t2 }), "ALREADY_RUNNING");
    check(dup.run && dup.run.run_id === sleeperA.run_id, `ALREADY_RUNNING names: ${show(dup.run)}`);
    const sleeperB = (await c.request({ type: "run", worker: "Sleeper", task: t3 })).run;
    const queued = (await c.request({ type: "run", worker: "Echo", task: t4 })).run;
    check(queued.state === "queued" && queued.queue_position === 1, `queued: ${show(queued)}`);
    const notYet = await c.collect({ type: "logs", run_id: queued.run_id });
    check(notYet.length === 1 && notYet[0].type === "end", `logs of a queued run: ${show(notYet)}`);
    const live = (await c.request({ type: "ps" })).runs;
    check(live[0].run_id === queued.run_id && live.length === 3, `ps, queued first: ${show(live)}`);

    const w3conn = connect();
    const w3 = w3conn.stream({ type: "watch" });
    const current = [await w3.next(), await w3.next(), await w3.next()];
    check(current.every((e) => e.type === "run_event" && e.kind === "current"),
      `a new subscriber's first events: ${show(current)}`);
    check(current[0].run.run_id === queued.run_id, "current events: queued first");
    w3conn.close();

    const cancelQueued = report.answered("cancel",
      await c.request({ type: "cancel", worker: "Echo", task: t4 }), "run").run;
    check(cancelQueued.state === "queued" && cancelQueued.queue_position === null,
      `a cancelled queued run: ${show(cancelQueued)}`);
    const queuedEnd = (await c.collect({ type: "wait", run_ids: [queued.run_id] }))[0].run;
    check(queuedEnd.state === "failed" && queuedEnd.reason === "cancelled", `${show(queuedEnd)}`);

    const following = c.stream({ type: "logs", run_id: sleeperA.run_id, follow: true });
    const followingAll = following.all();
    const cancelled = report.answered("cancel",
      await c.request({ type: "cancel", run_id: sleeperA.run_id }), "run").run;
    check(!FINAL.includes(cancelled.state), `cancel answers at once: ${cancelled.state}`);
    const aEnd = (await c.collect({ type: "wait", run_ids: [sleeperA.run_id] }))[0].run;
    check(aEnd.state === "failed" && aEnd.reason === "cancelled", `cancelled: ${show(aEnd)}`);
    const followAll = await followingAll;
    check(followAll[followAll.length - 1].type === "end", `follow ends: ${show(followAll)}`);
    report.answered("cancel", await c.request({ type: "cancel", worker: "sleeper", task: t3 }), "run");
    const bEnd = (await c.collect({ type: "wait", run_ids: [sleeperB.run_id, aEnd.run_id] }));
    check(bEnd.length === 3 && bEnd.slice(0, 2).every((r) => r.run.state === "failed"),
      `wait for two: ${show(bEnd)}`);
    const again2 = (await c.request({ type: "cancel", run_id: sleeperA.run_id })).run;
    check(again2.state === "failed", `cancel of an ended run: ${show(again2)}`);

    report.lap("the queue and cancel");
    // -- errors: INVALID_REQUEST and UNSUPPORTED_VERSION
    const enc = (x) => c.encoder.encode(x);
    report.refused("not msgpack", await c.raw([Buffer.from([0xc1])], 0), "INVALID_REQUEST", 0);
    report.refused("not a map", await c.raw([enc([1, 2, 3])], 0), "INVALID_REQUEST", 0);
    report.refused("no rid", await c.raw([enc({ type: "hello", v: 1 })], 0), "INVALID_REQUEST", 0);
    report.refused("rid out of range", await big.raw(
      [big.encoder.encode({ type: "hello", v: 1, rid: 2n ** 63n })], 0n), "INVALID_REQUEST");
    report.refused("unknown type",
      await c.raw([enc({ type: "format_disk", v: 1, rid: 901 })], 901), "INVALID_REQUEST", 901);
    report.refused("unknown key",
      await c.raw([enc({ type: "hello", colour: "red", v: 1, rid: 902 })], 902),
      "INVALID_REQUEST", 902);
    report.refused("missing field",
      await c.request({ type: "run", worker: "Echo" }), "INVALID_REQUEST");
    const mistyped = report.refused("mistyped field",
      await c.request({ type: "run", worker: 5, task: t1 }), "INVALID_REQUEST");
    check(mistyped.message.includes("$.worker"), `names the field: ${mistyped.message}`);
    report.refused("nil for a field with a default",
      await c.request({ type: "logs", run_id: echo.run_id, follow: null }), "INVALID_REQUEST");
    report.refused("0 for a bool", await c.request({ type: "ps", all: 0 }), "INVALID_REQUEST");
    report.refused("a float for an int",
      await c.request({ type: "logs", run_id: echo.run_id, offset: 1.5 }), "INVALID_REQUEST");
    report.refused("no run ids", await c.request({ type: "wait", run_ids: [] }), "INVALID_REQUEST");
    report.refused("a cancel naming no run", await c.request({ type: "cancel" }), "INVALID_REQUEST");
    report.refused("two frames",
      await c.raw([enc({ type: "hello", v: 1, rid: 903 }), Buffer.from("extra")], 903),
      "INVALID_REQUEST", 903);
    report.refused("version 2",
      await c.raw([enc({ type: "hello", v: 2, rid: 904 })], 904), "UNSUPPORTED_VERSION", 904);

    report.lap("bad requests");
    // -- errors about what the request names
    const nope = "run_00000000000000000000000000";
    report.refused("get an unknown run", await c.request({ type: "get", run_id: nope }), "NOT_FOUND");
    report.refused("wait for an unknown run",
      (await c.collect({ type: "wait", run_ids: [echo.run_id, nope] }))[0], "NOT_FOUND");
    const logsNope = await c.collect({ type: "logs", run_id: nope });
    check(logsNope.length === 1, `an error ends a stream: ${show(logsNope)}`);
    report.refused("logs of an unknown run", logsNope[0], "NOT_FOUND");
    report.refused("an unknown worker",
      await c.request({ type: "run", worker: "Nobody", task: t1 }), "NOT_FOUND");
    report.refused("an unknown task",
      await c.request({ type: "run", worker: "Echo", task: "T-999" }), "NOT_FOUND");
    report.refused("an unknown revision",
      await c.request({ type: "run", worker: "Echo", task: t1, revision: "no-such-branch" }),
      "NOT_FOUND");
    report.refused("an unknown base",
      await c.request({ type: "run", worker: "Echo", task: t1, base: "no-such-branch" }),
      "NOT_FOUND");
    report.refused("cancel a key with no live run",
      await c.request({ type: "cancel", worker: "Echo", task: t1 }), "NOT_FOUND");
    report.refused("ps of an unknown task", await c.request({ type: "ps", task: "T-999" }), "NOT_FOUND");
    const watchNope = await c.collect({ type: "watch", task: "T-999" });
    report.refused("watch an unknown task", watchNope[0], "NOT_FOUND");
    check(watchNope.length === 1, `watch error ends the stream: ${show(watchNope)}`);
    report.refused("a path for a task",
      await c.request({ type: "run", worker: "Echo", task: "../../etc/passwd" }), "INVALID_ID");
    report.refused("ps of a path", await c.request({ type: "ps", task: "../x" }), "INVALID_ID");
    report.refused("an option for a revision",
      await c.request({ type: "run", worker: "Echo", task: t1, revision: "--upload-pack=x" }),
      "INVALID_ARGUMENT");
    report.refused("a broken worker",
      await c.request({ type: "run", worker: "Broken", task: t1 }), "INVALID_WORKER");
    report.refused("a bad actor",
      await c.request({ type: "run", worker: "Echo", task: t1, actor: "nobody" }), "INVALID_ACTOR");
    report.refused("a program not on PATH",
      await c.request({ type: "run", worker: "Ghost", task: t1 }), "ENGINE_NOT_FOUND");
    report.refused("an agent once the daily budget is spent",
      await c.request({ type: "run", worker: "Agent", task: t1 }), "BUDGET_EXCEEDED");

    report.lap("bad names");
    // -- reload, and a config it refuses
    report.answered("reload", await c.request({ type: "reload" }), "workers");
    const config = path.join(root, ".lattice", "config.json");
    const saved = fs.readFileSync(config);
    fs.writeFileSync(config, "{ not json");
    try {
      report.refused("reload a broken config", await c.request({ type: "reload" }), "INVALID_ARGUMENT");
    } finally {
      fs.writeFileSync(config, saved);
    }
    report.answered("reload", await c.request({ type: "reload" }), "workers");

    report.lap("reload");
    // -- CAPACITY: 1,000 requests in flight on one connection, then one more
    const sleeperC = (await c.request({ type: "run", worker: "Sleeper", task: t3 })).run;
    const cap = connect();
    for (let i = 0; i < 1000; i++) cap.stream({ type: "wait", run_ids: [sleeperC.run_id] });
    const over = cap.nextRid;
    report.refused("the 1,001st request in flight",
      await cap.request({ type: "hello" }), "CAPACITY", over);
    cap.close();
    report.lap("capacity: 1,001 requests");
    await c.request({ type: "cancel", run_id: sleeperC.run_id });
    await c.collect({ type: "wait", run_ids: [sleeperC.run_id] });

    report.lap("capacity");
    // -- the watchers saw every run start and end
    const runs = [echo, sleeperA, sleeperB, queued, sleeperC].map((r) => r.run_id);
    await until("the watcher to see every run end", () => runs.every(
      (id) => w.events.some((e) => e.run.run_id === id && e.kind === "ended")));
    for (const id of runs) {
      const kinds = w.events.filter((e) => e.run.run_id === id).map((e) => e.kind);
      check(kinds[0] === "started" && kinds[kinds.length - 1] === "ended"
        && kinds.filter((k) => k === "ended").length === 1, `events of ${id}: ${kinds}`);
    }
    check(w.events.every((e) => e.lost === 0), "a subscriber that reads loses nothing");
    const ended2 = w.events.find((e) => e.run.run_id === sleeperA.run_id && e.kind === "ended");
    check(ended2.run.reason === "cancelled", `an ended event carries the record: ${show(ended2)}`);
    check(w2.events.length > 0 && w2.events.every((e) => e.run.task_id === sleeperA.task_id),
      `a watch of task ${t2}: ${show(w2.events.map((e) => e.run.task_id))}`);
    report.answered("watch", w.events[0], "run_event");

    report.lap("watch");
    // -- shutdown with drain: a live run finishes, new runs are refused, streams end
    const gate = (await c.request({ type: "run", worker: "Gate", task: t1 })).run;
    const gateWait = c.stream({ type: "wait", run_ids: [gate.run_id] });
    await gateWait.sent;
    const ok = report.answered("shutdown", await c.request({ type: "shutdown", drain: true }), "ok");
    check(typeof ok.message === "string", `ok: ${show(ok)}`);
    report.refused("a run while the supervisor stops",
      await c.request({ type: "run", worker: "Echo", task: t4 }), "SHUTTING_DOWN");
    check((await c.request({ type: "hello" })).type === "hello", "it still answers while draining");
    fs.writeFileSync(path.join(root, ".gate"), "");
    const gateEnd = await gateWait.all();
    check(gateEnd[0].run.state === "completed", `a drained run completes: ${show(gateEnd)}`);
    check(typeof gateEnd[0].run.worktree_path === "string", `a worktree run: ${show(gateEnd)}`);
    await Promise.all([w.done, w2.done]);
    check(w.last.type === "end" && w2.last.type === "end", `watch ends: ${show([w.last, w2.last])}`);
    check(w.events.some((e) => e.run.run_id === gate.run_id && e.kind === "ended"),
      "the watcher saw the drained run end");
    report.lap("shutdown");
  } catch (err) {
    report.failures.push(`stopped: ${err.stack || err}`);
  } finally {
    for (const conn of connections) {
      report.failures.push(...conn.problems);
      conn.stray.forEach((r) => report.failures.push(`a reply to no request: ${show(r)}`));
      if (!conn.closed) conn.close();
    }
  }
  return report;
}

async function main(argv) {
  const [command, ...args] = argv;
  if (command === "endpoint" && args.length) {
    for (const root of args) console.log(defaultEndpoint(root));
    return 0;
  }
  if (command === "exercise" && args.length === 5) {
    const report = await exercise(args[0], args.slice(1));
    console.log(JSON.stringify(report, (_, v) => (typeof v === "bigint" ? String(v) : v), 1));
    return report.failures.length ? 1 : 0;
  }
  console.error("usage: node client.js endpoint ROOT... | exercise ROOT T1 T2 T3 T4");
  return 2;
}

main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (err) => {
    console.error(err.stack || err);
    process.exit(1);
  },
);
