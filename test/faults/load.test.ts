/**
 * Load the daemon must hold: a burst far over its queue (every request answered, `ok` or
 * `queue_full`, FIFO among the accepted), and a flood of malformed messages around a few valid ones
 * (every one answered, memory bounded, health still on time). Real Mosquitto, the built daemon.
 */
import assert from "node:assert/strict";
import {after, before, describe} from "node:test";
import type {DaemonProcess} from "../support/daemon.js";
import {maxGap, MiB, procFigures, waitUntil, type ProcFigures} from "../support/fault-kit.js";
import {Harness} from "../support/harness.js";
import type {Received, TestClient} from "../support/mqtt-client.js";
import {SCRIPTED_ANSWER} from "../support/models.js";
import {faultCase} from "../support/reliability.js";

const BURST = 200;
const MAX_QUEUE = 32;
const MALFORMED = 1000;
const VALID = 20;
const MAX_PAYLOAD = 8192;
/** RSS growth allowed over the flood: ~1,000 small messages must not cost more than a few MiB; 48 MiB leaves room for GC timing. */
const RSS_BOUND_MIB = 48;
const HEALTH_INTERVAL_S = 1;

/** Eight kinds of bad request, each refused with its own code. */
function malformed(i: number): Buffer {
    switch (i % 8) {
        case 0: return Buffer.from("{\"prompt\": \"unterminated\",");
        case 1: return Buffer.from([0x7b, 0xc3, 0x28, 0xff, 0x7d]);
        case 2: return Buffer.from(JSON.stringify({prompt: "x", bogus: i}));
        case 3: return Buffer.from(JSON.stringify({prompt: 42}));
        case 4: return Buffer.from(JSON.stringify({maxTokens: 5}));
        case 5: return Buffer.from(JSON.stringify({prompt: "x", maxTokens: -5}));
        case 6: return Buffer.from("[1, 2, 3]");
        default: return Buffer.alloc(MAX_PAYLOAD + 1, "x");
    }
}

describe("load", () => {
    let h: Harness;
    let client: TestClient;

    const start = (device: string, kind: "endless" | "scripted", args: string[]): Promise<DaemonProcess> => h.start({device, model: kind, args});

    before(async () => {
        h = await Harness.start({prefix: "qe-fault-load-", subscribe: ["qwen-edge/+/status", "qwen-edge/+/health", "load/#", "flood/#"]});
        client = h.client;
    });
    after(() => h?.dispose());

    faultCase("L01", async (row) => {
        const device = "fault-burst";
        const d = await start(device, "endless", ["--inference-max-queue", String(MAX_QUEUE)]);
        row.inject(`${BURST} requests (24 tokens each) published at once by one client; inference.maxQueue ${MAX_QUEUE}, one generation slot`);
        const ids = Array.from({length: BURST}, (_, i) => `q-${String(i).padStart(3, "0")}`);
        const isReply = (m: Received): boolean => m.topic === "load/q";
        const startedAt = Date.now();
        await Promise.all(ids.map((id) => client.publish(`qwen-edge/${device}/request`, JSON.stringify({id, prompt: "go", maxTokens: 24, replyTo: "load/q"}))));
        const replied = new Set<unknown>();
        await waitUntil(`replies to all ${BURST} ids`, () => {
            for (const m of client.received) if (isReply(m)) replied.add(m.json?.id);
            return replied.size >= BURST;
        }, 60_000, 50);
        const drainedMs = Date.now() - startedAt;
        // Accepted after every request of the burst: its reply comes after all of theirs.
        await client.publish(`qwen-edge/${device}/request`, JSON.stringify({id: "q-barrier", prompt: "go", maxTokens: 4, replyTo: "load/barrier"}));
        await client.waitFor("reply to q-barrier", (m) => m.topic === "load/barrier");

        const replies = client.received.filter(isReply);
        const ok = replies.filter((m) => m.json?.status === "ok").map((m) => String(m.json?.id));
        const full = replies.filter((m) => (m.json?.error as {code?: string} | undefined)?.code === "queue_full");
        const other = replies.filter((m) => m.json?.status !== "ok" && (m.json?.error as {code?: string} | undefined)?.code !== "queue_full");
        const perId = new Map<string, number>();
        for (const m of replies) perId.set(String(m.json?.id), (perId.get(String(m.json?.id)) ?? 0) + 1);
        const duplicates = [...perId.values()].reduce((a, n) => a + n - 1, 0);
        const fifo = ok.every((id, i) => i === 0 || id > ok[i - 1]!);
        const retry = full.map((m) => Number((m.json?.error as {retryAfterMs?: number}).retryAfterMs));
        row.replies(BURST, perId.size, duplicates);
        row.figure("ok", ok.length);
        row.figure("queue_full", full.length);
        row.figure("other", other.length);
        row.figure("ok in publish order", fifo);
        row.figure("retryAfterMs min–max", retry.length > 0 ? `${Math.min(...retry)}–${Math.max(...retry)}` : "none");
        row.figure("burst answered in (ms)", drainedMs);
        row.observe(`every request answered once: ${ok.length} ok, completed in publish order (FIFO), ${full.length} queue_full with `
            + "retryAfterMs; none lost or refused otherwise");

        assert.equal(perId.size, BURST);
        assert.equal(duplicates, 0);
        assert.equal(other.length, 0, JSON.stringify(other.slice(0, 3).map((m) => m.json)));
        assert.ok(ok.length >= MAX_QUEUE + 1, `at least a queue and a slot accepted: ${ok.length}`);
        assert.ok(full.length >= 1, "the burst overflowed the queue");
        assert.ok(fifo, `ok replies out of order: ${ok.join(" ")}`);
        assert.equal(d.child.exitCode, null);
    });

    faultCase("L02", async (row) => {
        const device = "fault-flood";
        const d = await start(device, "scripted", ["--telemetry-interval-seconds", String(HEALTH_INTERVAL_S),
            "--inference-max-payload-bytes", String(MAX_PAYLOAD)]);
        const pid = d.child.pid!;
        const ask = (key: string, payload: Buffer | string, topic: string): Promise<void> =>
            client.publish(`qwen-edge/${device}/request`, payload, {properties: {responseTopic: topic, correlationData: Buffer.from(key)}});
        const isHealth = (m: Received): boolean => m.topic === `qwen-edge/${device}/health`;
        // Warm up first (the first generations allocate), so growth measures the flood, not start-up.
        for (let i = 0; i < 5; i++) {
            await ask(`w-${i}`, JSON.stringify({prompt: "warm", maxTokens: 16}), "flood/warm");
            await client.waitFor(`warm-up ${i}`, (m) => m.topic === "flood/warm" && m.correlationData?.toString() === `w-${i}`);
        }
        await client.waitForCount("2 health messages after the warm-up", isHealth, client.received.filter(isHealth).length + 2, 10_000);
        row.inject(`${MALFORMED} malformed messages (8 kinds: bad JSON, bad UTF-8, unknown field, wrong type, no prompt, bad maxTokens, `
            + `JSON array, ${MAX_PAYLOAD + 1} bytes) with ${VALID} valid ones among them, published at once; health every ${HEALTH_INTERVAL_S} s; `
            + "done twice (the second flood tells a leak from the heap growing once)");

        /** One flood; every reply goes to flood/<round>. */
        const flood = async (round: number): Promise<{replies: Received[]; ms: number; growthMiB: number; gap: number; before: ProcFigures; after: ProcFigures}> => {
            const topic = `flood/${round}`;
            const before = procFigures(pid);
            const floodAt = Date.now();
            const sends: Array<Promise<void>> = [];
            for (let i = 0, m = 0, v = 0; i < MALFORMED + VALID; i++) {
                if (i % Math.floor((MALFORMED + VALID) / VALID) === 0 && v < VALID) sends.push(ask(`v-${v++}`, JSON.stringify({prompt: "hi", maxTokens: 16}), topic));
                else sends.push(ask(`m-${m}`, malformed(m++), topic));
            }
            await Promise.all(sends);
            const replies = await client.waitForCount(`a reply to every message of flood ${round}`, (m) => m.topic === topic, MALFORMED + VALID, 60_000);
            const ms = Date.now() - floodAt;
            // one health message after the last reply: the timer still runs, and the gap check covers the whole flood
            await client.waitForCount("a health message after the flood", isHealth, client.received.filter(isHealth).length + 1, 5000);
            const after = procFigures(pid);
            const gap = maxGap(client.received.filter((m) => isHealth(m) && m.at >= floodAt - HEALTH_INTERVAL_S * 1000).map((m) => m.at));
            return {replies, ms, gap, before, after, growthMiB: (after.rssBytes - before.rssBytes) / MiB};
        };
        const first = await flood(1);
        const second = await flood(2);

        const check = first.replies;
        const byKey = new Map<string, number>();
        for (const m of check) byKey.set(m.correlationData?.toString() ?? "", (byKey.get(m.correlationData?.toString() ?? "") ?? 0) + 1);
        const ok = check.filter((m) => m.json?.status === "ok");
        const errors = check.filter((m) => m.json?.status === "error");
        const codes: Record<string, number> = {};
        for (const m of errors) {
            const code = String((m.json?.error as {code?: string}).code);
            codes[code] = (codes[code] ?? 0) + 1;
        }
        const okSecond = second.replies.filter((m) => m.json?.status === "ok").length;
        const gap = Math.max(first.gap, second.gap);
        row.replies(MALFORMED + VALID, byKey.size, check.length - byKey.size);
        row.figure("ok", ok.length);
        row.figure("errors", errors.length);
        row.figure("error codes", Object.entries(codes).map(([c, n]) => `${c} ${n}`).join(", "));
        row.figure("flood answered in (ms)", first.ms);
        row.figure("RSS before → after (MiB)", `${(first.before.rssBytes / MiB).toFixed(1)} → ${(first.after.rssBytes / MiB).toFixed(1)}`);
        row.figure("RSS growth, 1st flood (MiB)", first.growthMiB);
        row.figure("RSS growth, 2nd flood (MiB)", second.growthMiB);
        row.figure("RSS bound per flood (MiB)", RSS_BOUND_MIB);
        row.figure("fds before → after", `${first.before.fds} → ${second.after.fds}`);
        row.figure("max health gap (ms)", gap);
        row.observe(`all ${MALFORMED} malformed messages refused with an error reply and all ${VALID} valid ones answered ok, each once; RSS grew `
            + `${first.growthMiB.toFixed(1)} MiB in the first flood and ${second.growthMiB.toFixed(1)} MiB in the second (bound ${RSS_BOUND_MIB} MiB each); `
            + `health kept its ${HEALTH_INTERVAL_S} s rhythm (largest gap ${gap} ms)`);

        assert.equal(ok.length, VALID);
        assert.ok(ok.every((m) => m.json?.text === SCRIPTED_ANSWER && m.correlationData?.toString().startsWith("v-")));
        assert.equal(errors.length, MALFORMED);
        assert.equal(byKey.size, MALFORMED + VALID, "one reply per message");
        assert.equal(check.length, MALFORMED + VALID, "no duplicates");
        assert.equal(okSecond, VALID);
        assert.ok(first.growthMiB < RSS_BOUND_MIB && second.growthMiB < RSS_BOUND_MIB, `RSS grew ${first.growthMiB.toFixed(1)} then ${second.growthMiB.toFixed(1)} MiB`);
        assert.ok(gap <= HEALTH_INTERVAL_S * 2500, `health gap ${gap} ms`);
        assert.equal(d.child.exitCode, null);
    });
});
