/**
 * Issue 4, end to end: every request feature against the real daemon, a real Mosquitto and real
 * qwen35 models ("scripted" answers a fixed text; "endless" never emits an end token).
 */
import assert from "node:assert/strict";
import {after, before, describe, it} from "node:test";
import type {DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import type {Received, TestClient} from "../support/mqtt-client.js";
import {SCRIPTED_ANSWER} from "../support/models.js";

type Json = Record<string, unknown>;

/** A broker, the daemon of `device` on a tiny model of `kind`, and a client watching its topics and r/{device}/#. */
async function setup(device: string, kind: "scripted" | "endless", args: string[]): Promise<{
    daemon: DaemonProcess; client: TestClient; base: string; dispose: () => Promise<void>;
}> {
    const base = `qwen-edge/${device}`;
    const h = await Harness.start({prefix: "qe-proto-", subscribe: [`${base}/#`, `r/${device}/#`]});
    const daemon = await h.start({device, model: kind, args});
    return {daemon, client: h.client, base, dispose: () => h.dispose()};
}

const finalFor = (topic: string) => (m: Received): boolean => m.topic === topic && m.json?.status !== "streaming";

describe("request features (scripted model)", () => {
    let s: Awaited<ReturnType<typeof setup>>;
    before(async () => {
        s = await setup("proto-a", "scripted", ["--inference-max-queue", "32"]);
    });
    after(async () => s?.dispose());

    const ask = async (id: string, body: Json): Promise<Json> => {
        await s.client.publish(`${s.base}/request`, JSON.stringify({id, replyTo: `r/proto-a/${id}`, ...body}));
        return (await s.client.waitFor(`final reply ${id}`, finalFor(`r/proto-a/${id}`))).json!;
    };

    it("takes multi-turn messages with a system message", async () => {
        const reply = await ask("chat-1", {messages: [
            {role: "system", content: "You are terse."}, {role: "user", content: "Hi"},
            {role: "assistant", content: "Hello."}, {role: "user", content: "And now?"}
        ]});
        assert.equal(reply.status, "ok");
        assert.equal(reply.text, SCRIPTED_ANSWER);
        const usage = reply.usage as {promptTokens: number};
        const single = await ask("chat-2", {prompt: "And now?", system: "You are terse."});
        assert.ok(usage.promptTokens > (single.usage as {promptTokens: number}).promptTokens, "earlier turns are in the prompt");
    });

    it("constrains the answer with a JSON schema and returns the parsed json", async () => {
        const reply = await ask("json-1", {prompt: "Is it on?", maxTokens: 64,
            jsonSchema: {type: "object", properties: {answer: {enum: ["yes", "no"]}}, required: ["answer"]}});
        assert.equal(reply.status, "ok", JSON.stringify(reply));
        const json = reply.json as {answer?: string};
        assert.ok(json && (json.answer === "yes" || json.answer === "no"), JSON.stringify(reply));
        assert.deepEqual(JSON.parse(String(reply.text)), json);
    });

    it("returns thought text apart from the answer when thinking has a budget", async () => {
        const reply = await ask("think-1", {prompt: "Think first", thinking: {budget: 4}, maxTokens: 64});
        assert.equal(reply.status, "ok", JSON.stringify(reply));
        assert.equal(typeof reply.thinking, "string");
        assert.ok(String(reply.thinking).length > 0, "thought text present");
        assert.ok(!String(reply.text).includes("<think>"), "no think tags in the answer");
        const off = await ask("think-0", {prompt: "Think first", thinking: false});
        assert.equal(off.thinking, undefined);
        assert.equal(off.text, SCRIPTED_ANSWER);
    });

    it("streams thoughts as thinkingDelta apart from the answer's delta", async () => {
        const reply = await ask("think-stream", {prompt: "Think first", thinking: {budget: 4}, maxTokens: 64, stream: true});
        const chunks = s.client.received.filter((m) => m.topic === "r/proto-a/think-stream" && m.json?.status === "streaming");
        assert.deepEqual(chunks.map((c) => c.json?.seq), chunks.map((_, i) => i));
        assert.equal(chunks.map((c) => (c.json?.thinkingDelta as string | undefined) ?? "").join(""), reply.thinking);
        assert.equal(chunks.map((c) => (c.json?.delta as string | undefined) ?? "").join(""), reply.text);
    });

    it("answers exceed_context_size with both numbers", async () => {
        const reply = await ask("ctx-1", {prompt: "word ".repeat(900), maxTokens: 600});
        assert.equal(reply.status, "error");
        const error = reply.error as {code: string; promptTokens: number; maxTokens: number; message: string};
        assert.equal(error.code, "exceed_context_size");
        assert.equal(error.maxTokens, 600);
        assert.ok(error.promptTokens > 400, error.message);
        assert.match(error.message, /600/);
    });

    it("answers an id seen again without running it twice: the same request gets its answer again, another gets duplicate_id", async () => {
        const body = JSON.stringify({id: "dup-1", prompt: "once", replyTo: "r/proto-a/dup-1"});
        await s.client.publish(`${s.base}/request`, body);
        const first = await s.client.waitFor("answer to dup-1", finalFor("r/proto-a/dup-1"));
        assert.equal(first.json?.status, "ok");
        await s.client.publish(`${s.base}/request`, body);
        const [, again] = await s.client.waitForCount("the answer to dup-1 sent again", finalFor("r/proto-a/dup-1"), 2);
        assert.deepEqual(again!.json, first.json, "the kept answer, not a new generation");
        await s.client.publish(`${s.base}/request`, JSON.stringify({id: "dup-1", prompt: "something else", replyTo: "r/proto-a/dup-1"}));
        const replies = await s.client.waitForCount("duplicate_id for another request under dup-1", finalFor("r/proto-a/dup-1"), 3);
        const error = replies[2]!.json?.error as {code: string; message: string};
        assert.equal(error.code, "duplicate_id");
        assert.match(error.message, /^id dup-1 was used by another request at .+; ids are remembered for 60 minutes on each reply topic: use a new id$/);
        assert.equal(s.daemon.logs.filter((l) => l.message === "request done" && l.id === "dup-1").length, 1, "generated once");
        // the same id on another reply topic is another request
        await s.client.publish(`${s.base}/request`, JSON.stringify({id: "dup-1", prompt: "once", replyTo: "r/proto-a/dup-1-other"}));
        assert.equal((await s.client.waitFor("dup-1 on its own reply topic", finalFor("r/proto-a/dup-1-other"))).json?.status, "ok");
    });

    it("serves the fleet queue through the shared subscription", async () => {
        await s.client.publish("qwen-edge/fleet/request", JSON.stringify({id: "fleet-1", prompt: "anyone?", replyTo: "r/proto-a/fleet-1"}));
        const reply = await s.client.waitFor("fleet reply", finalFor("r/proto-a/fleet-1"));
        assert.equal(reply.json?.text, SCRIPTED_ANSWER);
    });

    it("answers a burst of 200 with exactly 200 replies, each ok or queue_full", async () => {
        const ids = Array.from({length: 200}, (_, i) => `burst-${i}`);
        await Promise.all(ids.map((id) => s.client.publish(`${s.base}/request`, JSON.stringify({id, prompt: "go", replyTo: "r/proto-a/burst"}))));
        const replies = await s.client.waitForCount("200 burst replies", finalFor("r/proto-a/burst"), 200, 120_000);
        await new Promise((r) => setTimeout(r, 500));
        const all = s.client.received.filter(finalFor("r/proto-a/burst"));
        assert.equal(all.length, 200);
        assert.equal(new Set(all.map((m) => m.json?.id)).size, 200, "one reply per request");
        const full = replies.filter((m) => (m.json?.error as {code?: string} | undefined)?.code === "queue_full");
        const ok = replies.filter((m) => m.json?.status === "ok");
        assert.equal(ok.length + full.length, 200);
        assert.ok(full.length > 0, "the queue of 32 overflowed");
        for (const m of full) assert.ok(Number((m.json?.error as Json).retryAfterMs) > 0);
    });
});

describe("streaming, cancel, deadlines, queue (endless model)", () => {
    let s: Awaited<ReturnType<typeof setup>>;
    before(async () => {
        s = await setup("proto-b", "endless", ["--inference-context-size", "4096", "--inference-max-queue", "2",
            "--inference-stream-interval-ms", "20"]);
    });
    after(async () => s?.dispose());
    const send = (id: string, body: Json, props = {}): Promise<void> =>
        s.client.publish(`${s.base}/request`, JSON.stringify({id, replyTo: `r/proto-b/${id}`, ...body}), props);
    const firstChunk = (id: string): Promise<Received> =>
        s.client.waitFor(`first streamed chunk of ${id}`, (m) => m.topic === `r/proto-b/${id}` && m.json?.status === "streaming");
    const final = (id: string, timeoutMs = 30_000): Promise<Received> => s.client.waitFor(`final reply ${id}`, finalFor(`r/proto-b/${id}`), timeoutMs);

    it("streams chunks in order whose deltas join to the final text", async () => {
        await send("stream-1", {prompt: "go on", maxTokens: 300, stream: true});
        const reply = await final("stream-1");
        const chunks = s.client.received.filter((m) => m.topic === "r/proto-b/stream-1" && m.json?.status === "streaming");
        assert.ok(chunks.length >= 2, `got ${chunks.length} chunks`);
        assert.deepEqual(chunks.map((c) => c.json?.seq), chunks.map((_, i) => i));
        assert.equal(chunks.map((c) => c.json?.delta).join(""), reply.json?.text);
        assert.equal(reply.json?.finishReason, "length");
        assert.equal((reply.json?.usage as {completionTokens: number}).completionTokens, 300);
        assert.ok(s.client.received.indexOf(chunks.at(-1)!) < s.client.received.indexOf(reply), "chunks precede the final reply");
    });

    it("counts every generated token: length means maxTokens, thoughts included and also reported apart", async () => {
        await send("usage-think", {prompt: "go on", maxTokens: 40, thinking: {budget: 12}});
        const reply = (await final("usage-think")).json!;
        const usage = reply.usage as {completionTokens: number; thinkingTokens: number};
        assert.equal(reply.finishReason, "length");
        assert.equal(usage.completionTokens, 40, "thoughts and answer together");
        assert.ok(usage.thinkingTokens > 0 && usage.thinkingTokens < 40, `thinkingTokens ${usage.thinkingTokens}`);
        assert.ok(String(reply.thinking).length > 0);
        const timing = reply.timing as {ttftMs: number; totalMs: number; tokensPerSecond: number};
        const expected = 39 / ((timing.totalMs - timing.ttftMs) / 1000);
        assert.ok(Math.abs(timing.tokensPerSecond - expected) <= 0.05 * expected + 0.1, `${JSON.stringify(timing)} vs ${expected}`);
        await send("usage-plain", {prompt: "go on", maxTokens: 25});
        const plain = (await final("usage-plain")).json!.usage as {completionTokens: number; thinkingTokens: number};
        assert.deepEqual({completion: plain.completionTokens, thinking: plain.thinkingTokens}, {completion: 25, thinking: 0});
    });

    it("cancels a queued request and a running one", async () => {
        await send("long-1", {prompt: "go", maxTokens: 2000, stream: true});
        await firstChunk("long-1");
        await send("queued-1", {prompt: "wait", maxTokens: 10});
        await s.daemon.waitForLog("queued-1 accepted", (l) => l.message === "request accepted" && l.id === "queued-1");
        await s.client.publish(`${s.base}/cancel`, JSON.stringify({id: "queued-1"}));
        const queued = await final("queued-1");
        assert.equal((queued.json?.error as {code: string}).code, "cancelled");
        await s.client.publish(`${s.base}/cancel`, "long-1");
        const running = await final("long-1");
        assert.equal(running.json?.status, "ok");
        assert.equal(running.json?.finishReason, "cancelled");
        const tokens = (running.json?.usage as {completionTokens: number}).completionTokens;
        assert.ok(tokens > 0 && tokens < 2000, `stopped early after ${tokens} tokens`);
    });

    it("answers timeout without running when the deadline or the MQTT message expiry passes in the queue", async () => {
        await send("long-2", {prompt: "go", maxTokens: 2000, stream: true});
        await firstChunk("long-2");
        await send("short-deadline", {prompt: "late", timeoutMs: 200});
        await send("expiring", {prompt: "late"}, {properties: {messageExpiryInterval: 1}});
        const a = await final("short-deadline");
        const b = await final("expiring");
        assert.equal((a.json?.error as {code: string}).code, "timeout");
        assert.equal((b.json?.error as {code: string}).code, "timeout");
        await s.client.publish(`${s.base}/cancel`, "long-2");
        await final("long-2");
    });

    it("stops a running request at its deadline with finishReason timeout", async () => {
        await send("deadline-run", {prompt: "go", maxTokens: 2000, stream: true, timeoutMs: 600});
        const reply = await final("deadline-run");
        assert.equal(reply.json?.finishReason, "timeout");
    });

    it("refuses with queue_full at the bound, one reply per request", async () => {
        await send("hold", {prompt: "go", maxTokens: 2000, stream: true});
        await firstChunk("hold");
        for (const id of ["q1", "q2", "q3", "q4"]) await send(id, {prompt: "x", maxTokens: 5});
        const q3 = await final("q3");
        const q4 = await final("q4");
        assert.equal((q3.json?.error as {code: string}).code, "queue_full");
        assert.equal((q4.json?.error as {code: string}).code, "queue_full");
        await s.client.publish(`${s.base}/cancel`, "hold");
        for (const id of ["q1", "q2"]) assert.equal((await final(id)).json?.status, "ok");
        for (const id of ["hold", "q1", "q2", "q3", "q4"])
            assert.equal(s.client.received.filter(finalFor(`r/proto-b/${id}`)).length, 1, `one reply for ${id}`);
    });
});

describe("parallel sequences", () => {
    let s: Awaited<ReturnType<typeof setup>>;
    before(async () => {
        s = await setup("proto-c", "endless", ["--inference-parallel", "2", "--inference-context-size", "2048"]);
    });
    after(async () => s?.dispose());

    it("runs two requests at the same time", async () => {
        for (const id of ["p1", "p2"])
            await s.client.publish(`${s.base}/request`, JSON.stringify({id, prompt: "go", maxTokens: 800, stream: true, replyTo: `r/proto-c/${id}`}));
        const p1 = await s.client.waitFor("p1 final", finalFor("r/proto-c/p1"));
        const p2 = await s.client.waitFor("p2 final", finalFor("r/proto-c/p2"));
        const firstChunkOf = (id: string): Received => s.client.received.find((m) => m.topic === `r/proto-c/${id}` && m.json?.status === "streaming")!;
        assert.ok(firstChunkOf("p2").at < p1.at && firstChunkOf("p1").at < p2.at, "each streamed before the other finished");
    });
});
