/**
 * How an accepted request is written to the job store and read back after a restart. Buffers
 * (correlation data) become base64; everything else is already JSON, but text is kept compact: JSON
 * writes a control byte as `\u0001` (6 bytes for 1, so 19.5 MB of such requests made a 117 MB fsync'd
 * journal), so a text field whose escaping would take more than 1.5x its UTF-8 bytes is written as
 * `{"base64": "..."}` instead (1.33x); ordinary text stays a readable string. Reading back validates
 * every field with the request's own rules (a damaged or hand-edited journal must not run as a request).
 */
import type {InferenceRequest, ReplyTarget} from "../mqtt/protocol.js";
import {idProblem, isPlainObject, readRequestFields, type ProtocolLimits} from "../mqtt/request-fields.js";
import {LONE_SURROGATE} from "../util/text.js";

export interface JournaledRequest {
    request: InferenceRequest;
    /** sha256 of topic + correlation + payload; finds a redelivered copy of an id-less request */
    messageHash: string;
}

/**
 * Caps for reading back: a job was checked against the configuration when it was accepted; a restart with
 * smaller limits must not drop it, so only the types and shapes are checked again.
 */
const STORED_LIMITS: ProtocolLimits = {
    maxPayloadBytes: Number.MAX_SAFE_INTEGER, maxTokensCap: Number.MAX_SAFE_INTEGER, defaultMaxTokens: 1,
    maxTimeoutMs: Number.MAX_SAFE_INTEGER, defaultTimeoutMs: 1, maxStopSequences: 1024, maxIdLength: 1024,
    jsonSchemaLimits: {maxDepth: 1024, maxNodes: 1_000_000, maxBytes: 64 * 1024 * 1024}
};
const VIA: readonly ReplyTarget["via"][] = ["response-topic", "replyTo", "default", "route"];

/** Escaped JSON may take at most this many times a text's UTF-8 bytes; beyond, the text goes in as base64. */
export const COMPACT_TEXT_ABOVE = 1.5;

/** A text field as the journal keeps it: the string, or `{base64}` when JSON would blow it up. */
export function packText(text: string): string | {base64: string} {
    const utf8 = Buffer.byteLength(text, "utf8");
    // A lone surrogate has no UTF-8 form (base64 would not give it back); JSON keeps it exactly as \udXXX.
    if (Buffer.byteLength(JSON.stringify(text), "utf8") - 2 <= COMPACT_TEXT_ABOVE * utf8 || LONE_SURROGATE.test(text)) return text;
    return {base64: Buffer.from(text, "utf8").toString("base64")};
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * A text field read back: a string as it is, `{base64}` decoded. Anything else (a damaged record:
 * another shape, text that is not base64 or not UTF-8) is returned as it is, for the field rules to refuse.
 */
export function unpackText(value: unknown): unknown {
    if (!isPlainObject(value) || Object.keys(value).length !== 1 || typeof value.base64 !== "string" || !BASE64.test(value.base64)) return value;
    const bytes = Buffer.from(value.base64, "base64");
    const text = bytes.toString("utf8");
    return Buffer.from(text, "utf8").equals(bytes) ? text : value;
}

/** prompt, system, each message's content and each stop sequence: the text fields of a request (the schema is bounded in bytes as JSON). */
function mapText(fields: Record<string, unknown>, f: (value: unknown) => unknown): Record<string, unknown> {
    const out = {...fields};
    for (const key of ["prompt", "system"] as const) if (out[key] !== undefined) out[key] = f(out[key]);
    if (Array.isArray(out.messages)) out.messages = out.messages.map((m: unknown) => (isPlainObject(m) && m.content !== undefined ? {...m, content: f(m.content)} : m));
    if (Array.isArray(out.stop)) out.stop = out.stop.map(f);
    return out;
}

export function encodeJob(job: JournaledRequest): Record<string, unknown> {
    const {reply, ...rest} = job.request;
    return {
        ...mapText(rest, (v) => (typeof v === "string" ? packText(v) : v)),
        reply: {topic: reply.topic, via: reply.via, ...(reply.correlationData ? {correlationData: reply.correlationData.toString("base64")} : {}),
            ...routeReplyFields(reply)},
        messageHash: job.messageHash
    };
}

/** A route's reply settings (route, format, retain, qos): journaled so a replayed job answers the route's way. */
function routeReplyFields(reply: Partial<Record<keyof ReplyTarget, unknown>>): Partial<ReplyTarget> {
    return {
        ...(typeof reply.route === "string" ? {route: reply.route} : {}),
        ...(reply.format === "text" || reply.format === "json" ? {format: reply.format} : {}),
        ...(typeof reply.retain === "boolean" ? {retain: reply.retain} : {}),
        ...(reply.qos === 0 || reply.qos === 1 || reply.qos === 2 ? {qos: reply.qos} : {})
    };
}

function decodeReply(value: unknown): ReplyTarget | null {
    if (!isPlainObject(value) || typeof value.topic !== "string" || value.topic === "") return null;
    const via = VIA.find((v) => v === value.via);
    if (via === undefined) return null;
    if (value.correlationData !== undefined && typeof value.correlationData !== "string") return null;
    return {topic: value.topic, via,
        ...(typeof value.correlationData === "string" ? {correlationData: Buffer.from(value.correlationData, "base64")} : {}),
        ...routeReplyFields(value)};
}

const isSource = (v: unknown): v is InferenceRequest["source"] =>
    v === "device" || v === "fleet" || (typeof v === "string" && /^route:[A-Za-z0-9_-]{1,64}$/.test(v));

/** The journaled request, validated, or null when the record is not one this daemon wrote. */
export function decodeJob(record: Record<string, unknown>): JournaledRequest | null {
    const {id, deadline, receivedAt, source, reply: rawReply, messageHash, ...fields} = record;
    if (idProblem(id, STORED_LIMITS.maxIdLength) !== null || typeof id !== "string") return null;
    if (typeof deadline !== "number" || !Number.isFinite(deadline) || typeof receivedAt !== "number" || !Number.isFinite(receivedAt)) return null;
    if (!isSource(source)) return null;
    const reply = decodeReply(rawReply);
    if (reply === null) return null;
    if (typeof fields.stream !== "boolean" || typeof fields.timeoutMs !== "number") return null;
    try {
        // the same field rules as on the wire; replyTo never goes in the journal (the reply target does)
        const {replyTo: _replyTo, ...generation} = readRequestFields({...mapText(fields, unpackText), replyTo: undefined}, STORED_LIMITS);
        const request: InferenceRequest = {id, ...generation, deadline, receivedAt, source, reply};
        return {request, messageHash: typeof messageHash === "string" ? messageHash : ""};
    } catch {
        return null;
    }
}
