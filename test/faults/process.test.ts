/**
 * The daemon process dies or is stopped in the middle of a generation: SIGTERM (bounded drain, the
 * work kept for the next start, retained `offline`, exit 0) and SIGKILL (the will, then every
 * accepted request answered exactly once after a restart). Real Mosquitto, the built daemon, the
 * "endless" model. test/integration/durability.test.ts asserts the same contract; these cases
 * measure it for docs/RELIABILITY.md.
 */
import assert from "node:assert/strict";
import {after, before, describe} from "node:test";
import {join} from "node:path";
import type {Broker} from "../support/broker.js";
import type {DaemonProcess} from "../support/daemon.js";
import {finals, logsSince, retained} from "../support/fault-kit.js";
import {Harness} from "../support/harness.js";
import type {TestClient} from "../support/mqtt-client.js";
import {countFinals, faultCase} from "../support/reliability.js";

const DEVICE = "fault-proc";
const BASE = `qwen-edge/${DEVICE}`;
const DRAIN_MS = 500;

describe("faults: the daemon stops or dies mid-generation", () => {
    let h: Harness;
    let broker: Broker;
    let client: TestClient;
    let daemon: DaemonProcess | null = null;

    // The same state directory each time: the journal carries the accepted work across the stop or the kill.
    const start = async (): Promise<DaemonProcess> => {
        daemon = await h.start({device: DEVICE, model: "endless", stateDir: join(h.dir, "state"),
            args: ["--inference-context-size", "4096", "--shutdown-drain-ms", String(DRAIN_MS)]});
        return daemon;
    };
    const send = (id: string, body: Record<string, unknown>): Promise<void> =>
        client.publish(`${BASE}/request`, JSON.stringify({id, replyTo: `r/${id}`, ...body}));
    const finalOk = (id: string): Promise<unknown> =>
        client.waitFor(`final reply of ${id}`, (m) => m.topic === `r/${id}` && m.json?.status === "ok", 30_000);
    /** One running, two queued: every one accepted (journaled and acknowledged) before the fault. */
    const loadUp = async (d: DaemonProcess, prefix: string): Promise<string[]> => {
        const ids = [`${prefix}-run`, `${prefix}-q1`, `${prefix}-q2`];
        await send(ids[0]!, {prompt: "go", maxTokens: 2048, stream: true});
        await client.waitFor(`first chunk of ${ids[0]}`, (m) => m.topic === `r/${ids[0]}` && m.json?.status === "streaming");
        for (const id of ids.slice(1)) {
            await send(id, {prompt: "later", maxTokens: 16});
            await d.waitForLog(`${id} accepted`, (l) => l.message === "request accepted" && l.id === id);
        }
        return ids;
    };
    /** Restarts and waits for every reply, then for one more request (its reply follows theirs) before counting. */
    const restartAndCount = async (ids: string[], barrierId: string): Promise<{ms: number; received: number; duplicates: number; replayed: number}> => {
        const spawnedAt = Date.now();
        const d = await start();
        for (const id of ids) await finalOk(id);
        const ms = Date.now() - spawnedAt;
        await send(barrierId, {prompt: "barrier", maxTokens: 4});
        await finalOk(barrierId);
        const replayed = logsSince(d, "replaying unfinished request", spawnedAt).length;
        return {ms, replayed, ...countFinals(ids, (id) => finals(client, `r/${id}`).length)};
    };

    before(async () => {
        h = await Harness.start({prefix: "qe-fault-proc-", subscribe: [`${BASE}/status`, "r/#"]});
        ({broker, client} = h);
    });
    after(() => h?.dispose());

    faultCase("F03", async (row) => {
        const d = await start();
        row.inject(`SIGTERM while a 2,048-token generation streams and 2 more requests are queued; shutdown.drainMs ${DRAIN_MS}`);
        const ids = await loadUp(d, "term");
        const termAt = Date.now();
        const exit = await d.term();
        const exitMs = Date.now() - termAt;
        const stopped = d.logs.find((l) => l.message === "stopped") ?? {};
        const status = await retained(broker.url, `${BASE}/status`);
        const before = countFinals(ids, (id) => finals(client, `r/${id}`).length).received;
        const after = await restartAndCount(ids, "term-barrier");
        row.replies(ids.length, after.received, after.duplicates);
        row.recovered(after.ms);
        row.figure("exit code", exit.code);
        row.figure("SIGTERM → exit (ms)", exitMs);
        row.figure("drain bound (ms)", DRAIN_MS);
        row.figure("aborted at the bound", Number(stopped.aborted));
        row.figure("kept for next start", Number(stopped.keptForNextStart));
        row.figure("retained status", String(status.json?.state));
        row.figure("answered before restart", before);
        row.observe(`exit ${exit.code} ${exitMs} ms after SIGTERM; the running generation was stopped at the ${DRAIN_MS} ms bound; `
            + `the queued requests were kept in the journal for the next start, not answered shutting_down: they were acknowledged `
            + `(PUBACK), so the broker will not send them again and a shutting_down answer would drop work we accepted; `
            + `retained status ${String(status.json?.state)}; after the restart all ${ids.length} were answered exactly once`);

        assert.deepEqual(exit, {code: 0, signal: null});
        assert.ok(exitMs < DRAIN_MS + 4000, `bounded drain: ${exitMs} ms`);
        assert.equal(stopped.keptForNextStart, 3, JSON.stringify(stopped));
        assert.equal(status.json?.state, "offline");
        assert.equal(before, 0, "nothing answered during the shutdown");
        assert.deepEqual({received: after.received, duplicates: after.duplicates}, {received: 3, duplicates: 0});
    });

    faultCase("F04", async (row) => {
        const d = daemon ?? await start();
        row.inject("SIGKILL while a 2,048-token generation streams and 2 more requests are queued; then a restart");
        const ids = await loadUp(d, "kill");
        const killedAt = Date.now();
        const exit = await d.kill();
        const will = await client.waitFor("the will (retained offline)", (m) => m.topic === `${BASE}/status` && m.at >= killedAt
            && m.json?.state === "offline", 10_000);
        const before = countFinals(ids, (id) => finals(client, `r/${id}`).length).received;
        const after = await restartAndCount(ids, "kill-barrier");
        row.replies(ids.length, after.received, after.duplicates);
        row.recovered(after.ms);
        row.figure("signal", exit.signal);
        row.figure("will after (ms)", will.at - killedAt);
        row.figure("will reason", String(will.json?.reason));
        row.figure("replayed from the journal", after.replayed);
        row.figure("answered before restart", before);
        row.observe(`the broker published the will (offline, "${String(will.json?.reason)}") ${will.at - killedAt} ms after the kill; `
            + `the restart replayed ${after.replayed} journaled requests and answered each exactly once`);

        assert.equal(exit.signal, "SIGKILL");
        assert.equal(before, 0);
        assert.equal(after.replayed, 3);
        assert.deepEqual({received: after.received, duplicates: after.duplicates}, {received: 3, duplicates: 0});
    });
});
