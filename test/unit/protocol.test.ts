import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {RequestError, type WireErrorCode} from "../../src/errors.js";
import {
    chunkReply, errorReply, okReply, parseCancel, parseRequest, requestJsonSchema, REQUEST_FIELDS, REQUEST_JSON_SCHEMA,
    type IncomingMessage, type ParseResult, type ProtocolLimits
} from "../../src/mqtt/protocol.js";

const limits: ProtocolLimits = {
    maxPayloadBytes: 1024, maxTokensCap: 2048, defaultMaxTokens: 256, maxTimeoutMs: 600_000,
    defaultTimeoutMs: 120_000, maxStopSequences: 4, maxIdLength: 64
};
const layout = {response: "qwen-edge/dev/response"};
const NOW = 1_700_000_000_000;
/** Put in prompts and contents of bad requests: no error message may ever contain it. */
const SECRET = "SECRET-PROMPT-7731";

function message(payload: string | Buffer | object, extra: Partial<IncomingMessage> = {}): IncomingMessage {
    const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(typeof payload === "string" ? payload : JSON.stringify(payload), "utf8");
    return {topic: "qwen-edge/dev/request", payload: bytes, receivedAt: NOW, source: "device", ...extra};
}

function parse(payload: string | Buffer | object, extra: Partial<IncomingMessage> = {}): ParseResult {
    return parseRequest(message(payload, extra), layout, limits);
}

function expectOk(result: ParseResult): Extract<ParseResult, {ok: true}>["request"] {
    if (!result.ok)
        assert.fail(`expected a request, got ${result.error.code}: ${result.error.message}`);
    return result.request;
}

function expectError(result: ParseResult): Extract<ParseResult, {ok: false}> {
    if (result.ok)
        assert.fail(`expected an error, got request ${result.request.id}`);
    return result;
}

void describe("parseRequest: bad input", () => {
    interface BadCase { name: string; payload: string | Buffer | object; code: WireErrorCode; field?: string; id?: string | null; message?: RegExp }
    const p = {prompt: SECRET};
    const table: BadCase[] = [
        {name: "payload over the limit", payload: "a".repeat(1025), code: "payload_too_large", message: /1025 bytes; the limit is 1024 bytes/},
        {name: "huge JSON request, before it is read", payload: {id: "big", prompt: "x".repeat(2000)}, code: "payload_too_large", id: null},
        {name: "huge invalid UTF-8, size checked first", payload: Buffer.alloc(2000, 0xff), code: "payload_too_large"},
        {name: "invalid UTF-8 byte", payload: Buffer.from([0x68, 0xff, 0x69]), code: "invalid_encoding"},
        {name: "overlong UTF-8", payload: Buffer.from([0xc0, 0xaf]), code: "invalid_encoding"},
        {name: "UTF-8 encoded surrogate", payload: Buffer.from([0xed, 0xa0, 0x80]), code: "invalid_encoding"},
        {name: "truncated UTF-8 sequence", payload: Buffer.from([0x7b, 0xe2, 0x82]), code: "invalid_encoding"},
        {name: "unterminated JSON", payload: `{"id": "j1", "prompt": "${SECRET}"`, code: "invalid_json", id: null},
        {name: "JSON with unquoted keys", payload: `{prompt: "${SECRET}"}`, code: "invalid_json", message: /^payload starts with "\{" but is not valid JSON \(error at character 1\)$/},
        {name: "JSON with trailing text", payload: `{"prompt": "${SECRET}"} and more`, code: "invalid_json"},
        {name: "JSON after whitespace", payload: `  \n{"prompt": }`, code: "invalid_json"},
        {name: "JSON array", payload: `[{"prompt": "${SECRET}"}]`, code: "invalid_request"},
        {name: "empty payload", payload: "", code: "invalid_request", field: "prompt"},
        {name: "whitespace-only text", payload: " \n\t ", code: "invalid_request", field: "prompt"},
        {name: "empty JSON string", payload: "\"  \"", code: "invalid_request", field: "prompt"},
        {name: "unknown field", payload: {...p, id: "j1", foo: 1}, code: "invalid_request", field: "foo", id: "j1", message: /unknown field "foo"; allowed: id, prompt/},
        {name: "snake_case field", payload: {...p, max_tokens: 5}, code: "invalid_request", field: "max_tokens", message: /"max_tokens" \(did you mean "maxTokens"\?\)/},
        {name: "several unknown fields", payload: {...p, a: 1, b: 2}, code: "invalid_request", field: "a", message: /unknown fields "a", "b"/},
        {name: "wildcard + in id", payload: {...p, id: "job+1"}, code: "invalid_request", field: "id", id: "job+1", message: /id must not contain "\+"/},
        {name: "wildcard # in id", payload: {...p, id: "job#1"}, code: "invalid_request", field: "id", id: "job#1"},
        {name: "NUL in id", payload: {...p, id: "job\u00001"}, code: "invalid_request", field: "id"},
        {name: "newline in id", payload: {...p, id: "job\n1"}, code: "invalid_request", field: "id"},
        {name: "numeric id", payload: {...p, id: 5}, code: "invalid_request", field: "id", id: null, message: /id must be a string \(got 5\)/},
        {name: "empty id", payload: {...p, id: ""}, code: "invalid_request", field: "id", id: null},
        {name: "over-long id", payload: {...p, id: "x".repeat(65)}, code: "invalid_request", field: "id", id: null, message: /1 to 64 characters \(got 65\)/},
        {name: "wildcard + in replyTo", payload: {...p, id: "j", replyTo: "a/+/b"}, code: "invalid_request", field: "replyTo", id: "j", message: /replyTo contains the wildcard "\+"/},
        {name: "wildcard # in replyTo", payload: {...p, replyTo: "a/#"}, code: "invalid_request", field: "replyTo"},
        {name: "NUL in replyTo", payload: {...p, replyTo: "a\u0000b"}, code: "invalid_request", field: "replyTo", message: /NUL/},
        {name: "$ replyTo", payload: {...p, replyTo: "$SYS/x"}, code: "invalid_request", field: "replyTo"},
        {name: "empty-level replyTo", payload: {...p, replyTo: "a//b"}, code: "invalid_request", field: "replyTo"},
        {name: "non-string replyTo", payload: {...p, replyTo: 3}, code: "invalid_request", field: "replyTo"},
        {name: "negative maxTokens", payload: {...p, maxTokens: -1}, code: "invalid_request", field: "maxTokens", message: /^maxTokens must be an integer from 1 to 2048 \(got -1\)$/},
        {name: "zero maxTokens", payload: {...p, maxTokens: 0}, code: "invalid_request", field: "maxTokens", message: /^maxTokens must be an integer from 1 to 2048 \(got 0\)$/},
        {name: "maxTokens over the cap", payload: {...p, maxTokens: 2049}, code: "invalid_request", field: "maxTokens", message: /\(got 2049\)/},
        {name: "huge maxTokens", payload: `{"prompt": "x", "maxTokens": 1e999}`, code: "invalid_request", field: "maxTokens", message: /\(got Infinity\)/},
        {name: "fractional maxTokens", payload: {...p, maxTokens: 1.5}, code: "invalid_request", field: "maxTokens"},
        {name: "string maxTokens", payload: {...p, maxTokens: "100"}, code: "invalid_request", field: "maxTokens", message: /got a string of 3 characters/},
        {name: "both prompt and messages", payload: {...p, messages: [{role: "user", content: SECRET}]}, code: "invalid_request", field: "prompt", message: /either prompt or messages, not both/},
        {name: "neither prompt nor messages", payload: {id: "j", maxTokens: 5}, code: "invalid_request", field: "prompt", id: "j"},
        {name: "empty prompt", payload: {prompt: ""}, code: "invalid_request", field: "prompt"},
        {name: "whitespace prompt", payload: {prompt: "  \n"}, code: "invalid_request", field: "prompt"},
        {name: "prompt not a string", payload: {prompt: ["x"]}, code: "invalid_request", field: "prompt"},
        {name: "messages not an array", payload: {messages: SECRET}, code: "invalid_request", field: "messages"},
        {name: "empty messages", payload: {messages: []}, code: "invalid_request", field: "messages"},
        {name: "message not an object", payload: {messages: [SECRET]}, code: "invalid_request", field: "messages[0]"},
        {name: "role with capital", payload: {messages: [{role: "User", content: SECRET}]}, code: "invalid_request", field: "messages[0].role", message: /one of system, user, assistant, tool \(got "User"\)/},
        {name: "tool message without the call it answers", payload: {messages: [{role: "tool", content: SECRET}]}, code: "invalid_request", field: "messages[0].toolCallId"},
        {name: "long text as role", payload: {messages: [{role: `${SECRET} please`, content: "x"}]}, code: "invalid_request", field: "messages[0].role"},
        {name: "missing role", payload: {messages: [{content: SECRET}]}, code: "invalid_request", field: "messages[0].role", message: /got nothing/},
        {name: "content not a string", payload: {messages: [{role: "user", content: 5}]}, code: "invalid_request", field: "messages[0].content"},
        {name: "extra key in a message", payload: {messages: [{role: "user", content: SECRET, name: "bob"}]}, code: "invalid_request", field: "messages[0].name"},
        {name: "last message from assistant", payload: {messages: [{role: "user", content: SECRET}, {role: "assistant", content: SECRET}]}, code: "invalid_request", field: "messages[1].role"},
        {name: "empty last user message", payload: {messages: [{role: "user", content: " "}]}, code: "invalid_request", field: "messages[0].content"},
        {name: "system message not first", payload: {messages: [{role: "user", content: SECRET}, {role: "system", content: SECRET}, {role: "user", content: SECRET}]}, code: "invalid_request", field: "messages[1].role"},
        {name: "system twice", payload: {system: SECRET, messages: [{role: "system", content: SECRET}, {role: "user", content: SECRET}]}, code: "invalid_request", field: "system"},
        {name: "system not a string", payload: {...p, system: 1}, code: "invalid_request", field: "system"},
        {name: "negative temperature", payload: {...p, temperature: -0.1}, code: "invalid_request", field: "temperature", message: /temperature must be a number from 0 to 2 \(got -0.1\)/},
        {name: "temperature over 2", payload: {...p, temperature: 2.5}, code: "invalid_request", field: "temperature"},
        {name: "string temperature", payload: {...p, temperature: "hot"}, code: "invalid_request", field: "temperature"},
        {name: "zero topP", payload: {...p, topP: 0}, code: "invalid_request", field: "topP", message: /topP must be a number greater than 0 and at most 1 \(got 0\)/},
        {name: "topP over 1", payload: {...p, topP: 1.01}, code: "invalid_request", field: "topP"},
        {name: "negative topK", payload: {...p, topK: -1}, code: "invalid_request", field: "topK", message: /topK must be an integer of at least 0 \(got -1\)/},
        {name: "fractional topK", payload: {...p, topK: 2.5}, code: "invalid_request", field: "topK"},
        {name: "minP over 1", payload: {...p, minP: 1.5}, code: "invalid_request", field: "minP"},
        {name: "negative seed", payload: {...p, seed: -1}, code: "invalid_request", field: "seed"},
        {name: "seed over 2^32-1", payload: {...p, seed: 2 ** 32}, code: "invalid_request", field: "seed", message: /from 0 to 4294967295/},
        {name: "stop as a string", payload: {...p, stop: "\n"}, code: "invalid_request", field: "stop"},
        {name: "empty stop array", payload: {...p, stop: []}, code: "invalid_request", field: "stop", message: /got 0 entries/},
        {name: "too many stops", payload: {...p, stop: ["a", "b", "c", "d", "e"]}, code: "invalid_request", field: "stop", message: /1 to 4 non-empty strings/},
        {name: "empty stop string", payload: {...p, stop: ["a", ""]}, code: "invalid_request", field: "stop[1]"},
        {name: "over-long stop string", payload: {...p, stop: ["x".repeat(65)]}, code: "invalid_request", field: "stop[0]"},
        {name: "non-string stop", payload: {...p, stop: [1]}, code: "invalid_request", field: "stop[0]"},
        {name: "jsonSchema an array", payload: {...p, jsonSchema: []}, code: "invalid_request", field: "jsonSchema"},
        {name: "jsonSchema a string", payload: {...p, jsonSchema: "{}"}, code: "invalid_request", field: "jsonSchema"},
        {name: "thinking a string", payload: {...p, thinking: "yes"}, code: "invalid_request", field: "thinking"},
        {name: "thinking without budget", payload: {...p, thinking: {}}, code: "invalid_request", field: "thinking.budget"},
        {name: "negative thinking budget", payload: {...p, thinking: {budget: -1}}, code: "invalid_request", field: "thinking.budget"},
        {name: "thinking budget over the cap", payload: {...p, thinking: {budget: 5000}}, code: "invalid_request", field: "thinking.budget"},
        {name: "unknown key in thinking", payload: {...p, thinking: {budget: 5, effort: "high"}}, code: "invalid_request", field: "thinking.effort"},
        {name: "stream a string", payload: {...p, stream: "true"}, code: "invalid_request", field: "stream", message: /stream must be true or false/},
        {name: "zero timeoutMs", payload: {...p, timeoutMs: 0}, code: "invalid_request", field: "timeoutMs"},
        {name: "timeoutMs over the cap", payload: {...p, timeoutMs: 600_001}, code: "invalid_request", field: "timeoutMs", message: /from 1 to 600000/}
    ];

    for (const c of table) {
        void it(`${c.name} -> ${c.code}`, () => {
            const result = expectError(parse(c.payload));
            assert.ok(result.error instanceof RequestError);
            assert.equal(result.error.code, c.code);
            if (c.field !== undefined)
                assert.equal(result.error.details.field, c.field);
            if (c.id !== undefined)
                assert.equal(result.id, c.id);
            if (c.message !== undefined)
                assert.match(result.error.message, c.message);
            assert.ok(!result.error.message.includes(SECRET), `message leaks prompt text: ${result.error.message}`);
            assert.deepEqual(result.reply, {topic: layout.response, via: "default"});
        });
    }

    void it("echoes the id of an otherwise bad JSON object", () => {
        const result = expectError(parse({id: "job-9", prompt: "x", maxTokens: 0}));
        assert.equal(result.id, "job-9");
        assert.deepEqual(errorReply(result.id, result.error), {
            id: "job-9", status: "error",
            error: {code: "invalid_request", message: "maxTokens must be an integer from 1 to 2048 (got 0)", field: "maxTokens"}
        });
    });

    void it("accepts a payload of exactly maxPayloadBytes", () => {
        expectOk(parse("a".repeat(1024)));
    });
});

void describe("parseRequest: valid requests", () => {
    void it("reads every field", () => {
        const request = expectOk(parse({
            id: "job-1", prompt: "text", system: "be brief", maxTokens: 100, temperature: 0.7, topP: 0.8, topK: 20, minP: 0,
            seed: 1, stop: ["\n\n"], jsonSchema: {type: "object"}, thinking: {budget: 64}, stream: true, timeoutMs: 60_000,
            replyTo: "clients/7/answers"
        }, {source: "fleet"}));
        assert.deepEqual(request, {
            id: "job-1", prompt: "text", system: "be brief", maxTokens: 100, temperature: 0.7, topP: 0.8, topK: 20, minP: 0,
            seed: 1, stop: ["\n\n"], jsonSchema: {type: "object"}, thinking: {budget: 64}, stream: true, timeoutMs: 60_000,
            deadline: NOW + 60_000, reply: {topic: "clients/7/answers", via: "replyTo"}, receivedAt: NOW, source: "fleet"
        });
    });

    void it("applies defaults and leaves absent optionals absent", () => {
        const request = expectOk(parse({prompt: "hi"}));
        assert.match(request.id, /^req-[0-9a-z]+-[0-9a-f]{12}$/);
        assert.deepEqual({...request, id: "x"}, {
            id: "x", prompt: "hi", maxTokens: 256, thinking: false, stream: false, timeoutMs: 120_000,
            deadline: NOW + 120_000, reply: {topic: layout.response, via: "default"}, receivedAt: NOW, source: "device"
        });
    });

    void it("treats null as absent", () => {
        const request = expectOk(parse({id: null, prompt: "hi", temperature: null, messages: null, thinking: null, replyTo: null}));
        assert.equal("temperature" in request, false);
        assert.equal(request.thinking, false);
        assert.equal(request.reply.via, "default");
    });

    void it("reads a conversation with a leading system message", () => {
        const messages = [
            {role: "system", content: "terse"}, {role: "user", content: "hi"}, {role: "assistant", content: ""}, {role: "user", content: "again"}
        ];
        const request = expectOk(parse({messages, thinking: true}));
        assert.deepEqual(request.messages, messages);
        assert.equal(request.prompt, undefined);
        assert.equal(request.thinking, true);
    });

    void it("generates distinct ids", () => {
        assert.notEqual(expectOk(parse("a")).id, expectOk(parse("a")).id);
    });

    const plain: [string, string, string][] = [
        ["plain text, kept as is", "What is MQTT?\n", "What is MQTT?\n"],
        ["text that starts like an array", "[1] why is the sky blue", "[1] why is the sky blue"],
        ["text with quotes", "\"quoted\" words", "\"quoted\" words"],
        ["a number", "42", "42"],
        ["a JSON literal word", "true", "true"],
        ["a JSON string literal, decoded", "\"tell me \\\"more\\\"\"", "tell me \"more\""],
        ["UTF-8 text", "Was ist 2+2? 日本語 🙂", "Was ist 2+2? 日本語 🙂"]
    ];
    for (const [name, payload, prompt] of plain) {
        void it(`takes ${name} as the prompt`, () => {
            const request = expectOk(parse(payload));
            assert.equal(request.prompt, prompt);
            assert.equal(request.maxTokens, 256);
            assert.equal(request.stream, false);
            assert.match(request.id, /^req-/);
        });
    }

    void it("ignores a UTF-8 byte order mark before JSON", () => {
        const request = expectOk(parse(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("{\"id\":\"b\",\"prompt\":\"x\"}")])));
        assert.equal(request.id, "b");
    });
});

void describe("parseRequest: reply topic and correlation", () => {
    const correlationData = Buffer.from([0x00, 0xff, 0x10, 0x80]);

    void it("prefers the MQTT v5 Response Topic over replyTo and echoes the same correlation bytes", () => {
        const request = expectOk(parse({prompt: "x", replyTo: "b/c"}, {responseTopic: "a/reply", correlationData}));
        assert.equal(request.reply.topic, "a/reply");
        assert.equal(request.reply.via, "response-topic");
        assert.deepEqual(request.reply.correlationData, Buffer.from([0x00, 0xff, 0x10, 0x80]));
    });

    void it("uses replyTo without a Response Topic, and the default without either", () => {
        assert.deepEqual(expectOk(parse({prompt: "x", replyTo: "b/c"})).reply, {topic: "b/c", via: "replyTo"});
        assert.deepEqual(expectOk(parse("plain")).reply, {topic: layout.response, via: "default"});
    });

    void it("echoes correlation data on the default topic too", () => {
        const reply = expectOk(parse("plain", {correlationData})).reply;
        assert.equal(reply.via, "default");
        assert.deepEqual(reply.correlationData, correlationData);
    });

    const invalidResponseTopics: [string, RegExp][] = [
        ["a/+/reply", /the MQTT Response Topic contains the wildcard "\+"/],
        ["a/#", /wildcard "#"/],
        ["a\u0000b", /NUL/],
        ["", /is empty/]
    ];
    for (const [responseTopic, why] of invalidResponseTopics) {
        void it(`refuses the Response Topic ${JSON.stringify(responseTopic)} and says why, on the default topic`, () => {
            const result = expectError(parse({id: "j", prompt: "x"}, {responseTopic, correlationData}));
            assert.equal(result.error.code, "invalid_request");
            assert.equal(result.error.details.field, "responseTopic");
            assert.match(result.error.message, why);
            assert.match(result.error.message, /sent to qwen-edge\/dev\/response instead/);
            assert.equal(result.id, "j");
            assert.deepEqual(result.reply, {topic: layout.response, via: "default", correlationData});
        });
    }

    void it("sends the error about a bad Response Topic to a valid replyTo", () => {
        const result = expectError(parse({prompt: "x", replyTo: "b/c"}, {responseTopic: "a/+"}));
        assert.deepEqual(result.reply, {topic: "b/c", via: "replyTo"});
    });

    void it("refuses a bad Response Topic on a plain-text request too", () => {
        const result = expectError(parse("hello", {responseTopic: "#"}));
        assert.equal(result.error.details.field, "responseTopic");
        assert.equal(result.id, null);
    });

    void it("sends the error about a bad replyTo to a valid Response Topic", () => {
        const result = expectError(parse({prompt: "x", replyTo: "b/#"}, {responseTopic: "a/reply", correlationData}));
        assert.equal(result.error.details.field, "replyTo");
        assert.deepEqual(result.reply, {topic: "a/reply", via: "response-topic", correlationData});
    });

    void it("keeps the reply target for errors found before the JSON is read", () => {
        const tooLarge = expectError(parse("a".repeat(2000), {responseTopic: "a/reply", correlationData}));
        assert.equal(tooLarge.error.code, "payload_too_large");
        assert.deepEqual(tooLarge.reply, {topic: "a/reply", via: "response-topic", correlationData});
    });
});

void describe("parseRequest: deadline", () => {
    const table: [string, object, number | undefined, number][] = [
        ["default timeout", {prompt: "x"}, undefined, NOW + 120_000],
        ["asked timeout", {prompt: "x", timeoutMs: 5000}, undefined, NOW + 5000],
        ["expiry shorter than the timeout", {prompt: "x"}, 10, NOW + 10_000],
        ["expiry longer than the timeout", {prompt: "x", timeoutMs: 5000}, 1000, NOW + 5000],
        ["expired on arrival", {prompt: "x"}, 0, NOW]
    ];
    for (const [name, payload, messageExpirySeconds, deadline] of table) {
        void it(name, () => {
            const request = expectOk(parse(payload, messageExpirySeconds === undefined ? {} : {messageExpirySeconds}));
            assert.equal(request.deadline, deadline);
        });
    }

    void it("shortens a plain-text request's deadline by the expiry too", () => {
        assert.equal(expectOk(parse("hello", {messageExpirySeconds: 3})).deadline, NOW + 3000);
    });
});

void describe("parseCancel", () => {
    const ok: [string, string][] = [
        ["{\"id\": \"job-1\"}", "job-1"],
        ["  {\"id\":\"job-1\"}\n", "job-1"],
        ["job-1\n", "job-1"]
    ];
    for (const [payload, id] of ok) {
        void it(`${JSON.stringify(payload)} cancels ${id}`, () => {
            assert.deepEqual(parseCancel(Buffer.from(payload)), {ok: true, id});
        });
    }

    const bad: [string, Buffer, WireErrorCode][] = [
        ["malformed JSON", Buffer.from("{\"id\": "), "invalid_json"],
        ["JSON without id", Buffer.from("{}"), "invalid_request"],
        ["extra field", Buffer.from("{\"id\":\"a\",\"why\":1}"), "invalid_request"],
        ["numeric id", Buffer.from("{\"id\": 3}"), "invalid_request"],
        ["wildcard id", Buffer.from("{\"id\": \"a/#\"}"), "invalid_request"],
        ["empty payload", Buffer.from(""), "invalid_request"],
        ["invalid UTF-8", Buffer.from([0xff]), "invalid_encoding"],
        ["too large", Buffer.alloc(5000, 0x61), "payload_too_large"]
    ];
    for (const [name, payload, code] of bad) {
        void it(`${name} -> ${code}`, () => {
            const result = parseCancel(payload);
            assert.equal(result.ok, false);
            if (!result.ok)
                assert.equal(result.error.code, code);
        });
    }
});

void describe("reply shapes", () => {
    const base = {
        id: "job-1", text: "Hello", finishReason: "stop" as const,
        usage: {promptTokens: 12, completionTokens: 40, thinkingTokens: 9, cachedPromptTokens: 5},
        timing: {queueMs: 1.4, ttftMs: 80.2, totalMs: 900.6, tokensPerSecond: 48.2345},
        model: "Qwen3.5-2B-Q4_K_M", device: "pi-kitchen"
    };

    void it("ok reply: contract fields in order, times rounded, survives JSON", () => {
        const reply = okReply({...base, thinking: "hmm", json: {a: 1}});
        assert.deepEqual(Object.keys(reply), ["id", "status", "text", "thinking", "json", "finishReason", "usage", "timing", "model", "device"]);
        assert.deepEqual(JSON.parse(JSON.stringify(reply)), {
            id: "job-1", status: "ok", text: "Hello", thinking: "hmm", json: {a: 1}, finishReason: "stop",
            usage: {promptTokens: 12, completionTokens: 40, thinkingTokens: 9, cachedPromptTokens: 5},
            timing: {queueMs: 1, ttftMs: 80, totalMs: 901, tokensPerSecond: 48.2},
            model: "Qwen3.5-2B-Q4_K_M", device: "pi-kitchen"
        });
    });

    void it("ok reply: no thinking or json keys when absent, json null kept, ttft null kept", () => {
        const plain = okReply({...base, timing: {...base.timing, ttftMs: null}});
        assert.equal("thinking" in plain, false);
        assert.equal("json" in plain, false);
        assert.equal(plain.timing.ttftMs, null);
        assert.deepEqual(okReply({...base, json: null}).json, null);
        assert.equal("json" in okReply({...base, json: null}), true);
    });

    void it("chunk reply: answer text in delta, thought text in thinkingDelta", () => {
        assert.deepEqual(chunkReply("job-1", 0, "Hel"), {id: "job-1", status: "streaming", seq: 0, delta: "Hel"});
        assert.deepEqual(chunkReply("job-1", 3, "hmm", "thinking"), {id: "job-1", status: "streaming", seq: 3, thinkingDelta: "hmm"});
    });

    void it("error reply: code, message and details; id may be null", () => {
        const full = new RequestError("queue_full", "the queue is full (32 requests)", {retryAfterMs: 1500});
        assert.deepEqual(errorReply("job-1", full, {model: "m", device: "d"}), {
            id: "job-1", status: "error", error: {code: "queue_full", message: "the queue is full (32 requests)", retryAfterMs: 1500},
            model: "m", device: "d"
        });
        assert.deepEqual(errorReply(null, new RequestError("invalid_json", "bad")), {id: null, status: "error", error: {code: "invalid_json", message: "bad"}});
    });

    void it("error reply: details cannot overwrite code or message", () => {
        const err = new RequestError("internal", "oops", {code: "ok", message: "fine", at: "engine"});
        assert.deepEqual(errorReply("j", err).error, {code: "internal", message: "oops", at: "engine"});
    });
});

void describe("request JSON schema", () => {
    void it("describes exactly the fields the parser accepts", () => {
        const schema = REQUEST_JSON_SCHEMA as {$schema: string; properties: Record<string, unknown>; additionalProperties: boolean};
        assert.equal(schema.$schema, "https://json-schema.org/draft/2020-12/schema");
        assert.deepEqual(Object.keys(schema.properties).sort(), [...REQUEST_FIELDS].sort());
        assert.equal(schema.additionalProperties, false);
    });

    void it("fills in the configured limits", () => {
        const schema = requestJsonSchema(limits) as {properties: {maxTokens: {maximum: number; default: number}; stop: {maxItems: number}; id: {maxLength: number}}};
        assert.equal(schema.properties.maxTokens.maximum, 2048);
        assert.equal(schema.properties.maxTokens.default, 256);
        assert.equal(schema.properties.stop.maxItems, 4);
        assert.equal(schema.properties.id.maxLength, 64);
        assert.doesNotThrow(() => JSON.stringify(schema));
    });
});
