/**
 * Device actions (issue 20, docs/ACTIONS.md): configured tools the daemon runs itself by publishing one MQTT
 * message. `actions:` in the configuration is a list of
 * `{name, description, parameters, publish: {topic, payload, qos?, retain?}, maxPerMinute?}`; topic and payload
 * are templates over the call's arguments: `{{args.NAME}}` (a property, or `{{args.a.b}}` inside an object),
 * `{{args}}` (all arguments as JSON, payload only) and `{{device}}`. Pure: compiling and rendering, no I/O.
 *
 * A topic value must stay inside its level (no "/", "+", "#", NUL; a scalar), so a rendered topic always has
 * the template's levels with its literal levels unchanged: an argument can choose *which* light, never a topic
 * outside the pattern. Names are what requests and routes grant (`"actions": ["set_light"]`).
 */
import {parsePath, valueAt, valueText} from "../routes/template.js";
import {validatePublishTopic} from "../mqtt/topics.js";
import {schemaProblem} from "./schema.js";
import {didYouMean} from "../util/text.js";

export interface ActionConfig {
    name: string;
    description?: string;
    parameters?: Record<string, unknown>;
    publish: {topic: string; payload?: string; qos?: 0 | 1 | 2; retain?: boolean};
    maxPerMinute?: number;
}

type Part = string | {kind: "args"; path: string[]} | {kind: "device"};

export interface Action {
    name: string;
    description: string;
    parameters: Record<string, unknown>;
    topic: {source: string; parts: Part[]};
    payload: {source: string; parts: Part[]};
    qos: 0 | 1 | 2;
    retain: boolean;
    /** calls published per minute at most, all requests together */
    maxPerMinute: number;
}

const KEYS = ["name", "description", "parameters", "publish", "maxPerMinute"];
const PUBLISH_KEYS = ["topic", "payload", "qos", "retain"];
const NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;
export const DEFAULT_ACTION_MAX_PER_MINUTE = 6;
const PLACEHOLDER = /\{\{([^{}]*)\}\}/g;
// eslint-disable-next-line no-control-regex
const TOPIC_VALUE_FORBIDDEN = /[/+#\u0000]/;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

class Problem extends Error {}

function parseParts(source: string, forTopic: boolean, at: string): Part[] {
    const parts: Part[] = [];
    let last = 0;
    for (const match of source.matchAll(PLACEHOLDER)) {
        if (match.index > last) parts.push(source.slice(last, match.index));
        const name = (match[1] ?? "").trim();
        if (name === "device") parts.push({kind: "device"});
        else if (name === "args") {
            if (forTopic) throw new Problem(`${at} has {{args}}, all the arguments as JSON, which cannot be a topic level; use {{args.NAME}}`);
            parts.push({kind: "args", path: []});
        } else if (name.startsWith("args.")) {
            const path = parsePath(name.slice(5));
            if (path === null) throw new Problem(`${at} has {{${name.slice(0, 64)}}}, whose path is not dot-separated names`);
            parts.push({kind: "args", path});
        } else throw new Problem(`${at} has the placeholder {{${name.slice(0, 64)}}}, which is unknown; known: {{args.NAME}}, ${forTopic ? "" : "{{args}}, "}{{device}}`);
        last = match.index + match[0].length;
    }
    if (last < source.length) parts.push(source.slice(last));
    if (parts.some((p) => typeof p === "string" && p.includes("{{"))) throw new Problem(`${at} has a "{{" that is not a complete placeholder`);
    return parts;
}

function compileOne(raw: unknown, at: string): Action {
    if (!isObject(raw)) throw new Problem(`${at} must be an object {name, description, parameters, publish: {topic, payload}}`);
    const unknown = Object.keys(raw).find((k) => !KEYS.includes(k));
    if (unknown !== undefined) throw new Problem(`${at}: unknown key ${JSON.stringify(unknown.slice(0, 64))}${didYouMean(unknown, KEYS, 2)}; allowed: ${KEYS.join(", ")}`);
    if (typeof raw.name !== "string" || !NAME.test(raw.name))
        throw new Problem(`${at}.name must be 1 to 64 of A-Z a-z 0-9 _ -, not starting with a digit or "-"`);
    if (raw.description !== undefined && (typeof raw.description !== "string" || raw.description.length > 2048))
        throw new Problem(`${at}.description must be a string of at most 2048 characters`);
    const parameters = raw.parameters ?? {type: "object", properties: {}};
    if (!isObject(parameters) || parameters.type !== "object") throw new Problem(`${at}.parameters must be a JSON Schema of type "object"`);
    const schema = schemaProblem(parameters, `${at}.parameters`);
    if (schema !== null) throw new Problem(schema);
    const publish = raw.publish;
    if (!isObject(publish)) throw new Problem(`${at}.publish must be an object {topic, payload, qos, retain}`);
    const extra = Object.keys(publish).find((k) => !PUBLISH_KEYS.includes(k));
    if (extra !== undefined) throw new Problem(`${at}.publish: unknown key ${JSON.stringify(extra.slice(0, 64))}; allowed: ${PUBLISH_KEYS.join(", ")}`);
    if (typeof publish.topic !== "string" || publish.topic === "") throw new Problem(`${at}.publish.topic must be a topic template`);
    if (/[+#]/.test(publish.topic.replace(PLACEHOLDER, ""))) throw new Problem(`${at}.publish.topic must not contain the wildcards + or #`);
    const topic = {source: publish.topic, parts: parseParts(publish.topic, true, `${at}.publish.topic`)};
    const literal = validatePublishTopic(publish.topic.replace(PLACEHOLDER, "x"));
    if (literal !== null) throw new Problem(`${at}.publish.topic ${literal}`);
    for (const part of topic.parts) {
        if (typeof part === "string" || part.kind !== "args") continue;
        const declared = isObject(parameters.properties) ? parameters.properties[part.path[0]!] : undefined;
        if (declared === undefined) throw new Problem(`${at}.publish.topic uses {{args.${part.path.join(".")}}}, which is not in ${at}.parameters.properties`);
        if (!(parameters.required as unknown[] | undefined)?.includes(part.path[0]))
            throw new Problem(`${at}.publish.topic uses {{args.${part.path.join(".")}}}: list "${part.path[0]}" in ${at}.parameters.required`);
    }
    const payloadSource = publish.payload === undefined ? "{{args}}" : publish.payload;
    if (typeof payloadSource !== "string") throw new Problem(`${at}.publish.payload must be a template string (default "{{args}}")`);
    const payload = {source: payloadSource, parts: parseParts(payloadSource, false, `${at}.publish.payload`)};
    if (publish.qos !== undefined && publish.qos !== 0 && publish.qos !== 1 && publish.qos !== 2) throw new Problem(`${at}.publish.qos must be 0, 1 or 2`);
    if (publish.retain !== undefined && typeof publish.retain !== "boolean") throw new Problem(`${at}.publish.retain must be true or false`);
    const max = raw.maxPerMinute ?? DEFAULT_ACTION_MAX_PER_MINUTE;
    if (typeof max !== "number" || !Number.isInteger(max) || max < 1 || max > 600) throw new Problem(`${at}.maxPerMinute must be a whole number from 1 to 600`);
    return {name: raw.name, description: typeof raw.description === "string" ? raw.description : "", parameters, topic, payload,
        qos: (publish.qos) ?? 1, retain: publish.retain === true, maxPerMinute: max};
}

/** The configured actions, and every problem (naming actions[i].field); names must be unique. */
export function compileActions(raw: unknown): {actions: Action[]; problems: string[]} {
    if (raw === undefined || raw === null) return {actions: [], problems: []};
    if (!Array.isArray(raw)) return {actions: [], problems: ["actions must be a list of {name, description, parameters, publish}"]};
    const actions: Action[] = [];
    const problems: string[] = [];
    for (const [i, entry] of (raw as unknown[]).entries()) {
        try {
            const action = compileOne(entry, `actions[${i}]`);
            if (actions.some((a) => a.name === action.name)) throw new Problem(`actions[${i}].name ${JSON.stringify(action.name)} is used twice`);
            actions.push(action);
        } catch (err) {
            if (!(err instanceof Problem)) throw err;
            problems.push(err.message);
        }
    }
    return {actions, problems};
}

/** Why a value cannot fill a topic level, or null. */
function topicValueProblem(value: unknown): string | null {
    if (value === undefined) return "is missing";
    if (typeof value === "object" && value !== null) return "is an object or array, not a topic level";
    const text = valueText(value);
    if (text === "") return "is empty";
    if (TOPIC_VALUE_FORBIDDEN.test(text)) return "contains \"/\", \"+\", \"#\" or NUL and cannot be a topic level";
    return null;
}

/** The topic and payload of a call, or the reason it cannot be published (names the placeholder, never a value). */
export function renderAction(action: Action, args: Record<string, unknown>, device: string): {topic: string; payload: string} | {problem: string} {
    const topic: string[] = [];
    for (const part of action.topic.parts) {
        if (typeof part === "string") topic.push(part);
        else if (part.kind === "device") topic.push(device);
        else {
            const value = valueAt(args, part.path);
            const problem = topicValueProblem(value);
            if (problem !== null) return {problem: `the topic's {{args.${part.path.join(".")}}} ${problem}`};
            topic.push(valueText(value));
        }
    }
    const built = topic.join("");
    const invalid = validatePublishTopic(built);
    if (invalid !== null) return {problem: `the topic built from the arguments ${invalid}`};
    const payload: string[] = [];
    for (const part of action.payload.parts) {
        if (typeof part === "string") payload.push(part);
        else if (part.kind === "device") payload.push(device);
        else {
            const value = part.path.length === 0 ? args : valueAt(args, part.path);
            if (value === undefined) return {problem: `the payload's {{args.${part.path.join(".")}}} is missing`};
            payload.push(part.path.length === 0 ? JSON.stringify(value) : valueText(value));
        }
    }
    return {topic: built, payload: payload.join("")};
}
