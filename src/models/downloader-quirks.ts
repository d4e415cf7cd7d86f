// Workarounds for how node-llama-cpp 3.21.1's downloader (ipull 3.9) behaves when things go wrong, as measured:
// background retries that cancel() does not stop, and unhandled rejections when a range or a write fails.
import path from "node:path";
import type {ModelDownloader} from "node-llama-cpp";

const NO_SPACE_CODES = new Set(["ENOSPC", "EDQUOT"]);

export function isNoSpace(err: unknown): boolean {
    const code = (err as {code?: unknown} | null)?.code;
    return typeof code === "string" && NO_SPACE_CODES.has(code);
}

/**
 * createModelDownloader has no retry option; ipull then retries a failed range 150 times (~12 min against a dead
 * server), cancel() does not stop that loop, and a failed write is retried for ~17 min. Our stall watchdog bounds
 * the wait, but the loop would live on in the background: lower both on the instance (pinned node-llama-cpp
 * 3.21.1, ipull 3.9), after checking its shape. Returns false when the shape was not found.
 */
export function limitInternalRetries(downloader: ModelDownloader): boolean {
    type Options = {retry?: unknown} | undefined;
    const engines = (downloader as unknown as {_specificFileDownloaders?: unknown})._specificFileDownloaders;
    if (!Array.isArray(engines) || engines.length === 0) return false;
    let limited = 0;
    for (const engine of engines as Array<{options?: {fetchStream?: {options?: Options}; writeStream?: {options?: Options}}}>) {
        const fetchOptions = engine.options?.fetchStream?.options;
        const writeOptions = engine.options?.writeStream?.options;
        if (fetchOptions === undefined || !("retry" in fetchOptions) || writeOptions === undefined) continue;
        fetchOptions.retry = {retries: 4, factor: 2, minTimeout: 500, maxTimeout: 4000};
        writeOptions.retry = {retries: 2, factor: 2, minTimeout: 500, maxTimeout: 2000};
        limited++;
    }
    return limited === engines.length;
}

let guardUsers = 0;

/**
 * ipull leaves an unhandled rejection per failed range and per failed write (measured: ~90 for one ENOSPC,
 * 6 when an abandoned download's retries run out), each of which would crash the process. While any download
 * lives, this listener takes those (ipull frames in the stack, or ENOSPC) and leaves every other rejection to
 * the application's own handler or, when there is none, to Node's default crash. Returns the release function.
 */
export function holdRejectionGuard(): () => void {
    if (guardUsers++ === 0) process.on("unhandledRejection", swallowDownloaderRejection);
    let released = false;
    return () => {
        if (released) return;
        released = true;
        // stray rejections arrive a few ticks after the download settles
        setTimeout(() => { if (--guardUsers === 0) process.off("unhandledRejection", swallowDownloaderRejection); }, 2000).unref();
    };
}

/** A stray rejection from the downloader (ipull frames in the stack, or a full disk): not our bug. */
export function isDownloaderStray(reason: unknown): boolean {
    const stack = (reason as {stack?: unknown} | null)?.stack;
    return isNoSpace(reason) || (typeof stack === "string" && stack.includes(`${path.sep}ipull${path.sep}`));
}

function swallowDownloaderRejection(reason: unknown): void {
    if (isDownloaderStray(reason)) return;
    if (process.listenerCount("unhandledRejection") === 1) throw reason;
}
