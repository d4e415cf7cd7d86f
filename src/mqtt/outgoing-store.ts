/**
 * MQTT.js's outgoing store, kept on disk for final replies: the half of exactly-once that a job journal
 * alone cannot give (issue 16, docs/DESIGN.md "Delivery").
 *
 * A job is done once the broker has its final reply. With QoS 1 the daemon learns that from the PUBACK; a
 * SIGKILL after the broker took the reply but before the PUBACK was read left the job in the journal, and
 * the next start ran it again and answered a second time. Final replies therefore go at QoS 2 and their
 * packets live here, on disk, from before they are sent until the broker's PUBCOMP:
 * - MQTT.js puts a QoS 2 PUBLISH here before sending it, replaces it by its PUBREL when the broker's PUBREC
 *   comes, and deletes it at PUBCOMP. At every connect it sends again what is here (a PUBLISH with DUP and
 *   the same packet id, or the PUBREL): the broker has kept that packet id in our session since it took
 *   the PUBLISH, so it answers without delivering again. Exactly once to the broker, across any crash.
 * - A deleted packet is not forgotten at once: it moves to "completed" until the job store has written the
 *   job's `done` (settle()), so a crash between the PUBCOMP and that record still finds the reply.
 * - At start, before the journal is replayed, a job whose reply is here (pending or completed) is done: it is
 *   not run again (replyKnown()).
 * Everything else MQTT.js stores (QoS 1 telemetry, chunks, error replies of unjournaled messages) stays in
 * memory, as with MQTT.js's own store. One file per packet id, written to a temporary name, fsync'd and
 * renamed, the directory fsync'd.
 */
import {closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync} from "node:fs";
import {join} from "node:path";
import {Readable} from "node:stream";
import type {IStore, PacketCallback} from "mqtt";
import type {Logger} from "../log.js";
import {syncDir} from "../util/fs.js";

interface Entry {
    packet: Packet;
    /** on disk (a final reply, or its PUBREL) */
    durable: boolean;
    /** the reply this packet carries: its topic and the request id in its payload */
    reply: {topic: string; id: string} | null;
    order: number;
}

interface FileRecord {
    packet: Record<string, unknown>;
    reply: {topic: string; id: string} | null;
    order: number;
}

type DoneCallback = (error?: Error) => void;
type Packet = Parameters<IStore["put"]>[0];

const B64 = "$b64";

export class DurableOutgoingStore implements IStore {
    private readonly entries = new Map<number, Entry>();
    /** replies the broker completed whose jobs may not have their `done` yet: "topic\0id" -> file */
    private readonly completed = new Map<string, string>();
    private order = 0;
    private readonly dir: string;
    /** writes failed (full or read-only state directory): durable packets are kept in memory until retryAt */
    private brokenSince = false;
    private retryAt = 0;
    private get broken(): boolean {
        if (this.brokenSince && Date.now() >= this.retryAt) {
            try {
                mkdirSync(this.dir, {recursive: true});
                this.brokenSince = false;
            } catch {
                this.retryAt = Date.now() + 30_000;
            }
        }
        return this.brokenSince;
    }
    private set broken(value: boolean) {
        this.brokenSince = value;
    }

    public constructor(stateDir: string, private readonly log: Logger) {
        this.dir = join(stateDir, "outgoing");
        let names: string[] = [];
        try {
            mkdirSync(this.dir, {recursive: true});
            names = readdirSync(this.dir).sort();
        } catch (err) {
            this.failing(err);
        }
        for (const name of names) {
            const path = join(this.dir, name);
            if (name.endsWith(".tmp")) {
                rmSync(path, {force: true});
                continue;
            }
            const record = readRecord(path);
            if (record === null) {
                this.log.warn("outgoing store: unreadable packet file dropped", {file: name});
                rmSync(path, {force: true});
                continue;
            }
            if (name.startsWith("completed-")) {
                if (record.reply) this.completed.set(replyKey(record.reply.topic, record.reply.id), path);
                else rmSync(path, {force: true});
                continue;
            }
            const packet = fromJson(record.packet);
            this.order = Math.max(this.order, record.order);
            if (packet.messageId !== undefined) this.entries.set(packet.messageId, {packet, durable: true, reply: record.reply, order: record.order});
        }
        if (this.entries.size > 0 || this.completed.size > 0)
            this.log.info("outgoing store: replies kept from before the start", {pending: this.entries.size, completed: this.completed.size});
    }

    /** Whether the final reply to request `id` on `topic` is here (being delivered, or delivered): its job is done. */
    public replyKnown(topic: string, id: string): boolean {
        if (this.completed.has(replyKey(topic, id))) return true;
        for (const e of this.entries.values()) if (e.reply?.topic === topic && e.reply.id === id) return true;
        return false;
    }

    /** The job store has the `done` of this reply's job: the completed packet can go. */
    public settle(topic: string, id: string): void {
        const key = replyKey(topic, id);
        const path = this.completed.get(key);
        if (path === undefined) return;
        this.completed.delete(key);
        rmSync(path, {force: true});
    }

    /** After the journal was replayed: every completed reply's job has its `done` now. */
    public settleAll(): void {
        for (const path of this.completed.values()) rmSync(path, {force: true});
        this.completed.clear();
    }

    public put(packet: Packet, cb: DoneCallback): this {
        const id = packet.messageId;
        if (id === undefined) {
            cb();
            return this;
        }
        const before = this.entries.get(id);
        const durable = (packet.cmd === "publish" && packet.qos === 2) || (packet.cmd === "pubrel" && before?.durable === true);
        const reply = packet.cmd === "publish" ? replyOf(packet) : before?.reply ?? null;
        const entry: Entry = {packet, durable: durable && !this.broken, reply, order: before?.order ?? ++this.order};
        try {
            if (entry.durable) this.write(id, {packet: toJson(packet), reply, order: entry.order});
            else if (before?.durable) rmSync(this.file(id), {force: true});
        } catch (err) {
            // a full or failing state directory: the reply still goes (from memory), at least once instead of exactly once
            this.failing(err);
            entry.durable = false;
        }
        this.entries.set(id, entry);
        cb();
        return this;
    }

    /** MQTT.js reads it with read(1), 'readable', 'end' and destroy(), which Node's Readable has. */
    public createStream(): ReturnType<IStore["createStream"]> {
        const packets = [...this.entries.values()].sort((a, b) => a.order - b.order).map((e) => e.packet);
        return Readable.from(packets, {objectMode: true}) as unknown as ReturnType<IStore["createStream"]>;
    }

    public del(packet: Pick<Packet, "messageId">, cb: PacketCallback): this {
        const id = packet.messageId;
        const entry = id === undefined ? undefined : this.entries.get(id);
        if (id === undefined || !entry) {
            cb(new Error("missing packet"));
            return this;
        }
        this.entries.delete(id);
        if (entry.durable) {
            try {
                if (entry.reply) {
                    const to = join(this.dir, `completed-${String(entry.order).padStart(12, "0")}-${id}.json`);
                    renameSync(this.file(id), to);
                    syncDir(this.dir);
                    this.completed.set(replyKey(entry.reply.topic, entry.reply.id), to);
                } else rmSync(this.file(id), {force: true});
            } catch (err) {
                this.log.warn("outgoing store: a delivered packet could not be moved aside", {messageId: id, message: (err as Error).message});
            }
        }
        cb(undefined, entry.packet);
        return this;
    }

    public get(packet: Pick<Packet, "messageId">, cb: PacketCallback): this {
        const entry = packet.messageId === undefined ? undefined : this.entries.get(packet.messageId);
        if (entry) cb(undefined, entry.packet);
        else cb(new Error("missing packet"));
        return this;
    }

    public close(cb: DoneCallback): void {
        cb();
    }

    /** Until a write succeeds again: kept in memory only; logged once. */
    private failing(err: unknown): void {
        if (!this.broken) this.log.warn("outgoing store: replies cannot be kept on disk now; a crash may answer a request twice",
            {dir: this.dir, message: (err as Error).message});
        this.broken = true;
        this.retryAt = Date.now() + 30_000;
    }

    private file(id: number): string {
        return join(this.dir, `${id}.json`);
    }

    private write(id: number, record: FileRecord): void {
        const tmp = `${this.file(id)}.tmp`;
        writeFileSync(tmp, JSON.stringify(record));
        const fd = openSync(tmp, "r");
        try {
            fsyncSync(fd);
        } finally {
            closeSync(fd);
        }
        renameSync(tmp, this.file(id));
        syncDir(this.dir);
    }

}

const replyKey = (topic: string, id: string): string => `${topic}\u0000${id}`;

/** The request id in a final reply's JSON payload ({"id": ...}); null for anything else. */
function replyOf(packet: Packet): {topic: string; id: string} | null {
    if (packet.cmd !== "publish") return null;
    try {
        const text = typeof packet.payload === "string" ? packet.payload : Buffer.from(packet.payload).toString("utf8");
        const id = (JSON.parse(text) as {id?: unknown}).id;
        return typeof id === "string" ? {topic: packet.topic, id} : null;
    } catch {
        return null;
    }
}

function readRecord(path: string): FileRecord | null {
    try {
        const parsed = JSON.parse(readFileSync(path, "utf8")) as FileRecord;
        return typeof parsed === "object" && parsed !== null && typeof parsed.packet === "object" && typeof parsed.order === "number" ? parsed : null;
    } catch {
        return null;
    }
}

/** Buffers (payload, correlation data) as base64, so a packet survives JSON. */
function toJson(packet: Packet): Record<string, unknown> {
    const convert = (value: unknown): unknown => Buffer.isBuffer(value) ? {[B64]: value.toString("base64")}
        : value instanceof Uint8Array ? {[B64]: Buffer.from(value).toString("base64")}
            : typeof value === "object" && value !== null && !Array.isArray(value)
                ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, convert(v)])) : value;
    return convert(packet) as Record<string, unknown>;
}

function fromJson(value: Record<string, unknown>): Packet {
    const convert = (v: unknown): unknown => {
        if (typeof v !== "object" || v === null || Array.isArray(v)) return v;
        const o = v as Record<string, unknown>;
        if (typeof o[B64] === "string" && Object.keys(o).length === 1) return Buffer.from(o[B64], "base64");
        return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, convert(x)]));
    };
    return convert(value) as Packet;
}

/** For a test's inspection: the files in the store. */
export function outgoingFiles(stateDir: string): string[] {
    try {
        return readdirSync(join(stateDir, "outgoing")).sort();
    } catch {
        return [];
    }
}
