import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {JSON_SCHEMA_LIMITS, MAX_JSON_DEPTH, jsonNestingDepth, jsonSchemaLimitProblem, parseBoundedJson} from "../../src/mqtt/bounded-json.js";

const nested = (depth: number, open = "[", close = "]"): string => open.repeat(depth) + close.repeat(depth);
/** A value `depth` levels deep, built without recursion (as JSON.parse would build it). */
function deepValue(depth: number): unknown {
    return JSON.parse(nested(depth)) as unknown;
}

void describe("jsonNestingDepth", () => {
    const table: Array<[string, string, number]> = [
        ["a scalar", "42", 0],
        ["an empty object", "{}", 1],
        ["an object in an array", "[{}]", 2],
        ["siblings do not add up", "[[], [], {\"a\": 1}]", 2],
        ["brackets inside a string", "{\"a\": \"[[[[{{{{\"}", 1],
        ["an escaped quote keeps the string open", "{\"a\": \"\\\"[[[[\"}", 1],
        ["an escaped backslash closes it", "{\"a\": \"\\\\\", \"b\": [[1]]}", 3],
        ["a unicode escape", "[\"\\u005b\", [\"\\\"\"]]", 2],
        ["unbalanced closers do not go negative", "]]]]][[", 2],
        ["plain text", "why is the sky blue? (see [1])", 1]
    ];
    for (const [name, text, depth] of table) {
        void it(`${name}: ${depth}`, () => assert.equal(jsonNestingDepth(text), depth));
    }

    void it("measures 1,000,000 levels without recursion, and stops early past the limit", () => {
        const text = nested(1_000_000, "{\"a\":", "}").replace(/\{"a":\}$/, "");
        assert.equal(jsonNestingDepth(nested(1_000_000)), 1_000_000);
        assert.equal(jsonNestingDepth(text, 64), 65);
    });
});

void describe("parseBoundedJson", () => {
    void it("parses JSON within the depth limit", () => {
        assert.deepEqual(parseBoundedJson("{\"a\": [1, {\"b\": null}]}"), {ok: true, value: {a: [1, {b: null}]}});
        const limit = parseBoundedJson(nested(MAX_JSON_DEPTH));
        assert.equal(limit.ok, true);
    });

    void it("refuses text one level deeper than the limit before parsing it", () => {
        assert.deepEqual(parseBoundedJson(nested(MAX_JSON_DEPTH + 1)), {ok: false, problem: "too_deep", depth: MAX_JSON_DEPTH + 1});
        assert.deepEqual(parseBoundedJson(nested(5000)), {ok: false, problem: "too_deep", depth: MAX_JSON_DEPTH + 1});
        assert.deepEqual(parseBoundedJson(nested(4, "{\"k\":", "}"), 3), {ok: false, problem: "too_deep", depth: 4});
    });

    void it("reports a syntax error by position only (V8's message can quote the text)", () => {
        assert.deepEqual(parseBoundedJson("{\"prompt\": 1} SECRET"), {ok: false, problem: "syntax", position: 14});
        assert.deepEqual(parseBoundedJson("{\"prompt\": SECRET}"), {ok: false, problem: "syntax", position: null});
        assert.deepEqual(parseBoundedJson(""), {ok: false, problem: "syntax", position: null});
    });
});

void describe("jsonSchemaLimitProblem", () => {
    const limits = {maxDepth: 4, maxNodes: 10, maxBytes: 100};
    const table: Array<[string, unknown, string | null]> = [
        ["a small schema", {type: "object", properties: {a: {type: "string"}}}, null],
        ["exactly the depth limit", {a: {b: {c: {}}}}, null],
        ["one level deeper", {a: {b: {c: {d: {}}}}}, "is nested more than 4 levels deep; the limit is 4"],
        ["arrays count as levels", {a: [[[[1]]]]}, "is nested more than 4 levels deep; the limit is 4"],
        ["exactly the node limit", {a: [1, 2, 3, 4, 5, 6, 7, 8]}, null],
        ["one node more", {a: [1, 2, 3, 4, 5, 6, 7, 8, 9]}, "has more than 10 values (objects, arrays, strings, numbers…); the limit is 10"],
        ["a long string", {description: "x".repeat(100)}, "is 118 bytes as JSON; the limit is 100 bytes"],
    ];
    for (const [name, schema, expected] of table) {
        void it(`${name} -> ${expected ?? "ok"}`, () => assert.equal(jsonSchemaLimitProblem(schema, limits), expected));
    }
    void it("counts bytes of UTF-8, not characters", () => {
        assert.equal(jsonSchemaLimitProblem({d: "é".repeat(46)}, limits), null, "{\"d\":\"\"} is 8 bytes, + 46 x 2 = 100");
        assert.equal(jsonSchemaLimitProblem({d: "é".repeat(47)}, limits), "is 102 bytes as JSON; the limit is 100 bytes");
    });

    void it("refuses 5,000 levels and a million keys without recursion", () => {
        assert.match(jsonSchemaLimitProblem(deepValue(5000)) ?? "", new RegExp(`nested more than ${JSON_SCHEMA_LIMITS.maxDepth} levels`));
        const wide: Record<string, number> = {};
        for (let i = 0; i < 1_000_000; i++) wide[`k${i}`] = i;
        assert.match(jsonSchemaLimitProblem(wide) ?? "", /more than 2000 values/);
    });

    void it("accepts the defaults' worth of a realistic schema", () => {
        const schema = {type: "object", properties: {state: {enum: ["ON", "OFF"]}, brightness: {type: "integer", minimum: 0, maximum: 254}},
            required: ["state", "brightness"], additionalProperties: false};
        assert.equal(jsonSchemaLimitProblem(schema), null);
    });
});
