/**
 * JSON from outside, with bounds checked before anything walks it. V8's JSON.parse copes with any
 * depth, but JSON.stringify, structuredClone and node-llama-cpp's schema-to-grammar compiler recurse
 * and throw "Maximum call stack size exceeded" at a few thousand levels (measured: 5,000 nested
 * arrays). So depth is measured first, by a scanner over the text that keeps no stack. Pure: no I/O.
 */

/** Deepest nesting of arrays and objects a request, cancel or route payload may have. */
export const MAX_JSON_DEPTH = 64;

export interface JsonSchemaLimits {
    /** nesting of objects and arrays inside `jsonSchema` (default 32) */
    maxDepth: number;
    /** JSON values inside it: every object, array, string, number, boolean and null (default 2,000) */
    maxNodes: number;
    /** its size as compact JSON, in UTF-8 bytes (default 16 KiB) */
    maxBytes: number;
}

/** Real schemas for a small model's answers are a few levels and tens of nodes; these leave room. */
export const JSON_SCHEMA_LIMITS: Readonly<JsonSchemaLimits> = {maxDepth: 32, maxNodes: 2000, maxBytes: 16 * 1024};

/**
 * The deepest nesting of `[` and `{` in `text`, outside strings (escapes respected), without
 * recursion; stops scanning once the depth passes `stopAbove`. The text need not be valid JSON:
 * unbalanced brackets are counted as they come.
 */
export function jsonNestingDepth(text: string, stopAbove = Number.POSITIVE_INFINITY): number {
    let depth = 0;
    let deepest = 0;
    let inString = false;
    for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        if (inString) {
            if (c === 0x5c) i++; // backslash: the next character is escaped, whatever it is
            else if (c === 0x22) inString = false;
            continue;
        }
        if (c === 0x22) {
            inString = true;
        } else if (c === 0x5b || c === 0x7b) {
            depth++;
            if (depth > deepest) {
                deepest = depth;
                if (deepest > stopAbove) return deepest;
            }
        } else if ((c === 0x5d || c === 0x7d) && depth > 0) {
            depth--;
        }
    }
    return deepest;
}

export type BoundedJson =
    | {ok: true; value: unknown}
    /** `depth` is where scanning stopped: more than `maxDepth`, not necessarily the real depth */
    | {ok: false; problem: "too_deep"; depth: number}
    /** `position`: where JSON.parse gave up, when it said (its message may quote the text, so only the number is kept) */
    | {ok: false; problem: "syntax"; position: number | null};

/** JSON.parse, refusing text nested more than `maxDepth` levels before it is parsed. Never throws. */
export function parseBoundedJson(text: string, maxDepth = MAX_JSON_DEPTH): BoundedJson {
    const depth = jsonNestingDepth(text, maxDepth);
    if (depth > maxDepth) return {ok: false, problem: "too_deep", depth};
    try {
        return {ok: true, value: JSON.parse(text) as unknown};
    } catch (err) {
        const position = /at position (\d+)/.exec(err instanceof Error ? err.message : "")?.[1];
        return {ok: false, problem: "syntax", position: position === undefined ? null : Number(position)};
    }
}

/**
 * Why `schema` exceeds the limits, as a phrase completing "jsonSchema …", or null when it is within
 * them. Walks with an explicit stack and stops at the first limit passed, so it is safe and cheap
 * on any parsed value (and on any depth, should a caller skip parseBoundedJson).
 */
export function jsonSchemaLimitProblem(schema: unknown, limits: JsonSchemaLimits = JSON_SCHEMA_LIMITS): string | null {
    const tooMany = `has more than ${limits.maxNodes} values (objects, arrays, strings, numbers…); the limit is ${limits.maxNodes}`;
    const stack: Array<{value: unknown; depth: number}> = [{value: schema, depth: 0}];
    let nodes = 0;
    while (stack.length > 0) {
        const {value, depth} = stack.pop() as {value: unknown; depth: number};
        nodes++;
        if (typeof value !== "object" || value === null) continue;
        if (depth + 1 > limits.maxDepth)
            return `is nested more than ${limits.maxDepth} levels deep; the limit is ${limits.maxDepth}`;
        // Counted as they are pushed, so the stack never holds more than maxNodes values.
        for (const key in value) {
            if (!Object.hasOwn(value, key)) continue;
            if (nodes + stack.length >= limits.maxNodes) return tooMany;
            stack.push({value: (value as Record<string, unknown>)[key], depth: depth + 1});
        }
    }
    // Depth and node count are bounded now, so stringifying cannot overflow the stack.
    const bytes = Buffer.byteLength(JSON.stringify(schema) ?? "", "utf8");
    return bytes > limits.maxBytes ? `is ${bytes} bytes as JSON; the limit is ${limits.maxBytes} bytes` : null;
}
