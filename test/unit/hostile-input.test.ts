/**
 * Issue 17: intake is total. parseRequest, parseCancel and Router.intake return a result for any
 * payload (random bytes, random JSON, 5,000-level nesting, huge numbers, lone surrogates,
 * noncharacters, NUL, BOM, 1 MB strings), never the `internal` fallback, and whatever they accept
 * can be journaled (JSON.stringify) and answered on a topic a broker takes.
 */
import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {PassThrough} from "node:stream";
import type {WireErrorCode} from "../../src/errors.js";
import {encodeJob} from "../../src/jobs/codec.js";
import {createLogger} from "../../src/log.js";
import {parseCancel, parseRequest, REQUEST_FIELDS, type IncomingMessage, type ProtocolLimits} from "../../src/mqtt/protocol.js";
import {brokerTopicProblem, replyPolicy} from "../../src/mqtt/reply-policy.js";
import {compileRoutes} from "../../src/routes/route.js";
import {Router} from "../../src/routes/router.js";

const limits: ProtocolLimits = {
    maxPayloadBytes: 2 * 1024 * 1024, maxTokensCap: 512, defaultMaxTokens: 64, maxTimeoutMs: 600_000,
    defaultTimeoutMs: 60_000, maxStopSequences: 8, maxIdLength: 128
};
const layout = {response: "qwen-edge/pi/response"};
const SECRET = "SECRET-PROMPT-9312";
const WIRE_CODES: readonly WireErrorCode[] = ["invalid_json", "invalid_request", "invalid_encoding", "payload_too_large"];

/** Seeded, so a failure names a case that can be replayed. */
function prng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

const NASTY_STRINGS = ["", " ", SECRET, "\u0000", "\ufeff", "\ud800", "\udfff", "a\ud800b", "\uffff", "\ufffe", "\ufdd0", "\u{10ffff}", "\u{1fffe}",
    "\u0001\u001f\u007f\u0085", "+", "#", "a/+/b", "a/#", "$SYS/x", "/", "a//b", "qwen-edge/pi/status", "qwen-edge/x/request", "homeassistant/status",
    "home/hall/button", "__proto__", "constructor", "é".repeat(40_000), "x".repeat(70_000), "{{json}}", "\\", "\"", "\n\n"];
const NASTY_NUMBERS = ["1e400", "-1e400", "1" + "0".repeat(5000), "-0", "1e-400", "0.1e-999999", "9007199254740993", "-9007199254740993", "1.5", "NaN"];

function pick<T>(rand: () => number, list: readonly T[]): T {
    return list[Math.floor(rand() * list.length)] as T;
}

/** A random JSON text: the value tree is built as text, so depth costs nothing to make. */
function randomJson(rand: () => number, depth: number): string {
    const r = rand();
    if (depth <= 0 || r < 0.35) {
        const s = rand();
        if (s < 0.3) return JSON.stringify(pick(rand, NASTY_STRINGS));
        if (s < 0.5) return pick(rand, NASTY_NUMBERS.filter((n) => n !== "NaN"));
        if (s < 0.7) return String(Math.floor(rand() * 2000) - 1000);
        return pick(rand, ["true", "false", "null", "\"\\ud800\"", "\"\\u0000\"", "\"\\uffff\"", "[]", "{}"]);
    }
    const n = Math.floor(rand() * 4);
    if (r < 0.65) return `[${Array.from({length: n}, () => randomJson(rand, depth - 1)).join(",")}]`;
    // Keys are echoed in "unknown field" errors by design (64 characters at most), so no SECRET among them.
    const keys = [...REQUEST_FIELDS, ...NASTY_STRINGS.slice(0, 12).filter((k) => k !== SECRET), "role", "content", "budget", "type", "properties"];
    return `{${Array.from({length: n}, () => `${JSON.stringify(pick(rand, keys))}:${randomJson(rand, depth - 1)}`).join(",")}}`;
}

/** A request-shaped object: every field present sometimes, each with a right or a wrong value. */
function randomRequest(rand: () => number): string {
    const good: Record<string, () => string> = {
        id: () => JSON.stringify(pick(rand, ["q1", "x".repeat(128), "\ud800", "a+b"])),
        prompt: () => JSON.stringify(pick(rand, [SECRET, " ", "\ud800" + SECRET])),
        messages: () => `[{"role":"user","content":${JSON.stringify(SECRET)}}]`,
        // a reply topic is named in errors by design (where an error went instead), like keys: no SECRET
        replyTo: () => JSON.stringify(pick(rand, NASTY_STRINGS.filter((v) => v !== SECRET))),
        jsonSchema: () => rand() < 0.3 ? "[".repeat(5000) + "]".repeat(5000) : `{"type":"object","properties":${randomJson(rand, 6)}}`,
        maxTokens: () => pick(rand, [...NASTY_NUMBERS.filter((n) => n !== "NaN"), "1", "512", "513"]),
        stop: () => `[${randomJson(rand, 1)}]`,
        thinking: () => pick(rand, ["true", "{\"budget\":5}", "{\"budget\":1e400}", "[[[]]]"])
    };
    const parts = REQUEST_FIELDS.filter(() => rand() < 0.4).map((key) => `${JSON.stringify(key)}:${(good[key] ?? (() => randomJson(rand, 3)))()}`);
    if (!parts.some((p) => p.startsWith("\"prompt\"")) && rand() < 0.7) parts.push(`"prompt":${JSON.stringify(SECRET)}`);
    return `{${parts.join(",")}}`;
}

function randomBytes(rand: () => number): Buffer {
    return Buffer.from(Array.from({length: Math.floor(rand() * 200)}, () => Math.floor(rand() * 256)));
}

/** Hand-written payloads a fuzzer is unlikely to find. */
function adversarial(): Array<[string, Buffer]> {
    const deep = (n: number, open: string, close: string): string => open.repeat(n) + close.repeat(n);
    const text = (s: string): Buffer => Buffer.from(s, "utf8");
    return [
        ["5,000 nested arrays", text(deep(5000, "[", "]"))],
        ["5,000 nested objects", text(deep(5000, "{\"a\":", "}").replace(/:\}/, ":1}"))],
        ["a request whose jsonSchema is 5,000 levels deep", text(`{"prompt":"${SECRET}","jsonSchema":${deep(5000, "{\"a\":", "}").replace(/:\}/, ":1}")}}`)],
        ["a jsonSchema 40 levels deep (within the payload depth)", text(`{"prompt":"${SECRET}","jsonSchema":${deep(40, "{\"a\":", "}").replace(/:\}/, ":1}")}}`)],
        ["messages 5,000 deep", text(`{"messages":${deep(5000, "[", "]")}}`)],
        ["a 1 MB prompt", text(JSON.stringify({prompt: SECRET + "x".repeat(1024 * 1024)}))],
        ["a 1 MB plain prompt of brackets", text("[".repeat(1024 * 1024))],
        ["a 1 MB string of quotes and backslashes", text(`{"prompt":"${"\\\"".repeat(300_000)}"}`)],
        ["a BOM before JSON", Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), text(`{"prompt":"${SECRET}"}`)])],
        ["a lone surrogate as raw bytes", Buffer.from([0x7b, 0x22, 0x70, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d])],
        ["escaped lone surrogates everywhere", text(`{"id":"\\ud800","prompt":"\\udc00${SECRET}","replyTo":"a/\\ud800","stop":["\\ud800"]}`)],
        ["a noncharacter reply topic", text(`{"prompt":"${SECRET}","replyTo":"a/\\uffff"}`)],
        ["NUL everywhere", text(`{"id":"a\\u0000","prompt":"\\u0000${SECRET}","replyTo":"a\\u0000b"}`)],
        ["huge numbers", text(`{"prompt":"${SECRET}","maxTokens":1e400,"temperature":-1e400,"seed":${"9".repeat(400)},"topK":1e-400}`)],
        ["__proto__ keys", text(`{"__proto__":{"prompt":"x"},"prompt":"${SECRET}","constructor":1}`)],
        ["an unterminated string", text(`{"prompt":"${SECRET}`)],
        ["only whitespace", text(" \n\t ")],
        ["a JSON string of a JSON object", text(JSON.stringify(JSON.stringify({prompt: SECRET})))]
    ];
}

function checkRequest(name: string, msg: IncomingMessage, withPolicy: boolean): void {
    const policy = withPolicy ? replyPolicy({base: "qwen-edge", response: layout.response, discoveryPrefix: "homeassistant",
        routes: [{name: "r", topic: "home/+/button"}], allow: []}) : null;
    const r = parseRequest(msg, layout, limits, {policy, maximumPacketSize: withPolicy ? 4096 : undefined});
    if (!r.ok) {
        assert.ok(WIRE_CODES.includes(r.error.code), `${name}: unexpected code ${r.error.code}: ${r.error.message}`);
        assert.ok(!r.error.message.includes(SECRET), `${name}: the error quotes the prompt: ${r.error.message.slice(0, 300)}`);
    } else {
        // What the daemon does next: journal it as one JSON line.
        assert.doesNotThrow(() => JSON.stringify(encodeJob({request: r.request, messageHash: "h"})), `${name}: cannot be journaled`);
    }
    const reply = r.ok ? r.request.reply : r.reply;
    assert.equal(brokerTopicProblem(reply.topic, {maximumPacketSize: withPolicy ? 4096 : undefined}), null, `${name}: reply topic a broker refuses`);
}

void describe("parseRequest and parseCancel never throw", () => {
    void it("on 3,000 random payloads (bytes, JSON, request-shaped), with and without a reply policy", () => {
        const rand = prng(17);
        for (let i = 0; i < 3000; i++) {
            const kind = i % 3;
            const payload = kind === 0 ? randomBytes(rand) : Buffer.from(kind === 1 ? randomJson(rand, 8) : randomRequest(rand), "utf8");
            const msg: IncomingMessage = {topic: "qwen-edge/pi/request", payload, receivedAt: 1_700_000_000_000, source: "device",
                // The error names the topic it is sent to: the client's own choice, but not a prompt, so no SECRET here.
                ...(rand() < 0.2 ? {responseTopic: pick(rand, NASTY_STRINGS.filter((t) => t !== SECRET))} : {}),
                ...(rand() < 0.2 ? {correlationData: randomBytes(rand)} : {}),
                ...(rand() < 0.2 ? {messageExpirySeconds: pick(rand, [Number.NaN, -1, Infinity, 1e308, 0, 5])} : {})};
            checkRequest(`case ${i} (seed 17)`, msg, i % 2 === 0);
            const cancel = parseCancel(payload.subarray(0, 4096));
            if (!cancel.ok) assert.ok(WIRE_CODES.includes(cancel.error.code), `cancel case ${i}: ${cancel.error.code}`);
        }
    });

    for (const [name, payload] of adversarial()) {
        void it(`on ${name}`, () => {
            for (const withPolicy of [false, true]) {
                checkRequest(name, {topic: "qwen-edge/pi/request", payload, receivedAt: 1, source: "device", responseTopic: "a/\uffff",
                    correlationData: Buffer.alloc(70_000)}, withPolicy);
            }
            const cancel = parseCancel(payload);
            assert.equal(typeof cancel.ok, "boolean");
        });
    }

    void it("refuses a 5,000-level jsonSchema and a 5,000-level payload with invalid_request naming the limit", () => {
        const schema = "{\"a\":".repeat(5000) + "1" + "}".repeat(5000);
        const r = parseRequest({topic: "t", payload: Buffer.from(`{"id":"deep","prompt":"hi","jsonSchema":${schema}}`), receivedAt: 1, source: "device"},
            layout, limits);
        assert.ok(!r.ok);
        assert.equal(r.error.code, "invalid_request");
        assert.match(r.error.message, /nested more than 64 levels deep \(arrays and objects\); the limit is 64/);
        assert.equal(r.id, null, "the id cannot be read from a payload that is not parsed");
        const shallow = "{\"a\":".repeat(40) + "1" + "}".repeat(40);
        const s = parseRequest({topic: "t", payload: Buffer.from(`{"id":"deep","prompt":"hi","jsonSchema":${shallow}}`), receivedAt: 1, source: "device"},
            layout, limits);
        assert.ok(!s.ok);
        assert.deepEqual([s.error.code, s.error.details.field, s.id], ["invalid_request", "jsonSchema", "deep"]);
        assert.match(s.error.message, /^jsonSchema is nested more than 32 levels deep; the limit is 32$/);
        const cancel = parseCancel(Buffer.from("{\"id\":" + "[".repeat(2000) + "]".repeat(2000) + "}"));
        assert.ok(!cancel.ok);
        assert.equal(cancel.error.code, "invalid_json");
    });
});

void describe("Router.intake never throws", () => {
    const {routes, problems} = compileRoutes([
        {name: "text", topic: "home/+/temperature", prompt: "{{topic.1}}: {{payload}}", reply: {topic: "home/{{topic.1}}/summary", retain: true}},
        {name: "whole", topic: "dump/+", payload: "json", prompt: "Summarize {{json}}", reply: {topic: "dump/{{topic.1}}/out", format: "json"},
            onInvalid: "reply-error", maxPerMinute: 0},
        {name: "field", topic: "btn/+", payload: "json", filter: [{path: "a.0.b", matches: "^x"}], prompt: "{{json.a}} {{json.a.0.b}}",
            reply: {topic: "lights/{{json.room}}/set", format: "json"}, onInvalid: "reply-error", maxPerMinute: 0}
    ]);
    assert.deepEqual(problems, []);
    const stream = new PassThrough();
    let logText = "";
    stream.on("data", (d: Buffer) => { logText += d.toString(); });
    const router = new Router({log: createLogger("debug", stream), routes, device: "pi", limits,
        replyPolicy: replyPolicy({base: "qwen-edge", response: layout.response, discoveryPrefix: "homeassistant", routes, allow: []}),
        maximumPacketSize: () => 4096});

    void it("on random and adversarial payloads through text, {{json}} and JSON-path routes", () => {
        const rand = prng(4242);
        const payloads = [...adversarial().map(([, p]) => p), ...Array.from({length: 1500}, (_, i) =>
            i % 3 === 0 ? randomBytes(rand) : Buffer.from(i % 3 === 1 ? randomJson(rand, 8) : `{"room":${randomJson(rand, 1)},"a":[{"b":${randomJson(rand, 2)}}]}`))];
        let n = 0;
        for (const payload of payloads) {
            for (const topic of ["home/k/temperature", "dump/x", "btn/hall"]) {
                const r = router.intake({topic, payload, receivedAt: 1_700_000_000_000 + n++});
                assert.notEqual(r, null, "a route topic is always a route's");
                if (r === null || r === "dropped") continue;
                assert.equal(brokerTopicProblem(r.parsed.ok ? r.parsed.request.reply.topic : r.parsed.reply.topic), null);
                if (r.parsed.ok) JSON.stringify(encodeJob({request: r.parsed.request, messageHash: "h"}));
                else assert.ok(WIRE_CODES.includes(r.parsed.error.code), r.parsed.error.code);
            }
        }
        assert.doesNotMatch(logText, /intake failed/, "no payload reached the catch-all");
        assert.ok(!logText.includes(SECRET), "no payload text in the log");
    });

    void it("answers a 5,000-level payload on a {{json}} route with invalid_request, and still routes the next message", () => {
        const deep = Buffer.from("[".repeat(5000) + "]".repeat(5000));
        const r = router.intake({topic: "dump/deep", payload: deep, receivedAt: 1});
        assert.ok(r !== null && r !== "dropped" && !r.parsed.ok);
        assert.equal(r.parsed.error.code, "invalid_request");
        assert.match(r.parsed.error.message, /nested more than 64 levels deep \(arrays and objects\); the limit is 64/);
        const next = router.intake({topic: "dump/deep", payload: Buffer.from("{\"a\": [1, 2]}"), receivedAt: 2});
        assert.ok(next !== null && next !== "dropped" && next.parsed.ok);
        assert.equal(next.parsed.request.prompt, "Summarize {\"a\":[1,2]}");
    });
});
