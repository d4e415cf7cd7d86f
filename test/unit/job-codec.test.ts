// What the job journal keeps of a request, and what it accepts back after a restart (src/jobs/codec.ts).
import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {decodeJob, encodeJob} from "../../src/jobs/codec.js";
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
