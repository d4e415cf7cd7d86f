/**
 * The request protocol (the README's "MQTT contract"): an MQTT message in, a validated InferenceRequest (or a
 * RequestError and where to send it) out; and the shapes of ok, streaming and error replies.
 * Pure: no I/O. Field rules live in request-fields.ts.
 */
import {randomBytes} from "node:crypto";
import {RequestError, shortReason} from "../errors.js";
import {parseJsonPayload, payloadText, requestDeadline} from "./payload.js";
import {replyTopicProblem, type ReplyPolicy} from "./reply-policy.js";
import {
    idProblem, isPlainObject, readRequestFields, unknownFieldError,
    type ProtocolLimits, type RequestFields
} from "./request-fields.js";

export type {ChatMessage, ProtocolLimits, ThinkingSetting} from "./request-fields.js";
export {REQUEST_FIELDS, REQUEST_JSON_SCHEMA, requestJsonSchema} from "./request-fields.js";

export interface IncomingMessage {
    topic: string;
    payload: Buffer;
    /** MQTT v5 Response Topic property. */
    responseTopic?: string;
    /** MQTT v5 Correlation Data property, echoed on every reply. */
    correlationData?: Buffer;
    /** MQTT v5 Message Expiry Interval as the broker forwarded it (what is left of it). */
    messageExpirySeconds?: number;
    /** Epoch ms. */
    receivedAt: number;
    source: "device" | "fleet" | `route:${string}`;
}

export interface ReplyTarget {
    topic: string;
    /** Echoed with every reply (whatever `via`), so v5 clients can match errors too. */
    correlationData?: Buffer;
    via: "response-topic" | "replyTo" | "default" | "route";
    /** Set for routes only (see src/routes/): the route answered for, in logs and counters. */
    route?: string;
    /** "text": publish only the answer text, never an error (default "json": the reply object). */
    format?: "json" | "text";
    /** Publish the final reply retained (default false). */
    retain?: boolean;
    /** QoS of the final reply (default 1). */
    qos?: 0 | 1 | 2;
}

/** The JSON fields (see RequestFields; `timeoutMs` as asked or the default, `deadline` is what counts) plus the envelope. */
export interface InferenceRequest extends Omit<RequestFields, "replyTo"> {
    /** From the JSON, or generated ("req-…") when absent. */
    id: string;
    /** Epoch ms: receivedAt + timeoutMs, or earlier when the MQTT message expires first. */
    deadline: number;
    reply: ReplyTarget;
    receivedAt: number;
    source: IncomingMessage["source"];
}

export type ParseResult =
    | {ok: true; request: InferenceRequest}
    | {ok: false; error: RequestError; id: string | null; reply: ReplyTarget};


/** A cancel carries only an id; anything bigger is not a cancel. */
const MAX_CANCEL_BYTES = 4096;
const DEFAULT_MAX_ID_LENGTH = 128;

/** Unique enough to tell requests apart in logs and the job store; sortable by arrival. */
function generateId(receivedAt: number): string {
    return `req-${receivedAt.toString(36)}-${randomBytes(6).toString("hex")}`;
}

/** What intake knows beyond the message: where replies may go and what the broker takes. */
export interface ParseOptions {
    /** the reply policy (replyPolicy()); absent or null: only the broker's rules apply */
    policy?: ReplyPolicy | null;
    /** the CONNACK's Maximum Packet Size, when the broker announced one */
    maximumPacketSize?: number | undefined;
}

/**
 * Parses one request message. The payload is either a JSON object or plain UTF-8 text (the prompt).
 * - Over `maxPayloadBytes` → payload_too_large, checked before anything else is read.
 * - Not UTF-8 → invalid_encoding.
 * - Starts with "{" (after whitespace) but is not JSON → invalid_json.
 * - A whole JSON array → invalid_request; a whole JSON string literal → taken as the prompt;
 *   anything else (including "42", "true", "[1] why…") → the plain-text prompt, kept as is.
 * - JSON nested more than `limits.maxJsonDepth` (64) levels → invalid_request, before it is parsed.
 * Replies go to the MQTT v5 Response Topic if it may be used, else the JSON `replyTo` if it may,
 * else `layout.response`: a reply topic must pass replyTopicProblem (what the broker takes, and
 * `options.policy`); a refused one is never used, and why it was refused is the error.
 * The id is echoed in errors whenever a string id of usable length could be read.
 * Total: returns a result for any input; an unexpected exception becomes an `internal` error.
 */
export function parseRequest(msg: IncomingMessage, layout: {response: string}, limits: ProtocolLimits, options: ParseOptions = {}): ParseResult {
    try {
        return parseRequestUnguarded(msg, layout, limits, options);
    } catch {
        // Unreachable by design (the fuzz test in test/unit/hostile-input.test.ts); a last line so intake always answers.
        const reply: ReplyTarget = {topic: layout.response, via: "default", ...(Buffer.isBuffer(msg.correlationData) ? {correlationData: msg.correlationData} : {})};
        return {ok: false, error: new RequestError("internal", "the request could not be read (an internal error in the daemon)"), id: null, reply};
    }
}

function parseRequestUnguarded(msg: IncomingMessage, layout: {response: string}, limits: ProtocolLimits, options: ParseOptions): ParseResult {
    const correlation = msg.correlationData === undefined ? {} : {correlationData: msg.correlationData};
    const broker = {maximumPacketSize: options.maximumPacketSize, correlationDataBytes: msg.correlationData?.length ?? 0};
    const replyProblem = (topic: string): string | null => replyTopicProblem(topic, options.policy ?? null, broker);
    const responseTopicProblem = msg.responseTopic === undefined ? null : replyProblem(msg.responseTopic);
    let reply: ReplyTarget = msg.responseTopic !== undefined && responseTopicProblem === null
        ? {topic: msg.responseTopic, via: "response-topic", ...correlation}
        : {topic: layout.response, via: "default", ...correlation};
    let echoId: string | null = null;
    const fail = (error: RequestError): ParseResult => ({ok: false, error, id: echoId, reply});

    const read = payloadText(msg.payload, limits);
    if (!read.ok) return fail(read.error);
    const text = read.text;

    let body: Record<string, unknown> | null = null;
    let plainPrompt: string | null = text;
    const start = text.trimStart()[0];
    if (start === "{") {
        const parsed = parseJsonPayload(text, limits);
        if (!parsed.ok)
            return fail(parsed.tooDeep ?? new RequestError("invalid_json", `payload starts with "{" but is not valid JSON${parsed.where}`));
        if (!isPlainObject(parsed.value))
            return fail(new RequestError("invalid_json", "payload starts with \"{\" but is not a JSON object"));
        body = parsed.value;
        plainPrompt = null;
    } else if (start === "[" || start === "\"") {
        const parsed = parseJsonPayload(text, limits);
        if (!parsed.ok && parsed.tooDeep !== null)
            return fail(parsed.tooDeep);
        if (parsed.ok && Array.isArray(parsed.value))
            return fail(new RequestError("invalid_request", "a request must be a JSON object or plain text, not a JSON array"));
        if (parsed.ok && typeof parsed.value === "string")
            plainPrompt = parsed.value;
    }

    let replyToProblem: string | null = null;
    if (body !== null) {
        const id = body.id;
        if (typeof id === "string" && id.length >= 1 && id.length <= limits.maxIdLength)
            echoId = id;
        // An invalid Response Topic falls through to a valid replyTo, so the error still reaches the client.
        if (typeof body.replyTo === "string") {
            replyToProblem = replyProblem(body.replyTo);
            if (reply.via === "default" && replyToProblem === null)
                reply = {topic: body.replyTo, via: "replyTo", ...correlation};
        }
    }
    if (responseTopicProblem !== null) {
        return fail(new RequestError("invalid_request",
            `the MQTT Response Topic ${responseTopicProblem}; this error is sent to ${reply.topic} instead`,
            {field: "responseTopic"}));
    }

    const envelope = (timeoutMs: number): Pick<InferenceRequest, "deadline" | "reply" | "receivedAt" | "source"> => ({
        deadline: requestDeadline(msg.receivedAt, timeoutMs, msg.messageExpirySeconds),
        reply,
        receivedAt: msg.receivedAt,
        source: msg.source
    });

    if (body === null) {
        if (plainPrompt === null || plainPrompt.trim() === "")
            return fail(new RequestError("invalid_request", "the prompt is empty or only whitespace: send the prompt as text, or a JSON request", {field: "prompt"}));
        const timeoutMs = limits.defaultTimeoutMs;
        return {ok: true, request: {
            id: generateId(msg.receivedAt), prompt: plainPrompt, maxTokens: limits.defaultMaxTokens,
            thinking: false, stream: false, timeoutMs, ...envelope(timeoutMs)
        }};
    }

    let id: string;
    if (body.id === undefined || body.id === null) {
        id = generateId(msg.receivedAt);
    } else {
        const problem = idProblem(body.id, limits.maxIdLength);
        if (problem !== null)
            return fail(new RequestError("invalid_request", problem, {field: "id"}));
        id = body.id as string;
    }
    const unknown = unknownFieldError(body);
    if (unknown !== null)
        return fail(unknown);
    if (replyToProblem !== null)
        return fail(new RequestError("invalid_request", `replyTo ${replyToProblem}; this error is sent to ${reply.topic} instead`, {field: "replyTo"}));
    try {
        const {replyTo: _replyTo, ...fields} = readRequestFields(body, limits);
        return {ok: true, request: {id, ...fields, ...envelope(fields.timeoutMs)}};
    } catch (err) {
        if (err instanceof RequestError)
            return fail(err);
        throw err;
    }
}

/**
 * Parses a cancel: `{"id": "..."}`, or, for `mosquitto_pub -m job-1` convenience, the id as plain
 * text (surrounding whitespace ignored).
 */
export function parseCancel(payload: Buffer, maxIdLength = DEFAULT_MAX_ID_LENGTH): {ok: true; id: string} | {ok: false; error: RequestError} {
    const refuse = (code: RequestError["code"], message: string): {ok: false; error: RequestError} =>
        ({ok: false, error: new RequestError(code, message, code === "invalid_request" ? {field: "id"} : {})});
    const read = payloadText(payload, {maxPayloadBytes: MAX_CANCEL_BYTES});
    if (!read.ok) return refuse(read.error.code, `cancel ${read.error.message}`);
    const text = read.text.trim();
    let id: unknown = text;
    if (text.startsWith("{")) {
        const parsed = parseJsonPayload(text, {});
        if (!parsed.ok || !isPlainObject(parsed.value))
            return refuse("invalid_json", "cancel payload starts with \"{\" but is not a valid JSON object");
        const extra = Object.keys(parsed.value).find((key) => key !== "id");
        if (extra !== undefined)
            return refuse("invalid_request", `cancel has the unknown field ${JSON.stringify(extra.slice(0, 64))}; allowed: id`);
        id = parsed.value.id;
    }
    const problem = idProblem(id, maxIdLength);
    return problem === null ? {ok: true, id: id as string} : refuse("invalid_request", `cancel ${problem}`);
}

export type FinishReason = "stop" | "length" | "cancelled" | "timeout" | "tool_calls";

export interface OkReplyInput {
    id: string;
    text: string;
    /** The thought text, when thinking was on. */
    thinking?: string;
    /** The parsed answer, when the request had a jsonSchema (may be null if the schema allows it). */
    json?: unknown;
    finishReason: FinishReason;
    /**
     * completionTokens: every generated token (thoughts, answer, end token); thinkingTokens: those in the thoughts;
     * cachedPromptTokens: prompt tokens reused from an earlier request's evaluation instead of evaluated again
     */
    usage: {promptTokens: number; completionTokens: number; thinkingTokens: number; cachedPromptTokens: number};
    /** ttftMs is null when no token was produced (e.g. cancelled in the prompt phase). */
    timing: {queueMs: number; ttftMs: number | null; totalMs: number; tokensPerSecond: number};
    /** the calls to the request's tools (finishReason "tool_calls"): the client runs them and continues */
    toolCalls?: Array<{id: string; name: string; arguments: unknown; error?: string}>;
    /** the device actions the model called, and what became of each (docs/ACTIONS.md) */
    actions?: Array<{name: string; arguments: unknown; topic?: string; status: "published" | "refused" | "invalid"; reason?: string}>;
    /** the conversation this turn continued, after it: turns kept and the tokens its history now holds */
    conversation?: ConversationInfo;
    model: string;
    device: string;
}

/** A conversation after a request: its name, turns kept, history tokens; `ended` once forgotten. */
export interface ConversationInfo {
    id: string;
    turns: number;
    tokens: number;
    ended?: true;
}

/** The reply to `{"conversation", "endConversation": true}` without a prompt. */
export interface ConversationEndReply {
    id: string;
    status: "ok";
    conversation: ConversationInfo;
    device: string;
}

export interface OkReply extends Omit<OkReplyInput, "id"> {
    id: string;
    status: "ok";
}

/** The final reply. Times are rounded to whole ms and tokens per second to one decimal. */
export function okReply(result: OkReplyInput): OkReply {
    const {timing} = result;
    return {
        id: result.id,
        status: "ok",
        text: result.text,
        ...(result.thinking !== undefined ? {thinking: result.thinking} : {}),
        ...(result.json !== undefined ? {json: result.json} : {}),
        finishReason: result.finishReason,
        usage: {promptTokens: result.usage.promptTokens, completionTokens: result.usage.completionTokens, thinkingTokens: result.usage.thinkingTokens,
            cachedPromptTokens: result.usage.cachedPromptTokens},
        timing: {
            queueMs: Math.round(timing.queueMs),
            ttftMs: timing.ttftMs === null ? null : Math.round(timing.ttftMs),
            totalMs: Math.round(timing.totalMs),
            tokensPerSecond: Math.round(timing.tokensPerSecond * 10) / 10
        },
        ...(result.toolCalls !== undefined && result.toolCalls.length > 0 ? {toolCalls: result.toolCalls} : {}),
        ...(result.actions !== undefined && result.actions.length > 0 ? {actions: result.actions} : {}),
        ...(result.conversation !== undefined ? {conversation: result.conversation} : {}),
        model: result.model,
        device: result.device
    };
}

export type ChunkReply =
    | {id: string; status: "streaming"; seq: number; delta: string}
    | {id: string; status: "streaming"; seq: number; thinkingDelta: string};

/**
 * One streaming chunk. Thought text goes in `thinkingDelta`, never `delta`, so a client that
 * concatenates `delta` gets exactly the answer. `seq` counts from 0 over both kinds.
 */
export function chunkReply(id: string, seq: number, delta: string, part: "text" | "thinking" = "text"): ChunkReply {
    return part === "text"
        ? {id, status: "streaming", seq, delta}
        : {id, status: "streaming", seq, thinkingDelta: delta};
}

export interface ErrorReply {
    id: string | null;
    status: "error";
    error: {code: RequestError["code"]; message: string; [detail: string]: unknown};
    model?: string;
    device?: string;
}

/** An error reply; the error's details (e.g. `retryAfterMs`, `field`) sit beside code and message. */
export function errorReply(id: string | null, err: RequestError, extra: {model?: string; device?: string} = {}): ErrorReply {
    const error: ErrorReply["error"] = {code: err.code, message: shortReason(err.message)};
    for (const [key, value] of Object.entries(err.details)) {
        if (key !== "code" && key !== "message")
            error[key] = value;
    }
    return {
        id,
        status: "error",
        error,
        ...(extra.model !== undefined ? {model: extra.model} : {}),
        ...(extra.device !== undefined ? {device: extra.device} : {})
    };
}
