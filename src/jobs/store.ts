/**
 * JobStore: the durable intake journal, and the one owner of "is this request pending or answered".
 * A request is appended and fdatasync'd before its PUBACK, so a power cut after the broker forgets it
 * cannot lose it; a `done` record follows its final reply. Keys are a request's id scoped by where it is
 * answered (jobKey), so one client cannot block another's ids. For the dedupe window it also remembers
 * answered keys, the message hashes of everything it took (a redelivered copy of an id-less request is
 * found by its hash), and recent final replies, so a retried request can be answered again.
 *
 * Why a JSON-lines journal and not SQLite: the access pattern is append + replay-on-start, a handful
 * of pending jobs at a time; one fdatasync per accept is the whole cost, there is no native module
 * to build for armv7/arm64, and a torn last line after a power cut is easy to detect and drop.
 * Each record is written at a known offset in one write; a write that fails (ENOSPC, EROFS, EIO) is
 * cut back off the file, so a torn record can never swallow the next one. After a failure other than a
 * full disk the file is opened again by its path at the next write: a card the kernel made read-only
 * under us comes back only as another mount. The file is compacted at start and past `compactEvery` records.
 *
 * Its file I/O is synchronous, on the main thread, on purpose: the daemon runs libuv's pool with one
 * thread (src/launcher.cts), and that thread spends its time in llama_decode; an fdatasync queued
 * behind a prompt's decode would hold an accept (and its PUBACK) for as long as the decode takes.
 */
import {closeSync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync} from "node:fs";
import {join} from "node:path";
import type {Logger} from "../log.js";
import {syncDir} from "../util/fs.js";

export interface StoredJob {
    /** jobKey(id, reply topic) */
    key: string;
    /** the request as JSON (Buffers as base64), whatever the daemon needs to run it again */
    request: Record<string, unknown>;
    acceptedAt: number;
}

/** A final reply kept for the dedupe window, to answer a retried request again. */
export interface KeptReply {
    topic: string;
    payload: string;
    qos: 0 | 1 | 2;
    retain: boolean;
    correlationData?: Buffer;
}

export type KeyState =
    | {state: "pending"; hash: string}
    | {state: "done"; at: number; hash: string; reply: KeptReply | null}
    | null;

export interface JobStoreDeps {
    log: Logger;
    dir: string;
    /** how long a finished key is remembered; default 1 h */
    dedupeWindowMs?: number;
    /** rewrite the journal after this many appended records; default 1000 */
    compactEvery?: number;
    /** pending requests may hold at most this many journal bytes; default 64 MiB */
    maxPendingBytes?: number;
    /** final replies kept for re-answering, in bytes; default 4 MiB */
    keptReplyBytes?: number;
}

export interface JobStoreStats {
    pending: number;
    pendingBytes: number;
    remembered: number;
    /** damaged journal lines skipped at open */
    droppedAtOpen: number;
    /** everything lost at start: damaged lines, and records that parsed but could not be decoded (discard) */
    damagedAtStart: number;
    journalRecords: number;
    /** why the journal cannot be written now (state dir full, read-only); null while it works */
    unavailable: string | null;
}

/** The journal cannot take a record: the request is refused, acknowledged and answered with this. */
export class StorageError extends Error {
    public constructor(message: string, public readonly reason: "full" | "unwritable" | "capped") {
        super(message);
    }
}

/** A request's key: its id, scoped by the topic it is answered on. */
export function jobKey(id: string, replyTopic: string): string {
    return JSON.stringify([replyTopic, id]);
}

type JournalRecord =
    | {op: "accept"; key: string; request: Record<string, unknown>; at: number; hash?: string}
    | {op: "done"; key: string; at: number; hash?: string};

export class JobStore {
    private readonly deps: JobStoreDeps;
    private readonly pendingJobs = new Map<string, StoredJob & {hash: string; bytes: number}>();
    /** finished keys, oldest first */
    private readonly finished = new Map<string, {at: number; hash: string}>();
    /** message hash -> key, for pending and remembered jobs */
    private readonly hashes = new Map<string, string>();
    private readonly replies = new Map<string, KeptReply>();
    private replyBytes = 0;
    private pendingBytes = 0;
    private fd: number | null = null;
    /** where the next record goes: the end of the last complete one */
    private offset = 0;
    private records = 0;
    private dropped = 0;
    private discarded = 0;
    private unavailable: string | null = null;

    public constructor(deps: JobStoreDeps) {
        this.deps = deps;
    }

    private get path(): string {
        return join(this.deps.dir, "jobs.journal");
    }

    /**
     * Reads the journal (skipping damaged lines, which it reports), then compacts it. A state directory
     * that cannot be written does not stop the daemon: the store says why (stats().unavailable), refuses
     * accepts with a StorageError, and tries again at the next one.
     */
    public async start(): Promise<void> {
        let text = "";
        try {
            text = readFileSync(this.path, "utf8");
        } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== "ENOENT") this.deps.log.warn("job journal unreadable", {path: this.path, error: (err as Error).message});
        }
        let damaged = 0;
        // A last line without its newline is a record torn by a crash: never complete, never acknowledged.
        const complete = text.endsWith("\n") ? text : text.slice(0, text.lastIndexOf("\n") + 1);
        for (const [index, line] of complete.split("\n").entries()) {
            if (line.trim() === "") continue;
            const record = parseRecord(line);
            if (!record) {
                damaged++;
                this.deps.log.warn("job journal: damaged record skipped", {line: index + 1, bytes: line.length});
                continue;
            }
            this.apply(record);
        }
        if (complete.length < text.length) {
            damaged++;
            this.deps.log.warn("job journal: torn last record dropped", {line: complete.split("\n").length, bytes: text.length - complete.length});
        }
        this.dropped = damaged;
        this.expireFinished(Date.now());
        this.reopen();
        this.deps.log.info("job store open", {path: this.path, pending: this.pendingJobs.size, damagedRecords: damaged,
            ...(this.unavailable !== null ? {unavailable: this.unavailable} : {})});
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
        return [...this.pendingJobs.values()].map(({key, request, acceptedAt}) => ({key, request, acceptedAt}));
    }

    /** Pending keys of a request id, whatever their reply topic (a cancel names only the id). */
    public pendingKeys(id: string): string[] {
        return [...this.pendingJobs.values()].filter((j) => j.request.id === id).map((j) => j.key);
    }

    /** What is known of a key: pending, done (with its kept reply, if still kept), or nothing. */
    public lookup(key: string): KeyState {
        const pending = this.pendingJobs.get(key);
        if (pending) return {state: "pending", hash: pending.hash};
        const done = this.finished.get(key);
        return done ? {state: "done", at: done.at, hash: done.hash, reply: this.replies.get(key) ?? null} : null;
    }

    /** The key a message with this hash was taken under, if pending or remembered. */
    public keyForHash(hash: string): string | null {
        return this.hashes.get(hash) ?? null;
    }

    /**
     * Appends and fdatasyncs the job; returns only when it is on disk. Throws StorageError when the
     * journal cannot take it (full, read-only, over maxPendingBytes); nothing is half-written then.
     */
    public accept(key: string, request: Record<string, unknown>, hash: string): void {
        const at = Date.now();
        const record: JournalRecord = {op: "accept", key, request, at, hash};
        const bytes = Buffer.byteLength(JSON.stringify(record)) + 1;
        const cap = this.deps.maxPendingBytes ?? 64 * 1024 * 1024;
        if (this.pendingBytes + bytes > cap) {
            throw new StorageError(`the job journal holds ${this.pendingJobs.size} pending requests (${this.pendingBytes} bytes); `
                + `the limit is ${cap} bytes`, "capped");
        }
        this.append(record, true);
        this.pendingJobs.set(key, {key, request, acceptedAt: at, hash, bytes});
        this.pendingBytes += bytes;
        this.hashes.set(hash, key);
    }

    /**
     * Marks a job finished, keeping its final reply (when given and small) for re-answers. Not synced at
     * once: losing it only risks answering a job twice. A journal that cannot be written is logged, not thrown.
     */
    public finish(key: string, reply: KeptReply | null = null): void {
        const job = this.pendingJobs.get(key);
        if (!job) return;
        this.pendingJobs.delete(key);
        this.pendingBytes -= job.bytes;
        const at = Date.now();
        this.finished.set(key, {at, hash: job.hash});
        if (reply) this.keepReply(key, reply);
        this.expireFinished(at);
        try {
            this.append({op: "done", key, at, hash: job.hash}, false);
            if (this.records >= (this.deps.compactEvery ?? 1000)) this.compact();
        } catch (err) {
            this.deps.log.warn("job journal: done record not written; the job may run again after a restart", {key, error: (err as Error).message});
        }
    }

    /** Makes every record written so far durable (fdatasync); false when the journal cannot be synced now. */
    public sync(): boolean {
        if (this.fd === null) return false;
        try {
            fdatasyncSync(this.fd);
            return true;
        } catch {
            return false;
        }
    }

    /** A journaled job that cannot be run (unreadable after a restart): removed, and counted as damaged. */
    public discard(key: string): void {
        if (!this.pendingJobs.has(key)) return;
        this.discarded++;
        this.finish(key);
    }

    /**
     * Remembers a message hash with no job (e.g. a refused retained request), so its copies are recognised,
     * also after a restart within the dedupe window (a `done` record, as for an answered job; not synced).
     */
    public rememberHash(hash: string, key: string): void {
        const at = Date.now();
        const known = this.finished.has(key) || this.pendingJobs.has(key);
        if (!known) this.finished.set(key, {at, hash});
        this.hashes.set(hash, key);
        this.expireFinished(at);
        if (known) return;
        try {
            this.append({op: "done", key, at, hash}, false);
            if (this.records >= (this.deps.compactEvery ?? 1000)) this.compact();
        } catch (err) {
            this.deps.log.warn("job journal: record of a refused message not written; a copy after a restart is refused again", {key, error: (err as Error).message});
        }
    }

    public stats(): JobStoreStats {
        return {pending: this.pendingJobs.size, pendingBytes: this.pendingBytes, remembered: this.finished.size, droppedAtOpen: this.dropped,
            damagedAtStart: this.dropped + this.discarded, journalRecords: this.records, unavailable: this.unavailable};
    }

    private apply(record: JournalRecord): void {
        const hash = record.hash ?? "";
        if (record.op === "accept") {
            const bytes = Buffer.byteLength(JSON.stringify(record)) + 1;
            this.pendingJobs.set(record.key, {key: record.key, request: record.request, acceptedAt: record.at, hash, bytes});
            this.pendingBytes += bytes;
        } else {
            const job = this.pendingJobs.get(record.key);
            if (job) {
                this.pendingJobs.delete(record.key);
                this.pendingBytes -= job.bytes;
            }
            this.finished.set(record.key, {at: record.at, hash: job?.hash ?? hash});
        }
        if (hash !== "") this.hashes.set(hash, record.key);
    }

    private keepReply(key: string, reply: KeptReply): void {
        const limit = this.deps.keptReplyBytes ?? 4 * 1024 * 1024;
        const bytes = reply.payload.length * 2;
        if (bytes > limit / 16) return; // one reply never takes more than a sixteenth of the room
        this.replies.set(key, reply);
        this.replyBytes += bytes;
        for (const [old, kept] of this.replies) {
            if (this.replyBytes <= limit) break;
            this.replies.delete(old);
            this.replyBytes -= kept.payload.length * 2;
        }
    }

    private expireFinished(now: number): void {
        const window = this.deps.dedupeWindowMs ?? 3_600_000;
        for (const [key, {at, hash}] of this.finished) {
            if (now - at <= window && this.finished.size <= 10_000) break;
            this.finished.delete(key);
            if (this.hashes.get(hash) === key) this.hashes.delete(hash);
            const kept = this.replies.get(key);
            if (kept) {
                this.replies.delete(key);
                this.replyBytes -= kept.payload.length * 2;
            }
        }
    }

    /** One record, at the end of the last complete one; a failed or short write is cut back off. */
    private append(record: JournalRecord, sync: boolean): void {
        if (this.fd === null && !this.reopen()) throw this.storageError();
        const fd = this.fd!;
        const buf = Buffer.from(JSON.stringify(record) + "\n", "utf8");
        try {
            let done = 0;
            while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, this.offset + done);
            if (sync) fdatasyncSync(fd);
        } catch (err) {
            try {
                ftruncateSync(fd, this.offset);
            } catch {
                // the next record is written at the same offset anyway, over what is left
            }
            const code = (err as NodeJS.ErrnoException).code;
            this.markUnavailable(err as NodeJS.ErrnoException);
            // Full: go on with the open file (a reopen compacts, a whole copy). Read-only or EIO: reopen by path next time.
            if (code !== "ENOSPC" && code !== "EDQUOT") {
                this.fd = null;
                try {
                    closeSync(fd);
                } catch {
                    // nothing more to do with a descriptor on a failed filesystem
                }
            }
            throw this.storageError();
        }
        this.offset += buf.length;
        this.records++;
        if (this.unavailable !== null) {
            this.deps.log.info("job journal writable again", {path: this.path});
            this.unavailable = null;
        }
    }

    /** Compacts, which opens the journal; false when that cannot be done (the store is unavailable until it can). */
    private reopen(): boolean {
        try {
            mkdirSync(this.deps.dir, {recursive: true, mode: 0o700});
            this.compact();
            return true;
        } catch (err) {
            this.markUnavailable(err as NodeJS.ErrnoException);
            return false;
        }
    }

    /**
     * Rewrites the journal with only what is still needed: pending jobs and remembered keys. A copy that
     * cannot be finished (the disk fills) is removed: left, it would hold the space appends need.
     */
    private compact(): void {
        const tmp = this.path + ".tmp";
        const out = openSync(tmp, "w", 0o600);
        try {
            const lines: string[] = [];
            for (const [key, {at, hash}] of this.finished) lines.push(JSON.stringify({op: "done", key, at, hash}));
            for (const job of this.pendingJobs.values())
                lines.push(JSON.stringify({op: "accept", key: job.key, request: job.request, at: job.acceptedAt, hash: job.hash}));
            const buf = Buffer.from(lines.length > 0 ? lines.join("\n") + "\n" : "", "utf8");
            let done = 0;
            while (done < buf.length) done += writeSync(out, buf, done, buf.length - done);
            fdatasyncSync(out);
        } catch (err) {
            closeSync(out);
            rmSync(tmp, {force: true});
            throw err;
        }
        closeSync(out);
        if (this.fd !== null) closeSync(this.fd);
        this.fd = null;
        renameSync(tmp, this.path);
        syncDir(this.deps.dir);
        this.fd = openSync(this.path, "r+", 0o600);
        this.offset = fstatSync(this.fd).size;
        this.records = this.pendingJobs.size + this.finished.size;
    }

    private markUnavailable(err: NodeJS.ErrnoException): void {
        const what = err.code === "ENOSPC" || err.code === "EDQUOT" ? "the state directory is full"
            : err.code === "EROFS" || err.code === "EACCES" || err.code === "EPERM" ? "the state directory cannot be written" : "the job journal cannot be written";
        const reason = `${what} (${err.code ?? "error"}: ${this.deps.dir})`;
        if (this.unavailable !== reason) this.deps.log.error("job journal unavailable", {path: this.path, reason});
        this.unavailable = reason;
    }

    private storageError(): StorageError {
        const reason = this.unavailable ?? "the job journal cannot be written";
        return new StorageError(reason, /full/.test(reason) ? "full" : "unwritable");
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
    const hash = typeof r.hash === "string" ? {hash: r.hash} : {};
    if (r.op === "done") return {op: "done", key: r.key, at: r.at, ...hash};
    if (r.op === "accept" && typeof r.request === "object" && r.request !== null)
        return {op: "accept", key: r.key, request: r.request as Record<string, unknown>, at: r.at, ...hash};
    return null;
}
