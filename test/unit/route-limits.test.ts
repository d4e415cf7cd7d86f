/**
 * Issue 17: a route's rate limit per route as a whole (plus per source topic) and a cap on the
 * retained topics it creates. Before: 60 distinct source topics gave 60 answers and 60 retained topics.
 */
import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {PassThrough} from "node:stream";
import {createLogger} from "../../src/log.js";
import type {ProtocolLimits} from "../../src/mqtt/protocol.js";
import {RouteLimiter, type RouteLimitSettings} from "../../src/routes/limits.js";
import {compileRoutes, DEFAULT_MAX_PER_MINUTE, DEFAULT_MAX_RETAINED_TOPICS} from "../../src/routes/route.js";
import {Router} from "../../src/routes/router.js";

const limits: ProtocolLimits = {
    maxPayloadBytes: 1024, maxTokensCap: 512, defaultMaxTokens: 64, maxTimeoutMs: 600_000,
    defaultTimeoutMs: 60_000, maxStopSequences: 8, maxIdLength: 128
};
const NOW = 1_700_000_000_000;
const settings = (over: Partial<RouteLimitSettings> = {}): RouteLimitSettings =>
    ({minIntervalMs: 0, maxPerMinute: 0, retain: false, maxRetainedTopics: 32, ...over});

void describe("RouteLimiter", () => {
    void it("limits each source topic to one request per minIntervalMs", () => {
        const l = new RouteLimiter(settings({minIntervalMs: 1000}));
        assert.equal(l.admit("a", "out/a", NOW), null);
        assert.equal(l.admit("a", "out/a", NOW + 999)?.limit, "source");
        assert.equal(l.admit("b", "out/b", NOW + 999), null);
        assert.equal(l.admit("a", "out/a", NOW + 1000), null);
    });

    void it("limits the route as a whole to maxPerMinute in any rolling minute", () => {
        const l = new RouteLimiter(settings({maxPerMinute: 3}));
        assert.equal(l.admit("a", "o", NOW), null);
        assert.equal(l.admit("b", "o", NOW + 10), null);
        assert.equal(l.admit("c", "o", NOW + 20), null);
        const refused = l.admit("d", "o", NOW + 30);
        assert.deepEqual(refused, {limit: "route", reason: "the route already routed 3 requests in the last minute (maxPerMinute)"});
        assert.equal(l.admit("d", "o", NOW + 59_999)?.limit, "route");
        assert.equal(l.admit("d", "o", NOW + 60_000), null, "the first one left the window");
        assert.equal(l.admit("e", "o", NOW + 60_005)?.limit, "route");
        assert.equal(l.admit("e", "o", NOW + 60_010), null);
    });

    void it("caps the distinct retained reply topics, and lets a known topic be answered again", () => {
        const l = new RouteLimiter(settings({retain: true, maxRetainedTopics: 2}));
        assert.equal(l.admit("a", "out/a", NOW), null);
        assert.equal(l.admit("b", "out/b", NOW), null);
        assert.deepEqual(l.admit("c", "out/c", NOW), {limit: "retained",
            reason: "the route already keeps retained answers on 2 topics (reply.maxRetainedTopics)"});
        assert.equal(l.admit("a2", "out/a", NOW), null);
        assert.equal(l.retainedTopicCount(), 2);
        const plain = new RouteLimiter(settings({retain: false, maxRetainedTopics: 1}));
        assert.equal(plain.admit("a", "x", NOW), null);
        assert.equal(plain.admit("b", "y", NOW), null, "the cap is for retained replies only");
    });

    void it("takes nothing when a later limit refuses", () => {
        const l = new RouteLimiter(settings({minIntervalMs: 1000, maxPerMinute: 1}));
        assert.equal(l.admit("a", "o", NOW), null);
        assert.equal(l.admit("b", "o", NOW + 1)?.limit, "route");
        assert.equal(l.admit("b", "o", NOW + 60_000), null, "b's interval was not spent by the refused message");
        const r = new RouteLimiter(settings({maxPerMinute: 2, retain: true, maxRetainedTopics: 1}));
        assert.equal(r.admit("a", "x", NOW), null);
        assert.equal(r.admit("b", "y", NOW)?.limit, "retained");
        assert.equal(r.admit("c", "x", NOW), null, "the capped message did not use the route's minute");
    });

    void it("stays bounded when the clock goes back", () => {
        const l = new RouteLimiter(settings({maxPerMinute: 2}));
        assert.equal(l.admit("a", "o", NOW), null);
        assert.equal(l.admit("b", "o", NOW - 3_600_000), null);
        assert.equal(l.admit("c", "o", NOW - 3_600_000)?.limit, "route");
    });
});

void describe("route limit settings", () => {
    const base = {name: "r", topic: "in/+", prompt: "{{payload}}", reply: {topic: "out/{{topic.1}}"}};
    const problems = (r: Record<string, unknown>): string[] => compileRoutes([{...base, ...r}]).problems;

    void it("defaults to 30 per minute and 32 retained topics", () => {
        const [route] = compileRoutes([base]).routes;
        assert.deepEqual([route?.maxPerMinute, route?.reply.maxRetainedTopics], [DEFAULT_MAX_PER_MINUTE, DEFAULT_MAX_RETAINED_TOPICS]);
        assert.deepEqual([DEFAULT_MAX_PER_MINUTE, DEFAULT_MAX_RETAINED_TOPICS], [30, 32]);
        const [set] = compileRoutes([{...base, maxPerMinute: 0, reply: {topic: "out/{{topic.1}}", retain: true, maxRetainedTopics: 5}}]).routes;
        assert.deepEqual([set?.maxPerMinute, set?.reply.maxRetainedTopics], [0, 5]);
    });

    const bad: Array<[string, Record<string, unknown>, RegExp]> = [
        ["a negative maxPerMinute", {maxPerMinute: -1}, /^routes\[0\]\.maxPerMinute must be an integer of at least 0 \(got -1\)/],
        ["a fractional maxPerMinute", {maxPerMinute: 1.5}, /^routes\[0\]\.maxPerMinute must be an integer/],
        ["maxRetainedTopics without retain", {reply: {topic: "o/x", maxRetainedTopics: 3}},
            /^routes\[0\]\.reply\.maxRetainedTopics applies only to retained replies/],
        ["maxRetainedTopics 0", {reply: {topic: "o/x", retain: true, maxRetainedTopics: 0}}, /must be an integer from 1 to 10000 \(got 0\)/],
        ["maxRetainedTopics over 10,000", {reply: {topic: "o/x", retain: true, maxRetainedTopics: 10_001}}, /from 1 to 10000/],
        ["a misspelled key", {maxPerMinutes: 3}, /unknown key "maxPerMinutes" \(did you mean "maxPerMinute"\?\)/],
        ["a jsonSchema too deep", {jsonSchema: JSON.parse("{\"a\":".repeat(40) + "1" + "}".repeat(40)) as unknown},
            /^routes\[0\]\.jsonSchema is nested more than 32 levels deep; the limit is 32$/]
    ];
    for (const [name, r, expected] of bad) {
        void it(`refuses ${name}`, () => {
            const found = problems(r);
            assert.ok(found.some((p) => expected.test(p)), found.join("\n"));
        });
    }
});

void describe("a flood over many source topics (the issue's 60 topics)", () => {
    const make = (reply: Record<string, unknown>, extra: Record<string, unknown> = {}): {router: Router; log: () => string} => {
        const {routes, problems} = compileRoutes([{name: "summary", topic: "home/+/temperature", minIntervalMs: 600_000, prompt: "{{payload}}",
            reply: {topic: "home/{{topic.1}}/temperature/summary", retain: true, ...reply}, ...extra}]);
        assert.deepEqual(problems, []);
        const stream = new PassThrough();
        let text = "";
        stream.on("data", (d: Buffer) => { text += d.toString(); });
        return {router: new Router({log: createLogger("debug", stream), routes, device: "pi", limits}), log: () => text};
    };
    const flood = (router: Router, topics: number, at = NOW): string[] => {
        const replies: string[] = [];
        for (let i = 0; i < topics; i++) {
            const r = router.intake({topic: `home/room${i}/temperature`, payload: Buffer.from("21"), receivedAt: at + i});
            if (r !== null && r !== "dropped" && r.parsed.ok) replies.push(r.parsed.request.reply.topic);
        }
        return replies;
    };

    void it("with the defaults: 30 routed in the minute, the other 30 dropped and counted", () => {
        const {router, log} = make({});
        const routed = flood(router, 60);
        assert.equal(routed.length, 30);
        assert.equal(new Set(routed).size, 30);
        const stats = router.stats().summary;
        assert.deepEqual([stats?.received, stats?.routeLimited, stats?.retainedCapped, stats?.rateLimited], [60, 30, 0, 0]);
        assert.match(log(), /"limit":"route","message":"route message dropped: rate limited","reason":"the route already routed 30 requests in the last minute \(maxPerMinute\)"/);
    });

    void it("with no route-wide limit: at most maxRetainedTopics distinct retained topics, later ones capped", () => {
        const {router, log} = make({maxRetainedTopics: 20}, {maxPerMinute: 0});
        const routed = flood(router, 60);
        assert.equal(routed.length, 20);
        assert.equal(router.stats().summary?.retainedCapped, 40);
        assert.match(log(), /"level":"warn","limit":"retained","message":"route message dropped: retained topic cap"/);
        // A room that already has its retained answer is answered again once its interval has passed.
        const again = router.intake({topic: "home/room0/temperature", payload: Buffer.from("22"), receivedAt: NOW + 600_000});
        assert.ok(again !== null && again !== "dropped" && again.parsed.ok);
        assert.equal(again.parsed.request.reply.topic, "home/room0/temperature/summary");
    });

    void it("does not cap a route whose replies are not retained", () => {
        const {router} = make({retain: false}, {maxPerMinute: 0});
        assert.equal(flood(router, 60).length, 60);
    });
});
