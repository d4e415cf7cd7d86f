/**
 * Route templates: plain `{{placeholder}}` substitution with no expressions and no code. Prompt
 * templates insert values verbatim (they are prompts, not code); topic templates refuse any value
 * that could leave its level. Pure: no I/O.
 */
import {RequestError} from "../errors.js";
import {validatePublishTopic} from "../mqtt/topics.js";

export type Placeholder =
    | {kind: "payload"}
    /** `path` [] is the whole JSON value */
    | {kind: "json"; path: string[]}
    | {kind: "topic"}
    /** 1-based: the level(s) the N-th wildcard of the route's filter matched */
    | {kind: "segment"; index: number}
    | {kind: "time"}
    | {kind: "device"};

export interface Template {
    source: string;
    /** literal text and placeholders, in order */
    parts: Array<string | Placeholder>;
}

export interface TemplateScope {
    /** the route reads its payload as JSON, so `{{json…}}` can be filled */
    json: boolean;
    /** the wildcards of the route's filter, in order */
    wildcards: ReadonlyArray<"+" | "#">;
    /** a topic template: `{{topic}}` (many levels) and the segment of a "#" are refused */
    forTopic: boolean;
}

export interface TemplateValues {
    /** the payload as UTF-8 text */
    payload: string;
    /** the parsed payload; undefined on a text route */
    json: unknown;
    topic: string;
    /** what each wildcard matched; a "#" match is its levels joined by "/" */
    segments: readonly string[];
    /** ISO 8601 receive time */
    time: string;
    device: string;
}

const PLACEHOLDER = /\{\{([^{}]*)\}\}/g;
const PATH_SEGMENT = /^[A-Za-z0-9_$-]+$/;
// NUL is forbidden in MQTT topics; the other three would leave the level.
// eslint-disable-next-line no-control-regex
const TOPIC_VALUE_FORBIDDEN = /[/+#\u0000]/;

/** A `json.a.b.0` path as segments, or null when a segment is empty or has other characters. */
export function parsePath(path: string): string[] | null {
    const segments = path.split(".");
    return segments.every((s) => PATH_SEGMENT.test(s)) ? segments : null;
}

function knownPlaceholders(scope: TemplateScope): string {
    const names = ["{{payload}}"];
    if (scope.json) names.push("{{json}}", "{{json.PATH}}");
    if (!scope.forTopic) names.push("{{topic}}");
    const segments = scope.wildcards.map((w, i) => ({w, n: i + 1})).filter(({w}) => !scope.forTopic || w === "+");
    if (segments.length > 0) names.push(segments.map(({n}) => `{{topic.${n}}}`).join(", "));
    names.push("{{time}}", "{{device}}");
    return names.join(", ");
}

/** Reads one placeholder name; a string is the problem, completing "… has the placeholder {{x}}, which …". */
function readPlaceholder(name: string, scope: TemplateScope): Placeholder | string {
    if (name === "payload") return {kind: "payload"};
    if (name === "time") return {kind: "time"};
    if (name === "device") return {kind: "device"};
    if (name === "topic")
        return scope.forTopic ? "spans several levels; use {{topic.N}} for one wildcard's level" : {kind: "topic"};
    if (name === "json" || name.startsWith("json.")) {
        if (!scope.json) return "needs `payload: json` on the route";
        if (name === "json") return {kind: "json", path: []};
        const path = parsePath(name.slice(5));
        return path === null ? "has a path that is not dot-separated names or indexes (letters, digits, _, - and $)" : {kind: "json", path};
    }
    const segment = /^topic\.(\d{1,3})$/.exec(name);
    if (segment) {
        const index = Number(segment[1]);
        const wildcard = scope.wildcards[index - 1];
        if (wildcard === undefined)
            return `names wildcard ${index}, but the route's topic has ${scope.wildcards.length} wildcard${scope.wildcards.length === 1 ? "" : "s"}`;
        if (scope.forTopic && wildcard === "#")
            return "is the route's \"#\", which can span several levels; use a \"+\" in the route's topic instead";
        return {kind: "segment", index};
    }
    return "is unknown";
}

/** Parses a template; a string result is the problem, completing "routes[i].field …". */
export function parseTemplate(source: string, scope: TemplateScope): Template | string {
    const parts: Template["parts"] = [];
    let last = 0;
    for (const match of source.matchAll(PLACEHOLDER)) {
        const at = match.index;
        if (at > last) parts.push(source.slice(last, at));
        const name = (match[1] ?? "").trim();
        const placeholder = readPlaceholder(name, scope);
        if (typeof placeholder === "string")
            return `has the placeholder {{${name.slice(0, 64)}}}, which ${placeholder}; known here: ${knownPlaceholders(scope)}`;
        parts.push(placeholder);
        last = at + match[0].length;
    }
    if (last < source.length) parts.push(source.slice(last));
    // There is no escape syntax: a stray "{{" is much more likely a typo than wanted text.
    if (parts.some((p) => typeof p === "string" && p.includes("{{")))
        return "has a \"{{\" that is not a complete placeholder (there is no escaping; single braces are fine)";
    return {source, parts};
}

/** The value at `path` inside `json`, or undefined; only own properties, so "__proto__" finds nothing. */
export function valueAt(json: unknown, path: readonly string[]): unknown {
    let current = json;
    for (const segment of path) {
        if (Array.isArray(current) && /^\d+$/.test(segment)) current = current[Number(segment)];
        else if (typeof current === "object" && current !== null && !Array.isArray(current) && Object.hasOwn(current, segment))
            current = (current as Record<string, unknown>)[segment];
        else return undefined;
    }
    return current;
}

/** How a JSON value reads in a prompt: strings as they are, everything else as compact JSON. */
export function valueText(value: unknown): string {
    return typeof value === "string" ? value : JSON.stringify(value);
}

export function placeholderName(p: Placeholder): string {
    switch (p.kind) {
        case "json": return p.path.length === 0 ? "json" : `json.${p.path.join(".")}`;
        case "segment": return `topic.${p.index}`;
        default: return p.kind;
    }
}

/** The raw value of one placeholder; throws invalid_request when a JSON path finds nothing. */
function resolve(p: Placeholder, v: TemplateValues, field: string): unknown {
    switch (p.kind) {
        case "payload": return v.payload;
        case "topic": return v.topic;
        case "segment": return v.segments[p.index - 1] ?? "";
        case "time": return v.time;
        case "device": return v.device;
        case "json": {
            const value = valueAt(v.json, p.path);
            if (value === undefined)
                throw new RequestError("invalid_request", `${field}: the payload has no value at {{${placeholderName(p)}}}`, {field});
            return value;
        }
    }
}

/** A prompt or system text: values inserted verbatim. Throws RequestError (invalid_request). */
export function renderText(t: Template, v: TemplateValues, field: string): string {
    return t.parts.map((p) => (typeof p === "string" ? p : valueText(resolve(p, v, field)))).join("");
}

/**
 * A reply topic. Each value must stay inside its level: a value with "/", "+", "#" or NUL, an
 * object or array, or a result that is not a valid publish topic (an empty level, a leading "$",
 * a control character) is refused. The messages name the placeholder, never the value.
 */
export function renderTopic(t: Template, v: TemplateValues, field: string): string {
    const topic = t.parts.map((p) => {
        if (typeof p === "string") return p;
        const value = resolve(p, v, field);
        if (typeof value === "object" && value !== null)
            throw new RequestError("invalid_request", `${field}: {{${placeholderName(p)}}} is an object or array, not a topic level`, {field});
        const text = valueText(value);
        if (TOPIC_VALUE_FORBIDDEN.test(text))
            throw new RequestError("invalid_request", `${field}: the value of {{${placeholderName(p)}}} contains "/", "+", "#" or NUL and cannot be a topic level`, {field});
        return text;
    }).join("");
    const problem = validatePublishTopic(topic);
    if (problem !== null)
        throw new RequestError("invalid_request", `${field}: the topic built from the message ${problem}`, {field});
    return topic;
}

/**
 * The levels of a topic template. A level holding a placeholder becomes a pattern in which each
 * placeholder stands for any text (values never contain "/", so levels cannot shift).
 */
function templateLevels(t: Template): Array<string | RegExp> {
    const levels: Array<Array<string | Placeholder>> = [[]];
    for (const part of t.parts) {
        if (typeof part !== "string") {
            levels[levels.length - 1]?.push(part);
            continue;
        }
        part.split("/").forEach((piece, i) => {
            if (i > 0) levels.push([]);
            if (piece !== "") levels[levels.length - 1]?.push(piece);
        });
    }
    return levels.map((level) => level.every((p) => typeof p === "string")
        ? level.join("")
        : new RegExp(`^${level.map((p) => (typeof p === "string" ? p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") : ".*")).join("")}$`, "s"));
}

/**
 * Whether some topic this template can produce matches `filter` (a filter, or a plain topic, which
 * matches only itself). Conservative: a placeholder may be anything, so "maybe" counts as yes.
 */
export function templateMayMatch(t: Template, filter: string): boolean {
    const shared = /^\$share\/[^/]+\/(.+)$/.exec(filter);
    const filterLevels = (shared?.[1] ?? filter).split("/");
    const levels = templateLevels(t);
    for (const [i, f] of filterLevels.entries()) {
        if (f === "#") return true;
        const level = levels[i];
        if (level === undefined) return false;
        if (f === "+") continue;
        if (typeof level === "string" ? level !== f : !level.test(f)) return false;
    }
    return filterLevels.length === levels.length;
}

/** What each wildcard of `filter` matched in `topic` ("+" one level, "#" the rest joined by "/"); null when it does not match. */
export function wildcardSegments(filter: string, topic: string): string[] | null {
    const shared = /^\$share\/[^/]+\/(.+)$/.exec(filter);
    const filterLevels = (shared?.[1] ?? filter).split("/");
    const topicLevels = topic.split("/");
    const segments: string[] = [];
    for (const [i, f] of filterLevels.entries()) {
        if (f === "#") {
            segments.push(topicLevels.slice(i).join("/"));
            return segments;
        }
        const level = topicLevels[i];
        if (level === undefined) return null;
        if (f === "+") segments.push(level);
        else if (f !== level) return null;
    }
    return filterLevels.length === topicLevels.length ? segments : null;
}
