// Provisions the model file: a sound local copy is used as is (air-gapped devices); otherwise it is fetched
// with node-llama-cpp's downloader (ipull: parallel ranges, resumable `.ipull` file) under a stall watchdog,
// after a free-space check, then verified (GGUF structure, size, sha256) and renamed into place.
import {constants} from "node:fs";
import {access, mkdir, readdir, readFile, rename, rm, stat, statfs, writeFile} from "node:fs/promises";
import path from "node:path";
import type {ModelDownloader} from "node-llama-cpp";
import {ChecksumMismatchError, ModelUnavailableError, NoSpaceError, QwenEdgeError} from "../errors.js";
import {holdRejectionGuard, isNoSpace, limitInternalRetries} from "./downloader-quirks.js";
import {inspectGgufFile, ModelFileError, type GgufFileFacts} from "./gguf-check.js";
import {formatBytes} from "../util/size.js";
import {hfEndpoint, hfFileInfo, parseHfUri, probeRemote, RemoteStatusError, resolveDownloadUrl} from "./provision-remote.js";
import {syncDir} from "../util/fs.js";
import {redactUrl} from "../util/url.js";

export {ModelFileError, type ModelFileProblem} from "./gguf-check.js";

export interface ModelTarget {
    variant: string;
    quant: string;
    /** "hf:owner/repo/File.gguf" (optionally "#revision") or an http(s) URL */
    uri: string;
    fileName: string;
    /** exact expected size, when known */
    sizeBytes?: number;
    /** expected sha256 (hex), when known; wins over the Hugging Face API's */
    sha256?: string;
}

export interface ProvisionProgress {
    phase: "checking" | "downloading" | "verifying" | "ready";
    downloadedBytes: number;
    totalBytes: number | null;
    bytesPerSecond?: number;
}

export interface ProvisionOptions {
    dir: string;
    allowDownload: boolean;
    signal?: AbortSignal;
    onProgress?: (p: ProvisionProgress) => void;
    log: {info(msg: string, meta?: object): void; warn(msg: string, meta?: object): void};
    /** further attempts after a failed one (each resumes the partial file); default 2 */
    retries?: number;
    hfToken?: string;
    /** ask the Hugging Face API for the sha256 of `hf:` files; default true */
    lookupChecksum?: boolean;
    /** Hugging Face endpoint; default $HF_ENDPOINT or https://huggingface.co/ */
    hfEndpoint?: string;
    /** bytes to keep free besides the model; default 64 MiB */
    diskReserveBytes?: number;
    /** give an attempt up when no byte arrives for this long; default 60 s */
    stallTimeoutMs?: number;
    /** wait before the first retry, doubled each time; default 1 s */
    retryDelayMs?: number;
    /** free bytes on the file system of `dir`; default from fs.statfs (tests inject) */
    freeBytes?: (dir: string) => Promise<number>;
    /** "when-changed" (default) skips re-hashing a local file whose size and mtime match its last verification */
    rehash?: "always" | "when-changed";
}

export interface ProvisionedModel {
    path: string;
    bytes: number;
    sha256: string | null;
    /** the content matched a sha256 from the target or the Hugging Face API (now or when it was downloaded) */
    verified: boolean;
    source: "local" | "download";
}

/** What we knew about a file the last time we hashed it; lets a restart skip hashing gigabytes. */
interface VerifiedRecord {sha256: string; bytes: number; mtimeMs: number; verified: boolean}

const MiB = 1024 * 1024;
const LOG_EVERY_MS = 5000;
const PROGRESS_EVERY_MS = 250;

/** Throws ModelFileError (a ModelUnavailableError) when the file is missing, not GGUF, truncated or mismatched. */
export async function checkGgufFile(path: string, expected?: {sizeBytes?: number; sha256?: string}): Promise<void> {
    await inspectGgufFile(path, expected);
}

export async function provisionModel(target: ModelTarget, opts: ProvisionOptions): Promise<ProvisionedModel> {
    const dir = path.resolve(opts.dir);
    const finalPath = path.join(dir, target.fileName);
    const report = progressReporter(opts.onProgress);
    opts.signal?.throwIfAborted();
    report({phase: "checking", downloadedBytes: 0, totalBytes: target.sizeBytes ?? null});

    const local = await useLocalFile(finalPath, target, opts, report);
    if (local !== null) {
        report({phase: "ready", downloadedBytes: local.bytes, totalBytes: local.bytes});
        opts.log.info("model file ready", {...local});
        return local;
    }
    const endpoint = hfEndpoint(opts.hfEndpoint);
    const url = resolveDownloadUrl(target.uri, endpoint);
    const place = `place ${target.fileName} in ${dir} (download: ${redactUrl(url)})`;
    if (!opts.allowDownload) throw new ModelUnavailableError(`no model file: ${place} or allow downloads`);
    return download(target, opts, {dir, finalPath, url, endpoint, place, report});
}

/**
 * Bytes of an interrupted download of `fileName` in `dir` that the next attempt resumes from: what the
 * downloader has written to its `.partial.ipull` file (it saves in 5 MiB pieces; the file is sparse, so
 * its allocated blocks count, not its length). 0 when there is none.
 */
export async function keptDownloadBytes(dir: string, fileName: string): Promise<number> {
    const s = await stat(`${path.join(path.resolve(dir), fileName)}.partial.ipull`).catch(() => null);
    return s === null ? 0 : Math.min(s.size, s.blocks * 512);
}

type Report = (p: ProvisionProgress) => void;

/** Calls `onProgress` at most every 250 ms (always on a phase change or completion); its errors are not ours. */
function progressReporter(onProgress?: Report): Report {
    let lastAt = 0;
    let lastPhase: ProvisionProgress["phase"] | null = null;
    return (p) => {
        const now = Date.now();
        const complete = p.totalBytes !== null && p.downloadedBytes >= p.totalBytes;
        if (onProgress === undefined || (p.phase === lastPhase && !complete && now - lastAt < PROGRESS_EVERY_MS)) return;
        lastAt = now;
        lastPhase = p.phase;
        try { onProgress(p); } catch { /* a broken progress display must not break provisioning */ }
    };
}

async function useLocalFile(finalPath: string, target: ModelTarget, opts: ProvisionOptions, report: Report): Promise<ProvisionedModel | null> {
    const record = await readRecord(finalPath);
    let facts: GgufFileFacts;
    let fromRecord = false;
    try {
        const st = await stat(finalPath).catch(() => null);
        if (st === null) return null;
        const expectedSha = target.sha256?.toLowerCase() ?? record?.sha256;
        fromRecord = opts.rehash !== "always" && record !== null && record.bytes === st.size
            && record.mtimeMs === st.mtimeMs && record.sha256 === expectedSha;
        if (expectedSha !== undefined && !fromRecord) opts.log.info("hashing the local model file", {path: finalPath, bytes: st.size});
        facts = await inspectGgufFile(finalPath, {sizeBytes: target.sizeBytes, sha256: fromRecord ? undefined : expectedSha},
            {onHashBytes: (done) => report({phase: "verifying", downloadedBytes: done, totalBytes: st.size})});
    } catch (err) {
        if (!(err instanceof ModelFileError)) throw err;
        const aside = await setAside(finalPath);
        opts.log.warn("local model file is unusable; moved aside", {path: finalPath, reason: err.reason, error: err.message, movedTo: aside});
        if (!opts.allowDownload) {
            // The path leads the message already: "there" keeps the status line short enough for the advice.
            throw new ModelFileError(err.reason, finalPath, `${err.detail}; moved aside as ${path.basename(aside)}: `
                + "place a good copy there or allow downloads");
        }
        return null;
    }
    const verified = target.sha256 !== undefined || (record?.verified ?? false);
    const sha256 = facts.sha256 ?? (fromRecord ? record?.sha256 ?? null : null);
    if (facts.sha256 !== null) await writeRecord(finalPath, {sha256: facts.sha256, bytes: facts.bytes, mtimeMs: facts.mtimeMs, verified});
    return {path: finalPath, bytes: facts.bytes, sha256, verified: sha256 !== null && verified, source: "local"};
}

interface Where {dir: string; finalPath: string; url: string; endpoint: string; place: string; report: Report}

async function download(target: ModelTarget, opts: ProvisionOptions, where: Where): Promise<ProvisionedModel> {
    const {dir, finalPath, url} = where;
    // ipull renames its `.ipull` file to this name even after a failed write, so the final name only ever
    // appears after our own verification
    const partial = `${finalPath}.partial`;
    const started = Date.now();
    try {
        await mkdir(dir, {recursive: true});
        await access(dir, constants.W_OK);
    } catch (err) {
        throw new ModelUnavailableError(`cannot write to the model directory ${dir} (${(err as NodeJS.ErrnoException).code ?? String(err)}): ${where.place}`);
    }
    const expected = {sizeBytes: target.sizeBytes, sha256: target.sha256?.toLowerCase()};
    const hf = parseHfUri(target.uri);
    // node-llama-cpp falls back to $HF_TOKEN too: our own requests must agree with it
    const token = opts.hfToken ?? process.env.HF_TOKEN;
    const authHeaders = token !== undefined && token !== "" && hf !== null ? {authorization: `Bearer ${token}`} : undefined;
    if (hf !== null && expected.sha256 === undefined && opts.lookupChecksum !== false) {
        const info = await hfFileInfo(where.endpoint, hf, authHeaders, opts.signal).catch((err: unknown) => {
            opts.signal?.throwIfAborted();
            opts.log.warn("could not ask Hugging Face for the checksum; the download will not be verified", {error: String(err)});
            return null;
        });
        if (info !== null) {
            expected.sha256 = info.sha256 ?? undefined;
            expected.sizeBytes ??= info.sizeBytes ?? undefined;
        }
    }

    const retries = Math.max(0, opts.retries ?? 2);
    for (let attempt = 0; ; attempt++) {
        try {
            const remote = await probeRemote(url, authHeaders, where.endpoint, opts.signal);
            if (expected.sha256 === undefined && remote.linkedSha256 !== null) expected.sha256 = remote.linkedSha256;
            if (expected.sizeBytes !== undefined && remote.totalBytes !== null && remote.totalBytes !== expected.sizeBytes) {
                throw new ModelUnavailableError(`the server has ${formatBytes(remote.totalBytes)} (${remote.totalBytes} bytes) for `
                    + `${target.fileName} but ${expected.sizeBytes} bytes are expected: is the catalog out of date?`);
            }
            const total = expected.sizeBytes ?? remote.totalBytes;
            await ensureFreeSpace(opts, dir, finalPath, partial, total);
            opts.log.info("downloading model", {file: target.fileName, url: redactUrl(url), totalBytes: total,
                attempt: attempt + 1, sha256Known: expected.sha256 !== undefined});
            await fetchOnce(target, opts, where, partial, total);
            break;
        } catch (err) {
            if (isNoSpace(err)) {
                await removePartial(partial);
                throw new NoSpaceError(`disk full while downloading ${target.fileName} to ${dir}; the partial file was removed`);
            }
            if (opts.signal?.aborted === true || err instanceof QwenEdgeError) throw err;
            const reason = describeFailure(err);
            if (err instanceof RemoteStatusError && err.permanent) {
                const hint = err.status === 401 || err.status === 403 ? "; a gated repository needs a Hugging Face token" : "";
                throw new ModelUnavailableError(`cannot download ${target.fileName} (${reason}${hint}): ${where.place}`, {cause: err});
            }
            if (attempt >= retries) {
                throw new ModelUnavailableError(`cannot download ${target.fileName} (${reason}): ${where.place} or check the network`,
                    {cause: err});
            }
            const delay = (opts.retryDelayMs ?? 1000) * 2 ** attempt;
            opts.log.warn("model download attempt failed; retrying", {file: target.fileName, attempt: attempt + 1, error: reason, retryInMs: delay});
            await sleep(delay, opts.signal);
        }
    }

    let facts: GgufFileFacts;
    try {
        opts.log.info("verifying the downloaded model", {file: target.fileName, sha256Known: expected.sha256 !== undefined});
        facts = await inspectGgufFile(partial, {sizeBytes: expected.sizeBytes}, {hash: true,
            onHashBytes: (done) => where.report({phase: "verifying", downloadedBytes: done, totalBytes: expected.sizeBytes ?? null})});
    } catch (err) {
        await removePartial(partial);
        if (err instanceof ModelFileError) throw new ModelFileError(err.reason, finalPath, `the downloaded file is unusable: ${err.detail}`);
        throw err;
    }
    if (expected.sha256 !== undefined && facts.sha256 !== expected.sha256) {
        await removePartial(partial);
        throw new ChecksumMismatchError(`sha256 of the downloaded ${target.fileName} is ${facts.sha256}, expected ${expected.sha256}; the file was deleted`);
    }
    await rename(partial, finalPath);
    syncDir(dir);
    const sha256 = facts.sha256 ?? "";
    const verified = expected.sha256 !== undefined;
    await writeRecord(finalPath, {sha256, bytes: facts.bytes, mtimeMs: (await stat(finalPath)).mtimeMs, verified});
    if (!verified) opts.log.warn("no sha256 known for the model; only its size and GGUF structure were checked", {file: target.fileName});
    where.report({phase: "ready", downloadedBytes: facts.bytes, totalBytes: facts.bytes});
    opts.log.info("model downloaded", {path: finalPath, bytes: facts.bytes, sha256, verified, seconds: (Date.now() - started) / 1000});
    return {path: finalPath, bytes: facts.bytes, sha256, verified, source: "download"};
}

/** One run of node-llama-cpp's downloader, given up when no byte arrives for `stallTimeoutMs` or on abort. */
async function fetchOnce(target: ModelTarget, opts: ProvisionOptions, where: Where, partial: string, total: number | null): Promise<void> {
    const {createModelDownloader} = await import("node-llama-cpp");
    const stallMs = opts.stallTimeoutMs ?? 60_000;
    let lastByteAt = Date.now();
    let lastBytes = -1;
    let first: {at: number; bytes: number} | null = null;
    let lastLog = Date.now();
    const onProgress = ({downloadedSize, totalSize}: {downloadedSize: number; totalSize: number}): void => {
        const now = Date.now();
        if (downloadedSize !== lastBytes) { lastBytes = downloadedSize; lastByteAt = now; }
        first ??= {at: now, bytes: downloadedSize};
        const seconds = (now - first.at) / 1000;
        const bytesPerSecond = seconds > 0.5 ? Math.round((downloadedSize - first.bytes) / seconds) : undefined;
        const totalBytes = totalSize > 0 ? totalSize : total;
        where.report({phase: "downloading", downloadedBytes: downloadedSize, totalBytes, bytesPerSecond});
        if (now - lastLog >= LOG_EVERY_MS) {
            lastLog = now;
            const percent = totalBytes ? Math.round(downloadedSize / totalBytes * 1000) / 10 : null;
            opts.log.info("model download progress", {file: target.fileName, downloadedBytes: downloadedSize, totalBytes, percent, bytesPerSecond});
        }
    };

    // ipull leaves unhandled rejections behind when a range or a write fails, also long after we gave up on it
    const releaseGuard = holdRejectionGuard();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const interrupted = new Promise<"stalled" | "aborted">((resolve) => {
        onAbort = () => resolve("aborted");
        if (opts.signal?.aborted === true) onAbort();
        opts.signal?.addEventListener("abort", onAbort, {once: true});
        timer = setInterval(() => { if (Date.now() - lastByteAt > stallMs) resolve("stalled"); }, Math.min(1000, stallMs / 4));
    });
    const giveUp = (why: "stalled" | "aborted"): never => {
        opts.signal?.throwIfAborted();
        throw new Error(why === "stalled" ? `no data for ${stallMs / 1000} s` : "aborted");
    };
    const creating = createModelDownloader({
        modelUri: target.uri, dirPath: where.dir, fileName: path.basename(partial), onProgress,
        deleteTempFileOnCancel: false, skipExisting: true,
        // only for hf: URIs, else an http URL on the same host would be taken for a Hub repository
        ...(parseHfUri(target.uri) !== null ? {endpoints: {huggingFace: where.endpoint}} : {}),
        ...(opts.hfToken !== undefined ? {tokens: {huggingFace: opts.hfToken}} : {})
    });
    let settled: Promise<unknown> = creating;
    try {
        // ipull retries a dead server for minutes and ignores cancel meanwhile: race it, never await it alone
        const created = await Promise.race([creating, interrupted]);
        if (typeof created === "string") {
            void creating.then((d) => d.cancel({deleteTempFile: false}), () => undefined);
            return giveUp(created);
        }
        const downloader: ModelDownloader = created;
        if (!limitInternalRetries(downloader)) opts.log.warn("could not lower the downloader's internal retries (node-llama-cpp changed?)");
        const downloading = downloader.download();
        settled = downloading;
        const outcome = await Promise.race([downloading.then(() => "done" as const), interrupted]);
        if (outcome !== "done") {
            await downloader.cancel({deleteTempFile: false});
            return giveUp(outcome);
        }
        // an aborted or closed ipull download also resolves: only a complete file counts
        if (!(await stat(partial).then((s) => s.isFile(), () => false))) throw new Error("the downloader finished without a file");
    } finally {
        clearInterval(timer);
        if (onAbort !== undefined) opts.signal?.removeEventListener("abort", onAbort);
        // an abandoned download may still be retrying: keep the guard until ipull is done with it
        void settled.then(releaseGuard, releaseGuard);
    }
}

async function ensureFreeSpace(opts: ProvisionOptions, dir: string, finalPath: string, partial: string, total: number | null): Promise<void> {
    if (total === null) {
        opts.log.warn("the server did not say how big the model is; free disk space not checked", {dir});
        return;
    }
    const reserve = opts.diskReserveBytes ?? 64 * MiB;
    // `.ipull` is sparse: count its allocated blocks, not its length
    const resumed = await stat(`${partial}.ipull`).then((s) => Math.min(s.blocks * 512, total), () => 0);
    const complete = await stat(partial).then((s) => (s.size === total ? total : 0), () => 0);
    const need = Math.max(0, total - Math.max(resumed, complete)) + reserve;
    const freeBytes = opts.freeBytes ?? defaultFreeBytes;
    let free = await freeBytes(dir);
    if (free < need && (await removeSetAside(finalPath)) > 0) {
        opts.log.warn("removed set-aside copies of the model to make room", {dir});
        free = await freeBytes(dir);
    }
    if (free < need) {
        throw new NoSpaceError(`not enough disk space in ${dir} for ${path.basename(finalPath)}: ${formatBytes(need)} needed `
            + `(${formatBytes(need - reserve)} to download + ${formatBytes(reserve)} reserve), ${formatBytes(free)} free`);
    }
}

async function defaultFreeBytes(dir: string): Promise<number> {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
}

async function setAside(file: string): Promise<string> {
    // keep only the newest damaged copy: each is as big as the model
    await removeSetAside(file);
    const aside = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    await rename(file, aside);
    await rm(recordPath(file), {force: true});
    return aside;
}

async function removeSetAside(file: string): Promise<number> {
    const prefix = `${path.basename(file)}.corrupt-`;
    const names = (await readdir(path.dirname(file)).catch(() => [] as string[])).filter((n) => n.startsWith(prefix));
    await Promise.all(names.map((n) => rm(path.join(path.dirname(file), n), {force: true})));
    return names.length;
}

async function removePartial(partial: string): Promise<void> {
    await Promise.all([rm(partial, {force: true}), rm(`${partial}.ipull`, {force: true})]);
}

const recordPath = (file: string): string => `${file}.verified.json`;

async function readRecord(file: string): Promise<VerifiedRecord | null> {
    try {
        const r = JSON.parse(await readFile(recordPath(file), "utf8")) as Partial<VerifiedRecord>;
        if (typeof r.sha256 === "string" && typeof r.bytes === "number" && typeof r.mtimeMs === "number")
            return {sha256: r.sha256, bytes: r.bytes, mtimeMs: r.mtimeMs, verified: r.verified === true};
    } catch {
        // absent or unreadable: hash again
    }
    return null;
}

async function writeRecord(file: string, record: VerifiedRecord): Promise<void> {
    const tmp = `${recordPath(file)}.tmp`;
    await writeFile(tmp, JSON.stringify(record) + "\n");
    await rename(tmp, recordPath(file));
}

function describeFailure(err: unknown): string {
    const cause = (err as {cause?: {code?: unknown; message?: unknown}} | null)?.cause;
    if (typeof cause?.message === "string" && cause.message !== "") return cause.message;
    if (typeof cause?.code === "string") return cause.code;
    return err instanceof Error ? err.message : String(err);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
        const onAbort = (): void => { clearTimeout(t); reject(signal?.reason instanceof Error ? signal.reason : new Error("aborted")); };
        const t = setTimeout(() => { signal?.removeEventListener("abort", onAbort); resolve(); }, ms);
        signal?.addEventListener("abort", onAbort, {once: true});
    });
}
