/**
 * Device actions on their own (src/actions/action.ts, executor.ts): configuration problems named by
 * actions[i].field, topics that arguments cannot leave, and the executor's grant, dedupe, cap, rate limit
 * and publish policy with a recording publisher (the end-to-end suite is test/integration/actions.test.ts).
 */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {compileActions, renderAction} from "../../src/actions/action.js";
import {ActionExecutor, MAX_CALLS_PER_REQUEST} from "../../src/actions/executor.js";
import {replyPolicy} from "../../src/mqtt/reply-policy.js";
import {memoryLogger} from "../support/fake-link.js";

const LIGHT = {name: "set_light", parameters: {type: "object", properties: {room: {type: "string"}, state: {enum: ["ON", "OFF"]}, level: {type: "integer", minimum: 0, maximum: 100}},
    required: ["room", "state"]}, publish: {topic: "home/{{args.room}}/light/set", payload: "{\"state\": \"{{args.state}}\", \"by\": \"{{device}}\"}"}, maxPerMinute: 2};

describe("compileActions", () => {
    it("compiles an action with defaults: qos 1, not retained, payload {{args}}, 6 a minute", () => {
        const {actions, problems} = compileActions([{name: "ping", publish: {topic: "home/ping"}}]);
        assert.deepEqual(problems, []);
        assert.deepEqual([actions[0]!.qos, actions[0]!.retain, actions[0]!.payload.source, actions[0]!.maxPerMinute], [1, false, "{{args}}", 6]);
    });

    it("names every problem", () => {
        const cases: Array<[unknown, RegExp]> = [
            [{name: "a b", publish: {topic: "t"}}, /actions\[0\]\.name must be/],
            [{name: "a", publish: {topic: "home/#"}}, /must not contain the wildcards/],
            [{name: "a", publish: {topic: "home/{{args}}"}}, /\{\{args\}\}, all the arguments as JSON, which cannot be a topic level/],
            [{name: "a", publish: {topic: "home/{{args.room}}"}}, /\{\{args\.room\}\}, which is not in actions\[0\]\.parameters\.properties/],
            [{name: "a", parameters: {type: "object", properties: {room: {type: "string"}}}, publish: {topic: "home/{{args.room}}"}}, /list "room" in actions\[0\]\.parameters\.required/],
            [{name: "a", publish: {topic: "home/{{payload}}"}}, /\{\{payload\}\}, which is unknown/],
            [{name: "a", parameters: {type: "object", properties: {s: {type: "string", pattern: "x"}}}, publish: {topic: "t"}}, /uses "pattern"/],
            [{name: "a", publish: {topic: "t", qos: 3}}, /qos must be 0, 1 or 2/],
            [{name: "a", publish: {topic: "t"}, maxPerMinute: 0}, /maxPerMinute must be a whole number from 1 to 600/],
            [{name: "a", publish: {topic: "t"}, topic: "x"}, /unknown key "topic"/]
        ];
        for (const [entry, message] of cases) assert.match(compileActions([entry]).problems.join("\n"), message, JSON.stringify(entry));
        assert.match(compileActions([LIGHT, LIGHT]).problems.join("\n"), /actions\[1\]\.name "set_light" is used twice/);
    });
});

describe("renderAction", () => {
    const action = compileActions([LIGHT]).actions[0]!;
    it("fills the topic and payload", () => {
        assert.deepEqual(renderAction(action, {room: "kitchen", state: "ON"}, "pi-1"), {topic: "home/kitchen/light/set", payload: "{\"state\": \"ON\", \"by\": \"pi-1\"}"});
    });
    it("refuses any value that would leave its level, naming the placeholder, never the value", () => {
        for (const room of ["#", "+", "a/b", "x/../../other", "\u0000", ""]) {
            const r = renderAction(action, {room, state: "ON"}, "pi-1");
            assert.ok("problem" in r, JSON.stringify(room));
            assert.match(r.problem, /the topic's \{\{args\.room\}\}/);
        }
        assert.match((renderAction(action, {room: {a: 1}, state: "ON"}, "d") as {problem: string}).problem, /object or array/);
    });
});

describe("ActionExecutor", () => {
    const setup = (now = {t: 0}) => {
        const published: Array<[string, string]> = [];
        const {log, lines} = memoryLogger();
        const policy = replyPolicy({base: "qwen-edge", response: "qwen-edge/pi-1/response", discoveryPrefix: "homeassistant", routes: [], allow: []});
        const executor = new ActionExecutor({log, actions: compileActions([LIGHT, {name: "status", parameters: {type: "object", properties: {d: {type: "string"}},
            required: ["d"]}, publish: {topic: "qwen-edge/{{args.d}}/status"}}]).actions, device: "pi-1", policy,
            publish: (topic, payload) => {
                published.push([topic, payload]);
                return Promise.resolve();
            }, now: () => now.t});
        return {published, lines, executor, now};
    };

    it("runs a granted call once per request however often it comes, refuses the ungranted, caps the rest", async () => {
        const {published, executor, lines} = setup();
        const r = executor.forRequest("req-1", ["set_light"]);
        assert.equal(await r.run({name: "set_light", arguments: {room: "kitchen", state: "OFF"}}), "done: published to home/kitchen/light/set");
        assert.equal(await r.run({name: "set_light", arguments: {room: "kitchen", state: "OFF"}}), "done: published to home/kitchen/light/set");
        assert.match(await r.run({name: "status", arguments: {d: "pi-2"}}), /^refused: not granted/);
        assert.deepEqual(published, [["home/kitchen/light/set", "{\"state\": \"OFF\", \"by\": \"pi-1\"}"]]);
        assert.deepEqual(r.records.map((x) => x.status), ["published", "refused"]);
        assert.ok(lines.some((l) => l.message === "action published" && l.id === "req-1" && l.topic === "home/kitchen/light/set"));
        assert.ok(!JSON.stringify(lines).includes("kitchen\","), "argument values are not logged");
        // the cap counts distinct calls
        const many = executor.forRequest("req-2", ["set_light"]);
        for (let i = 0; i < MAX_CALLS_PER_REQUEST + 1; i++) await many.run({name: "set_light", arguments: {room: `r${i}`, state: "ON", level: 200}});
        assert.deepEqual(many.records.map((x) => x.status), [...Array<string>(MAX_CALLS_PER_REQUEST).fill("invalid"), "refused"]);
        assert.match(many.records[0]!.reason!, /arguments\.level must be at most 100 \(got 200\)/);
    });

    it("holds the rate limit across requests and lets it recover after a minute", async () => {
        const {executor, now} = setup();
        const call = (room: string) => executor.forRequest(`q-${room}`, ["set_light"]).run({name: "set_light", arguments: {room, state: "ON"}});
        assert.match(await call("a"), /^done/);
        assert.match(await call("b"), /^done/);
        assert.equal(await call("c"), "refused: rate limited: set_light runs at most 2 times a minute");
        now.t = 60_001;
        assert.match(await call("d"), /^done/);
    });

    it("refuses a topic the publish policy forbids (another device's status)", async () => {
        const {executor, published} = setup();
        const r = executor.forRequest("q", ["status"]);
        assert.match(await r.run({name: "status", arguments: {d: "pi-2"}}), /^refused: the topic matches "qwen-edge\/\+\/status"/);
        assert.deepEqual(published, []);
        assert.equal(executor.stats().refused, 1);
    });
});
