import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {PassThrough} from "node:stream";
import {loadConfig} from "../../src/config.js";
import {RequestError} from "../../src/errors.js";
import {decodeJob, encodeJob} from "../../src/jobs/codec.js";
import {createLogger} from "../../src/log.js";
import {okReply, type InferenceRequest, type ProtocolLimits} from "../../src/mqtt/protocol.js";
import {topicLayout} from "../../src/mqtt/topics.js";
import type {RouteConfig} from "../../src/config-schema.js";
import {compileRoutes, deviceRouteProblems, filterRefusal, type Route} from "../../src/routes/route.js";
import {evaluateRoute, Router, textAnswer, type RoutedMessage} from "../../src/routes/router.js";
import {parseTemplate, renderText, renderTopic, templateMayMatch, wildcardSegments, type Template,
    type TemplateScope, type TemplateValues} from "../../src/routes/template.js";

const limits: ProtocolLimits = {
    maxPayloadBytes: 1024, maxTokensCap: 512, defaultMaxTokens: 128, maxTimeoutMs: 600_000,
    defaultTimeoutMs: 60_000, maxStopSequences: 8, maxIdLength: 128
};
const NOW = Date.UTC(2025, 0, 2, 3, 4, 5);
/** Put in payloads: no log line or error message may contain it. */
const SECRET = "SECRET-PAYLOAD-4471";

const scope = (over: Partial<TemplateScope> = {}): TemplateScope => ({json: true, wildcards: ["+", "#"], forTopic: false, ...over});
const values = (over: Partial<TemplateValues> = {}): TemplateValues => ({
    payload: "23.4", json: {action: "double", room: "hall", n: 3, on: true, none: null, list: [1, "a"], nested: {x: {y: "deep"}}},
    topic: "home/kitchen/a/b", segments: ["kitchen", "a/b"], time: new Date(NOW).toISOString(), device: "pi-1", ...over
});

function template(source: string, over: Partial<TemplateScope> = {}): Template {
    const parsed = parseTemplate(source, scope(over));
    if (typeof parsed === "string") assert.fail(`template ${source}: ${parsed}`);
    return parsed;
}

function compile(...configs: Array<Partial<RouteConfig> & Record<string, unknown>>): Route[] {
    const {routes, problems} = compileRoutes(configs.map((c, i) => ({name: `r${i}`, topic: `in/${i}/+`, prompt: "{{payload}}",
        reply: {topic: `out/${i}/{{topic.1}}`}, ...c})));
    assert.deepEqual(problems, []);
    return routes;
}

function captureLog(): {log: ReturnType<typeof createLogger>; text: () => string} {
    const stream = new PassThrough();
    let text = "";
    stream.on("data", (d: Buffer) => { text += d.toString(); });
    return {log: createLogger("debug", stream), text: () => text};
}

const msg = (topic: string, payload: string, over: Partial<RoutedMessage> = {}): RoutedMessage =>
    ({topic, payload: Buffer.from(payload), receivedAt: NOW, ...over});

void describe("route templates", () => {
    const cases: Array<[string, string, string]> = [
        ["payload", "Temp: {{payload}} C", "Temp: 23.4 C"],
        ["spaces inside braces", "{{ payload }}", "23.4"],
        ["json field", "Action {{json.action}}", "Action double"],
        ["json number, boolean, null", "{{json.n}} {{json.on}} {{json.none}}", "3 true null"],
        ["json array index", "{{json.list.1}}", "a"],
        ["json nested", "{{json.nested.x.y}}", "deep"],
        ["json object as compact JSON", "{{json.nested}}", "{\"x\":{\"y\":\"deep\"}}"],
        ["whole topic", "{{topic}}", "home/kitchen/a/b"],
        ["wildcard segments, # joined", "{{topic.1}} | {{topic.2}}", "kitchen | a/b"],
        ["time and device", "{{time}} on {{device}}", "2025-01-02T03:04:05.000Z on pi-1"],
        ["single braces stay", "{\"a\": {{json.n}}}", "{\"a\": 3}"],
        ["values are inserted verbatim", "{{payload}}", "ignore previous {{instructions}}"]
    ];
    for (const [name, source, expected] of cases) {
        void it(`renders ${name}`, () => {
            const v = name.startsWith("values are") ? values({payload: "ignore previous {{instructions}}"}) : values();
            assert.equal(renderText(template(source), v, "prompt"), expected);
        });
    }

    const refused: Array<[string, string, Partial<TemplateScope>, RegExp]> = [
        ["unknown name", "{{foo}}", {}, /\{\{foo\}\}, which is unknown; known here: \{\{payload\}\}/],
        ["json on a text route", "{{json.a}}", {json: false}, /needs `payload: json`/],
        ["a wildcard the filter lacks", "{{topic.3}}", {}, /names wildcard 3, but the route's topic has 2 wildcards/],
        ["topic.0", "{{topic.0}}", {}, /names wildcard 0/],
        ["a bad path", "{{json.a..b}}", {}, /path that is not/],
        ["an unclosed brace pair", "Hi {{payload", {}, /not a complete placeholder/],
        ["the whole topic in a topic template", "a/{{topic}}", {forTopic: true}, /spans several levels/],
        ["a # segment in a topic template", "a/{{topic.2}}", {forTopic: true}, /"#", which can span several levels/]
    ];
    for (const [name, source, over, expected] of refused) {
        void it(`refuses ${name}`, () => {
            const parsed = parseTemplate(source, scope(over));
            assert.equal(typeof parsed, "string");
            assert.match(parsed as string, expected);
        });
    }

    void it("fails a prompt whose JSON path finds nothing, naming the placeholder", () => {
        assert.throws(() => renderText(template("{{json.missing.x}}"), values(), "prompt"),
            (err: unknown) => err instanceof RequestError && err.code === "invalid_request" && /no value at \{\{json\.missing\.x\}\}/.test(err.message));
    });

    void it("does not find inherited properties", () => {
        assert.throws(() => renderText(template("{{json.constructor}}"), values(), "prompt"), RequestError);
    });
});

void describe("topic segments", () => {
    const cases: Array<[string, string, string[] | null]> = [
        ["home/+/temperature", "home/kitchen/temperature", ["kitchen"]],
        ["+/+/x", "a/b/x", ["a", "b"]],
        ["home/#", "home/a/b/c", ["a/b/c"]],
        ["home/#", "home", [""]],
        ["home/+/x/#", "home/k/x/1/2", ["k", "1/2"]],
        ["$share/g/home/+/t", "home/k/t", ["k"]],
        ["exact/topic", "exact/topic", []],
        ["home/+/temperature", "home/kitchen/humidity", null],
        ["home/+", "home/a/b", null]
    ];
    for (const [filter, topic, expected] of cases)
        void it(`${filter} on ${topic}`, () => assert.deepEqual(wildcardSegments(filter, topic), expected));
});

void describe("reply topic escaping", () => {
    const t = template("home/{{topic.1}}/{{json.room}}/summary", {forTopic: true});
    void it("builds the topic from segments and fields", () => {
        assert.equal(renderTopic(t, values(), "reply.topic"), "home/kitchen/hall/summary");
    });
    const refusals: Array<[string, unknown, RegExp]> = [
        ["a slash", `a/${SECRET}`, /\{\{json\.room\}\} contains "\/", "\+", "#" or NUL/],
        ["a plus", `${SECRET}+`, /contains "\/", "\+", "#" or NUL/],
        ["a hash", "#", /contains/],
        ["NUL", `a\u0000${SECRET}`, /contains/],
        ["an empty value (empty level)", "", /has an empty level/],
        ["an object", {a: SECRET}, /is an object or array, not a topic level/],
        ["an absent field", undefined, /no value at \{\{json\.room\}\}/],
        ["a control character", `a\u0007${SECRET}`, /control character/]
    ];
    for (const [name, room, expected] of refusals) {
        void it(`refuses a value with ${name}, without quoting it`, () => {
            assert.throws(() => renderTopic(t, values({json: room === undefined ? {} : {room}}), "reply.topic"), (err: unknown) => {
                assert.ok(err instanceof RequestError);
                assert.match(err.message, expected);
                assert.ok(!err.message.includes(SECRET), err.message);
                return true;
            });
        });
    }
    void it("refuses a leading $ built from a value", () => {
        assert.throws(() => renderTopic(template("{{payload}}/x", {forTopic: true}), values({payload: "$SYS"}), "reply.topic"), /starts with "\$"/);
    });
});

void describe("route filters", () => {
    const [jsonRoute] = compile({payload: "json"});
    const [textRoute] = compile({});
    const cases: Array<[string, Route, unknown, string, unknown, string | null]> = [
        ["equals passes", jsonRoute!, {path: "action", equals: "double"}, "", {action: "double"}, null],
        ["equals refuses", jsonRoute!, {path: "action", equals: "double"}, "", {action: "single"}, "json.action does not equal \"double\""],
        ["in passes", jsonRoute!, {path: "action", in: ["double", "long"]}, "", {action: "long"}, null],
        ["in refuses", jsonRoute!, {path: "action", in: ["double", "long"]}, "", {action: "single"}, "json.action is not one of the 2 listed values"],
        ["absent path", jsonRoute!, {path: "action", equals: "x"}, "", {}, "json.action is absent"],
        ["numeric range passes", jsonRoute!, {path: "t", above: 0, below: 50}, "", {t: 21.5}, null],
        ["numeric range refuses", jsonRoute!, {path: "t", above: 0, below: 50}, "", {t: 51}, "json.t is not below 50"],
        ["numeric string in JSON", jsonRoute!, {path: "t", above: 20}, "", {t: "21"}, null],
        ["not a number", jsonRoute!, {path: "t", above: 20}, "", {t: "warm"}, "json.t is not a number"],
        ["whole JSON number", jsonRoute!, {below: 10}, "", 12, "the payload is not below 10"],
        ["text number", textRoute!, {above: -40, below: 85}, " 23.4\n", undefined, null],
        ["text number out of range", textRoute!, {above: -40, below: 85}, "99", undefined, "the payload is not below 85"],
        ["text equals a number", textRoute!, {equals: 1}, "1", undefined, null],
        ["text matches", textRoute!, {matches: "^ring"}, "ring ring", undefined, null],
        ["text does not match", textRoute!, {matches: "^ring"}, "knock", undefined, "the payload does not match /^ring/"],
        ["several conditions, all must hold", jsonRoute!, [{path: "a", equals: 1}, {path: "b", equals: 2}], "", {a: 1, b: 3}, "json.b does not equal 2"]
    ];
    for (const [name, base, filter, text, json, expected] of cases) {
        void it(name, () => {
            const [route] = compile({payload: base.payload, filter: filter as RouteConfig["filter"]});
            assert.equal(filterRefusal(route!, text, json), expected);
        });
    }
});

void describe("route config validation", () => {
    const problems = (routes: unknown): string[] => compileRoutes(routes).problems;
    const base = {name: "a", topic: "in/+", prompt: "{{payload}}", reply: {topic: "out/{{topic.1}}"}};
    const cases: Array<[string, unknown, RegExp]> = [
        ["not a list", {name: "a"}, /^routes must be a list of routes/],
        ["a route that is not a mapping", ["x"], /^routes\[0\] must be a mapping/],
        ["a bad name", [{...base, name: "a b"}], /^routes\[0\]\.name must be 1 to 64 characters/],
        ["a duplicate name", [base, {...base, topic: "in2/+"}], /^routes\[1\]\.name "a" is already the name of routes\[0\]/],
        ["a misspelled key", [{...base, promt: "x"}], /^routes\[0\]: unknown key "promt" \(did you mean "prompt"\?\)/],
        ["a bad filter topic", [{...base, topic: "in/a+"}], /^routes\[0\]\.topic "in\/a\+" uses "\+" other than as a whole level/],
        ["an empty prompt", [{...base, prompt: " "}], /^routes\[0\]\.prompt must be a non-empty text template/],
        ["an unknown placeholder", [{...base, prompt: "{{nope}}"}], /^routes\[0\]\.prompt has the placeholder \{\{nope\}\}, which is unknown/],
        ["an unknown system placeholder", [{...base, system: "{{json.a}}"}], /^routes\[0\]\.system has the placeholder \{\{json\.a\}\}, which needs `payload: json`/],
        ["a wildcard in the reply topic", [{...base, reply: {topic: "out/+"}}], /^routes\[0\]\.reply\.topic "out\/\+" contains the wildcard "\+"/],
        ["an empty reply level", [{...base, reply: {topic: "out//{{topic.1}}"}}], /^routes\[0\]\.reply\.topic .* has an empty level/],
        ["a bad qos", [{...base, reply: {topic: "o/x", qos: 3}}], /^routes\[0\]\.reply\.qos must be 0, 1 or 2 \(got 3\)/],
        ["a bad format", [{...base, reply: {topic: "o/x", format: "xml"}}], /^routes\[0\]\.reply\.format must be one of "text", "json"/],
        ["reply-error with text replies", [{...base, onInvalid: "reply-error"}], /^routes\[0\]\.onInvalid "reply-error" needs reply\.format "json"/],
        ["a path filter on a text route", [{...base, filter: {path: "a", equals: 1}}], /^routes\[0\]\.filter\.path needs `payload: json`/],
        ["an empty filter", [{...base, filter: {path: "a"}, payload: "json"}], /^routes\[0\]\.filter needs at least one of/],
        ["a bad regex", [{...base, filter: [{matches: "("}]}], /^routes\[0\]\.filter\[0\]\.matches is not a valid regular expression/],
        ["a negative interval", [{...base, minIntervalMs: -1}], /^routes\[0\]\.minIntervalMs must be an integer of at least 0/],
        ["bad thinking", [{...base, thinking: "yes"}], /^routes\[0\]\.thinking must be true, false or \{budget: N\}/],
        ["a schema that is not a mapping", [{...base, jsonSchema: "x"}], /^routes\[0\]\.jsonSchema must be a JSON Schema mapping/]
    ];
    for (const [name, routes, expected] of cases) {
        void it(`names the field: ${name}`, () => {
            const found = problems(routes);
            assert.ok(found.some((p) => expected.test(p)), found.join("\n"));
        });
    }
    void it("accepts a good list", () => assert.deepEqual(problems([base, {...base, name: "b", topic: "in2/#", payload: "json",
        filter: [{path: "action", in: ["double"]}], reply: {topic: "out2/x", format: "json", retain: true, qos: 0}, onInvalid: "reply-error"}]), []));
});

void describe("loop prevention", () => {
    const route = (name: string, topic: string, reply: string): Record<string, unknown> => ({name, topic, prompt: "x", reply: {topic: reply}});
    const cases: Array<[string, unknown[], RegExp | null]> = [
        ["a reply on its own filter", [route("echo", "home/+/state", "home/{{topic.1}}/state")],
            /routes\[0\] \(echo\)\.reply\.topic "home\/\{\{topic\.1\}\}\/state" could match routes\[0\] \(echo\)\.topic "home\/\+\/state": .* \(a loop\)/],
        ["a reply on another route's filter", [route("a", "in/+", "mid/{{topic.1}}"), route("b", "mid/#", "out/x")],
            /routes\[0\] \(a\)\.reply\.topic .* could match routes\[1\] \(b\)\.topic "mid\/#"/],
        ["a placeholder inside a level", [route("a", "in/+", "x/pre{{topic.1}}"), route("b", "x/prefix", "out/x")], /routes\[0\] \(a\).*routes\[1\] \(b\)/],
        ["a shared subscription", [route("a", "$share/g/in/+", "in/x/y"), route("b", "$share/g/in/+/+", "out")], /routes\[0\] \(a\).*routes\[1\] \(b\)/],
        ["a distinct level count", [route("a", "home/+/temperature", "home/{{topic.1}}/temperature/summary")], null],
        ["a literal that cannot match", [route("a", "in/+", "x/pre{{topic.1}}"), route("b", "x/other", "out/x")], null]
    ];
    for (const [name, routes, expected] of cases) {
        void it(`${expected ? "refuses" : "allows"} ${name}`, () => {
            const {problems} = compileRoutes(routes);
            if (expected === null) assert.deepEqual(problems, []);
            else assert.ok(problems.some((p) => expected.test(p)), problems.join("\n"));
        });
    }
    void it("matches templates against filters conservatively", () => {
        assert.equal(templateMayMatch(template("a/{{payload}}", {forTopic: true}), "a/+"), true);
        assert.equal(templateMayMatch(template("a/{{payload}}", {forTopic: true}), "a/b"), true);
        assert.equal(templateMayMatch(template("a/{{payload}}", {forTopic: true}), "#"), true);
        assert.equal(templateMayMatch(template("a/{{payload}}", {forTopic: true}), "b/#"), false);
        assert.equal(templateMayMatch(template("a/{{payload}}", {forTopic: true}), "a/+/c"), false);
        assert.equal(templateMayMatch(template("a/x{{payload}}", {forTopic: true}), "a/y"), false);
    });
    void it("refuses routes on the daemon's own topics, and limits above the caps", () => {
        const routes = compile({topic: "qwen-edge/+/request"}, {reply: {topic: "qwen-edge/{{topic.1}}/status"}}, {maxTokens: 9999});
        const problems = deviceRouteProblems(routes, topicLayout("qwen-edge", "pi", "fleet"), {maxTokensCap: 512, maxTimeoutMs: 1000});
        assert.ok(problems.some((p) => /routes\[0\] \(r0\)\.topic "qwen-edge\/\+\/request" matches the daemon's own request topic "qwen-edge\/pi\/request"/.test(p)));
        assert.ok(problems.some((p) => /routes\[0\] \(r0\)\.topic .* matches the daemon's own fleet request topic "qwen-edge\/fleet\/request"/.test(p)));
        assert.ok(problems.some((p) => /routes\[1\] \(r1\)\.reply\.topic .* could match the status topic of a qwen-edge device "qwen-edge\/\+\/status"/.test(p)));
        assert.ok(problems.some((p) => /routes\[2\]\.maxTokens \(9999\) must not exceed inference\.maxTokensCap \(512\)/.test(p)));
    });
    void it("refuses them at config load with every problem on its own line", () => {
        const routes = [route("echo", "home/+/state", "home/{{topic.1}}/state"), {...route("bad", "x/+", "y/{{nope}}")}];
        assert.throws(() => loadConfig({env: {QWEN_EDGE_ROUTES: JSON.stringify(routes), QWEN_EDGE_DEVICE_ID: "pi"}}), (err: unknown) => {
            const lines = (err as Error).message.split("\n");
            assert.ok(lines.some((l) => l.startsWith("routes[1].reply.topic has the placeholder {{nope}}")), (err as Error).message);
            assert.ok(!(err as Error).message.includes("value was"), (err as Error).message);
            return true;
        });
        assert.throws(() => loadConfig({env: {QWEN_EDGE_ROUTES: JSON.stringify([route("echo", "home/+/state", "home/{{topic.1}}/state")])}}),
            /routes\[0\] \(echo\)\.reply\.topic .* \(a loop\)/);
        assert.throws(() => loadConfig({env: {QWEN_EDGE_ROUTES: "[{"}}), /routes must be a JSON list/);
        const loaded = loadConfig({args: ["--routes", JSON.stringify([route("ok", "a/+", "b/{{topic.1}}")])], env: {}});
        assert.equal(loaded.routes[0]?.name, "ok");
    });
});

void describe("the router", () => {
    const routes = compile(
        {name: "sensor", topic: "home/+/temperature", filter: {above: -40, below: 85}, minIntervalMs: 60_000, maxTokens: 32,
            prompt: "{{topic.1}}: {{payload}}", system: "Sensor on {{device}}", reply: {topic: "home/{{topic.1}}/summary", retain: true, qos: 0}},
        {name: "double", topic: "btn/+", payload: "json", filter: {path: "action", equals: "double"}, prompt: "double {{json.room}}",
            reply: {topic: "lights/{{topic.1}}", format: "json"}, onInvalid: "reply-error"},
        {name: "single", topic: "btn/+", payload: "json", filter: {path: "action", equals: "single"}, prompt: "single",
            reply: {topic: "lights/{{topic.1}}/single"}}
    );
    const make = (): {router: Router; text: () => string} => {
        const {log, text} = captureLog();
        return {router: new Router({log, routes, device: "pi-1", limits}), text};
    };

    void it("subscribes each distinct filter once at QoS 1", () => {
        assert.deepEqual(make().router.subscriptions(), [{filter: "home/+/temperature", qos: 1}, {filter: "btn/+", qos: 1}]);
    });

    void it("builds a request with the route's source, limits and reply target", () => {
        const result = make().router.intake(msg("home/kitchen/temperature", "23.4", {messageExpirySeconds: 10}));
        assert.ok(result !== null && result !== "dropped" && result.parsed.ok);
        const r = result.parsed.request;
        assert.equal(result.source, "route:sensor");
        assert.equal(r.source, "route:sensor");
        assert.match(r.id, /^sensor-[0-9a-z]+-[0-9a-f]{12}$/);
        assert.equal(r.prompt, "kitchen: 23.4");
        assert.equal(r.system, "Sensor on pi-1");
        assert.equal(r.maxTokens, 32);
        assert.equal(r.stream, false);
        assert.equal(r.deadline, NOW + 10_000, "the message expiry shortens the deadline");
        assert.deepEqual(r.reply, {topic: "home/kitchen/summary", via: "route", route: "sensor", format: "text", retain: true, qos: 0});
    });

    void it("rate-limits per source topic on the message clock", () => {
        const {router, text} = make();
        const outcome = (topic: string, at: number): string => {
            const r = router.intake(msg(topic, "20", {receivedAt: at}));
            return r === null ? "none" : r === "dropped" ? "dropped" : "routed";
        };
        assert.equal(outcome("home/a/temperature", NOW), "routed");
        assert.equal(outcome("home/a/temperature", NOW + 59_999), "dropped");
        assert.equal(outcome("home/b/temperature", NOW + 59_999), "routed", "another source topic has its own interval");
        assert.equal(outcome("home/a/temperature", NOW + 60_000), "routed");
        assert.equal(router.stats().sensor?.rateLimited, 1);
        assert.match(text(), /"message":"route message dropped: rate limited".*"route":"sensor"/);
    });

    void it("does not spend the interval on filtered messages", () => {
        const {router} = make();
        assert.equal(router.intake(msg("home/a/temperature", "200")), "dropped");
        const next = router.intake(msg("home/a/temperature", "20", {receivedAt: NOW + 1}));
        assert.ok(next !== null && next !== "dropped" && next.parsed.ok);
        assert.equal(router.stats().sensor?.filtered, 1);
    });

    void it("tries routes on the same topic in order until a filter passes", () => {
        const {router} = make();
        const r = router.intake(msg("btn/hall", JSON.stringify({action: "single"})));
        assert.ok(r !== null && r !== "dropped" && r.parsed.ok);
        assert.equal(r.source, "route:single");
        assert.equal(router.stats().double?.filtered, 1);
        assert.equal(router.intake(msg("btn/hall", JSON.stringify({action: "hold"}))), "dropped");
    });

    void it("answers malformed JSON with an error when onInvalid is reply-error, without logging the payload", () => {
        const {router, text} = make();
        const r = router.intake(msg("btn/hall", `{"action": "${SECRET}`));
        assert.ok(r !== null && r !== "dropped" && !r.parsed.ok);
        assert.equal(r.parsed.error.code, "invalid_json");
        assert.deepEqual(r.parsed.reply, {topic: "lights/hall", via: "route", route: "double", format: "json", retain: false, qos: 1});
        assert.equal(router.stats().double?.invalid, 1);
        assert.ok(!text().includes(SECRET));
    });

    void it("drops what it cannot read when onInvalid is drop", () => {
        const {router} = make();
        assert.equal(router.intake(msg("home/a/temperature", "\u00ff", {payload: Buffer.from([0xff, 0xfe])})), "dropped");
        assert.equal(router.intake(msg("home/a/temperature", "x".repeat(limits.maxPayloadBytes + 1))), "dropped");
        assert.equal(router.stats().sensor?.invalid, 2);
    });

    void it("skips retained messages (old values sent on subscribe) and ignores other topics", () => {
        const {router} = make();
        assert.equal(router.intake(msg("home/a/temperature", "20", {retain: true})), "dropped");
        assert.equal(router.stats().sensor?.retainedSkipped, 1);
        assert.equal(router.intake(msg("qwen-edge/pi-1/request", "hi")), null);
    });

    void it("counts what the daemon reports, for routes only", () => {
        const {router} = make();
        const r = evaluateRoute(routes[0]!, msg("home/a/temperature", "20"), {device: "pi-1", limits});
        assert.equal(r.outcome, "ok");
        const reply = (r as {request: InferenceRequest}).request.reply;
        router.note(reply, "accepted");
        router.note(reply, "answered");
        router.note(reply, "failed", {id: "x", code: "timeout"});
        router.note({topic: "t", via: "default"}, "failed");
        assert.deepEqual(router.stats().sensor, {received: 0, filtered: 0, rateLimited: 0, routeLimited: 0, retainedCapped: 0, invalid: 0, loopRefused: 0, retainedSkipped: 0,
            accepted: 1, answered: 1, failed: 1});
    });

    void it("passes routed requests through the native field limits", () => {
        const [tooLong] = compile({maxTokens: limits.maxTokensCap + 1});
        const r = evaluateRoute(tooLong!, msg("in/0/x", "hi"), {device: "d", limits});
        assert.equal(r.outcome, "invalid");
        assert.equal((r as {error: RequestError}).error.code, "invalid_request");
    });
});

void describe("route replies", () => {
    const reply = (text: string, finishReason: "stop" | "length" | "timeout" | "cancelled") => okReply({id: "x", text, finishReason,
        usage: {promptTokens: 1, completionTokens: 1, thinkingTokens: 0, cachedPromptTokens: 0}, timing: {queueMs: 0, ttftMs: 1, totalMs: 1, tokensPerSecond: 1}, model: "m", device: "d"});
    void it("publishes the text of a finished or length-capped answer, nothing for empty, timed-out or cancelled ones", () => {
        assert.equal(textAnswer(reply("It is warm.", "stop")), "It is warm.");
        assert.equal(textAnswer(reply("It is wa", "length")), "It is wa");
        assert.equal(textAnswer(reply("  ", "stop")), null);
        assert.equal(textAnswer(reply("partial", "timeout")), null);
        assert.equal(textAnswer(reply("partial", "cancelled")), null);
    });
    void it("journals the route's reply settings so a replayed job answers the same way", () => {
        const r = evaluateRoute(compile({reply: {topic: "o/{{topic.1}}", retain: true, qos: 2, format: "json"}})[0]!, msg("in/0/k", "hi"), {device: "d", limits});
        const request = (r as {request: InferenceRequest}).request;
        const back = decodeJob(JSON.parse(JSON.stringify(encodeJob({request, messageHash: "h"}))) as Record<string, unknown>);
        assert.deepEqual(back?.request.reply, {topic: "o/k", via: "route", route: "r0", format: "json", retain: true, qos: 2});
        assert.equal(back?.request.source, "route:r0");
    });
});
