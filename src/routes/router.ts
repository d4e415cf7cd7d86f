/**
 * The router: which route filters to subscribe, and for a message on one of them, the request the
 * daemon journals and queues like a native one (same field validation and limits, `source`
 * "route:NAME", a reply target carrying the route's topic, QoS, retain and format). Also the
 * rate limits and retained-topic cap (limits.ts) and the per-route counters for telemetry. No I/O
 * besides logging. Intake is total: no payload can make it throw.
 */
import {randomBytes} from "node:crypto";
import {describeError, RequestError} from "../errors.js";
import type {EventBus} from "../events.js";
import type {Logger} from "../log.js";
import {parseJsonPayload, payloadText, requestDeadline} from "../mqtt/payload.js";
import type {InferenceRequest, OkReply, ParseResult, ProtocolLimits, ReplyTarget} from "../mqtt/protocol.js";
import {replyTopicProblem, type ReplyPolicy} from "../mqtt/reply-policy.js";
import {readRequestFields} from "../mqtt/request-fields.js";
import {topicMatches} from "../mqtt/topics.js";
import {RouteLimiter} from "./limits.js";
import {filterRefusal, type Route} from "./route.js";
import {renderText, renderTopic, wildcardSegments, type TemplateValues} from "./template.js";

export interface RoutedMessage {
    /** the concrete topic it was published on */
    topic: string;
    payload: Buffer;
    /** epoch ms; also the rate limit's clock */
    receivedAt: number;
    /** MQTT v5 Message Expiry Interval, as forwarded */
    messageExpirySeconds?: number;
    /** the broker's retain flag: set only on old values sent because we subscribed */
    retain?: boolean;
}

export type RouteEvaluation =
    | {outcome: "filtered"; reason: string}
    /**
     * "payload": unreadable before the filter (size, encoding, JSON); "render": the filter passed
     * but the request cannot be built. `reply` is null when the reply topic cannot be built either.
     */
    | {outcome: "invalid"; stage: "payload" | "render" | "loop"; error: RequestError; reply: ReplyTarget | null}
    | {outcome: "ok"; request: InferenceRequest; values: TemplateValues};

export interface RouteCounters {
    /** messages on the route's topic that it looked at */
    received: number;
    /** refused by the route's filter */
    filtered: number;
    /** dropped because the same source topic had a request less than minIntervalMs ago */
    rateLimited: number;
    /** dropped because the route as a whole had maxPerMinute requests in the last minute */
    routeLimited: number;
    /** dropped because a retained answer would open a topic beyond reply.maxRetainedTopics */
    retainedCapped: number;
    /** payloads the route could not read (encoding, JSON, absent field, bad or refused reply topic, limits) */
    invalid: number;
    /** the reply topic built from the message would be a route's input (the answer would come back): refused */
    loopRefused: number;
    /** retained messages the broker sent on subscribing: old values, not answered */
    retainedSkipped: number;
    /** journaled and queued */
    accepted: number;
    /** answer published */
    answered: number;
    /** accepted or routed, then no answer: queue full, timeout, cancelled, generation error, empty text */
    failed: number;
}


/** What a route needs to know beyond the message. */
export interface RouteEnv {
    device: string;
    limits: ProtocolLimits;
    /** the reply policy a rendered reply topic must pass (as a request's must); absent: only the broker's rules */
    policy?: ReplyPolicy | null;
    /** the broker's Maximum Packet Size from its CONNACK, when it announced one */
    maximumPacketSize?: number | undefined;
}

function replyTarget(route: Route, topic: string): ReplyTarget {
    return {topic, via: "route", route: route.name, format: route.reply.format, retain: route.reply.retain, qos: route.reply.qos};
}

/**
 * One message through one route whose topic it matched: decode, filter, render, validate. Pure
 * but for the id's randomness; the rate limit is the Router's.
 */
export function evaluateRoute(route: Route, msg: RoutedMessage, env: RouteEnv): RouteEvaluation {
    const values: TemplateValues = {
        payload: "", json: undefined, topic: msg.topic, segments: wildcardSegments(route.topic, msg.topic) ?? [],
        time: new Date(msg.receivedAt).toISOString(), device: env.device
    };
    const replyProblem = (topic: string): string | null =>
        replyTopicProblem(topic, env.policy ?? null, {maximumPacketSize: env.maximumPacketSize});
    const invalid = (error: RequestError, stage: "payload" | "render" = "payload"): RouteEvaluation => {
        let reply: ReplyTarget | null = null;
        try {
            const topic = renderTopic(route.reply.topic, values, "reply.topic");
            // An error reply goes only where an answer could: never to a topic the policy or broker refuses.
            reply = replyProblem(topic) === null ? replyTarget(route, topic) : null;
        } catch {
            reply = null;
        }
        return {outcome: "invalid", stage, error, reply};
    };
    const read = payloadText(msg.payload, env.limits);
    if (!read.ok) return invalid(read.error);
    values.payload = read.text;
    if (route.payload === "json") {
        const parsed = parseJsonPayload(values.payload, env.limits, `route ${route.name}: the JSON payload`);
        if (!parsed.ok) return invalid(parsed.tooDeep ?? new RequestError("invalid_json", `route ${route.name} reads JSON payloads, and this one is not valid JSON`));
        values.json = parsed.value;
    }
    const refusal = filterRefusal(route, values.payload, values.json);
    if (refusal !== null) return {outcome: "filtered", reason: refusal};
    try {
        const topic = renderTopic(route.reply.topic, values, "reply.topic");
        const topicProblem = replyProblem(topic);
        if (topicProblem !== null) {
            const loop = env.policy?.rules.some((rule) => rule.loop === true && topicMatches(rule.filter, topic)) === true;
            return {outcome: "invalid", stage: loop ? "loop" : "render", reply: null, error: new RequestError("invalid_request",
                `reply.topic: the topic built from the message ${topicProblem}`, {field: "reply.topic"})};
        }
        const body: Record<string, unknown> = {prompt: renderText(route.prompt, values, "prompt"), maxTokens: route.maxTokens,
            timeoutMs: route.timeoutMs, jsonSchema: route.jsonSchema, thinking: route.thinking};
        if (route.system !== null) body.system = renderText(route.system, values, "system");
        if (route.conversation !== null) body.conversation = renderText(route.conversation, values, "conversation");
        if (route.actions !== undefined) body.actions = route.actions;
        // The same field rules and caps as a native JSON request.
        const fields = readRequestFields(body, env.limits);
        const deadline = requestDeadline(msg.receivedAt, fields.timeoutMs, msg.messageExpirySeconds);
        const id = `${route.name}-${msg.receivedAt.toString(36)}-${randomBytes(6).toString("hex")}`;
        const request: InferenceRequest = {id, ...fields, deadline, reply: replyTarget(route, topic), receivedAt: msg.receivedAt,
            source: `route:${route.name}`};
        return {outcome: "ok", request, values};
    } catch (err) {
        if (err instanceof RequestError) return invalid(err, "render");
        throw err;
    }
}

/** The text a "text" route publishes, or null when there is no answer to publish. */
export function textAnswer(reply: OkReply): string | null {
    // A partial answer cut off by a timeout or cancel is not an answer; one cut at maxTokens is.
    if (reply.finishReason === "timeout" || reply.finishReason === "cancelled") return null;
    // An empty retained publish would delete the retained value a dashboard shows.
    return reply.text.trim() === "" ? null : reply.text;
}

export interface RouterDeps {
    log: Logger;
    routes: readonly Route[];
    device: string;
    limits: ProtocolLimits;
    /** the reply policy every rendered reply topic must pass (replyPolicy()); absent: only the broker's rules */
    replyPolicy?: ReplyPolicy | null;
    /** the broker's Maximum Packet Size from the current connection's CONNACK, if it announced one */
    maximumPacketSize?: () => number | undefined;
    /** where a route's counters are announced when they change (telemetry listens) */
    events?: EventBus;
}

export type RouteIntake = {source: `route:${string}`; parsed: ParseResult} | "dropped" | null;

export class Router {
    private readonly deps: RouterDeps;
    private readonly counters = new Map<string, RouteCounters>();
    private readonly limiters = new Map<string, RouteLimiter>();
    /** routes whose counters changed since the last announcement */
    private readonly changed = new Set<string>();

    public constructor(deps: RouterDeps) {
        this.deps = deps;
    }

    /** One QoS 1 subscription per distinct route filter. */
    public subscriptions(): Array<{filter: string; qos: 1}> {
        return [...new Set(this.deps.routes.map((r) => r.topic))].map((filter) => ({filter, qos: 1}));
    }

    /**
     * A message from the broker. null: no route's topic matches (not a route message). "dropped":
     * a route took it and nothing more is to be done (filtered, rate limited, retained, capped, or
     * invalid with onInvalid "drop"). Otherwise what to journal and queue, or the error to answer,
     * exactly as for a native request. Routes are tried in order; the first whose topic matches and
     * whose filter passes takes the message. Never throws: anything unexpected is logged, counted
     * as invalid and dropped, so the message is still acknowledged.
     */
    public intake(msg: RoutedMessage): RouteIntake {
        let route: Route | undefined;
        try {
            return this.route(msg, (r) => { route = r; });
        } catch (err) {
            const name = route?.name ?? null;
            if (name !== null) this.count(name).invalid++;
            this.deps.log.error("route message dropped: intake failed", {route: name, topic: msg.topic, bytes: msg.payload.length,
                error: describeError(err).message});
            return name === null ? null : "dropped";
        } finally {
            this.announce();
        }
    }

    /** What became of a routed request (the daemon reports it); ignored for native requests. */
    public note(reply: ReplyTarget, event: "accepted" | "answered" | "failed", info: {id?: string | null; code?: string} = {}): void {
        if (reply.route === undefined) return;
        this.count(reply.route)[event]++;
        if (event === "failed") this.deps.log.warn("route request failed", {route: reply.route, id: info.id ?? null, code: info.code ?? null});
        this.announce();
    }

    /** Counters per configured route (all zero until its first message); for the health telemetry. */
    public stats(): Record<string, RouteCounters> {
        const out: Record<string, RouteCounters> = {};
        for (const route of this.deps.routes) out[route.name] = {...(this.counters.get(route.name) ?? zeroCounters())};
        return out;
    }

    private route(msg: RoutedMessage, looking: (route: Route) => void): RouteIntake {
        const candidates = this.deps.routes.filter((r) => topicMatches(r.topic, msg.topic));
        const first = candidates[0];
        if (first === undefined) return null;
        const {log} = this.deps;
        if (msg.retain === true) {
            this.count(first.name).retainedSkipped++;
            log.debug("route message skipped: retained (an old value sent on subscribe)", {route: first.name, topic: msg.topic, bytes: msg.payload.length});
            return "dropped";
        }
        const env: RouteEnv = {device: this.deps.device, limits: this.deps.limits, policy: this.deps.replyPolicy ?? null,
            maximumPacketSize: this.deps.maximumPacketSize?.()};
        for (const route of candidates) {
            looking(route);
            const counters = this.count(route.name);
            counters.received++;
            const evaluation = evaluateRoute(route, msg, env);
            if (evaluation.outcome === "filtered") {
                counters.filtered++;
                log.debug("route message filtered", {route: route.name, topic: msg.topic, bytes: msg.payload.length, reason: evaluation.reason});
                continue;
            }
            if (evaluation.outcome === "invalid") {
                if (evaluation.stage === "loop") counters.loopRefused++;
                else counters.invalid++;
                const answer = route.onInvalid === "reply-error" && evaluation.reply !== null;
                log.warn("route message invalid", {route: route.name, topic: msg.topic, bytes: msg.payload.length, code: evaluation.error.code,
                    problem: evaluation.error.message, action: answer ? "error reply" : "dropped"});
                if (!answer || evaluation.reply === null) return "dropped";
                return {source: `route:${route.name}`, parsed: {ok: false, error: evaluation.error, id: null, reply: evaluation.reply}};
            }
            const refused = this.limiter(route).admit(msg.topic, evaluation.request.reply.topic, msg.receivedAt);
            if (refused !== null) {
                const field = {source: "rateLimited", route: "routeLimited", retained: "retainedCapped"} as const;
                counters[field[refused.limit]]++;
                // A flood is what these limits are for: one line each at info, the retained cap (a setting to raise) at warn.
                log[refused.limit === "retained" ? "warn" : "info"](`route message dropped: ${refused.limit === "retained" ? "retained topic cap" : "rate limited"}`,
                    {route: route.name, topic: msg.topic, limit: refused.limit, reason: refused.reason});
                return "dropped";
            }
            return {source: `route:${route.name}`, parsed: {ok: true, request: evaluation.request}};
        }
        return "dropped";
    }

    private limiter(route: Route): RouteLimiter {
        let limiter = this.limiters.get(route.name);
        if (limiter === undefined) {
            limiter = new RouteLimiter({minIntervalMs: route.minIntervalMs, maxPerMinute: route.maxPerMinute, retain: route.reply.retain,
                maxRetainedTopics: route.reply.maxRetainedTopics});
            this.limiters.set(route.name, limiter);
        }
        return limiter;
    }

    private announce(): void {
        for (const route of this.changed) this.deps.events?.emit("routeOutcome", {route, counters: {...(this.counters.get(route) ?? zeroCounters())}});
        this.changed.clear();
    }

    private count(name: string): RouteCounters {
        this.changed.add(name);
        let c = this.counters.get(name);
        if (c === undefined) {
            c = zeroCounters();
            this.counters.set(name, c);
        }
        return c;
    }
}

export function zeroCounters(): RouteCounters {
    return {received: 0, filtered: 0, rateLimited: 0, routeLimited: 0, retainedCapped: 0, invalid: 0, loopRefused: 0, retainedSkipped: 0,
        accepted: 0, answered: 0, failed: 0};
}
