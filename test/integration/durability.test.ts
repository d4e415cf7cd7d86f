/**
 * Nothing accepted is lost: SIGKILL mid-generation, SIGTERM with work queued, requests sent while
 * the daemon is down. Real Mosquitto, the real daemon, the "endless" model (runs to maxTokens).
 */
import assert from "node:assert/strict";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import type {DaemonProcess} from "../support/daemon.js";
import {Harness} from "../support/harness.js";
import type {Received, TestClient} from "../support/mqtt-client.js";

const DEVICE = "durable";
const BASE = `qwen-edge/${DEVICE}`;

describe("durability across crashes and restarts", () => {
    let h: Harness;
    let client: TestClient;
    let daemon: DaemonProcess | null = null;

    // Every start uses the same state directory: the journal is what carries work across a restart.
    const start = async (extra: string[] = []): Promise<DaemonProcess> => {
        daemon = await h.start({device: DEVICE, model: "endless", stateDir: join(h.dir, "state"),
            args: ["--inference-context-size", "4096", "--shutdown-drain-ms", "300", ...extra]});
        return daemon;
    };
    const send = (id: string, body: Record<string, unknown>): Promise<void> =>
        client.publish(`${BASE}/request`, JSON.stringify({id, replyTo: `r/${id}`, ...body}));
    const finals = (id: string): Received[] => client.received.filter((m) => m.topic === `r/${id}` && m.json?.status !== "streaming");

    before(async () => {
        h = await Harness.start({prefix: "qe-durable-", subscribe: [`${BASE}/status`, "r/#"]});
        client = h.client;
    });
    after(() => h?.dispose());

    it("answers a request exactly once after SIGKILL in the middle of its generation", async () => {
        const d = await start();
        await send("crash-1", {prompt: "go", maxTokens: 1500, stream: true});
        await client.waitFor("first chunk of crash-1", (m) => m.topic === "r/crash-1" && m.json?.status === "streaming");
        await d.kill();
        assert.equal(finals("crash-1").length, 0, "no final reply before the crash");
        const d2 = await start();
        const reply = await client.waitFor("final reply of crash-1 after restart", (m) => m.topic === "r/crash-1" && m.json?.status === "ok");
        assert.equal(reply.json?.finishReason, "length");
        await d2.waitForLog("replay logged", (l) => l.message === "replaying unfinished request" && l.id === "crash-1", 1000);
        await new Promise((r) => setTimeout(r, 1000));
        assert.equal(finals("crash-1").length, 1, "exactly one final reply");
    });

    it("answers requests published while the daemon was down once it is back", async () => {
        await daemon!.term();
        await send("while-down-1", {prompt: "hello", maxTokens: 20});
        await send("while-down-2", {prompt: "hello", maxTokens: 20});
        await start();
        for (const id of ["while-down-1", "while-down-2"]) {
            const reply = await client.waitFor(`reply to ${id}`, (m) => m.topic === `r/${id}` && m.json?.status === "ok");
            assert.equal((reply.json?.usage as {completionTokens: number}).completionTokens > 0, true);
        }
    });

    it("on SIGTERM drains within its bound, exits 0 and keeps unfinished work for the next start", async () => {
        const d = daemon!;
        await send("term-run", {prompt: "go", maxTokens: 2000, stream: true});
        await client.waitFor("first chunk of term-run", (m) => m.topic === "r/term-run" && m.json?.status === "streaming");
        await send("term-queued", {prompt: "later", maxTokens: 20});
        await d.waitForLog("term-queued accepted", (l) => l.message === "request accepted" && l.id === "term-queued");
        const started = Date.now();
        const exit = await d.term();
        assert.deepEqual(exit, {code: 0, signal: null});
        assert.ok(Date.now() - started < 5000, "bounded drain");
        const stopped = d.logs.find((l) => l.message === "stopped");
        assert.equal(stopped?.keptForNextStart, 2, JSON.stringify(stopped));
        assert.equal(finals("term-run").length, 0);
        assert.equal(finals("term-queued").length, 0);
        await start();
        for (const id of ["term-run", "term-queued"]) {
            const reply = await client.waitFor(`reply to ${id} after restart`, (m) => m.topic === `r/${id}` && m.json?.status === "ok");
            assert.ok(reply.json);
        }
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(finals("term-run").length, 1);
        assert.equal(finals("term-queued").length, 1);
    });

    it("answers timeout, without running, a journaled request whose deadline passed while down", async () => {
        const d = daemon!;
        await send("slow-1", {prompt: "go", maxTokens: 2000, stream: true});
        await client.waitFor("first chunk of slow-1", (m) => m.topic === "r/slow-1" && m.json?.status === "streaming");
        await send("expire-1", {prompt: "x", maxTokens: 10, timeoutMs: 1500});
        await d.waitForLog("expire-1 accepted", (l) => l.message === "request accepted" && l.id === "expire-1");
        await d.kill();
        await new Promise((r) => setTimeout(r, 1600));
        await start();
        const reply = await client.waitFor("timeout for expire-1", (m) => m.topic === "r/expire-1");
        assert.equal((reply.json?.error as {code: string}).code, "timeout");
    });
});
