/**
 * Issue 15, prefix reuse end to end: the built daemon keeps what its sequences evaluated, so a request that
 * starts like an earlier one (the same system prompt) evaluates only what is new, says so in
 * usage.cachedPromptTokens and in health, never answers differently for it, and with parallel 2 goes to
 * the sequence holding its prefix. Tiny random-weight qwen35 models: their greedy answers depend on every
 * prompt token, so a wrong reuse would show as a different answer.
 */
import assert from "node:assert/strict";
import {after, before, describe, it} from "node:test";
import {Harness} from "../support/harness.js";
import type {Received} from "../support/mqtt-client.js";

type Json = Record<string, unknown>;
interface Usage {promptTokens: number; cachedPromptTokens: number}

/** A system prompt of a few hundred tokens: what a home assistant integration sends with every request. */
function systemPrompt(kind: string): string {
    const lines = Array.from({length: 30}, (_, i) => `- ${kind} device ${i} reports its state every ${5 + (i % 11)} minutes.`);
    return `You are the assistant of a ${kind}. Answer briefly.\nDevices:\n${lines.join("\n")}`;
}

describe("prompt reuse", () => {
    let h: Harness;
    before(async () => {
        h = await Harness.start({prefix: "qe-reuse-", subscribe: ["r/#", "qwen-edge/+/status", "qwen-edge/+/health"]});
    });
    after(() => h?.dispose());

    let n = 0;
    async function ask(device: string, body: Json): Promise<Json> {
        const id = `q${++n}`;
        await h.client.publish(`qwen-edge/${device}/request`, JSON.stringify({id, replyTo: `r/${device}`, maxTokens: 16, temperature: 0, ...body}));
        return (await h.client.waitFor(`reply to ${id}`, (m: Received) => m.topic === `r/${device}` && m.json?.id === id)).json!;
    }

    it("evaluates only what is new when a request starts like an earlier one, and reports it", async () => {
        await h.start({device: "reuse-a", model: "random", args: ["--inference-context-size", "2048"]});
        const system = systemPrompt("home");
        const first = (await ask("reuse-a", {system, prompt: "Is the kitchen light on?"})).usage as Usage;
        const second = (await ask("reuse-a", {system, prompt: "Turn the garage light off."})).usage as Usage;
        assert.equal(first.cachedPromptTokens, 0, "nothing to reuse at first");
        assert.ok(second.cachedPromptTokens >= 0.9 * second.promptTokens,
            `the system prompt is reused: ${second.cachedPromptTokens} of ${second.promptTokens} tokens`);
        const other = (await ask("reuse-a", {system: systemPrompt("greenhouse"), prompt: "Is the kitchen light on?"})).usage as Usage;
        assert.equal(other.cachedPromptTokens, 0, "another system prompt shares a few words, and no checkpoint");
        await h.client.publish("qwen-edge/reuse-a/health/refresh", "", {qos: 0});
        const health = await h.client.waitFor("health counting the reuse", (m) => m.topic === "qwen-edge/reuse-a/health"
            && ((m.json?.inference as {promptCache?: {hits: number}} | undefined)?.promptCache?.hits ?? 0) >= 1);
        const cache = (health.json!.inference as {promptCache: {hits: number; misses: number; reusedTokens: number; checkpointBytes: number}}).promptCache;
        assert.deepEqual({hits: cache.hits, misses: cache.misses}, {hits: 1, misses: 2}, "the first and the other system prompt evaluated all");
        assert.equal(cache.reusedTokens, second.cachedPromptTokens + other.cachedPromptTokens);
        assert.ok(cache.checkpointBytes > 0, "checkpoints are held, and counted");
    });

    it("never changes an answer: the same requests give the same text with reuse on and off", async () => {
        await h.start({device: "reuse-off", model: "random", args: ["--inference-context-size", "2048", "--inference-prompt-checkpoints", "0"]});
        await h.start({device: "reuse-on", model: "random", args: ["--inference-context-size", "2048"]});
        const system = systemPrompt("workshop");
        const prompts = ["What is device 3 doing?", "Summarise the devices.", "Which device reports most often?", "Say hello."];
        for (const prompt of prompts) {
            const cold = await ask("reuse-off", {system, prompt, maxTokens: 24});
            const warm = await ask("reuse-on", {system, prompt, maxTokens: 24});
            assert.equal(warm.text, cold.text, `the same answer to "${prompt}"`);
            assert.equal((cold.usage as Usage).cachedPromptTokens, 0, "reuse off evaluates everything");
        }
        assert.ok(((await ask("reuse-on", {system, prompt: "And now?"})).usage as Usage).cachedPromptTokens > 0, "the warm daemon did reuse");
    });

    it("with parallel 2, sends a request to the sequence that holds its prefix", async () => {
        await h.start({device: "reuse-p", model: "random", args: ["--inference-context-size", "2048", "--inference-parallel", "2"]});
        const home = systemPrompt("home");
        const lab = systemPrompt("laboratory");
        for (const system of [home, lab]) await ask("reuse-p", {system, prompt: "First question?"});
        // the same prefix twice in a row too: the sequence that holds it is then not the least recently used one
        // (node-llama-cpp's own restore estimate sees only a sequence's newest checkpoint; src/inference/sequence-pool.ts)
        for (const system of [home, lab, home, home, lab, lab]) {
            const usage = (await ask("reuse-p", {system, prompt: "Another question?"})).usage as Usage;
            assert.ok(usage.cachedPromptTokens >= 0.9 * usage.promptTokens, `reused ${usage.cachedPromptTokens} of ${usage.promptTokens}`);
        }
    });
});
