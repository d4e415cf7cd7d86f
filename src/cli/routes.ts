/**
 * `qwen-edge routes list` and `qwen-edge routes test NAME --topic T --payload P`: what the
 * configured routes are, and what one would do with one message, without loading the model or
 * connecting to the broker.
 */
import {loadConfig} from "../config.js";
import {ConfigError} from "../errors.js";
import type {ProtocolLimits} from "../mqtt/protocol.js";
import {replyPolicy} from "../mqtt/reply-policy.js";
import {topicLayout, validatePublishTopic} from "../mqtt/topics.js";
import {compileRoutes, type Route} from "../routes/route.js";
import {evaluateRoute, type RouteEnv} from "../routes/router.js";
import {placeholderName, wildcardSegments} from "../routes/template.js";
import {topicMatches} from "../mqtt/topics.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";

const NO_ROUTES = "no routes configured: add a `routes:` list to the YAML file given with --config (see docs/ROUTES.md)\n";

export async function routesCommand(args: string[]): Promise<number> {
    const {flags, positional, config: configArgs} = splitArgs(args, {values: ["topic", "payload"]});
    const [sub, name, ...extra] = positional;
    if (sub !== "list" && sub !== "test")
        throw new ConfigError("routes: use `qwen-edge routes list` or `qwen-edge routes test NAME --topic T --payload P`");
    if (extra.length > 0 || (sub === "list" && name !== undefined))
        throw new ConfigError(`routes ${sub}: unexpected argument "${extra[0] ?? name}"`);
    const config = loadConfig({args: configArgs});
    const routes = compileRoutes(config.routes).routes;
    if (sub === "list") {
        process.stdout.write(routes.length === 0 ? NO_ROUTES : listRoutes(routes));
        return EXIT.ok;
    }
    if (name === undefined) throw new ConfigError("routes test: name the route: `qwen-edge routes test NAME --topic T --payload P`");
    const route = routes.find((r) => r.name === name);
    if (!route) {
        throw new ConfigError(`routes test: no route named "${name}"` +
            (routes.length === 0 ? "; no routes are configured (did you pass --config?)" : `; configured: ${routes.map((r) => r.name).join(", ")}`));
    }
    const topic = flags.topic;
    if (typeof topic !== "string") throw new ConfigError("routes test: give the topic the message arrives on with --topic");
    const topicProblem = validatePublishTopic(topic);
    if (topicProblem !== null) throw new ConfigError(`routes test: --topic ${JSON.stringify(topic)} ${topicProblem}`);
    const payload = typeof flags.payload === "string" ? flags.payload : "";
    const limits: ProtocolLimits = {
        maxPayloadBytes: config.inference.maxPayloadBytes, maxTokensCap: config.inference.maxTokensCap,
        defaultMaxTokens: config.inference.defaultMaxTokens, maxTimeoutMs: config.inference.maxTimeoutMs,
        defaultTimeoutMs: config.inference.defaultTimeoutMs, maxStopSequences: 8, maxIdLength: 128
    };
    // The daemon's own reply policy, so a refused reply topic shows here as it would in the daemon.
    const policy = replyPolicy({base: config.mqtt.baseTopic, response: topicLayout(config.mqtt.baseTopic, config.device.id, config.mqtt.fleetGroup).response,
        discoveryPrefix: config.telemetry.discoveryPrefix, routes, allow: config.mqtt.replyTopics});
    const {text, routed} = explain(route, routes, topic, Buffer.from(payload, "utf8"), {device: config.device.id, limits, policy, systemPrompt: config.inference.systemPrompt});
    process.stdout.write(text);
    return routed ? EXIT.ok : EXIT.failure;
}

function listRoutes(routes: readonly Route[]): string {
    const rows = [["NAME", "TOPIC", "PAYLOAD", "FILTER", "MIN INTERVAL", "PER MINUTE", "REPLY TOPIC", "FORMAT", "QOS", "RETAIN"]];
    for (const r of routes) {
        rows.push([r.name, r.topic, r.payload, r.filter.length === 0 ? "-" : `${r.filter.length} condition${r.filter.length > 1 ? "s" : ""}`,
            r.minIntervalMs > 0 ? `${r.minIntervalMs} ms` : "-", r.maxPerMinute > 0 ? String(r.maxPerMinute) : "-", r.reply.topic.source, r.reply.format,
            String(r.reply.qos), r.reply.retain ? `yes (${r.reply.maxRetainedTopics} topics)` : "no"]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? "").length)));
    return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  ")).join("\n") + "\n";
}

function indent(text: string): string {
    return text.split("\n").map((l) => `    ${l}`).join("\n");
}

/** The report of `routes test`; `routed` is whether the daemon would queue a request. */
function explain(route: Route, all: readonly Route[], topic: string, payload: Buffer,
    env: RouteEnv & {systemPrompt: string}): {text: string; routed: boolean} {
    const out: string[] = [`route ${route.name}`];
    const line = (label: string, value: string): void => void out.push(`  ${`${label}:`.padEnd(14)} ${value}`);
    line("topic filter", route.topic);
    if (!topicMatches(route.topic, topic)) {
        line("message", `${topic} does NOT match the filter: the route never sees it`);
        return {text: out.join("\n") + "\n", routed: false};
    }
    const segments = wildcardSegments(route.topic, topic) ?? [];
    line("message", `${topic} (matches${segments.length > 0 ? `; ${segments.map((s, i) => `topic.${i + 1} = ${JSON.stringify(s)}`).join(", ")}` : ""})`);
    const earlier = all.slice(0, all.indexOf(route)).filter((r) => topicMatches(r.topic, topic));
    if (earlier.length > 0)
        line("note", `${earlier.map((r) => r.name).join(", ")} come${earlier.length === 1 ? "s" : ""} first for this topic; this route sees the message only if their filters refuse it`);
    line("payload", `${payload.length} bytes, read as ${route.payload}`);
    const evaluation = evaluateRoute(route, {topic, payload, receivedAt: Date.now()}, env);
    if (route.filter.length === 0) line("filter", "none");
    else if (evaluation.outcome === "invalid" && evaluation.stage === "payload") line("filter", "not reached: the payload cannot be read");
    else line("filter", evaluation.outcome === "filtered" ? `REFUSES the message: ${evaluation.reason} (dropped, counted as filtered)` : "passes");
    if (evaluation.outcome === "filtered") return {text: out.join("\n") + "\n", routed: false};
    if (evaluation.outcome === "invalid") {
        const what = route.onInvalid === "reply-error" && evaluation.reply !== null
            ? `an error reply {"status": "error", "error": {"code": "${evaluation.error.code}"}} goes to ${evaluation.reply.topic}`
            : "dropped (logged and counted as invalid)";
        line("invalid", `${evaluation.error.code}: ${evaluation.error.message}`);
        line("result", `NOT answered: ${what}`);
        return {text: out.join("\n") + "\n", routed: false};
    }
    const limits = [
        ...(route.minIntervalMs > 0 ? [`passes if no request from ${topic} was routed in the last ${route.minIntervalMs} ms (a later one within that time is dropped)`] : []),
        ...(route.maxPerMinute > 0 ? [`${route.minIntervalMs > 0 ? "and" : "passes"} if the route routed fewer than ${route.maxPerMinute} requests in the last minute (maxPerMinute)`] : [])
    ];
    line("rate limit", limits.length === 0 ? "none" : limits.join("; "));
    const r = evaluation.request;
    line("reply topic", `${r.reply.topic} (${route.reply.format}, QoS ${route.reply.qos}, ${route.reply.retain ? "retained" : "not retained"})`);
    if (route.reply.retain)
        line("retained cap", `answers on at most ${route.reply.maxRetainedTopics} distinct topics (reply.maxRetainedTopics); a message needing one more is dropped`);
    line("max tokens", `${r.maxTokens}${route.maxTokens === undefined ? " (inference.defaultMaxTokens)" : ""}`);
    line("thinking", r.thinking === false ? "off" : r.thinking === true ? "on" : `on, budget ${r.thinking.budget} tokens`);
    if (r.jsonSchema !== undefined) line("json schema", JSON.stringify(r.jsonSchema));
    if (r.conversation !== undefined) line("conversation", `${r.conversation} (the device keeps its turns, per reply topic; docs/PROMPT-REUSE.md)`);
    const used = [...route.prompt.parts, ...(route.system?.parts ?? []), ...(route.conversation?.parts ?? [])].filter((p) => typeof p !== "string");
    if (used.length > 0) line("placeholders", [...new Set(used.map((p) => `{{${placeholderName(p)}}}`))].join(", "));
    out.push(`  system prompt${r.system === undefined ? " (the device default, inference.systemPrompt)" : ""}:`);
    out.push(indent(r.system ?? env.systemPrompt));
    out.push("  prompt:", indent(r.prompt ?? ""));
    out.push(`  result: would be queued as ${r.source} and answered on ${r.reply.topic}` +
        (route.reply.format === "text" ? " with the answer text alone" : " with the whole JSON reply"));
    return {text: out.join("\n") + "\n", routed: true};
}
