/**
 * Where a reply may be published. Two checks, both pure:
 * - what a broker takes (replyTopicProblem): a well-formed topic (validatePublishTopic) whose
 *   PUBLISH fits the broker's announced Maximum Packet Size. A topic Mosquitto refuses makes it
 *   disconnect us, and the kept message is resent on every reconnect: the device goes dark.
 * - the reply policy (ReplyPolicy): never a topic the daemon or a qwen-edge device reads or owns
 *   (another device's response topic included; this device's own is where errors go),
 *   never Home Assistant's discovery or status topics, never a route's input (the answer would fire
 *   the route), and, when mqtt.replyTopics is set, only inside it. The same rules judge a request's
 *   reply topic at intake and a route's reply template at configuration time (replyPolicyRefusals).
 */
import {topicMatches, validatePublishTopic} from "./topics.js";

export interface ReplyRule {
    /** a topic filter; a reply topic it matches is refused */
    filter: string;
    /** what the filter is, for a client: "the status topic of a qwen-edge device" */
    what: string;
    /** what is named in configuration problems (`routes[1] (echo).topic`); default `what` */
    label?: string;
    /** why nothing may be published there */
    why: string;
    /** a route's input: a reply there would come back as a new message for it */
    loop?: boolean;
}

export interface ReplyPolicy {
    /** the device's default response topic: always allowed (a refused reply topic's error goes there) */
    response: string | null;
    /** a topic matching any of these is refused */
    rules: readonly ReplyRule[];
    /** `mqtt.replyTopics`: when not empty, a reply topic must match one of these filters */
    allow: readonly string[];
}

export interface ReplyPolicyInput {
    /** `mqtt.baseTopic` */
    base: string;
    /** the default response topic, `{base}/{device}/response` */
    response: string;
    /** Home Assistant's discovery prefix (`telemetry.discoveryPrefix`); forbidden even when discovery is off, HA may still listen */
    discoveryPrefix: string;
    /** every route (its input filter is forbidden) */
    routes: ReadonlyArray<{name: string; topic: string}>;
    /** `mqtt.replyTopics` (empty: any topic not forbidden) */
    allow: readonly string[];
}

/** Payload bytes kept free for the reply when a topic is checked against the Maximum Packet Size: an error reply fits in this. */
export const REPLY_RESERVE_BYTES = 1024;

/** A route's input filter, as a rule: a reply there would be taken as a new message for that route. */
export function routeInputRules(routes: ReadonlyArray<{name: string; topic: string; index?: number}>): ReplyRule[] {
    return routes.map((route, i) => ({
        filter: route.topic, // a $share/{group}/ prefix is ignored when matching, as the broker does
        what: `the input topic of route ${route.name}`,
        label: `routes[${route.index ?? i}] (${route.name}).topic`,
        why: "its answers would come back as new messages (a loop); give the reply a topic outside every route's filter",
        loop: true
    }));
}

/** The policy of one device. Fleet, request and cancel rules cover every device under `base`, not only this one. */
export function replyPolicy(input: ReplyPolicyInput): ReplyPolicy {
    const {base} = input;
    const device = (level: string, why: string): ReplyRule => ({filter: `${base}/+/${level}`, what: `the ${level} topic of a qwen-edge device`, why});
    const rules: ReplyRule[] = [
        {filter: `${base}/fleet/request`, what: "the fleet request topic", why: "a reply there would be taken as a new request by the fleet"},
        device("request", "a reply there would be taken as a new request"),
        device("cancel", "a reply there could cancel requests"),
        device("status", "dashboards, Home Assistant and `qwen-edge status` read the device's state there"),
        device("info", "clients read the device's model and limits there"),
        device("health", "monitoring reads the device's health there"),
        // This device's own response topic is exempt (ReplyPolicy.response); another device's is not: its
        // clients match replies by id, and one forged through us could answer a request of theirs.
        device("response", "its clients would take the reply for that device's answer"),
        {filter: `${input.discoveryPrefix}/status`, what: "Home Assistant's status topic",
            why: "Home Assistant and every integration take a message there as its birth or will"},
        {filter: `${input.discoveryPrefix}/#`, what: "Home Assistant's discovery prefix",
            why: "a message there can create, change or remove devices in Home Assistant"},
        ...routeInputRules(input.routes)
    ];
    return {response: input.response, rules, allow: [...input.allow]};
}

export interface ReplyRefusal {
    /** the rule refused, or null for the allow-list */
    rule: ReplyRule | null;
    /** a phrase completing "the reply topic …", in words a client understands */
    reason: string;
    /** for configuration problems: completes `routes[i].reply.topic "…" …` */
    configReason: string;
}

/**
 * Every rule that refuses a reply, for a topic and for a route's reply template alike.
 * `mayMatch(filter)`: could the reply land on a topic that `filter` matches? For a concrete topic
 * that is topicMatches; for a template, "some topic it can produce matches" (templateMayMatch),
 * which makes forbidden rules conservative and refuses on the allow-list only a template that
 * can match none of it. `isResponse`: the reply is the device's default response topic.
 */
export function replyPolicyRefusals(policy: ReplyPolicy, mayMatch: (filter: string) => boolean, isResponse = false): ReplyRefusal[] {
    if (isResponse) return [];
    const refusals: ReplyRefusal[] = [];
    for (const rule of policy.rules) {
        if (!mayMatch(rule.filter)) continue;
        refusals.push({rule, reason: `matches ${JSON.stringify(rule.filter)}, ${rule.what}: ${rule.why}`,
            configReason: `could match ${rule.label ?? rule.what} ${JSON.stringify(rule.filter)}: ${rule.why}`});
    }
    if (policy.allow.length > 0 && !policy.allow.some(mayMatch)) {
        const list = policy.allow.map((f) => JSON.stringify(f)).join(", ");
        refusals.push({rule: null, reason: `is outside the reply topics this device answers on (mqtt.replyTopics: ${list})`,
            configReason: `can match none of mqtt.replyTopics (${list}): every answer would be refused`});
    }
    return refusals;
}

/** Why the policy refuses a concrete reply topic (a phrase completing "the reply topic …"), or null. */
export function replyPolicyRefusal(topic: string, policy: ReplyPolicy): string | null {
    return replyPolicyRefusals(policy, (filter) => topicMatches(filter, topic), topic === policy.response)[0]?.reason ?? null;
}

export interface PublishShape {
    topic: string;
    payloadBytes: number;
    qos: 0 | 1 | 2;
    /** MQTT v5 Correlation Data echoed with the reply */
    correlationDataBytes?: number;
}

/** Bytes of a variable byte integer (MQTT's remaining length and property length). */
function varintBytes(n: number): number {
    return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/**
 * The whole MQTT v5 PUBLISH packet as we send a reply: fixed header, topic, packet id (QoS > 0),
 * properties (only Correlation Data), payload. The spec's Maximum Packet Size counts all of it.
 * Mosquitto 2.0.11 counts one byte less per remaining-length byte (measured), so this is the stricter bound.
 */
export function publishPacketBytes(p: PublishShape): number {
    const properties = p.correlationDataBytes !== undefined && p.correlationDataBytes > 0 ? 1 + 2 + p.correlationDataBytes : 0;
    const remaining = 2 + Buffer.byteLength(p.topic, "utf8") + (p.qos > 0 ? 2 : 0) + varintBytes(properties) + properties + p.payloadBytes;
    return 1 + varintBytes(remaining) + remaining;
}

export interface BrokerLimits {
    /** the CONNACK's Maximum Packet Size property; undefined when the broker announced none */
    maximumPacketSize?: number | undefined;
    /** Correlation Data that will be echoed with every reply */
    correlationDataBytes?: number;
    /** payload bytes the topic must leave room for (default REPLY_RESERVE_BYTES) */
    reserveBytes?: number;
}

/**
 * Why a broker would not take a reply on `topic`: its syntax (validatePublishTopic: noncharacters,
 * controls, NUL, lone surrogates, wildcards, a leading "$", more than 65,535 bytes), or a packet
 * that with `reserveBytes` of payload passes the broker's Maximum Packet Size. Null when it would.
 */
export function brokerTopicProblem(topic: string, broker: BrokerLimits = {}): string | null {
    const syntax = validatePublishTopic(topic);
    if (syntax !== null) return syntax;
    const max = broker.maximumPacketSize;
    if (max === undefined || !(max > 0)) return null;
    const reserve = broker.reserveBytes ?? REPLY_RESERVE_BYTES;
    const bytes = publishPacketBytes({topic, payloadBytes: reserve, qos: 1, correlationDataBytes: broker.correlationDataBytes ?? 0});
    return bytes > max
        ? `is too long for this broker: with a ${reserve}-byte reply the packet would be ${bytes} bytes, and the broker's Maximum Packet Size is ${max}`
        : null;
}

/** Both checks: null when a reply may be published on `topic`, else why not (completing "the reply topic …"). */
export function replyTopicProblem(topic: string, policy: ReplyPolicy | null, broker: BrokerLimits = {}): string | null {
    return brokerTopicProblem(topic, broker) ?? (policy === null ? null : replyPolicyRefusal(topic, policy));
}
