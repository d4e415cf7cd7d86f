/**
 * Reading a message's payload the same way for a native request (protocol.ts) and a routed one
 * (routes/router.ts): the size limit first, then UTF-8, then JSON bounded in depth; and the deadline
 * a request gets from its timeout and the MQTT message expiry. Pure.
 */
import {RequestError} from "../errors.js";
import {MAX_JSON_DEPTH, parseBoundedJson} from "./bounded-json.js";
import type {ProtocolLimits} from "./request-fields.js";

const utf8 = new TextDecoder("utf-8", {fatal: true});

/** The payload as text, or the error that refuses it (payload_too_large before anything is read, invalid_encoding). */
export function payloadText(payload: Buffer, limits: Pick<ProtocolLimits, "maxPayloadBytes">): {ok: true; text: string} | {ok: false; error: RequestError} {
    if (payload.length > limits.maxPayloadBytes) {
        return {ok: false, error: new RequestError("payload_too_large", `payload is ${payload.length} bytes; the limit is ${limits.maxPayloadBytes} bytes`,
            {maxPayloadBytes: limits.maxPayloadBytes})};
    }
    try {
        return {ok: true, text: utf8.decode(payload)};
    } catch {
        return {ok: false, error: new RequestError("invalid_encoding", "payload is not valid UTF-8 text")};
    }
}

export type JsonPayload =
    | {ok: true; value: unknown}
    /** `tooDeep`: refused before parsing (an invalid_request naming the limit); else `where` it stopped parsing */
    | {ok: false; tooDeep: RequestError | null; where: string};

/**
 * The parsed JSON, refused without parsing when nested deeper than `limits.maxJsonDepth` (64). V8's own
 * parse error may quote the payload (prompt text), so only the position is kept.
 */
export function parseJsonPayload(text: string, limits: Pick<ProtocolLimits, "maxJsonDepth">, what = "the JSON payload"): JsonPayload {
    const maxDepth = limits.maxJsonDepth ?? MAX_JSON_DEPTH;
    const parsed = parseBoundedJson(text, maxDepth);
    if (parsed.ok) return parsed;
    if (parsed.problem === "too_deep") {
        return {ok: false, where: "", tooDeep: new RequestError("invalid_request",
            `${what} is nested more than ${maxDepth} levels deep (arrays and objects); the limit is ${maxDepth}`, {maxJsonDepth: maxDepth})};
    }
    return {ok: false, tooDeep: null, where: parsed.position === null ? "" : ` (error at character ${parsed.position})`};
}

/** Epoch ms by which a request must be answered: its timeout, or the message's expiry when that comes first. */
export function requestDeadline(receivedAt: number, timeoutMs: number, messageExpirySeconds: number | undefined): number {
    const byTimeout = receivedAt + timeoutMs;
    const expiry = messageExpirySeconds;
    return expiry !== undefined && Number.isFinite(expiry) && expiry >= 0 ? Math.min(byTimeout, receivedAt + expiry * 1000) : byTimeout;
}
