/**
 * The durable outgoing store (src/mqtt/outgoing-store.ts) on its own, in a temporary state directory: a QoS 2
 * reply and its PUBREL survive a restart byte for byte (payload, correlation data); a completed reply is
 * still known until it is settled; QoS 1 packets stay in memory; a state directory that cannot be written
 * keeps replies in memory instead of failing them. The crash it exists for is fault case D06.
 */
import assert from "node:assert/strict";
import {mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {afterEach, beforeEach, describe, it} from "node:test";
import type {IStore} from "mqtt";
import {DurableOutgoingStore, outgoingFiles} from "../../src/mqtt/outgoing-store.js";
import {memoryLogger} from "../support/fake-link.js";

type Packet = Parameters<IStore["put"]>[0];
const put = (s: DurableOutgoingStore, p: Packet): Promise<void> => new Promise((resolve, reject) => s.put(p, (e) => e ? reject(e) : resolve()));
const del = (s: DurableOutgoingStore, messageId: number): Promise<void> => new Promise((resolve, reject) => s.del({messageId}, (e) => e ? reject(e) : resolve()));
const stream = async (s: DurableOutgoingStore): Promise<Packet[]> => {
    const out: Packet[] = [];
    for await (const p of s.createStream() as unknown as AsyncIterable<Packet>) out.push(p);
    return out;
};
const reply = (messageId: number, id: string, qos: 1 | 2 = 2): Packet => ({cmd: "publish", topic: `r/${id}`, qos, retain: false, dup: false, messageId,
    payload: Buffer.from(JSON.stringify({id, status: "ok", text: "é ✓"})), properties: {correlationData: Buffer.from([0, 255, 7])}});

describe("DurableOutgoingStore", () => {
    let dir: string;
    beforeEach(() => {
        dir = mkdtempSync(join(tmpdir(), "qe-outgoing-"));
    });
    afterEach(() => {
        rmSync(dir, {recursive: true, force: true});
    });

    it("keeps QoS 2 replies and their PUBREL across a restart, exactly as they were; QoS 1 only in memory", async () => {
        const {log} = memoryLogger();
        const a = new DurableOutgoingStore(dir, log);
        await put(a, reply(7, "q1"));
        await put(a, reply(8, "q2"));
        await put(a, {cmd: "pubrel", messageId: 8});
        await put(a, reply(9, "telemetry", 1));
        assert.equal((await stream(a)).length, 3);
        const b = new DurableOutgoingStore(dir, log);
        const restored = await stream(b);
        assert.deepEqual(restored.map((p) => [p.cmd, p.messageId]), [["publish", 7], ["pubrel", 8]]);
        const p7 = restored[0] as Packet & {payload: Buffer; properties: {correlationData: Buffer}};
        assert.deepEqual(JSON.parse(p7.payload.toString("utf8")), {id: "q1", status: "ok", text: "é ✓"});
        assert.deepEqual([...p7.properties.correlationData], [0, 255, 7]);
        assert.ok(b.replyKnown("r/q1", "q1") && b.replyKnown("r/q2", "q2"), "a pending reply and a released one are known");
        assert.equal(b.replyKnown("r/q3", "q3"), false);
    });

    it("remembers a completed reply until it is settled, also across a restart", async () => {
        const {log} = memoryLogger();
        const a = new DurableOutgoingStore(dir, log);
        await put(a, reply(3, "done-1"));
        await put(a, {cmd: "pubrel", messageId: 3});
        await del(a, 3);
        assert.equal((await stream(a)).length, 0, "nothing left to send");
        assert.ok(a.replyKnown("r/done-1", "done-1"), "the job of a completed reply is done");
        const b = new DurableOutgoingStore(dir, log);
        assert.ok(b.replyKnown("r/done-1", "done-1"));
        b.settle("r/done-1", "done-1");
        assert.equal(b.replyKnown("r/done-1", "done-1"), false);
        assert.deepEqual(outgoingFiles(dir), []);
        await put(b, reply(4, "done-2"));
        await del(b, 4);
        b.settleAll();
        assert.deepEqual(outgoingFiles(dir), []);
    });

    it("drops an unreadable file and a temporary one at start, with a log line", () => {
        const {log, lines} = memoryLogger();
        new DurableOutgoingStore(dir, log);
        writeFileSync(join(dir, "outgoing", "5.json"), "{torn");
        writeFileSync(join(dir, "outgoing", "6.json.tmp"), "{}");
        new DurableOutgoingStore(dir, log);
        assert.deepEqual(outgoingFiles(dir), []);
        assert.ok(lines.some((l) => l.message === "outgoing store: unreadable packet file dropped" && l.file === "5.json"));
    });

    it("keeps replies in memory when the state directory cannot be written, and says so once", async () => {
        const {log, lines} = memoryLogger();
        const s = new DurableOutgoingStore(dir, log);
        // the directory replaced by a file: every write fails (ENOTDIR), for root too
        rmSync(join(dir, "outgoing"), {recursive: true});
        writeFileSync(join(dir, "outgoing"), "");
        await put(s, reply(1, "x"));
        await put(s, reply(2, "y"));
        assert.equal((await stream(s)).length, 2, "both still go to the broker");
        assert.equal(lines.filter((l) => String(l.message).startsWith("outgoing store: replies cannot be kept on disk")).length, 1);
    });
});
