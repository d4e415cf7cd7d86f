/**
 * Issue 15, conversations end to end: the built daemon, a real Mosquitto, a tiny real qwen35 GGUF.
 * A client sends only its new prompt; the device keeps the turns (per reply topic), the next turn
 * reuses the evaluated history, and a turn answers exactly what the whole history sent as `messages`
 * answers. Conversations stay apart, outlive a restart as text, end on request, and refuse what they
 * cannot do with the numbers. A route can make each source topic one conversation.
 */
import assert from "node:assert/strict";
import {writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {Harness} from "../support/harness.js";
import type {Received} from "../support/mqtt-client.js";

type Json = Record<string, unknown>;
interface Usage {promptTokens: number; cachedPromptTokens: number; completionTokens: number}
interface Conversation {id: string; turns: number; tokens: number; ended?: boolean}

const CONTEXT = ["--inference-context-size", "1024"];

describe("conversations", () => {
    let h: Harness;
    before(async () => {
        h = await Harness.start({prefix: "qe-conv-", subscribe: ["c/#", "qwen-edge/+/status", "qwen-edge/+/health", "house/+/answer"]});
    });
    after(() => h?.dispose());

    let n = 0;
    async function ask(device: string, body: Json, replyTo = `c/${device}`): Promise<Json> {
        const id = `t${++n}`;
        await h.client.publish(`qwen-edge/${device}/request`, JSON.stringify({id, replyTo, maxTokens: 12, temperature: 0, ...body}));
        return (await h.client.waitFor(`reply to ${id} on ${replyTo}`, (m: Received) => m.topic === replyTo && m.json?.id === id)).json!;
    }
    const usage = (reply: Json): Usage => reply.usage as Usage;
    const conversation = (reply: Json): Conversation => reply.conversation as Conversation;

    it("keeps the turns: each turn sends only its prompt, reuses the evaluated history, and answers as the whole history would", async () => {
        await h.start({device: "conv-a", model: "random", args: CONTEXT});
        await h.start({device: "conv-ref", model: "random", args: [...CONTEXT, "--inference-prompt-checkpoints", "0"]});
        const system = "You watch the sensors of a small greenhouse and answer in one short sentence.";
        const prompts = ["How warm is it?", "And the humidity?", "Should the window open?"];
        const history: Json[] = [];
        let previous: Usage | null = null;
        for (const [i, prompt] of prompts.entries()) {
            const reply = await ask("conv-a", {conversation: "greenhouse", system, prompt});
            assert.equal(reply.status, "ok", JSON.stringify(reply));
            assert.deepEqual({id: conversation(reply).id, turns: conversation(reply).turns}, {id: "greenhouse", turns: i + 1});
            const u = usage(reply);
            assert.equal(conversation(reply).tokens, u.promptTokens + u.completionTokens, "the history's tokens: this turn's prompt and answer");
            if (previous) {
                assert.ok(u.promptTokens > previous.promptTokens + previous.completionTokens - 2, "the prompt carries the earlier turns");
                // At least the previous turn's prompt (node-llama-cpp checkpoints it as generation starts): this random
                // model's answers are token sequences that text re-tokenizes differently, so reuse may stop where
                // the answer starts; a trained model's answers re-tokenize as generated (the real-scale bench).
                assert.ok(u.cachedPromptTokens >= previous.promptTokens - 2,
                    `turn ${i + 1} reuses at least the previous prompt: ${u.cachedPromptTokens} of ${u.promptTokens} (previous prompt ${previous.promptTokens})`);
            } else assert.equal(u.cachedPromptTokens, 0);
            // the same history sent whole, to a device that keeps nothing: the same tokens, the same answer
            const reference = await ask("conv-ref", {system, messages: [...history, {role: "user", content: prompt}]});
            assert.equal(usage(reference).promptTokens, u.promptTokens, `turn ${i + 1}: the conversation renders as the whole history does`);
            assert.equal(reply.text, reference.text, `turn ${i + 1}: the same answer`);
            history.push({role: "user", content: prompt}, {role: "assistant", content: reply.text});
            previous = u;
        }
    });

    it("never mixes conversations: another name, another reply topic or no conversation starts from nothing", async () => {
        await h.start({device: "conv-b", model: "random", args: CONTEXT});
        const fresh = usage(await ask("conv-b", {prompt: "Is the door locked?"}));
        await ask("conv-b", {conversation: "door", prompt: "Is the door locked?"});
        await ask("conv-b", {conversation: "door", prompt: "Lock it."});
        const other = await ask("conv-b", {conversation: "garage", prompt: "Is the door locked?"});
        const elsewhere = await ask("conv-b", {conversation: "door", prompt: "Is the door locked?"}, "c/conv-b/other-client");
        const none = await ask("conv-b", {prompt: "Is the door locked?"});
        for (const [what, reply] of [["another name", other], ["another reply topic", elsewhere], ["no conversation", none]] as const) {
            assert.equal(usage(reply).promptTokens, fresh.promptTokens, `${what}: the prompt alone`);
        }
        assert.deepEqual([conversation(other).turns, conversation(elsewhere).turns, none.conversation], [1, 1, undefined]);
    });

    it("refuses messages with a conversation, and a history that no longer fits, with the numbers and what to do", async () => {
        await h.start({device: "conv-c", model: "random", args: ["--inference-context-size", "512"]});
        const both = await ask("conv-c", {conversation: "k", messages: [{role: "user", content: "hi"}]});
        assert.deepEqual([both.status, (both.error as Json).code, ((both.error as Json).details as Json | undefined)?.field ?? (both.error as Json).field],
            ["error", "invalid_request", "messages"], JSON.stringify(both));
        const long = "Describe every sensor reading of the last hour in detail, one by one, with its unit and its trend. ".repeat(3);
        let turns = 0;
        let refused: Json | null = null;
        for (let i = 0; i < 20 && refused === null; i++) {
            const reply = await ask("conv-c", {conversation: "long", prompt: long, maxTokens: 48});
            if (reply.status === "ok") turns++;
            else refused = reply;
        }
        assert.ok(refused, "the conversation grew past the context");
        const error = refused.error as {code: string; message: string; [k: string]: unknown};
        assert.equal(error.code, "exceed_context_size", JSON.stringify(refused));
        const details = (error.details ?? error) as Json;
        assert.equal(details.turns, turns);
        assert.equal(details.contextSize, 512);
        assert.equal(details.maxTokens, 48);
        assert.ok((details.promptTokens as number) + 48 > 512);
        assert.match(error.message, /conversation long no longer fits: its \d+ turns and this prompt come to \d+ tokens.*endConversation/);
        // the refused turn is not kept; the conversation still works with less to generate
        assert.equal(conversation(await ask("conv-c", {conversation: "long", prompt: "Short?", maxTokens: 1})).turns, turns + 1);
    });

    it("ends a conversation on request, and a later turn of that name starts afresh", async () => {
        await h.start({device: "conv-d", model: "random", args: CONTEXT});
        await ask("conv-d", {conversation: "c", prompt: "One."});
        await ask("conv-d", {conversation: "c", prompt: "Two."});
        const ended = await ask("conv-d", {conversation: "c", endConversation: true});
        assert.deepEqual(ended, {id: ended.id, status: "ok", conversation: {id: "c", turns: 2, tokens: conversation(ended).tokens, ended: true}, device: "conv-d"});
        const again = await ask("conv-d", {conversation: "c", prompt: "One."});
        assert.equal(conversation(again).turns, 1);
        const last = await ask("conv-d", {conversation: "c", prompt: "Two.", endConversation: true});
        assert.deepEqual(conversation(last), {id: "c", turns: 1, tokens: conversation(again).tokens, ended: true}, "answered, then ended");
        assert.equal(conversation(await ask("conv-d", {conversation: "c", prompt: "Three."})).turns, 1);
    });

    it("keeps conversations across a restart, as text evaluated again at the next turn", async () => {
        const stateDir = join(h.dir, "state-restart");
        const first = await h.start({device: "conv-e", model: "random", args: CONTEXT, stateDir});
        const t1 = await ask("conv-e", {conversation: "kept", prompt: "Remember the number seven."});
        await first.term();
        await h.start({device: "conv-e", model: "random", args: CONTEXT, stateDir});
        const t2 = await ask("conv-e", {conversation: "kept", prompt: "Which number?"});
        assert.equal(conversation(t2).turns, 2);
        assert.equal(usage(t2).cachedPromptTokens, 0, "nothing evaluated survives a restart");
        assert.ok(usage(t2).promptTokens > usage(t1).promptTokens + usage(t1).completionTokens - 2, "the first turn is in the prompt");
    });

    it("a route can make each source topic one conversation", async () => {
        const config = join(h.dir, "conv-routes.yaml");
        await writeFile(config, [
            "routes:",
            "  - name: house",
            "    topic: house/+/say",
            "    prompt: \"{{payload}}\"",
            "    conversation: \"room-{{topic.1}}\"",
            "    maxTokens: 8",
            "    reply:",
            "      topic: house/{{topic.1}}/answer",
            "      format: json",
            ""].join("\n"));
        await h.start({device: "conv-f", model: "random", args: [...CONTEXT, "--config", config]});
        const say = async (room: string, text: string): Promise<Json> => {
            const since = Date.now();
            await h.client.publish(`house/${room}/say`, text);
            return (await h.client.waitFor(`the answer on house/${room}/answer`, (m) => m.topic === `house/${room}/answer` && m.at >= since)).json!;
        };
        assert.deepEqual(conversation(await say("kitchen", "Lights on.")), {id: "room-kitchen", turns: 1, tokens: conversation(await say("hall", "Hello.")).tokens === 0 ? -1 : conversation((await h.client.waitFor("kitchen", (m) => m.topic === "house/kitchen/answer")).json!).tokens});
    });
});
