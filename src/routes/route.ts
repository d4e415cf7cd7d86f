/**
 * Prompt routes as configured (`routes:` in the YAML file) and as compiled: validated, templates
 * parsed, filters compiled, loops refused. Every problem names `routes[i].field`. Pure: no I/O.
 */
import type {FilterValue as Scalar} from "../config-schema.js";
import {jsonSchemaLimitProblem} from "../mqtt/bounded-json.js";
import {replyPolicy, replyPolicyRefusals, routeInputRules, type ReplyPolicy} from "../mqtt/reply-policy.js";
import {isPlainObject, type ThinkingSetting} from "../mqtt/request-fields.js";
import {topicMatches, validatePublishTopic, validateTopicFilter} from "../mqtt/topics.js";
import {didYouMean} from "../util/text.js";
import {parsePath, parseTemplate, templateMayMatch, valueAt, type Template, type TemplateScope} from "./template.js";

export interface Condition {
    path: string[] | null;
    equals?: Scalar;
    in?: Scalar[];
    matches?: RegExp;
    above?: number;
    below?: number;
}

export interface Route {
    name: string;
    topic: string;
    wildcards: Array<"+" | "#">;
    payload: "text" | "json";
    onInvalid: "drop" | "reply-error";
    filter: Condition[];
    minIntervalMs: number;
    maxPerMinute: number;
    prompt: Template;
    system: Template | null;
    /** the conversation a message continues (rendered per message), or none */
    conversation: Template | null;
    maxTokens?: number;
    timeoutMs?: number;
    jsonSchema?: Record<string, unknown>;
    thinking?: ThinkingSetting;
    /** device actions this route grants its requests (docs/ACTIONS.md); checked against `actions:` when the config loads */
    actions?: string[];
    reply: {topic: Template; format: "text" | "json"; retain: boolean; qos: 0 | 1 | 2; maxRetainedTopics: number};
}

const ROUTE_KEYS = ["name", "topic", "payload", "onInvalid", "filter", "minIntervalMs", "maxPerMinute", "prompt", "system", "conversation", "maxTokens",
    "timeoutMs", "jsonSchema", "thinking", "actions", "reply"];
const REPLY_KEYS = ["topic", "format", "retain", "qos", "maxRetainedTopics"];
/** A route as a whole: enough for a few dozen sensors, too few to bury the queue and the native requests. */
export const DEFAULT_MAX_PER_MINUTE = 30;
/** Retained answers outlive the daemon on the broker: a route may not create them without end. */
export const DEFAULT_MAX_RETAINED_TOPICS = 32;
const MAX_RETAINED_TOPICS_CAP = 10_000;
const FILTER_KEYS = ["path", "equals", "in", "matches", "above", "below"];
const NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_REGEX_LENGTH = 500;

/** Thrown inside compileRoute; collected into one message per route. */
class Problem extends Error {}

function describe(value: unknown): string {
    if (value === undefined) return "nothing";
    if (value === null) return "null";
    if (typeof value === "string") return value.length <= 40 ? JSON.stringify(value) : `a string of ${value.length} characters`;
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    return Array.isArray(value) ? "a list" : "a mapping";
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], at: string): void {
    for (const key of Object.keys(obj)) {
        if (allowed.includes(key)) continue;
        throw new Problem(`${at}: unknown key ${JSON.stringify(key.slice(0, 64))}${didYouMean(key, allowed, 2)}; allowed: ${allowed.join(", ")}`);
    }
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], fallback: T, at: string): T {
    if (value === undefined) return fallback;
    if (typeof value !== "string" || !(allowed as readonly string[]).includes(value))
        throw new Problem(`${at} must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")} (got ${describe(value)})`);
    return value as T;
}

function integer(value: unknown, min: number, at: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max)
        throw new Problem(`${at} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`} (got ${describe(value)})`);
    return value;
}

function template(value: unknown, scope: TemplateScope, at: string, required: boolean): Template | null {
    if (value === undefined && !required) return null;
    if (typeof value !== "string" || value.trim() === "")
        throw new Problem(`${at} must be a non-empty text template (got ${describe(value)})`);
    const parsed = parseTemplate(value, scope);
    if (typeof parsed === "string") throw new Problem(`${at} ${parsed}`);
    return parsed;
}

function isScalar(value: unknown): value is Scalar {
    return value === null || ["string", "number", "boolean"].includes(typeof value);
}

function compileCondition(raw: unknown, json: boolean, at: string): Condition {
    if (!isPlainObject(raw)) throw new Problem(`${at} must be a mapping such as {path: "action", equals: "double"} (got ${describe(raw)})`);
    checkKeys(raw, FILTER_KEYS, at);
    if (!FILTER_KEYS.slice(1).some((k) => raw[k] !== undefined))
        throw new Problem(`${at} needs at least one of equals, in, matches, above, below`);
    const condition: Condition = {path: null};
    if (raw.path !== undefined) {
        if (!json) throw new Problem(`${at}.path needs \`payload: json\` on the route (a text payload has no fields)`);
        const path = typeof raw.path === "string" ? parsePath(raw.path) : null;
        if (path === null) throw new Problem(`${at}.path must be dot-separated names or indexes, e.g. "action" or "sensors.0.value" (got ${describe(raw.path)})`);
        condition.path = path;
    }
    if (raw.equals !== undefined) {
        if (!isScalar(raw.equals)) throw new Problem(`${at}.equals must be a string, number, boolean or null (got ${describe(raw.equals)})`);
        condition.equals = raw.equals;
    }
    if (raw.in !== undefined) {
        if (!Array.isArray(raw.in) || raw.in.length === 0 || !raw.in.every(isScalar))
            throw new Problem(`${at}.in must be a non-empty list of strings, numbers, booleans or null (got ${describe(raw.in)})`);
        condition.in = raw.in;
    }
    if (raw.matches !== undefined) {
        if (typeof raw.matches !== "string" || raw.matches === "" || raw.matches.length > MAX_REGEX_LENGTH)
            throw new Problem(`${at}.matches must be a regular expression of 1 to ${MAX_REGEX_LENGTH} characters (got ${describe(raw.matches)})`);
        try {
            condition.matches = new RegExp(raw.matches, "u");
        } catch (err) {
            throw new Problem(`${at}.matches is not a valid regular expression: ${(err as Error).message}`);
        }
    }
    for (const bound of ["above", "below"] as const) {
        const value = raw[bound];
        if (value === undefined) continue;
        if (typeof value !== "number" || !Number.isFinite(value)) throw new Problem(`${at}.${bound} must be a number (got ${describe(value)})`);
        condition[bound] = value;
    }
    return condition;
}

function compileThinking(value: unknown, at: string): ThinkingSetting | undefined {
    if (value === undefined || typeof value === "boolean") return value;
    if (isPlainObject(value) && Object.keys(value).length === 1 && Number.isSafeInteger(value.budget) && (value.budget as number) >= 0)
        return {budget: value.budget as number};
    throw new Problem(`${at} must be true, false or {budget: N} (got ${describe(value)})`);
}

/** Compiles one route; throws Problem naming `routes[i].field`. */
function compileRoute(raw: unknown, at: string): Route {
    if (!isPlainObject(raw)) throw new Problem(`${at} must be a mapping with name, topic, prompt and reply (got ${describe(raw)})`);
    checkKeys(raw, ROUTE_KEYS, at);
    if (typeof raw.name !== "string" || !NAME_PATTERN.test(raw.name))
        throw new Problem(`${at}.name must be 1 to 64 characters of A-Z, a-z, 0-9, _ and - (got ${describe(raw.name)})`);
    if (typeof raw.topic !== "string") throw new Problem(`${at}.topic must be an MQTT topic filter (got ${describe(raw.topic)})`);
    const filterProblem = validateTopicFilter(raw.topic);
    if (filterProblem !== null) throw new Problem(`${at}.topic ${JSON.stringify(raw.topic)} ${filterProblem}`);
    const effective = raw.topic.replace(/^\$share\/[^/]+\//, "");
    const wildcards = effective.split("/").filter((l): l is "+" | "#" => l === "+" || l === "#");
    const payload = oneOf(raw.payload, ["text", "json"] as const, "text", `${at}.payload`);
    const json = payload === "json";
    const textScope: TemplateScope = {json, wildcards, forTopic: false};

    if (!isPlainObject(raw.reply)) throw new Problem(`${at}.reply must be a mapping with at least topic (got ${describe(raw.reply)})`);
    checkKeys(raw.reply, REPLY_KEYS, `${at}.reply`);
    const replyTopic = template(raw.reply.topic, {json, wildcards, forTopic: true}, `${at}.reply.topic`, true) as Template;
    // Literal parts must already make a valid topic; "x" stands in for every value.
    const skeleton = replyTopic.parts.map((p) => (typeof p === "string" ? p : "x")).join("");
    const skeletonProblem = validatePublishTopic(skeleton);
    if (skeletonProblem !== null) throw new Problem(`${at}.reply.topic ${JSON.stringify(raw.reply.topic)} ${skeletonProblem}`);
    const format = oneOf(raw.reply.format, ["text", "json"] as const, "text", `${at}.reply.format`);
    if (raw.reply.retain !== undefined && typeof raw.reply.retain !== "boolean")
        throw new Problem(`${at}.reply.retain must be true or false (got ${describe(raw.reply.retain)})`);
    const qos = raw.reply.qos ?? 1;
    if (qos !== 0 && qos !== 1 && qos !== 2) throw new Problem(`${at}.reply.qos must be 0, 1 or 2 (got ${describe(qos)})`);

    const onInvalid = oneOf(raw.onInvalid, ["drop", "reply-error"] as const, "drop", `${at}.onInvalid`);
    if (onInvalid === "reply-error" && format === "text")
        throw new Problem(`${at}.onInvalid "reply-error" needs reply.format "json": a text reply carries only answers, so errors would look like one`);
    const rawFilter = raw.filter === undefined ? [] : Array.isArray(raw.filter) ? raw.filter as unknown[] : [raw.filter];
    if (Array.isArray(raw.filter) && raw.filter.length === 0) throw new Problem(`${at}.filter must not be an empty list (leave it out instead)`);
    const filter = rawFilter.map((c, i) => compileCondition(c, json, Array.isArray(raw.filter) ? `${at}.filter[${i}]` : `${at}.filter`));
    if (raw.jsonSchema !== undefined && !isPlainObject(raw.jsonSchema))
        throw new Problem(`${at}.jsonSchema must be a JSON Schema mapping (got ${describe(raw.jsonSchema)})`);
    // The same bounds as a request's jsonSchema: every routed request is checked against them anyway.
    const schemaProblem = raw.jsonSchema === undefined ? null : jsonSchemaLimitProblem(raw.jsonSchema);
    if (schemaProblem !== null) throw new Problem(`${at}.jsonSchema ${schemaProblem}`);
    const retain = raw.reply.retain === true;
    const maxRetainedTopics = integer(raw.reply.maxRetainedTopics, 1, `${at}.reply.maxRetainedTopics`, MAX_RETAINED_TOPICS_CAP);
    if (maxRetainedTopics !== undefined && !retain)
        throw new Problem(`${at}.reply.maxRetainedTopics applies only to retained replies: set reply.retain: true, or leave it out`);

    const route: Route = {
        name: raw.name, topic: raw.topic, wildcards, payload, onInvalid, filter,
        minIntervalMs: integer(raw.minIntervalMs, 0, `${at}.minIntervalMs`) ?? 0,
        maxPerMinute: integer(raw.maxPerMinute, 0, `${at}.maxPerMinute`) ?? DEFAULT_MAX_PER_MINUTE,
        prompt: template(raw.prompt, textScope, `${at}.prompt`, true) as Template,
        system: template(raw.system, textScope, `${at}.system`, false),
        conversation: template(raw.conversation, textScope, `${at}.conversation`, false),
        reply: {topic: replyTopic, format, retain, qos, maxRetainedTopics: maxRetainedTopics ?? DEFAULT_MAX_RETAINED_TOPICS}
    };
    const maxTokens = integer(raw.maxTokens, 1, `${at}.maxTokens`);
    const timeoutMs = integer(raw.timeoutMs, 1, `${at}.timeoutMs`);
    const thinking = compileThinking(raw.thinking, `${at}.thinking`);
    if (maxTokens !== undefined) route.maxTokens = maxTokens;
    if (timeoutMs !== undefined) route.timeoutMs = timeoutMs;
    if (thinking !== undefined) route.thinking = thinking;
    if (raw.jsonSchema !== undefined) route.jsonSchema = raw.jsonSchema;
    if (raw.actions !== undefined) {
        if (!Array.isArray(raw.actions) || raw.actions.length === 0 || raw.actions.length > 16
            || !raw.actions.every((a) => typeof a === "string" && /^[A-Za-z0-9_-]{1,64}$/.test(a)))
            throw new Problem(`${at}.actions must be a list of 1 to 16 action names (from the configuration's actions:)`);
        if (raw.jsonSchema !== undefined) throw new Problem(`${at}.actions cannot be combined with jsonSchema: a call and a constrained answer are two different grammars`);
        route.actions = [...new Set(raw.actions as string[])];
    }
    return route;
}

const label = (i: number, r: Route): string => `routes[${i}] (${r.name})`;

/** Every policy refusal of a route's reply template, as configuration problems (one line each). */
function replyTemplateProblems(i: number, route: Route, policy: ReplyPolicy): string[] {
    const literal = route.reply.topic.parts.every((p) => typeof p === "string") ? route.reply.topic.source : null;
    return replyPolicyRefusals(policy, (filter) => templateMayMatch(route.reply.topic, filter), literal !== null && literal === policy.response)
        .map((r) => `${label(i, route)}.reply.topic ${JSON.stringify(route.reply.topic.source)} ${r.configReason}`);
}

/**
 * Compiles the `routes` list: the routes, and every problem found (one line each, naming
 * `routes[i].field`). Loops between routes are problems: no reply topic may match any route's
 * filter (the reply policy's route rules, as applied to requests at intake).
 */
export function compileRoutes(value: unknown): {routes: Route[]; problems: string[]} {
    if (!Array.isArray(value)) return {routes: [], problems: [`routes must be a list of routes (got ${describe(value)})`]};
    const routes: Array<{i: number; route: Route}> = [];
    const problems: string[] = [];
    value.forEach((raw: unknown, i) => {
        try {
            routes.push({i, route: compileRoute(raw, `routes[${i}]`)});
        } catch (err) {
            if (!(err instanceof Problem)) throw err;
            problems.push(err.message);
        }
    });
    const seen = new Map<string, number>();
    for (const {i, route} of routes) {
        const first = seen.get(route.name);
        if (first !== undefined) problems.push(`routes[${i}].name ${JSON.stringify(route.name)} is already the name of routes[${first}]`);
        else seen.set(route.name, i);
    }
    // Rules labelled by each route's own index in the list, so both sides of a loop are named.
    const loops: ReplyPolicy = {response: null, allow: [], rules: routeInputRules(routes.map(({i, route}) => ({name: route.name, topic: route.topic, index: i})))};
    for (const {i, route} of routes) problems.push(...replyTemplateProblems(i, route, loops));
    return {routes: routes.map((r) => r.route), problems};
}

export interface DeviceTopics {
    /** `mqtt.baseTopic` */
    base: string;
    /** the default response topic (a route may answer there) */
    response: string;
    request: string;
    cancel: string;
    status: string;
    info: string;
    health: string;
    /** `$share/{group}/{base}/fleet/request`, or null */
    fleetRequest: string | null;
}

/** What the reply policy needs beyond the topic layout. */
export interface ReplySettings {
    /** `telemetry.discoveryPrefix` */
    discoveryPrefix: string;
    /** `mqtt.replyTopics` */
    allow: readonly string[];
}

/**
 * Problems that need this device's configuration: a route that would take the daemon's own request
 * or cancel topics, a reply template the reply policy refuses (as it refuses a request's reply
 * topic: replyPolicy), and route limits above the configured caps.
 */
export function deviceRouteProblems(routes: readonly Route[], own: DeviceTopics,
    caps: {maxTokensCap: number; maxTimeoutMs: number}, reply: ReplySettings = {discoveryPrefix: "homeassistant", allow: []}): string[] {
    const problems: string[] = [];
    const fleet = own.fleetRequest?.replace(/^\$share\/[^/]+\//, "") ?? null;
    const intake: Array<[string, string]> = [["request", own.request], ["cancel", own.cancel], ...(fleet ? [["fleet request", fleet] as [string, string]] : [])];
    // Route loops are compileRoutes' problems already; here the device's rules and the allow-list.
    const policy = replyPolicy({base: own.base, response: own.response, discoveryPrefix: reply.discoveryPrefix, routes: [], allow: reply.allow});
    routes.forEach((route, i) => {
        for (const [what, topic] of intake) {
            if (topicMatches(route.topic, topic))
                problems.push(`${label(i, route)}.topic ${JSON.stringify(route.topic)} matches the daemon's own ${what} topic ${JSON.stringify(topic)}; narrow the filter`);
        }
        problems.push(...replyTemplateProblems(i, route, policy));
        if (route.maxTokens !== undefined && route.maxTokens > caps.maxTokensCap)
            problems.push(`routes[${i}].maxTokens (${route.maxTokens}) must not exceed inference.maxTokensCap (${caps.maxTokensCap})`);
        if (route.timeoutMs !== undefined && route.timeoutMs > caps.maxTimeoutMs)
            problems.push(`routes[${i}].timeoutMs (${route.timeoutMs}) must not exceed inference.maxTimeoutMs (${caps.maxTimeoutMs})`);
    });
    return problems;
}

/** Why the message fails `route`'s filter, or null when it passes. Reasons never quote the payload. */
export function filterRefusal(route: Route, text: string, json: unknown): string | null {
    for (const c of route.filter) {
        const where = c.path === null ? "the payload" : `json.${c.path.join(".")}`;
        const value = c.path !== null ? valueAt(json, c.path) : route.payload === "json" ? json : text.trim();
        if (value === undefined) return `${where} is absent`;
        // A text payload is compared as text: `equals: 1` and "1" are the same reading.
        const same = (expected: Scalar): boolean => (route.payload === "text" && c.path === null ? String(expected) === value : expected === value);
        if (c.equals !== undefined && !same(c.equals)) return `${where} does not equal ${JSON.stringify(c.equals)}`;
        if (c.in !== undefined && !c.in.some(same)) return `${where} is not one of the ${c.in.length} listed values`;
        if (c.matches !== undefined && !((typeof value === "string" || typeof value === "number") && c.matches.test(String(value))))
            return `${where} does not match /${c.matches.source}/`;
        if (c.above !== undefined || c.below !== undefined) {
            const n = typeof value === "number" ? value : typeof value === "string" && value.trim() !== "" ? Number(value) : NaN;
            if (!Number.isFinite(n)) return `${where} is not a number`;
            if (c.above !== undefined && !(n > c.above)) return `${where} is not above ${c.above}`;
            if (c.below !== undefined && !(n < c.below)) return `${where} is not below ${c.below}`;
        }
    }
    return null;
}

/** `QWEN_EDGE_ROUTES` / `--routes`: the list as JSON (convict hands over the raw string). */
export function routesFromJson(text: string): unknown {
    try {
        return JSON.parse(text) as unknown;
    } catch {
        throw new Error("routes: as an environment variable or argument, routes must be a JSON list (this is not valid JSON); they are easier to write in the YAML file");
    }
}
