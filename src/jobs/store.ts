/**
 * JobStore: the durable intake journal. A request is appended and fdatasync'd before its PUBACK,
 * so a power cut after the broker forgets it cannot lose it; a `done` record follows its reply.
 *
 * Why a JSON-lines journal and not SQLite: the access pattern is append + replay-on-start, a handful
 * of pending jobs at a time; one fdatasync per accept is the whole cost, there is no native module
 * to build for armv7/arm64, and a torn last line after a power cut is easy to detect and skip.
 * The file is compacted at start and whenever it grows past `compactEvery` records.
 *
 * Its file I/O is synchronous, on the main thread, on purpose: the daemon runs libuv's pool with one
 * thread (src/launcher.cts), and that thread spends its time in llama_decode; an fdatasync queued
 * behind a prompt's decode would hold an accept (and its PUBACK) for as long as the decode takes.
 * A synchronous fdatasync blocks the event loop for the sync only (~1-20 ms on SD cards), once per
 * accepted request, and the decode keeps running meanwhile.
 */
import {closeSync, fdatasyncSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync} from "node:fs";
import {join} from "node:path";
import type {Logger} from "../log.js";

export interface StoredJob {
    /** dedupe key: the request id, or a hash of the message when it had no id */
    key: string;
    /** the request as JSON (Buffers as base64), whatever the daemon needs to run it again */
    request: Record<string, unknown>;
    acceptedAt: number;
}

export interface JobStoreDeps {
    log: Logger;
    dir: string;
    /** how long a finished key is remembered to drop redelivered duplicates; default 1 h */
    dedupeWindowMs?: number;
    /** rewrite the journal after this many appended records; default 1000 */
    compactEvery?: number;
}

export interface JobStoreStats {
    pending: number;
    remembered: number;
    /** damaged journal lines skipped at open */
    droppedAtOpen: number;
    /** everything lost at start: damaged lines, and records that parsed but could not be decoded (discard) */
    damagedAtStart: number;
    journalRecords: number;
}

type JournalRecord =
    | {op: "accept"; key: string; request: Record<string, unknown>; at: number}
    | {op: "done"; key: string; at: number};

export class JobStore {
    private readonly deps: JobStoreDeps;
    private readonly pendingJobs = new Map<string, StoredJob>();
    /** finished keys and when they finished, oldest first */
    private readonly finished = new Map<string, number>();
    /** the journal's file descriptor, open for appending */
    private fd: number | null = null;
    private records = 0;
    private dropped = 0;
    private discarded = 0;

    public constructor(deps: JobStoreDeps) {
        this.deps = deps;
    }

    private get path(): string {
        return join(this.deps.dir, "jobs.journal");
    }

    /** Reads the journal (skipping damaged lines, which it reports), then compacts it. */
    public async start(): Promise<void> {
        mkdirSync(this.deps.dir, {recursive: true, mode: 0o700});
        let text = "";
        try {
            text = readFileSync(this.path, "utf8");
        } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        }
        const lines = text.split("\n");
        let damaged = 0;
        for (const [index, line] of lines.entries()) {
            if (line.trim() === "") continue;
            const record = parseRecord(line);
            if (!record) {
                damaged++;
                this.deps.log.warn("job journal: damaged record skipped", {line: index + 1, bytes: line.length});
                continue;
            }
            this.apply(record);
        }
        this.dropped = damaged;
        this.expireFinished(Date.now());
        this.compact();
        this.deps.log.info("job store open", {path: this.path, pending: this.pendingJobs.size, damagedRecords: damaged});
    }

    public async stop(): Promise<void> {
        const fd = this.fd;
        this.fd = null;
        if (fd !== null) {
            try {
                fdatasyncSync(fd);
            } catch {
                // nothing more can be done at shutdown; accepts were synced when they were made
            }
            closeSync(fd);
        }
    }

    /** Jobs accepted and not finished, in the order they were accepted. */
    public pending(): StoredJob[] {
        return [...this.pendingJobs.values()];
    }

    /** `pending` while queued or running, `done` if it finished within the dedupe window. */
    public lookup(key: string): "pending" | "done" | null {
        if (this.pendingJobs.has(key)) return "pending";
        return this.finished.has(key) ? "done" : null;
    }

    /** Appends and fdatasyncs the job; resolves only when it is on disk. */
    public async accept(key: string, request: Record<string, unknown>): Promise<void> {
        const at = Date.now();
        this.append({op: "accept", key, request, at}, true);
        this.pendingJobs.set(key, {key, request, acceptedAt: at});
    }

    /** Marks a job finished. Not synced at once: losing it only risks answering a job twice. */
    public async finish(key: string): Promise<void> {
        if (!this.pendingJobs.delete(key)) return;
        const at = Date.now();
        this.finished.set(key, at);
        this.expireFinished(at);
        this.append({op: "done", key, at}, false);
        if (this.records >= (this.deps.compactEvery ?? 1000)) this.compact();
    }

    /** A journaled job that cannot be run (unreadable after a restart): removed, and counted as damaged. */
    public async discard(key: string): Promise<void> {
        if (!this.pendingJobs.has(key)) return;
        this.discarded++;
        await this.finish(key);
    }

    public stats(): JobStoreStats {
        return {pending: this.pendingJobs.size, remembered: this.finished.size, droppedAtOpen: this.dropped,
            damagedAtStart: this.dropped + this.discarded, journalRecords: this.records};
    }

    private apply(record: JournalRecord): void {
        if (record.op === "accept") this.pendingJobs.set(record.key, {key: record.key, request: record.request, acceptedAt: record.at});
        else if (this.pendingJobs.delete(record.key) || !this.finished.has(record.key)) this.finished.set(record.key, record.at);
    }

    private expireFinished(now: number): void {
        const window = this.deps.dedupeWindowMs ?? 3_600_000;
        for (const [key, at] of this.finished) {
            if (now - at <= window && this.finished.size <= 10_000) break;
            this.finished.delete(key);
        }
    }

    /** One record; every file operation here is synchronous, so records never interleave. */
    private append(record: JournalRecord, sync: boolean): void {
        if (this.fd === null) throw new Error("job store is not open");
        writeAll(this.fd, JSON.stringify(record) + "\n");
        if (sync) fdatasyncSync(this.fd);
        this.records++;
    }

    /** Rewrites the journal with only what is still needed: pending jobs and remembered keys. */
    private compact(): void {
        const tmp = this.path + ".tmp";
        const out = openSync(tmp, "w", 0o600);
        try {
            const lines: string[] = [];
            for (const [key, at] of this.finished) lines.push(JSON.stringify({op: "done", key, at}));
            for (const job of this.pendingJobs.values()) lines.push(JSON.stringify({op: "accept", key: job.key, request: job.request, at: job.acceptedAt}));
            writeAll(out, lines.length > 0 ? lines.join("\n") + "\n" : "");
            fdatasyncSync(out);
        } finally {
            closeSync(out);
        }
        if (this.fd !== null) closeSync(this.fd);
        this.fd = null;
        renameSync(tmp, this.path);
        syncDir(this.deps.dir);
        this.fd = openSync(this.path, "a", 0o600);
        this.records = this.pendingJobs.size + this.finished.size;
    }
}

function parseRecord(line: string): JournalRecord | null {
    let value: unknown;
    try {
        value = JSON.parse(line);
    } catch {
        return null;
    }
    if (typeof value !== "object" || value === null) return null;
    const r = value as Record<string, unknown>;
    if (typeof r.key !== "string" || typeof r.at !== "number") return null;
    if (r.op === "done") return {op: "done", key: r.key, at: r.at};
    if (r.op === "accept" && typeof r.request === "object" && r.request !== null)
        return {op: "accept", key: r.key, request: r.request as Record<string, unknown>, at: r.at};
    return null;
}

/** write(2) until all of `text` is written (a short write is legal on some filesystems). */
function writeAll(fd: number, text: string): void {
    const buf = Buffer.from(text, "utf8");
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
}

/** A rename is durable only once the directory entry is synced. */
function syncDir(dir: string): void {
    const fd = openSync(dir, "r");
    try {
        fsyncSync(fd);
    } catch {
        // some filesystems refuse fsync on a directory; the rename is still atomic
    } finally {
        closeSync(fd);
    }
}
