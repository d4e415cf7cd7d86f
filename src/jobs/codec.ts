/**
 * How an accepted request is written to the job store and read back after a restart.
 * Buffers (correlation data) become base64; everything else is already JSON.
 */
import type {InferenceRequest, ReplyTarget} from "../mqtt/protocol.js";

export interface JournaledRequest {
    request: InferenceRequest;
    /** sha256 of topic + correlation + payload; finds a redelivered copy of an id-less request */
    messageHash: string;
}

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

export function decodeJob(record: Record<string, unknown>): JournaledRequest | null {
    const reply = record.reply as {topic?: unknown; via?: unknown; correlationData?: unknown} | undefined;
    if (typeof record.id !== "string" || typeof record.deadline !== "number" || !reply || typeof reply.topic !== "string")
        return null;
    const {messageHash, ...rest} = record;
    const request = {
        ...rest,
        reply: {
            topic: reply.topic,
            via: reply.via as InferenceRequest["reply"]["via"],
            ...(typeof reply.correlationData === "string" ? {correlationData: Buffer.from(reply.correlationData, "base64")} : {}),
            ...routeReplyFields(reply)
        }
    } as unknown as InferenceRequest;
    return {request, messageHash: typeof messageHash === "string" ? messageHash : ""};
}
