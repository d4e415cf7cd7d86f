/**
 * A damaged job store: the daemon is killed with accepted work in its journal, the journal is then
 * damaged the ways a power cut or a failing card damages it (a torn last record, a zero-filled
 * block, a record of the wrong shape, a record that parses but cannot be decoded), and the daemon
 * is started again: it must start, answer what is readable and report what it dropped.
 */
import assert from "node:assert/strict";
import {readFile, writeFile} from "node:fs/promises";
import {join} from "node:path";
import {after, before, describe} from "node:test";
import type {DaemonProcess} from "../support/daemon.js";
import {finals, logsSince} from "../support/fault-kit.js";
import {Harness} from "../support/harness.js";
import type {TestClient} from "../support/mqtt-client.js";
import {countFinals, faultCase} from "../support/reliability.js";
import {jobKey} from "../../src/jobs/store.js";

const DEVICE = "fault-journal";
const BASE = `qwen-edge/${DEVICE}`;

describe("faults: the job store is damaged", () => {
    let h: Harness;
    let client: TestClient;
    let stateDir: string;

    // The same state directory each time: the damaged journal is what the next start reads.
    const start = (): Promise<DaemonProcess> => h.start({device: DEVICE, model: "endless", stateDir,
        args: ["--inference-context-size", "4096", "--telemetry-interval-seconds", "1"]});
    const send = (id: string, body: Record<string, unknown>): Promise<void> =>
        client.publish(`${BASE}/request`, JSON.stringify({id, replyTo: `r/${id}`, ...body}));
    const finalOk = (id: string): Promise<unknown> =>
        client.waitFor(`final reply of ${id}`, (m) => m.topic === `r/${id}` && m.json?.status === "ok", 30_000);

    before(async () => {
        h = await Harness.start({prefix: "qe-fault-journal-", subscribe: [`${BASE}/status`, `${BASE}/health`, "r/#"]});
        client = h.client;
        stateDir = join(h.dir, "state");
    });
    after(() => h?.dispose());

    faultCase("F11", async (row) => {
        const d = await start();
        const ids = ["j-run", "j-1", "j-2", "j-3", "j-4"];
        await send(ids[0]!, {prompt: "go", maxTokens: 2048, stream: true});
        await client.waitFor("first chunk of j-run", (m) => m.topic === "r/j-run" && m.json?.status === "streaming");
        for (const id of ids.slice(1)) {
            await send(id, {prompt: "later", maxTokens: 16});
            await d.waitForLog(`${id} accepted`, (l) => l.message === "request accepted" && l.id === id);
        }
        await d.kill();

        // Five accept records, one per line, in acceptance order (the journal was compacted empty at start).
        const path = join(stateDir, "jobs.journal");
        const lines = (await readFile(path, "utf8")).split("\n").filter((l) => l !== "");
        const keys = lines.map((l) => (JSON.parse(l) as {key: string}).key);
        assert.deepEqual(keys, ids.map((id) => jobKey(id, `r/${id}`)), "journal as written by the daemon");
        const torn = lines[4]!.slice(0, Math.floor(lines[4]!.length / 2));
        const damaged = [
            lines[0]!,
            "\0".repeat(64) + "power cut",
            lines[1]!,
            lines[2]!,
            JSON.stringify({op: "accept", key: 42}),
            JSON.stringify({op: "accept", key: "j-bad", request: {prompt: "no id, no deadline, no reply topic"}, at: Date.now()}),
            lines[3]!,
            torn
        ].join("\n");
        await writeFile(path, damaged);
        row.inject("daemon SIGKILLed with 5 accepted requests in its journal, then the journal damaged: the last record torn in half "
            + "(no newline), a zero-filled line, a record of the wrong shape, an accept record that cannot be decoded");

        const restartedAt = Date.now();
        const d2 = await start();
        const readable = ids.slice(0, 4);
        for (const id of readable) await finalOk(id);
        const recoverMs = Date.now() - restartedAt;
        await send("j-after", {prompt: "after", maxTokens: 4});
        await finalOk("j-after");
        const open = d2.logs.find((l) => l.message === "job store open") ?? {};
        const skipped = [...logsSince(d2, "job journal: damaged record skipped", restartedAt), ...logsSince(d2, "job journal: torn last record dropped", restartedAt)]
            .map((l) => Number(l.line));
        const unreadable = logsSince(d2, "unreadable journaled job dropped", restartedAt).map((l) => String(l.key));
        const health = await client.waitFor("health with the damage reported", (m) => m.topic === `${BASE}/health` && m.at >= restartedAt
            && (m.json?.jobs as {damagedAtStart?: number} | undefined)?.damagedAtStart !== undefined);
        const reported = (health.json?.jobs as {damagedAtStart: number}).damagedAtStart;
        const counted = countFinals(readable, (id) => finals(client, `r/${id}`).length);
        const lost = finals(client, "r/j-4").length;

        row.replies(readable.length, counted.received, counted.duplicates);
        row.recovered(recoverMs);
        row.figure("records in the journal", damaged.split("\n").length);
        row.figure("damaged lines skipped", Number(open.damagedRecords));
        row.figure("undecodable jobs dropped", unreadable.length);
        row.figure("health jobs.damagedAtStart", reported);
        row.figure("replies to the torn request", lost);
        row.observe(`started and answered the ${readable.length} readable requests exactly once; skipped journal lines ${skipped.join(", ")} `
            + `(logged, with "job store open" damagedRecords ${String(open.damagedRecords)}) and dropped the undecodable job `
            + `${unreadable.join(", ")}; health reports jobs.damagedAtStart ${reported}. The request whose record was torn (j-4) `
            + (lost === 0 ? "is lost: it had been acknowledged, so the broker does not redeliver it"
                : `was answered ${lost === 1 ? "once" : `${lost} times`}: the kill came before its PUBACK left, so the broker redelivered it`));

        assert.equal(open.damagedRecords, 3, JSON.stringify(open));
        assert.deepEqual(skipped, [2, 5, 8]);
        assert.deepEqual(unreadable, ["j-bad"]);
        assert.equal(reported, 4);
        assert.deepEqual(counted, {received: 4, duplicates: 0});
        // 0: acknowledged before the kill, so lost with its record; 1: redelivered (its PUBACK had not left). Never twice.
        assert.ok(lost <= 1, `the torn request was answered ${lost} times`);
        assert.equal((await d2.term()).code, 0);
    });
});
