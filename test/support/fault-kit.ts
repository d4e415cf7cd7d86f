/** Small tools the fault suite shares: /proc readings, evidence waits, log times, retained reads. */
import {readdirSync, readFileSync} from "node:fs";
import type {DaemonProcess} from "./daemon.js";
import {TestClient, type Received} from "./mqtt-client.js";

export interface ProcFigures {
    rssBytes: number;
    threads: number;
    fds: number;
}

/** VmRSS, thread count and open file descriptors of a process, from /proc. */
export function procFigures(pid: number): ProcFigures {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const field = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? NaN);
    return {rssBytes: field("VmRSS") * 1024, threads: field("Threads"), fds: readdirSync(`/proc/${pid}/fd`).length};
}

export const MiB = 1024 * 1024;

/** Polls `check` until it holds; the timeout error names what it waited for. */
export async function waitUntil(what: string, check: () => boolean, timeoutMs: number, everyMs = 20): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, everyMs));
    }
}

/** A daemon log line's own time (winston's ISO timestamp), ms since the epoch. */
export function logTime(line: Record<string, unknown>): number {
    return Date.parse(String(line.timestamp));
}

/** Log lines with this message at or after `since` (ms since the epoch). */
export function logsSince(daemon: DaemonProcess, message: string, since: number): Array<Record<string, unknown>> {
    return daemon.logs.filter((l) => l.message === message && logTime(l) >= since);
}

/** Final replies (not streamed chunks) received on `topic`. */
export function finals(client: TestClient, topic: string): Received[] {
    return client.received.filter((m) => m.topic === topic && m.json?.status !== "streaming");
}

/** The retained message on `topic`, as a client connecting now sees it. */
export async function retained(url: string, topic: string, timeoutMs = 5000): Promise<Received> {
    const reader = await TestClient.connect(url);
    try {
        await reader.subscribe(topic);
        return await reader.waitFor(`retained message on ${topic}`, (m) => m.topic === topic && m.retain, timeoutMs);
    } finally {
        await reader.close();
    }
}

/** The largest gap between consecutive times, in ms (0 for fewer than two). */
export function maxGap(times: readonly number[]): number {
    let gap = 0;
    for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
    return gap;
}
