// What the job journal keeps of a request, and what it accepts back after a restart (src/jobs/codec.ts).
import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {decodeJob, encodeJob, packText, unpackText} from "../../src/jobs/codec.js";
import type {InferenceRequest} from "../../src/mqtt/protocol.js";

const base: InferenceRequest = {
    id: "job-1", prompt: "Why is the sky blue?", maxTokens: 64, thinking: false, stream: false, timeoutMs: 60_000,
    deadline: 1_800_000_060_000, receivedAt: 1_800_000_000_000, source: "device",
    reply: {topic: "replies/me", via: "response-topic", correlationData: Buffer.from([0, 1, 255])}
};

const roundTrip = (request: InferenceRequest): InferenceRequest | undefined =>
    decodeJob(JSON.parse(JSON.stringify(encodeJob({request, messageHash: "abc"}))) as Record<string, unknown>)?.request;

void describe("job codec", () => {
    void it("reads back every kind of request as it was accepted", () => {
        const {prompt: _prompt, ...withoutPrompt} = base;
        const requests: InferenceRequest[] = [
            base,
            {...withoutPrompt, id: "chat", messages: [{role: "system", content: "terse"}, {role: "user", content: "hi"}],
                temperature: 0.2, topP: 0.9, topK: 10, minP: 0.05, seed: 7, stop: ["\n\n"]},
            {...base, id: "think", thinking: {budget: 12}, stream: true, system: "be brief", jsonSchema: {type: "object", properties: {a: {type: "number"}}}},
            {...base, id: "doorbell-abc-123", source: "route:doorbell",
                reply: {topic: "speaker/front/say", via: "route", route: "doorbell", format: "text", retain: true, qos: 0}}
        ];
        for (const request of requests) assert.deepEqual(roundTrip(request), request, request.id);
    });

    void it("keeps text compact: control bytes as base64 (1.33x, not 6x), ordinary and 4-byte UTF-8 text as readable strings", () => {
        // The journal line's bytes per prompt byte, as the store writes it (JSON.stringify of the encoded record).
        const perByte = (prompt: string): {journal: number; asJson: number} => {
            const request = {...base, prompt};
            const line = (r: Record<string, unknown>): number => Buffer.byteLength(JSON.stringify({op: "accept", key: "k", request: r, at: 0, hash: "h"})) + 1;
            const encoded = encodeJob({request, messageHash: "h"});
            const bytes = Buffer.byteLength(prompt);
            return {journal: line(encoded) / bytes, asJson: line({...encoded, prompt}) / bytes};
        };
        const size = 32 * 1024;
        const control = perByte("\u0001".repeat(size));
        assert.ok(control.asJson > 5.9, `control bytes as a JSON string: ${control.asJson}`);
        assert.ok(control.journal < 1.35, `control bytes journaled: ${control.journal}`);
        const plain = perByte("The kitchen is 21.5 °C; \"comfortable\"?\n".repeat(size / 40));
        assert.ok(plain.journal < 1.12 && plain.journal === plain.asJson, `plain text: ${plain.journal}`);
        const emoji = perByte("\u{1f600}".repeat(size / 4));
        assert.ok(emoji.journal < 1.02 && emoji.journal === emoji.asJson, `4-byte UTF-8: ${emoji.journal}`);

        assert.equal(packText("Why is the sky blue?"), "Why is the sky blue?");
        assert.deepEqual(packText("\u0001\u0002\u0003"), {base64: "AQID"});
        // backslashes and quotes escape to 2 bytes: past 1.5x too
        assert.deepEqual(packText("\\\"\\\""), {base64: Buffer.from("\\\"\\\"").toString("base64")});
        // a lone surrogate has no UTF-8 form: it stays a JSON string, which keeps it exactly
        assert.equal(packText("\u0001\u0001\u0001\ud800"), "\u0001\u0001\u0001\ud800");
    });

    void it("reads back compact text exactly, in every text field", () => {
        const {prompt: _prompt, ...withoutPrompt} = base;
        const odd = "\u0000\u0001\u001f\u007f\u{1f600}\"\\ end";
        const requests: InferenceRequest[] = [
            {...base, prompt: odd.repeat(50), system: "\u0002".repeat(10)},
            {...withoutPrompt, messages: [{role: "system", content: "\u0003".repeat(9)}, {role: "user", content: odd}], stop: ["\u0004\u0005", "plain"]}
        ];
        for (const request of requests) {
            const encoded = JSON.parse(JSON.stringify(encodeJob({request, messageHash: "abc"}))) as Record<string, unknown>;
            assert.ok(JSON.stringify(encoded).includes("\"base64\""), "written compactly");
            assert.deepEqual(decodeJob(encoded)?.request, request);
        }
    });

    void it("refuses compact text it did not write: not base64, not UTF-8, another shape", () => {
        const good = JSON.parse(JSON.stringify(encodeJob({request: {...base, prompt: "\u0001".repeat(20)}, messageHash: "h"}))) as Record<string, unknown>;
        assert.equal(decodeJob(good)?.request.prompt, "\u0001".repeat(20));
        for (const [what, prompt] of [
            ["not base64", {base64: "a*b="}],
            ["bad padding", {base64: "AQI"}],
            ["not UTF-8", {base64: Buffer.from([0xc3, 0x28]).toString("base64")}],
            ["an extra key", {base64: "AQID", more: 1}],
            ["another shape", {text: "AQID"}],
            ["empty", {base64: ""}]
        ] as const) assert.equal(decodeJob({...good, prompt}), null, what);
        assert.equal(unpackText("kept as is"), "kept as is");
    });

    void it("refuses records it did not write: wrong types, unknown reply kinds, bad fields", () => {
        const good = JSON.parse(JSON.stringify(encodeJob({request: base, messageHash: "h"}))) as Record<string, unknown>;
        assert.ok(decodeJob(good));
        const damaged: Array<[string, Record<string, unknown>]> = [
            ["no id", {...good, id: undefined}],
            ["a numeric id", {...good, id: 42}],
            ["an id with a wildcard", {...good, id: "a+b"}],
            ["a deadline that is not a number", {...good, deadline: "soon"}],
            ["an unknown source", {...good, source: "elsewhere"}],
            ["a reply without a topic", {...good, reply: {via: "default"}}],
            ["an unknown reply kind", {...good, reply: {topic: "t", via: "pigeon"}}],
            ["a prompt that is not text", {...good, prompt: 42}],
            ["neither prompt nor messages", {...good, prompt: undefined}],
            ["a negative maxTokens", {...good, maxTokens: -1}],
            ["no stream flag", {...good, stream: undefined}],
            ["a message with a bad role", {...good, prompt: undefined, messages: [{role: "robot", content: "x"}]}]
        ];
        for (const [what, record] of damaged) assert.equal(decodeJob(JSON.parse(JSON.stringify(record)) as Record<string, unknown>), null, what);
    });
});
