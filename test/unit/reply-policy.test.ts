import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {loadConfig} from "../../src/config.js";
import {parseRequest, type IncomingMessage, type ProtocolLimits} from "../../src/mqtt/protocol.js";
import {brokerTopicProblem, publishPacketBytes, replyPolicy, replyPolicyRefusal, replyTopicProblem} from "../../src/mqtt/reply-policy.js";
import {topicLayout} from "../../src/mqtt/topics.js";
import {createLogger} from "../../src/log.js";
import {compileRoutes, deviceRouteProblems} from "../../src/routes/route.js";
import {Router} from "../../src/routes/router.js";

const limits: ProtocolLimits = {
    maxPayloadBytes: 4096, maxTokensCap: 512, defaultMaxTokens: 64, maxTimeoutMs: 600_000,
    defaultTimeoutMs: 60_000, maxStopSequences: 8, maxIdLength: 128
};
const layout = topicLayout("qwen-edge", "pi", "fleet");
const routes = [{name: "button", topic: "home/+/button"}, {name: "shared", topic: "$share/g/sensors/#"}];
const policy = replyPolicy({base: "qwen-edge", response: layout.response, discoveryPrefix: "homeassistant", routes, allow: []});

void describe("the reply policy", () => {
    const table: Array<[string, RegExp | null]> = [
        ["qwen-edge/pi/response", null],
        ["replies/me", null],
        ["qwen-edge/other/response", /^matches "qwen-edge\/\+\/response", the response topic of a qwen-edge device: its clients would take the reply/],
        ["qwen-edge/fleet/response", /the response topic of a qwen-edge device/],
        ["qwen-edge/pi/response/extra", null],
        ["qwen-edge/pi/request", /^matches "qwen-edge\/\+\/request", the request topic of a qwen-edge device: a reply there would be taken as a new request$/],
        ["qwen-edge/other/request", /the request topic of a qwen-edge device/],
        ["qwen-edge/fleet/request", /^matches "qwen-edge\/fleet\/request", the fleet request topic/],
        ["qwen-edge/pi/cancel", /the cancel topic of a qwen-edge device: a reply there could cancel requests/],
        ["qwen-edge/pi/status", /the status topic of a qwen-edge device/],
        ["qwen-edge/other/status", /the status topic of a qwen-edge device/],
        ["qwen-edge/pi/info", /the info topic/],
        ["qwen-edge/pi/health", /the health topic/],
        ["homeassistant/status", /^matches "homeassistant\/status", Home Assistant's status topic/],
        ["homeassistant/device/pi/config", /Home Assistant's discovery prefix: a message there can create, change or remove devices/],
        ["homeassistant", /Home Assistant's discovery prefix/],
        ["home/hall/button", /^matches "home\/\+\/button", the input topic of route button: its answers would come back as new messages \(a loop\)/],
        ["sensors/a/b", /the input topic of route shared/],
        ["home/hall/button/reply", null]
    ];
    for (const [topic, expected] of table) {
        void it(`${topic} -> ${expected === null ? "allowed" : "refused"}`, () => {
            const refusal = replyPolicyRefusal(topic, policy);
            if (expected === null) assert.equal(refusal, null);
            else assert.match(refusal ?? "(allowed)", expected);
        });
    }

    void it("takes the configured discovery prefix and base", () => {
        const other = replyPolicy({base: "site/llm", response: "site/llm/pi/response", discoveryPrefix: "ha", routes: [], allow: []});
        assert.match(replyPolicyRefusal("ha/status", other) ?? "", /Home Assistant's status topic/);
        assert.match(replyPolicyRefusal("site/llm/x/status", other) ?? "", /status topic/);
        assert.equal(replyPolicyRefusal("homeassistant/status", other), null);
        assert.equal(replyPolicyRefusal("qwen-edge/pi/status", other), null);
    });

    void it("with an allow-list, allows only inside it, and always the device's response topic", () => {
        const strict = replyPolicy({base: "qwen-edge", response: layout.response, discoveryPrefix: "homeassistant", routes, allow: ["replies/#", "apps/+/in"]});
        assert.equal(replyPolicyRefusal("replies/me/x", strict), null);
        assert.equal(replyPolicyRefusal("apps/a/in", strict), null);
        assert.equal(replyPolicyRefusal(layout.response, strict), null);
        assert.equal(replyPolicyRefusal("apps/a/b/in", strict),
            "is outside the reply topics this device answers on (mqtt.replyTopics: \"replies/#\", \"apps/+/in\")");
        // Forbidden stays forbidden inside the allow-list.
        const loose = replyPolicy({base: "qwen-edge", response: layout.response, discoveryPrefix: "homeassistant", routes, allow: ["#"]});
        assert.match(replyPolicyRefusal("qwen-edge/pi/status", loose) ?? "", /status topic/);
    });
});

void describe("what a broker takes", () => {
    void it("sizes a v5 PUBLISH as the spec counts it (fixed header, topic, packet id, properties, payload)", () => {
        // remaining = 2 + 3 + 2 + 1 + 5 = 13; total 1 + 1 + 13
        assert.equal(publishPacketBytes({topic: "a/b", payloadBytes: 5, qos: 1}), 15);
        assert.equal(publishPacketBytes({topic: "a/b", payloadBytes: 5, qos: 0}), 13);
        // Correlation Data: id byte, two length bytes, the data
        assert.equal(publishPacketBytes({topic: "a/b", payloadBytes: 5, qos: 1, correlationDataBytes: 8}), 26);
        // remaining 127 -> one length byte; 128 -> two
        assert.equal(publishPacketBytes({topic: "t", payloadBytes: 121, qos: 1}), 129);
        assert.equal(publishPacketBytes({topic: "t", payloadBytes: 122, qos: 1}), 131);
        assert.equal(publishPacketBytes({topic: "é", payloadBytes: 0, qos: 0}), 7, "two bytes of UTF-8, and the empty property length");
    });

    void it("refuses a topic whose reply would pass the broker's Maximum Packet Size, only when it announced one", () => {
        const topic = "r/" + "x".repeat(2000);
        assert.equal(brokerTopicProblem(topic), null);
        assert.equal(brokerTopicProblem(topic, {maximumPacketSize: 4000}), null);
        assert.equal(brokerTopicProblem(topic, {maximumPacketSize: 3000}),
            "is too long for this broker: with a 1024-byte reply the packet would be 3034 bytes, and the broker's Maximum Packet Size is 3000");
        assert.match(brokerTopicProblem(topic, {maximumPacketSize: 3100, correlationDataBytes: 100}) ?? "", /would be 3137 bytes/);
        assert.equal(brokerTopicProblem(topic, {maximumPacketSize: 3100, reserveBytes: 10}), null);
        assert.match(brokerTopicProblem("a/\uffff", {maximumPacketSize: 1 << 20}) ?? "", /noncharacter/);
    });

    void it("replyTopicProblem: the broker's rules first, then the policy", () => {
        assert.match(replyTopicProblem("qwen-edge/+/status", policy) ?? "", /wildcard/);
        assert.match(replyTopicProblem("qwen-edge/pi/status", policy) ?? "", /status topic/);
        assert.equal(replyTopicProblem("qwen-edge/pi/status", null), null);
    });
});

void describe("parseRequest with a reply policy", () => {
    const msg = (payload: unknown, over: Partial<IncomingMessage> = {}): IncomingMessage =>
        ({topic: layout.request, payload: Buffer.from(JSON.stringify(payload)), receivedAt: 1, source: "device", ...over});

    void it("refuses a replyTo on the device's status topic, answering on the response topic instead", () => {
        const r = parseRequest(msg({id: "q1", prompt: "hi", replyTo: "qwen-edge/pi/status"}), layout, limits, {policy});
        assert.ok(!r.ok);
        assert.deepEqual([r.error.code, r.error.details.field, r.id, r.reply.topic, r.reply.via], ["invalid_request", "replyTo", "q1", layout.response, "default"]);
        assert.equal(r.error.message, "replyTo matches \"qwen-edge/+/status\", the status topic of a qwen-edge device: dashboards, Home Assistant and " +
            "`qwen-edge status` read the device's state there; this error is sent to qwen-edge/pi/response instead");
    });

    void it("refuses a Response Topic on a route's input, answering on a usable replyTo", () => {
        const r = parseRequest(msg({prompt: "hi", replyTo: "replies/me"}, {responseTopic: "home/hall/button", correlationData: Buffer.from("c")}),
            layout, limits, {policy});
        assert.ok(!r.ok);
        assert.equal(r.reply.topic, "replies/me");
        assert.deepEqual(r.reply.correlationData, Buffer.from("c"));
        assert.match(r.error.message, /^the MQTT Response Topic matches "home\/\+\/button", the input topic of route button/);
    });

    void it("refuses a noncharacter replyTo even without a policy (the broker would disconnect us)", () => {
        const r = parseRequest(msg({prompt: "hi", replyTo: "a/\uffff"}), layout, limits);
        assert.ok(!r.ok);
        assert.equal(r.reply.topic, layout.response);
        assert.match(r.error.message, /^replyTo contains a Unicode noncharacter/);
    });

    void it("refuses a replyTo too long for the broker's Maximum Packet Size, and accepts it when the broker takes more", () => {
        const long = "replies/" + "x".repeat(3000);
        const r = parseRequest(msg({prompt: "hi", replyTo: long}), layout, limits, {policy, maximumPacketSize: 4000});
        assert.ok(!r.ok);
        assert.match(r.error.message, /^replyTo is too long for this broker/);
        const ok = parseRequest(msg({prompt: "hi", replyTo: long}), layout, limits, {policy, maximumPacketSize: 8000});
        assert.ok(ok.ok);
        assert.equal(ok.request.reply.topic, long);
    });

    void it("accepts an allowed replyTo", () => {
        const r = parseRequest(msg({prompt: "hi", replyTo: "replies/me"}), layout, limits, {policy});
        assert.ok(r.ok);
        assert.deepEqual([r.request.reply.topic, r.request.reply.via], ["replies/me", "replyTo"]);
    });
});

void describe("the same policy on route reply templates at configuration time", () => {
    const route = (name: string, reply: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
        ({name, topic: `in/${name}/+`, prompt: "x", reply: {topic: reply}, ...extra});
    const problemsFor = (list: unknown[], allow: string[] = []): string[] => deviceRouteProblems(compileRoutes(list).routes, layout,
        {maxTokensCap: 512, maxTimeoutMs: 600_000}, {discoveryPrefix: "homeassistant", allow});

    void it("refuses templates that could land on another device's topics or Home Assistant's", () => {
        assert.match(problemsFor([route("a", "qwen-edge/{{topic.1}}/cancel")]).join("\n"),
            /^routes\[0\] \(a\)\.reply\.topic "qwen-edge\/\{\{topic\.1\}\}\/cancel" could match the cancel topic of a qwen-edge device "qwen-edge\/\+\/cancel"/);
        assert.match(problemsFor([route("a", "homeassistant/{{topic.1}}/x")]).join("\n"), /could match Home Assistant's discovery prefix "homeassistant\/#"/);
        assert.deepEqual(problemsFor([route("a", "home/{{topic.1}}/state"), route("b", layout.response)]), []);
    });

    void it("refuses a template that can match none of mqtt.replyTopics, and accepts one that can", () => {
        assert.deepEqual(problemsFor([route("a", "replies/{{topic.1}}")], ["replies/#"]), []);
        assert.deepEqual(problemsFor([route("a", "other/{{topic.1}}")], ["replies/#"]),
            ["routes[0] (a).reply.topic \"other/{{topic.1}}\" can match none of mqtt.replyTopics (\"replies/#\"): every answer would be refused"]);
        assert.deepEqual(problemsFor([route("a", layout.response)], ["replies/#"]), [], "the response topic is always allowed");
    });

    void it("refuses at config load, and reads mqtt.replyTopics as a comma-separated list from the environment", () => {
        const env = {QWEN_EDGE_DEVICE_ID: "pi", QWEN_EDGE_MQTT_REPLY_TOPICS: "replies/#, apps/+/in"};
        assert.deepEqual(loadConfig({env}).mqtt.replyTopics, ["replies/#", "apps/+/in"]);
        assert.throws(() => loadConfig({env: {...env, QWEN_EDGE_ROUTES: JSON.stringify([route("a", "out/{{topic.1}}")])}}),
            /routes\[0\] \(a\)\.reply\.topic "out\/\{\{topic\.1\}\}" can match none of mqtt\.replyTopics/);
        assert.throws(() => loadConfig({env: {QWEN_EDGE_MQTT_REPLY_TOPICS: "a/#/b"}}), /mqtt\.replyTopics: .*"a\/#\/b" uses "#" other than as the whole last level/);
        assert.throws(() => loadConfig({env: {QWEN_EDGE_MQTT_REPLY_TOPICS: "$share/g/x"}}), /shared subscription/);
    });
});

void describe("the same policy on each rendered route reply topic", () => {
    const {routes, problems} = compileRoutes([{name: "lights", topic: "buttons/+", payload: "json", prompt: "{{json.room}}",
        reply: {topic: "lights/{{json.room}}/set", format: "json"}, onInvalid: "reply-error", maxPerMinute: 0}]);
    assert.deepEqual(problems, []);
    const strict = replyPolicy({base: "qwen-edge", response: layout.response, discoveryPrefix: "homeassistant", routes, allow: ["lights/kitchen/set"]});
    const router = new Router({log: createLogger("error"), routes, device: "pi", limits, replyPolicy: strict, maximumPacketSize: () => 1200});
    const intake = (room: string): ReturnType<Router["intake"]> =>
        router.intake({topic: "buttons/x", payload: Buffer.from(JSON.stringify({room})), receivedAt: 1});

    void it("routes a message whose topic is allowed", () => {
        const r = intake("kitchen");
        assert.ok(r !== null && r !== "dropped" && r.parsed.ok);
        assert.equal(r.parsed.request.reply.topic, "lights/kitchen/set");
    });

    void it("drops one outside mqtt.replyTopics or too long for the broker, and sends no error reply there either", () => {
        assert.equal(intake("hall"), "dropped");
        assert.equal(intake("k".repeat(200)), "dropped", "a 211-byte topic and the 1,024 reserved bytes make a 1,243-byte packet, over 1,200");
        assert.equal(router.stats().lights?.invalid, 2);
        const plain = new Router({log: createLogger("error"), routes, device: "pi", limits});
        const r = plain.intake({topic: "buttons/x", payload: Buffer.from(JSON.stringify({room: "hall"})), receivedAt: 1});
        assert.ok(r !== null && r !== "dropped" && r.parsed.ok, "without a policy only the broker's rules apply");
    });
});
