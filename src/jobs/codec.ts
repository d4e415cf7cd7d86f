/**
 * How an accepted request is written to the job store and read back after a restart. Buffers
 * (correlation data) become base64; everything else is already JSON. Reading back validates every
 * field with the request's own rules (a damaged or hand-edited journal must not run as a request).
 */
import type {InferenceRequest, ReplyTarget} from "../mqtt/protocol.js";
import {idProblem, isPlainObject, readRequestFields, type ProtocolLimits} from "../mqtt/request-fields.js";

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

export function encodeJob(job: JournaledRequest): Record<string, unknown> {
    const {reply, ...rest} = job.request;
    return {
        ...rest,
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
        const {replyTo: _replyTo, ...generation} = readRequestFields({...fields, replyTo: undefined}, STORED_LIMITS);
        const request: InferenceRequest = {id, ...generation, deadline, receivedAt, source, reply};
        return {request, messageHash: typeof messageHash === "string" ? messageHash : ""};
    } catch {
        return null;
    }
}
