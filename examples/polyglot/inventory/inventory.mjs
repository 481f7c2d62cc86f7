// inventory: a sagaflow participant over NATS JetStream, in Node.js with the `nats` package
// and no sagaflow code: it speaks the wire protocol (crates/core/src/message.rs) directly.
//
// What a Rust participant of service `inventory` does (crates/nats/src/lib.rs,
// crates/engine/src/participant.rs), this does too:
// - consumes the durable pull consumer `inventory__sagaflow_commands_inventory` (group
//   `inventory` on topic `sagaflow.commands.inventory`) of the stream `SAGAFLOW`, or
//   `SAGAFLOW_<ns>` with subjects prefixed `<ns>.` under SAGAFLOW_NAMESPACE=<ns>, with explicit
//   acks; both are created, as sagaflow creates them, when missing;
// - handles each command envelope (kind "command", payload a CommandPayload), writes what it
//   did to its log (one JSON line per idempotency key, fsynced) before anything else;
// - publishes the reply envelope (kind "reply", payload {step, attempt, phase, outcome, ...})
//   to `<ns>.sagaflow.replies` with `Nats-Msg-Id: {key}:reply`, and acks the command only
//   after the broker stored the reply. A command delivered again (a lost ack, a crash, the
//   engine re-sending) finds its key in the log and gets the recorded reply again, under a
//   fresh message id `{key}:reply:{uuid}` (a deliberate second reply, which the broker must
//   not drop as a duplicate; the engine ignores it if the first arrived).
//
// Commands: reserve (the `reserve` step's action), release (its compensation), ship (the
// pivot; rejected when the saga context's `address` is "nowhere").
//
// Environment: NATS_URL (default nats://127.0.0.1:4222), SAGAFLOW_NAMESPACE (default none),
// INVENTORY_LOG (default ./inventory.jsonl).

import { randomUUID } from "node:crypto";
import fs from "node:fs";
import {
  AckPolicy,
  RetentionPolicy,
  StorageType,
  connect,
  headers,
  nanos,
} from "nats";

const SERVICE = "inventory";
const PROTOCOL_VERSION = 1;
const REPLY_TOPIC = "sagaflow.replies";
const COMMAND_TOPIC = `sagaflow.commands.${SERVICE}`;
// As crates/nats and crates/server/src/transport_url.rs configure it.
const ACK_WAIT_MS = 15_000;
const MAX_DELIVER = 10;
const SERVER_DELIVER_HEADROOM = 10;
const RETRY_DELAY_MS = 1_000;
const DUPLICATE_WINDOW_MS = 120_000;
const MAX_ACK_PENDING = 1024;

const natsUrl = process.env.NATS_URL || "nats://127.0.0.1:4222";
const namespace = process.env.SAGAFLOW_NAMESPACE || "";
const logPath = process.env.INVENTORY_LOG || "inventory.jsonl";

if (namespace && !/^[A-Za-z0-9_-]+$/.test(namespace)) {
  console.error(`SAGAFLOW_NAMESPACE=${namespace}: a namespace is letters, digits, '-' and '_'`);
  process.exit(2);
}
const prefix = namespace ? `${namespace}.` : "";
const streamName = namespace ? `SAGAFLOW_${namespace}` : "SAGAFLOW";
const subject = (topic) => `${prefix}${topic}`;
// crates/nats consumer_name(topic, group): `{group}__{topic}`, other characters as '_'.
const durable = `${SERVICE}__${COMMAND_TOPIC}`.replace(/[^A-Za-z0-9_-]/g, "_");

// --- the log: what was done, by idempotency key --------------------------------------------

/** key -> record; a record is {key, saga_id, step, phase, command, effect, at, reply}. */
const byKey = new Map();
/** `saga_id|step|phase` -> the record that succeeded there (an effect done, or settled). */
const settled = new Map();

const slot = (sagaId, step, phase) => `${sagaId}|${step}|${phase}`;

function remember(record) {
  byKey.set(record.key, record);
  const outcome = record.reply?.payload?.outcome;
  if (outcome === "succeeded" && !settled.has(slot(record.saga_id, record.step, record.phase))) {
    settled.set(slot(record.saga_id, record.step, record.phase), record);
  }
}

function loadLog() {
  let text = "";
  try {
    text = fs.readFileSync(logPath, "utf8");
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      remember(JSON.parse(line));
    } catch {
      // A line cut short by a crash mid-write: its command was not acked, and comes again.
      console.error(`inventory: skipping a torn log line: ${line.slice(0, 80)}`);
    }
  }
  const fd = fs.openSync(logPath, "a");
  // A torn last line must not swallow the next record.
  if (text.length > 0 && !text.endsWith("\n")) {
    fs.writeSync(fd, "\n");
    fs.fsyncSync(fd);
  }
  return fd;
}

const logFd = loadLog();

function append(record) {
  fs.writeSync(logFd, JSON.stringify(record) + "\n");
  fs.fsyncSync(logFd);
  remember(record);
}

// --- the commands ------------------------------------------------------------------------

const succeeded = (output) => ({ outcome: "succeeded", output });
const rejected = (reason) => ({ outcome: "rejected", reason });
const fatal = (error) => ({ outcome: "failed", error, retryable: false });

/** What a new command does: {outcome, effect} (effect: the name of what was done, or null). */
function decide(cmd) {
  const { saga_id: sagaId, step_name: step, phase, context } = cmd;
  const ctx = context && typeof context === "object" ? context : {};
  const earlier = settled.get(slot(sagaId, step, phase));
  if (earlier) {
    // An earlier attempt of this step already did it (its reply may have been lost, or it
    // timed out and was tried again): the same answer, no second effect.
    return { outcome: succeeded(earlier.reply.payload.output ?? null), effect: null };
  }
  switch (`${cmd.command}/${phase}`) {
    case "reserve/action": {
      if (settled.has(slot(sagaId, step, "compensation"))) {
        // Released already: a late attempt must not reserve after the release.
        return { outcome: rejected(`saga ${sagaId}: the reservation was released already`), effect: null };
      }
      const output = {
        reservation_id: `res-${sagaId}`,
        sku: typeof ctx.sku === "string" ? ctx.sku : "widget",
        quantity: Number.isInteger(ctx.quantity) ? ctx.quantity : 1,
      };
      return { outcome: succeeded(output), effect: "reserve" };
    }
    case "release/compensation": {
      const reserved = settled.get(slot(sagaId, step, "action"));
      if (!reserved) {
        // Nothing reserved; recorded all the same, so that a late reserve is refused.
        return { outcome: succeeded({ released: null }), effect: null };
      }
      return { outcome: succeeded({ released: `res-${sagaId}` }), effect: "release" };
    }
    case "ship/action": {
      if (ctx.address === "nowhere") {
        return { outcome: rejected("cannot ship to nowhere"), effect: null };
      }
      const address = typeof ctx.address === "string" ? ctx.address : "";
      return { outcome: succeeded({ shipment_id: `ship-${sagaId}`, shipped_to: address }), effect: "ship" };
    }
    default:
      return {
        outcome: fatal(`service ${SERVICE} has no handler for command ${cmd.command} (${phase})`),
        effect: null,
      };
  }
}

/** The reply envelope, field for field what crates/engine/src/participant.rs sends. */
function replyEnvelope(command, payload, outcome) {
  const envelope = {
    protocol: PROTOCOL_VERSION,
    message_id: `${payload.key}:reply`,
    kind: "reply",
    subject: REPLY_TOPIC,
  };
  // Optional fields are left out when the command had none, as serde's skip_serializing_if.
  if (command.saga_id != null) envelope.saga_id = command.saga_id;
  if (command.correlation_id != null) envelope.correlation_id = command.correlation_id;
  envelope.causation_id = command.message_id;
  if (command.step != null) envelope.step = command.step;
  if (command.attempt != null) envelope.attempt = command.attempt;
  if (command.traceparent != null) envelope.traceparent = command.traceparent;
  if (command.request_id != null) envelope.request_id = command.request_id;
  envelope.payload = {
    step: payload.step,
    attempt: payload.attempt,
    phase: payload.phase,
    ...outcome,
  };
  return envelope;
}

/** A command envelope and its payload, or a reason why the bytes are not one. */
function parseCommand(data) {
  let envelope;
  try {
    envelope = JSON.parse(new TextDecoder().decode(data));
  } catch (e) {
    return { reason: `not a sagaflow envelope: ${e.message}` };
  }
  if (!envelope || typeof envelope !== "object" || typeof envelope.message_id !== "string") {
    return { reason: "not a sagaflow envelope: no message_id" };
  }
  if (envelope.kind !== "command") {
    return { reason: `expected a command, got a ${envelope.kind} message` };
  }
  const p = envelope.payload;
  const fields = [
    ["saga_id", "string"], ["definition", "string"], ["version", "number"], ["step", "number"],
    ["step_name", "string"], ["attempt", "number"], ["phase", "string"], ["command", "string"],
    ["key", "string"],
  ];
  for (const [name, type] of fields) {
    if (!p || typeof p[name] !== type) {
      return { reason: `command payload is malformed: no ${name} of type ${type}` };
    }
  }
  if (p.phase !== "action" && p.phase !== "compensation") {
    return { reason: `command payload is malformed: phase ${JSON.stringify(p.phase)}` };
  }
  return { envelope, payload: p };
}

// --- the broker ---------------------------------------------------------------------------

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function ensureStream(jsm) {
  for (;;) {
    try {
      return await jsm.streams.info(streamName);
    } catch (e) {
      if (e?.api_error?.err_code !== 10059) throw e; // 10059: stream not found
    }
    try {
      // What crates/nats creates: every sagaflow subject of the namespace, on disk, kept
      // until its consumer acks it, publishes de-duplicated by Nats-Msg-Id for two minutes.
      return await jsm.streams.add({
        name: streamName,
        subjects: [subject("sagaflow.>")],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: nanos(DUPLICATE_WINDOW_MS),
      });
    } catch (e) {
      // sagaflow created it at the same moment: read it again.
      console.error(`inventory: creating stream ${streamName}: ${e.message}; looking again`);
      await delay(200);
    }
  }
}

async function ensureConsumer(jsm) {
  try {
    return await jsm.consumers.info(streamName, durable);
  } catch (e) {
    if (e?.api_error?.err_code !== 10014) throw e; // 10014: consumer not found
  }
  return await jsm.consumers.add(streamName, {
    durable_name: durable,
    description: `sagaflow group ${SERVICE} on ${COMMAND_TOPIC}`,
    filter_subject: subject(COMMAND_TOPIC),
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(ACK_WAIT_MS),
    max_deliver: MAX_DELIVER + SERVER_DELIVER_HEADROOM,
    max_ack_pending: MAX_ACK_PENDING,
  });
}

/**
 * The CloudEvents binary-mode headers sagaflow's transports put beside an envelope
 * (docs/protocol.md §7, CloudEventAttributes::headers): optional for a participant, sent
 * anyway so the reply looks like a Rust participant's.
 */
function cloudEventHeaders(envelope) {
  const h = headers();
  h.set("ce-specversion", "1.0");
  h.set("ce-id", envelope.message_id);
  h.set("ce-type", "io.sagaflow.reply");
  h.set("ce-source", "sagaflow");
  h.set("ce-subject", envelope.subject);
  h.set("ce-sagaflowprotocol", String(PROTOCOL_VERSION));
  h.set("content-type", "application/json");
  if (envelope.saga_id != null) h.set("ce-sagaflowsagaid", envelope.saga_id);
  if (envelope.traceparent != null) h.set("traceparent", envelope.traceparent);
  if (envelope.request_id != null) h.set("x-request-id", envelope.request_id);
  return h;
}

/** Publishes a reply (`Nats-Msg-Id: msgID`) and waits until the stream stored it. */
async function publishReply(js, envelope, msgID) {
  return await js.publish(subject(REPLY_TOPIC), JSON.stringify(envelope), {
    msgID,
    headers: cloudEventHeaders(envelope),
    timeout: 5_000,
  });
}

async function handle(js, m) {
  const delivered = m.info?.deliveryCount ?? 1;
  if (delivered > MAX_DELIVER) {
    // sagaflow's transports dead-letter such a message in sagaflow's store; this service has
    // no access to it, so it logs the message and tells the broker to stop delivering it.
    console.error(
      `inventory: dead letter (delivered ${delivered - 1} times without an ack): ${m.string().slice(0, 500)}`,
    );
    m.term();
    return;
  }
  const parsed = parseCommand(m.data);
  if (parsed.reason) {
    console.error(`inventory: dead letter (${parsed.reason}): ${m.string().slice(0, 500)}`);
    m.term();
    return;
  }
  const { envelope, payload } = parsed;
  const known = byKey.get(payload.key);
  if (known) {
    // Handled before: the recorded reply again, under a fresh message id.
    const id = `${payload.key}:reply:${randomUUID().replaceAll("-", "")}`;
    await publishReply(js, known.reply, id);
    await m.ackAck();
    console.error(`inventory: ${payload.command} ${payload.key} again -> recorded ${known.reply.payload.outcome}`);
    return;
  }
  const { outcome, effect } = decide(payload);
  const reply = replyEnvelope(envelope, payload, outcome);
  append({
    key: payload.key,
    saga_id: payload.saga_id,
    step: payload.step_name,
    phase: payload.phase,
    command: payload.command,
    effect,
    at: Date.now(),
    reply,
  });
  await publishReply(js, reply, `${payload.key}:reply`);
  await m.ackAck();
  console.error(`inventory: ${payload.command} ${payload.key} -> ${outcome.outcome}${effect ? ` (${effect})` : ""}`);
}

async function main() {
  const nc = await connect({
    servers: natsUrl,
    name: "sagaflow-polyglot-inventory",
    maxReconnectAttempts: -1,
  });
  const jsm = await nc.jetstreamManager();
  await ensureStream(jsm);
  await ensureConsumer(jsm);
  const js = nc.jetstream();
  const consumer = await js.consumers.get(streamName, durable);
  const messages = await consumer.consume({ max_messages: 64 });

  // SIGINT/SIGTERM: finish the command in hand (its effect, reply and ack), then stop; one
  // not yet taken stays with the broker for the next process.
  const stop = () => void messages.close();
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);

  console.log(`inventory ready (stream ${streamName}, consumer ${durable}, log ${logPath})`);
  // One command at a time: the log is appended in order, and an ack never precedes its
  // effect and its reply.
  for await (const m of messages) {
    try {
      await handle(js, m);
    } catch (e) {
      // The broker or the disk failed us: the command comes again, and the log answers it.
      console.error(`inventory: handling failed (${e.message}); it comes again`);
      m.nak(RETRY_DELAY_MS);
    }
  }
  fs.closeSync(logFd);
  // Every publish was awaited and every ack confirmed: nothing is left to flush.
  await nc.close();
}

main().then(
  // Leftover client timers would keep the process up a moment longer.
  () => process.exit(0),
).catch((e) => {
  console.error(`inventory: ${e.stack || e}`);
  process.exit(1);
});
