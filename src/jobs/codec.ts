/**
 * How an accepted request is written to the job store and read back after a restart.
 * Buffers (correlation data) become base64; everything else is already JSON.
 */
import type {InferenceRequest} from "../mqtt/protocol.js";

export interface JournaledRequest {
    request: InferenceRequest;
    /** sha256 of topic + correlation + payload; finds a redelivered copy of an id-less request */
    messageHash: string;
}

export function encodeJob(job: JournaledRequest): Record<string, unknown> {
    const {reply, ...rest} = job.request;
    return {
        ...rest,
        reply: {topic: reply.topic, via: reply.via, ...(reply.correlationData ? {correlationData: reply.correlationData.toString("base64")} : {})},
        messageHash: job.messageHash
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
            ...(typeof reply.correlationData === "string" ? {correlationData: Buffer.from(reply.correlationData, "base64")} : {})
        }
    } as unknown as InferenceRequest;
    return {request, messageHash: typeof messageHash === "string" ? messageHash : ""};
}
