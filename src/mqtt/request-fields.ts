/**
 * The fields of a JSON request: one validator per field, and the JSON Schema that describes the
 * same rules for the retained `info` topic. Pure: no I/O. Every problem is a RequestError
 * `invalid_request` whose message names the field and what is allowed, and never quotes a
 * prompt, message content or system text.
 */
import {RequestError} from "../errors.js";
import {JSON_SCHEMA_LIMITS, jsonSchemaLimitProblem, type JsonSchemaLimits} from "./bounded-json.js";
import type {ChatMessage, GenerationOptions, ThinkingSetting} from "../inference/generation.js";
import {didYouMean, LONE_SURROGATE} from "../util/text.js";
import {validatePublishTopic} from "./topics.js";
import {actionsField, checkToolOrder, toolCallIdField, toolCallsField, toolResultsField, toolsField} from "./tool-fields.js";

export interface ProtocolLimits {
    maxPayloadBytes: number;
    maxTokensCap: number;
    defaultMaxTokens: number;
    maxTimeoutMs: number;
    defaultTimeoutMs: number;
    maxStopSequences: number;
    maxIdLength: number;
    /** deepest nesting of a JSON payload (default MAX_JSON_DEPTH, 64) */
    maxJsonDepth?: number;
    /** bounds on `jsonSchema` (default JSON_SCHEMA_LIMITS) */
    jsonSchemaLimits?: JsonSchemaLimits;
}

export type {ChatMessage, ThinkingSetting} from "../inference/generation.js";

/**
 * What the JSON fields say, with defaults applied: the generation's options (one type from here to the
 * engine) and how to deliver it; the envelope (id, reply, deadline) is protocol.ts's.
 */
export interface RequestFields extends GenerationOptions {
    stream: boolean;
    timeoutMs: number;
    replyTo?: string;
    /** the conversation this prompt continues (src/jobs/conversations.ts): the device keeps its turns */
    conversation?: string;
    /** forget the conversation: after answering `prompt`, or at once when there is none */
    endConversation?: boolean;
    /** the device actions this request grants by name (docs/ACTIONS.md) */
    actions?: string[];
    /** in a conversation: the results of the calls its last turn made, in place of a prompt */
    toolResults?: Array<{toolCallId: string; content: string}>;
}

/** Every field a JSON request may carry; anything else is refused by name. */
export const REQUEST_FIELDS = [
    "id", "prompt", "messages", "system", "maxTokens", "temperature", "topP", "topK", "minP", "seed",
    "stop", "jsonSchema", "thinking", "stream", "timeoutMs", "replyTo", "conversation", "endConversation", "tools", "actions", "toolResults"
] as const;

const MAX_STOP_LENGTH = 64;
const MAX_SEED = 2 ** 32 - 1;
const ROLES: readonly ChatMessage["role"][] = ["system", "user", "assistant", "tool"];
// eslint-disable-next-line no-control-regex
const ID_FORBIDDEN = /[\u0000-\u001f\u007f-\u009f+#]/;

function invalid(field: string, message: string): RequestError {
    return new RequestError("invalid_request", message, {field});
}

/** What a value is, for messages: numbers and booleans shown, strings never (they may be prompt text). */
export function describeValue(value: unknown): string {
    if (value === undefined) return "nothing";
    if (value === null) return "null";
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    if (typeof value === "string") return `a string of ${value.length} characters`;
    if (Array.isArray(value)) return "an array";
    return `a ${typeof value}`;
}

/** A short word is shown, to make "User" or "tool" plain; anything longer might be misplaced text. */
function describeRole(role: unknown): string {
    return typeof role === "string" && /^[A-Za-z_-]{1,16}$/.test(role) ? JSON.stringify(role) : describeValue(role);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Unknown keys of `obj`, with a hint for the usual snake_case or miscased spellings. */
export function unknownFieldError(obj: Record<string, unknown>): RequestError | null {
    const known: readonly string[] = REQUEST_FIELDS;
    const unknown = Object.keys(obj).filter((key) => !known.includes(key));
    const first = unknown[0];
    if (first === undefined)
        return null;
    const hints = unknown.map((key) => JSON.stringify(key.slice(0, 64)) + didYouMean(key, known));
    const list = hints.length > 5 ? [...hints.slice(0, 5), `and ${hints.length - 5} more`] : hints;
    return invalid(first, `unknown field${unknown.length > 1 ? "s" : ""} ${list.join(", ")}; allowed: ${known.join(", ")}`);
}

/** Null when `id` is a usable request id (or, with `field`, conversation name), else why not. */
export function idProblem(id: unknown, maxIdLength: number, field = "id"): string | null {
    if (typeof id !== "string")
        return `${field} must be a string (got ${describeValue(id)})`;
    if (id.length < 1 || id.length > maxIdLength)
        return `${field} must be 1 to ${maxIdLength} characters (got ${id.length})`;
    if (ID_FORBIDDEN.test(id) || LONE_SURROGATE.test(id))
        return `${field} must not contain "+", "#", NUL, control characters or unpaired surrogates`;
    return null;
}

/** `max` null: no upper bound beyond a safe integer. */
function integerIn(obj: Record<string, unknown>, field: string, min: number, max: number | null): number | undefined {
    const value = obj[field];
    if (value === undefined || value === null)
        return undefined;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || (max !== null && value > max)) {
        const range = max === null ? `of at least ${min}` : `from ${min} to ${max}`;
        throw invalid(field, `${field} must be an integer ${range} (got ${describeValue(value)})`);
    }
    return value;
}

function numberIn(obj: Record<string, unknown>, field: string, min: number, max: number, minExclusive = false): number | undefined {
    const value = obj[field];
    if (value === undefined || value === null)
        return undefined;
    const low = minExclusive ? `greater than ${min}` : `from ${min}`;
    if (typeof value !== "number" || !Number.isFinite(value) || value > max || (minExclusive ? value <= min : value < min))
        throw invalid(field, `${field} must be a number ${low}${minExclusive ? " and at most" : " to"} ${max} (got ${describeValue(value)})`);
    return value;
}

function booleanField(obj: Record<string, unknown>, field: string): boolean | undefined {
    const value = obj[field];
    if (value === undefined || value === null)
        return undefined;
    if (typeof value !== "boolean")
        throw invalid(field, `${field} must be true or false (got ${describeValue(value)})`);
    return value;
}

function promptField(obj: Record<string, unknown>): string | undefined {
    const value = obj.prompt;
    if (value === undefined || value === null)
        return undefined;
    if (typeof value !== "string" || value.trim() === "")
        throw invalid("prompt", `prompt must be a non-empty string (got ${describeValue(value)})`);
    return value;
}

function messagesField(obj: Record<string, unknown>, hasSystemField: boolean): ChatMessage[] | undefined {
    const value = obj.messages;
    if (value === undefined || value === null)
        return undefined;
    if (!Array.isArray(value) || value.length === 0)
        throw invalid("messages", `messages must be a non-empty array of {"role", "content"} (got ${describeValue(value)})`);
    const messages = value.map((entry: unknown, i): ChatMessage => {
        const at = `messages[${i}]`;
        if (!isPlainObject(entry))
            throw invalid(at, `${at} must be an object {"role", "content"} (got ${describeValue(entry)})`);
        const role = entry.role;
        if (typeof role !== "string" || !(ROLES as readonly string[]).includes(role))
            throw invalid(`${at}.role`, `${at}.role must be one of ${ROLES.join(", ")} (got ${describeRole(role)})`);
        // an assistant message may carry the calls it made, a tool message names the call it answers
        const allowed = ["role", "content", ...(role === "assistant" ? ["toolCalls"] : role === "tool" ? ["toolCallId"] : [])];
        const extra = Object.keys(entry).find((key) => !allowed.includes(key));
        if (extra !== undefined)
            throw invalid(`${at}.${extra.slice(0, 64)}`, `${at} has the unknown field ${JSON.stringify(extra.slice(0, 64))}; allowed for role ${role}: ${allowed.join(", ")}`);
        if (typeof entry.content !== "string")
            throw invalid(`${at}.content`, `${at}.content must be a string (got ${describeValue(entry.content)})`);
        const message: ChatMessage = {role: role as ChatMessage["role"], content: entry.content};
        if (role === "assistant" && entry.toolCalls !== undefined && entry.toolCalls !== null) message.toolCalls = toolCallsField(entry, at);
        if (role === "tool") message.toolCallId = toolCallIdField(entry, at);
        return message;
    });
    // The chat template puts the system prompt first, once; anywhere else it would be ambiguous.
    const laterSystem = messages.findIndex((m, i) => m.role === "system" && i > 0);
    if (laterSystem !== -1)
        throw invalid(`messages[${laterSystem}].role`, `messages[${laterSystem}].role may be "system" only in the first message`);
    if (hasSystemField && messages[0]?.role === "system")
        throw invalid("system", "give the system prompt either as system or as a first \"system\" message, not both");
    checkToolOrder(messages);
    const last = messages[messages.length - 1];
    if (last?.role !== "user" && last?.role !== "tool")
        throw invalid(`messages[${messages.length - 1}].role`, `the last message must be from "user", or the "tool" results of the calls before it (got ${describeRole(last?.role)})`);
    if (last.role === "user" && last.content.trim() === "")
        throw invalid(`messages[${messages.length - 1}].content`, "the last user message must not be empty");
    return messages;
}

function stopField(obj: Record<string, unknown>, maxStopSequences: number): string[] | undefined {
    const value = obj.stop;
    if (value === undefined || value === null)
        return undefined;
    const what = `stop must be an array of 1 to ${maxStopSequences} non-empty strings of at most ${MAX_STOP_LENGTH} characters`;
    if (!Array.isArray(value) || value.length < 1 || value.length > maxStopSequences)
        throw invalid("stop", `${what} (got ${Array.isArray(value) ? `${value.length} entries` : describeValue(value)})`);
    for (const [i, entry] of (value as unknown[]).entries()) {
        if (typeof entry !== "string" || entry.length < 1 || entry.length > MAX_STOP_LENGTH)
            throw invalid(`stop[${i}]`, `${what} (stop[${i}] is ${describeValue(entry)})`);
    }
    return value as string[];
}

function thinkingField(obj: Record<string, unknown>, maxTokensCap: number): ThinkingSetting {
    const value = obj.thinking;
    if (value === undefined || value === null)
        return false;
    if (typeof value === "boolean")
        return value;
    const what = `thinking must be false, true or {"budget": an integer from 0 to ${maxTokensCap}}`;
    if (!isPlainObject(value))
        throw invalid("thinking", `${what} (got ${describeValue(value)})`);
    const extra = Object.keys(value).find((key) => key !== "budget");
    if (extra !== undefined)
        throw invalid(`thinking.${extra.slice(0, 64)}`, `${what} (got the unknown field ${JSON.stringify(extra.slice(0, 64))})`);
    const budget = value.budget;
    if (typeof budget !== "number" || !Number.isInteger(budget) || budget < 0 || budget > maxTokensCap)
        throw invalid("thinking.budget", `${what} (got budget ${describeValue(budget)})`);
    return {budget};
}

/**
 * Validates every field except `id` (the caller reads it first, to echo it in errors) and the
 * presence of unknown keys (checked by unknownFieldError). `null` counts as "not given", as
 * many JSON clients write absent optionals that way. Throws RequestError.
 */
export function readRequestFields(obj: Record<string, unknown>, limits: ProtocolLimits): RequestFields {
    let system: string | undefined;
    if (obj.system !== undefined && obj.system !== null) {
        if (typeof obj.system !== "string")
            throw invalid("system", `system must be a string (got ${describeValue(obj.system)})`);
        system = obj.system;
    }
    const prompt = promptField(obj);
    const messages = messagesField(obj, system !== undefined);
    let conversation: string | undefined;
    if (obj.conversation !== undefined && obj.conversation !== null) {
        const problem = idProblem(obj.conversation, limits.maxIdLength, "conversation");
        if (problem !== null) throw invalid("conversation", problem);
        conversation = obj.conversation as string;
    }
    const endConversation = booleanField(obj, "endConversation");
    if (endConversation !== undefined && conversation === undefined)
        throw invalid("endConversation", "endConversation needs conversation: the name of the conversation to end");
    const toolResults = toolResultsField(obj);
    if (toolResults !== undefined && conversation === undefined)
        throw invalid("toolResults", "toolResults continue a conversation: name it (conversation); without one, send the whole history as messages with \"tool\" messages");
    if (toolResults !== undefined && (prompt !== undefined || messages !== undefined))
        throw invalid("toolResults", "send either toolResults (the results of the conversation's last calls) or a prompt, not both");
    if (conversation !== undefined && messages !== undefined)
        throw invalid("messages", "a conversation keeps its own turns: send the new prompt alone, not messages (or leave out conversation and send the whole history as messages)");
    if (prompt !== undefined && messages !== undefined)
        throw invalid("prompt", "give either prompt or messages, not both");
    if (prompt === undefined && messages === undefined && toolResults === undefined && endConversation !== true)
        throw invalid("prompt", "a request needs prompt (a non-empty string) or messages (a non-empty array)");

    let replyTo: string | undefined;
    if (obj.replyTo !== undefined && obj.replyTo !== null) {
        if (typeof obj.replyTo !== "string")
            throw invalid("replyTo", `replyTo must be a topic string (got ${describeValue(obj.replyTo)})`);
        const problem = validatePublishTopic(obj.replyTo);
        if (problem !== null)
            throw invalid("replyTo", `replyTo ${problem}`);
        replyTo = obj.replyTo;
    }

    let jsonSchema: object | undefined;
    if (obj.jsonSchema !== undefined && obj.jsonSchema !== null) {
        if (!isPlainObject(obj.jsonSchema))
            throw invalid("jsonSchema", `jsonSchema must be a JSON Schema object (got ${describeValue(obj.jsonSchema)})`);
        // The engine compiles the schema into a grammar recursively: bound it before it gets there.
        const schemaLimits = limits.jsonSchemaLimits ?? JSON_SCHEMA_LIMITS;
        const problem = jsonSchemaLimitProblem(obj.jsonSchema, schemaLimits);
        if (problem !== null)
            throw new RequestError("invalid_request", `jsonSchema ${problem}`, {field: "jsonSchema", limits: {...schemaLimits}});
        jsonSchema = obj.jsonSchema;
    }

    const tools = toolsField(obj);
    const actions = actionsField(obj);
    if (jsonSchema !== undefined && (tools !== undefined || actions !== undefined))
        throw invalid("jsonSchema", "jsonSchema cannot be combined with tools or actions: a call and a constrained answer are two different grammars");
    const fields: RequestFields = {
        maxTokens: integerIn(obj, "maxTokens", 1, limits.maxTokensCap) ?? limits.defaultMaxTokens,
        thinking: thinkingField(obj, limits.maxTokensCap),
        stream: booleanField(obj, "stream") ?? false,
        timeoutMs: integerIn(obj, "timeoutMs", 1, limits.maxTimeoutMs) ?? limits.defaultTimeoutMs
    };
    const optional = {
        prompt, messages, system, replyTo, jsonSchema, conversation, endConversation, tools, actions, toolResults,
        temperature: numberIn(obj, "temperature", 0, 2),
        topP: numberIn(obj, "topP", 0, 1, true),
        topK: integerIn(obj, "topK", 0, null),
        minP: numberIn(obj, "minP", 0, 1),
        seed: integerIn(obj, "seed", 0, MAX_SEED),
        stop: stopField(obj, limits.maxStopSequences)
    };
    // Absent optionals stay absent rather than present-and-undefined, so replays and logs stay tidy.
    for (const [key, value] of Object.entries(optional)) {
        if (value !== undefined)
            (fields as unknown as Record<string, unknown>)[key] = value;
    }
    return fields;
}

/**
 * JSON Schema (draft 2020-12) of a JSON request, for the retained `info` topic. With `limits`,
 * the configured caps are filled in; without, only the fixed rules are stated. The cross-field
 * rules (one of prompt/messages; the last message from "user") are in `oneOf` and descriptions.
 */
export function requestJsonSchema(limits?: Pick<ProtocolLimits, "maxTokensCap" | "maxTimeoutMs" | "maxStopSequences" | "maxIdLength" | "defaultMaxTokens" | "defaultTimeoutMs">): object {
    const cap = limits === undefined ? {} : {maximum: limits.maxTokensCap};
    const call = {type: "object", properties: {id: {type: "string"}, name: {type: "string"}, arguments: {type: "object"}},
        required: ["id", "name", "arguments"], additionalProperties: false};
    const message = {
        type: "object",
        properties: {role: {enum: ROLES}, content: {type: "string"},
            toolCalls: {type: "array", minItems: 1, items: call, description: "An assistant message: the calls a reply's toolCalls gave."},
            toolCallId: {type: "string", description: "A \"tool\" message: the id of the call whose result content is."}},
        required: ["role", "content"],
        additionalProperties: false
    };
    return {
        $schema: "https://json-schema.org/draft/2020-12/schema",
        $id: "urn:qwen-edge:request:v1",
        title: "qwen-edge request",
        description: "A prompt request. Plain UTF-8 text (not starting with \"{\") is also accepted and taken as the prompt.",
        type: "object",
        properties: {
            id: {type: "string", minLength: 1, ...(limits === undefined ? {} : {maxLength: limits.maxIdLength}),
                pattern: "^[^\\u0000-\\u001f\\u007f-\\u009f+#]+$", description: "Echoed in every reply; generated when absent."},
            prompt: {type: "string", pattern: "\\S", description: "The user prompt; give this or messages."},
            messages: {type: "array", minItems: 1, items: message,
                description: "A conversation; \"system\" only as the first message; the last message is from \"user\"."},
            system: {type: "string", description: "System prompt; the device's default when absent."},
            maxTokens: {type: "integer", minimum: 1, ...cap, ...(limits === undefined ? {} : {default: limits.defaultMaxTokens})},
            temperature: {type: "number", minimum: 0, maximum: 2},
            topP: {type: "number", exclusiveMinimum: 0, maximum: 1},
            topK: {type: "integer", minimum: 0},
            minP: {type: "number", minimum: 0, maximum: 1},
            seed: {type: "integer", minimum: 0, maximum: MAX_SEED},
            stop: {type: "array", minItems: 1, ...(limits === undefined ? {} : {maxItems: limits.maxStopSequences}),
                items: {type: "string", minLength: 1, maxLength: MAX_STOP_LENGTH}},
            jsonSchema: {type: "object", description: `Constrain the answer to this JSON Schema; the reply carries the parsed json. At most ${JSON_SCHEMA_LIMITS.maxDepth} levels deep, ${JSON_SCHEMA_LIMITS.maxNodes} values and ${JSON_SCHEMA_LIMITS.maxBytes} bytes.`},
            thinking: {
                oneOf: [
                    {type: "boolean"},
                    {type: "object", properties: {budget: {type: "integer", minimum: 0, ...cap}}, required: ["budget"], additionalProperties: false}
                ],
                default: false,
                description: "Think before answering; {budget} caps the thought tokens. The thought text is returned apart from the answer."
            },
            stream: {type: "boolean", default: false, description: "Send {id, status: \"streaming\", seq, delta} chunks before the final reply."},
            timeoutMs: {type: "integer", minimum: 1, ...(limits === undefined ? {} : {maximum: limits.maxTimeoutMs, default: limits.defaultTimeoutMs}),
                description: "Deadline for queue + generation; the MQTT message expiry shortens it."},
            conversation: {type: "string", minLength: 1, ...(limits === undefined ? {} : {maxLength: limits.maxIdLength}),
                pattern: "^[^\\u0000-\\u001f\\u007f-\\u009f+#]+$",
                description: "Continue this conversation: the device keeps its turns (per reply topic), so send only the new prompt, never messages. Unused conversations are forgotten after a while."},
            endConversation: {type: "boolean", description: "Forget the conversation after answering prompt, or at once when there is no prompt."},
            tools: {type: "array", minItems: 1, maxItems: 16, items: {type: "object", properties: {name: {type: "string", pattern: "^[A-Za-z_][A-Za-z0-9_-]{0,63}$"},
                description: {type: "string", maxLength: 2048}, parameters: {type: "object"}}, required: ["name"], additionalProperties: false},
            description: "Tools the model may call: a call ends the answer with finishReason \"tool_calls\" and toolCalls; run them and continue with messages that add the assistant's toolCalls and a \"tool\" message per result."},
            toolResults: {type: "array", minItems: 1, maxItems: 16, items: {type: "object", properties: {toolCallId: {type: "string"}, content: {type: "string"}},
                required: ["toolCallId", "content"], additionalProperties: false},
            description: "In a conversation whose last answer called tools: each call's result, in place of a prompt."},
            actions: {type: "array", minItems: 1, maxItems: 16, items: {type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$"},
                description: "Device actions (configured on the device) this request grants by name: the device runs the model's calls to them itself and lists them in the reply's actions."},
            replyTo: {type: "string", minLength: 1, pattern: "^[^$+#\\u0000][^+#\\u0000]*$",
                description: "Reply topic when the MQTT v5 Response Topic is absent; no wildcards, no empty levels, no control characters or Unicode noncharacters, and not a topic the device's reply policy forbids (any qwen-edge device's status, info, health, request and cancel topics, another device's response topic, Home Assistant's, a route's input, outside mqtt.replyTopics)."}
        },
        oneOf: [{required: ["prompt"], not: {anyOf: [{required: ["messages"]}, {required: ["toolResults"]}]}}, {required: ["messages"], not: {anyOf: [{required: ["prompt"]}, {required: ["conversation"]}]}},
            {required: ["conversation", "endConversation"], properties: {endConversation: {const: true}},
                not: {anyOf: [{required: ["prompt"]}, {required: ["messages"]}, {required: ["toolResults"]}]}},
            {required: ["conversation", "toolResults"], not: {anyOf: [{required: ["prompt"]}, {required: ["messages"]}]}}],
        additionalProperties: false
    };
}

/** The schema without the configured caps; the `info` topic should use requestJsonSchema(limits). */
export const REQUEST_JSON_SCHEMA: object = requestJsonSchema();
