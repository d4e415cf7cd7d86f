/**
 * Issue 20, client tools end to end: the built daemon, a real Mosquitto, and tiny qwen35 models made by
 * the project's generator to call a given tool with given arguments (src/testing/scripted-chain.ts). A call
 * comes back as finishReason "tool_calls" with parsed arguments; the client continues with the results, as
 * messages or in a conversation, and the history renders as it was evaluated (the continuation reuses it);
 * a model that tries a tool the request did not define never produces that call; bad tool fields are refused
 * naming the field.
 */
import assert from "node:assert/strict";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {writeTinyQwen35} from "../../src/testing/tiny-qwen35.js";
import {Harness} from "../support/harness.js";
import type {Received} from "../support/mqtt-client.js";

type Json = Record<string, unknown>;
interface Call {id: string; name: string; arguments: Json}
interface Usage {promptTokens: number; cachedPromptTokens: number; completionTokens: number}

const ARGS = {room: "kitchen", state: "off"};
const SET_LIGHT = {name: "set_light", description: "Switch a light on or off",
    parameters: {type: "object", properties: {room: {type: "string"}, state: {enum: ["on", "off"]}}, required: ["room", "state"]}};
const UNLOCK = {name: "unlock_door", description: "Unlock a door", parameters: {type: "object", properties: {door: {type: "string"}}, required: ["door"]}};

describe("client tools", () => {
    let h: Harness;
    before(async () => {
        h = await Harness.start({prefix: "qe-tools-", subscribe: ["t/#", "qwen-edge/+/status"]});
        const setLight = (await writeTinyQwen35(join(h.dir, "set-light.gguf"), {kind: "tool-call", toolCall: {name: "set_light", args: ARGS}})).path;
        const unlock = (await writeTinyQwen35(join(h.dir, "unlock.gguf"), {kind: "tool-call", toolCall: {name: "unlock_door", args: {door: "front"}}})).path;
        await h.start({device: "tools-a", modelPath: setLight, args: ["--inference-context-size", "2048"]});
        await h.start({device: "tools-b", modelPath: unlock, args: ["--inference-context-size", "2048"]});
    });
    after(() => h?.dispose());

    let n = 0;
    async function ask(device: string, body: Json): Promise<{reply: Json; chunks: Json[]}> {
        const id = `c${++n}`;
        // a conversation is kept per reply topic: its turns share one
        const topic = typeof body.conversation === "string" ? `t/${device}/conversation-${body.conversation}` : `t/${device}/${id}`;
        await h.client.publish(`qwen-edge/${device}/request`, JSON.stringify({id, replyTo: topic, maxTokens: 120, temperature: 0, ...body}));
        const reply = (await h.client.waitFor(`final reply to ${id}`, (m: Received) => m.topic === topic && m.json?.id === id && m.json.status !== "streaming")).json!;
        const chunks = h.client.received.filter((m) => m.topic === topic && m.json?.status === "streaming").map((m) => m.json!);
        return {reply, chunks};
    }

    it("returns the model's call with its arguments parsed, finishReason tool_calls, also when streaming", async () => {
        for (const stream of [false, true]) {
            const {reply, chunks} = await ask("tools-a", {prompt: "Turn off the kitchen light.", tools: [SET_LIGHT], stream});
            assert.equal(reply.status, "ok", JSON.stringify(reply));
            assert.equal(reply.finishReason, "tool_calls");
            const calls = reply.toolCalls as Call[];
            assert.equal(calls.length, 1);
            assert.deepEqual({name: calls[0]!.name, arguments: calls[0]!.arguments}, {name: "set_light", arguments: ARGS});
            assert.match(calls[0]!.id, /^call-[0-9a-f]{12}$/);
            assert.ok(!String(reply.text).includes("set_light") && !String(reply.text).includes("<tool_call>"), "the call is not text");
            assert.ok((reply.usage as Usage).completionTokens > 0);
            if (stream) assert.ok(chunks.every((c) => !JSON.stringify(c).includes("set_light")), "streamed text never carries the call");
        }
    });

    it("continues with the results sent as messages, reusing the evaluated history through the call", async () => {
        const first = (await ask("tools-a", {system: "You switch lights.", prompt: "Turn off the kitchen light.", tools: [SET_LIGHT]})).reply;
        const call = (first.toolCalls as Call[])[0]!;
        const {reply} = await ask("tools-a", {system: "You switch lights.", tools: [SET_LIGHT], messages: [
            {role: "user", content: "Turn off the kitchen light."},
            {role: "assistant", content: first.text, toolCalls: [call]},
            {role: "tool", toolCallId: call.id, content: "the kitchen light is off"}]});
        assert.equal(reply.status, "ok", JSON.stringify(reply));
        // this model knows one move: given the result, it calls again; what matters is the history it was given
        assert.equal(reply.finishReason, "tool_calls");
        const [u1, u2] = [first.usage as Usage, reply.usage as Usage];
        assert.ok(u2.promptTokens > u1.promptTokens + u1.completionTokens - 2, `the call and its result are in the prompt: ${u2.promptTokens} vs ${u1.promptTokens}`);
        assert.ok(u2.cachedPromptTokens >= u1.promptTokens,
            `the call re-renders as it was generated, so it is reused: ${u2.cachedPromptTokens} of ${u2.promptTokens} (first prompt ${u1.promptTokens})`);
    });

    it("in a conversation: the next request brings the results, and the order is enforced", async () => {
        const first = (await ask("tools-a", {conversation: "lights", prompt: "Turn off the kitchen light.", tools: [SET_LIGHT]})).reply;
        assert.deepEqual([first.finishReason, (first.conversation as Json).turns], ["tool_calls", 1]);
        const call = (first.toolCalls as Call[])[0]!;
        const early = (await ask("tools-a", {conversation: "lights", prompt: "And the hall?", tools: [SET_LIGHT]})).reply;
        assert.equal((early.error as Json).code, "invalid_request", JSON.stringify(early));
        assert.match(String((early.error as Json).message), /waits for the results of its tool calls .*toolResults/);
        const wrong = (await ask("tools-a", {conversation: "lights", toolResults: [{toolCallId: "call-000000000000", content: "x"}], tools: [SET_LIGHT]})).reply;
        assert.match(String((wrong.error as Json).message), /must answer exactly the calls/);
        const next = (await ask("tools-a", {conversation: "lights", toolResults: [{toolCallId: call.id, content: "done"}], tools: [SET_LIGHT]})).reply;
        assert.equal(next.status, "ok", JSON.stringify(next));
        assert.equal((next.conversation as Json).turns, 2);
        assert.ok((next.usage as Usage).cachedPromptTokens >= (first.usage as Usage).promptTokens, JSON.stringify(next.usage));
    });

    it("never returns a call to a tool the request did not define", async () => {
        // this model calls unlock_door; offered only set_light, the call grammar admits nothing else
        const {reply} = await ask("tools-b", {prompt: "Open the front door.", tools: [SET_LIGHT]});
        assert.equal(reply.status, "ok", JSON.stringify(reply));
        for (const call of (reply.toolCalls as Call[] | undefined) ?? []) {
            assert.equal(call.name, "set_light");
            assert.ok(typeof call.arguments.room === "string" && ["on", "off"].includes(call.arguments.state as string), JSON.stringify(call));
        }
        const both = (await ask("tools-b", {prompt: "Open the front door.", tools: [SET_LIGHT, UNLOCK]})).reply;
        assert.deepEqual((both.toolCalls as Call[]).map((c) => [c.name, c.arguments]), [["unlock_door", {door: "front"}]]);
        // without tools nothing is parsed as a call
        const none = (await ask("tools-b", {prompt: "Open the front door."})).reply;
        assert.deepEqual([none.finishReason, none.toolCalls], ["stop", undefined]);
    });

    it("refuses bad tool fields, naming the field", async () => {
        const cases: Array<[Json, string, RegExp]> = [
            [{prompt: "x", tools: [{name: "a b"}]}, "tools[0].name", /tools\[0\]\.name must be/],
            [{prompt: "x", tools: [SET_LIGHT, SET_LIGHT]}, "tools[1].name", /defined twice/],
            [{prompt: "x", tools: [{name: "t", parameters: {type: "string"}}]}, "tools[0].parameters", /type "object"/],
            [{prompt: "x", tools: [SET_LIGHT], jsonSchema: {type: "object"}}, "jsonSchema", /cannot be combined with tools/],
            [{messages: [{role: "user", content: "x"}, {role: "tool", toolCallId: "call-1", content: "r"}]}, "messages[1].toolCallId", /did not make/],
            [{messages: [{role: "user", content: "x"}, {role: "assistant", content: "", toolCalls: [{id: "c1", name: "set_light", arguments: {}}]}]},
                "messages[1]", /add a "tool" message/],
            [{messages: [{role: "user", content: "x"}, {role: "user", content: "y", toolCallId: "c1"}]}, "messages[1].toolCallId", /unknown field/],
            [{prompt: "x", toolResults: [{toolCallId: "c1", content: "r"}]}, "toolResults", /continue a conversation/]
        ];
        for (const [body, field, message] of cases) {
            const {reply} = await ask("tools-a", body);
            const error = reply.error as Json | undefined;
            assert.equal(error?.code, "invalid_request", `${JSON.stringify(body)}: ${JSON.stringify(reply)}`);
            assert.equal(error.field, field, JSON.stringify(error));
            assert.match(String(error.message), message);
        }
    });
});
