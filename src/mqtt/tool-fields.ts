/**
 * The tool fields of a JSON request (issue 20, docs/ACTIONS.md): the client's `tools`, the calls an
 * assistant message made (`toolCalls`), the "tool" messages that answer them (`toolCallId`), and the
 * device actions a request grants (`actions`). Pure; every problem is `invalid_request` naming the field,
 * and never quotes a description, an argument or a result (they may be prompt text).
 */
import {RequestError} from "../errors.js";
import {schemaProblem} from "../actions/schema.js";
import type {ChatMessage, ToolCall, ToolDefinition} from "../inference/generation.js";

/** Tools a request may define, calls an assistant message may carry, actions it may grant. */
export const MAX_TOOLS = 16;
const MAX_DESCRIPTION = 2048;
/** What node-llama-cpp's function-name grammar and Qwen's `<function=NAME>` take safely. */
const TOOL_NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;
const ACTION_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const CALL_ID = /^[A-Za-z0-9_.:-]{1,64}$/;

function invalid(field: string, message: string): RequestError {
    return new RequestError("invalid_request", message, {field});
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const shown = (v: unknown): string => typeof v === "string" ? (/^[A-Za-z0-9_-]{1,64}$/.test(v) ? JSON.stringify(v) : `a string of ${v.length} characters`)
    : v === null ? "null" : Array.isArray(v) ? "an array" : typeof v === "object" ? "an object" : `${v as number}`;

/** `tools`: `[{"name", "description"?, "parameters"?}]`, at most MAX_TOOLS, names unique. */
export function toolsField(obj: Record<string, unknown>): ToolDefinition[] | undefined {
    const value = obj.tools;
    if (value === undefined || value === null) return undefined;
    if (!Array.isArray(value) || value.length < 1 || value.length > MAX_TOOLS)
        throw invalid("tools", `tools must be an array of 1 to ${MAX_TOOLS} {"name", "description", "parameters"} (got ${Array.isArray(value) ? `${value.length} entries` : shown(value)})`);
    const names = new Set<string>();
    return value.map((entry: unknown, i): ToolDefinition => {
        const at = `tools[${i}]`;
        if (!isObject(entry)) throw invalid(at, `${at} must be an object {"name", "description", "parameters"} (got ${shown(entry)})`);
        const extra = Object.keys(entry).find((k) => !["name", "description", "parameters"].includes(k));
        if (extra !== undefined) throw invalid(`${at}.${extra.slice(0, 64)}`, `${at} has the unknown field ${JSON.stringify(extra.slice(0, 64))}; allowed: name, description, parameters`);
        if (typeof entry.name !== "string" || !TOOL_NAME.test(entry.name))
            throw invalid(`${at}.name`, `${at}.name must be 1 to 64 of A-Z a-z 0-9 _ -, not starting with a digit or "-" (got ${shown(entry.name)})`);
        if (names.has(entry.name)) throw invalid(`${at}.name`, `${at}.name ${JSON.stringify(entry.name)} is defined twice`);
        names.add(entry.name);
        const tool: ToolDefinition = {name: entry.name};
        if (entry.description !== undefined && entry.description !== null) {
            if (typeof entry.description !== "string" || entry.description.length > MAX_DESCRIPTION)
                throw invalid(`${at}.description`, `${at}.description must be a string of at most ${MAX_DESCRIPTION} characters (got ${shown(entry.description)})`);
            tool.description = entry.description;
        }
        if (entry.parameters !== undefined && entry.parameters !== null) {
            if (!isObject(entry.parameters) || entry.parameters.type !== "object")
                throw invalid(`${at}.parameters`, `${at}.parameters must be a JSON Schema of type "object" (got ${shown(entry.parameters)})`);
            const problem = schemaProblem(entry.parameters, `${at}.parameters`);
            if (problem !== null) throw invalid(`${at}.parameters`, problem);
            tool.parameters = entry.parameters;
        }
        return tool;
    });
}

/** `actions`: the names of the device actions this request grants (docs/ACTIONS.md); checked against the configuration at intake. */
export function actionsField(obj: Record<string, unknown>): string[] | undefined {
    const value = obj.actions;
    if (value === undefined || value === null) return undefined;
    if (!Array.isArray(value) || value.length < 1 || value.length > MAX_TOOLS)
        throw invalid("actions", `actions must be an array of 1 to ${MAX_TOOLS} action names (got ${Array.isArray(value) ? `${value.length} entries` : shown(value)})`);
    const names = new Set<string>();
    for (const [i, name] of (value as unknown[]).entries()) {
        if (typeof name !== "string" || !ACTION_NAME.test(name)) throw invalid(`actions[${i}]`, `actions[${i}] must be an action name, 1 to 64 of A-Z a-z 0-9 _ - (got ${shown(name)})`);
        names.add(name);
    }
    return [...names];
}

/** An assistant message's `toolCalls`: `[{"id", "name", "arguments"}]` as a reply's toolCalls gave them. */
export function toolCallsField(entry: Record<string, unknown>, at: string): ToolCall[] {
    const value = entry.toolCalls;
    if (!Array.isArray(value) || value.length < 1 || value.length > MAX_TOOLS)
        throw invalid(`${at}.toolCalls`, `${at}.toolCalls must be an array of 1 to ${MAX_TOOLS} {"id", "name", "arguments"} (got ${Array.isArray(value) ? `${value.length} entries` : shown(value)})`);
    return value.map((call: unknown, j): ToolCall => {
        const where = `${at}.toolCalls[${j}]`;
        if (!isObject(call)) throw invalid(where, `${where} must be an object {"id", "name", "arguments"} (got ${shown(call)})`);
        // "error" as a reply gave it is accepted and dropped: the client may send the calls back as they came
        const extra = Object.keys(call).find((k) => !["id", "name", "arguments", "error"].includes(k));
        if (extra !== undefined) throw invalid(`${where}.${extra.slice(0, 64)}`, `${where} has the unknown field ${JSON.stringify(extra.slice(0, 64))}; allowed: id, name, arguments`);
        if (typeof call.id !== "string" || !CALL_ID.test(call.id)) throw invalid(`${where}.id`, `${where}.id must be 1 to 64 of A-Z a-z 0-9 _ . : - (got ${shown(call.id)})`);
        if (typeof call.name !== "string" || !TOOL_NAME.test(call.name)) throw invalid(`${where}.name`, `${where}.name must be a tool name (got ${shown(call.name)})`);
        if (!isObject(call.arguments)) throw invalid(`${where}.arguments`, `${where}.arguments must be an object (got ${shown(call.arguments)})`);
        return {id: call.id, name: call.name, arguments: call.arguments};
    });
}

/** `toolCallId` of a "tool" message. */
export function toolCallIdField(entry: Record<string, unknown>, at: string): string {
    if (typeof entry.toolCallId !== "string" || !CALL_ID.test(entry.toolCallId))
        throw invalid(`${at}.toolCallId`, `${at}.toolCallId must name the call this result answers: the id from the assistant message's toolCalls (got ${shown(entry.toolCallId)})`);
    return entry.toolCallId;
}

/**
 * The order of calls and results: a "tool" message answers a call of the assistant message before it (after
 * any other results of that message), each call at most once; the last message is a user message, or the
 * results of every call of the last assistant message.
 */
export function checkToolOrder(messages: readonly ChatMessage[]): void {
    let pending: Map<string, boolean> | null = null; // the last assistant message's calls: id -> answered
    const unanswered = (): string[] => pending === null ? [] : [...pending].filter(([, a]) => !a).map(([id]) => JSON.stringify(id));
    for (const [i, m] of messages.entries()) {
        const at = `messages[${i}]`;
        if (m.role === "tool") {
            const id = m.toolCallId ?? "";
            if (pending === null || !pending.has(id))
                throw invalid(`${at}.toolCallId`, `${at} answers the call ${JSON.stringify(id)}, which the assistant message before it did not make`);
            if (pending.get(id) === true) throw invalid(`${at}.toolCallId`, `${at} answers the call ${JSON.stringify(id)} a second time`);
            pending.set(id, true);
            continue;
        }
        if (unanswered().length > 0)
            throw invalid(at, `the calls of the assistant message before ${at} need their results first: a "tool" message for each of ${unanswered().join(", ")}`);
        pending = m.role === "assistant" && m.toolCalls !== undefined ? new Map(m.toolCalls.map((c) => [c.id, false])) : null;
    }
    if (unanswered().length > 0)
        throw invalid(`messages[${messages.length - 1}]`, `the last assistant message called tools: add a "tool" message with the result of ${unanswered().join(", ")}`);
}

/** `toolResults`: in a conversation, the results of the calls its last turn made: `[{"toolCallId", "content"}]`. */
export function toolResultsField(obj: Record<string, unknown>): Array<{toolCallId: string; content: string}> | undefined {
    const value = obj.toolResults;
    if (value === undefined || value === null) return undefined;
    if (!Array.isArray(value) || value.length < 1 || value.length > MAX_TOOLS)
        throw invalid("toolResults", `toolResults must be an array of 1 to ${MAX_TOOLS} {"toolCallId", "content"} (got ${Array.isArray(value) ? `${value.length} entries` : shown(value)})`);
    const seen = new Set<string>();
    return value.map((entry: unknown, i) => {
        const at = `toolResults[${i}]`;
        if (!isObject(entry)) throw invalid(at, `${at} must be an object {"toolCallId", "content"} (got ${shown(entry)})`);
        const extra = Object.keys(entry).find((k) => k !== "toolCallId" && k !== "content");
        if (extra !== undefined) throw invalid(`${at}.${extra.slice(0, 64)}`, `${at} has the unknown field ${JSON.stringify(extra.slice(0, 64))}; allowed: toolCallId, content`);
        const toolCallId = toolCallIdField(entry, at);
        if (seen.has(toolCallId)) throw invalid(`${at}.toolCallId`, `${at} answers the call ${JSON.stringify(toolCallId)} a second time`);
        seen.add(toolCallId);
        if (typeof entry.content !== "string") throw invalid(`${at}.content`, `${at}.content must be a string (got ${shown(entry.content)})`);
        return {toolCallId, content: entry.content};
    });
}
