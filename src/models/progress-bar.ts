// Progress of `qwen-edge pull`: one line redrawn with \r on a terminal, plain lines every few seconds
// otherwise (journald, CI logs), so a multi-GB download neither floods a log nor looks frozen.
import {formatBytes} from "../util/size.js";
import type {ProvisionProgress} from "./provision.js";

export interface ProgressBarOptions {
    /** e.g. process.stderr; a TTY gets a redrawn bar */
    stream: {write(chunk: string): unknown; isTTY?: boolean; columns?: number};
    label: string;
    /** least time between plain lines when the stream is not a TTY; default 5000 ms */
    lineIntervalMs?: number;
    /** least time between redraws on a TTY; default 100 ms */
    redrawIntervalMs?: number;
    now?: () => number;
}

function formatDuration(seconds: number): string {
    const s = Math.round(seconds);
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** One line describing `p`; with `barWidth` > 0 it includes a [####....] bar. */
export function renderProgress(p: ProvisionProgress, label: string, barWidth = 0): string {
    const parts = [label, p.phase];
    const total = p.totalBytes;
    if (total !== null && total > 0) {
        const fraction = Math.min(1, p.downloadedBytes / total);
        if (barWidth > 0) {
            const filled = Math.round(fraction * barWidth);
            parts.push(`[${"#".repeat(filled)}${"-".repeat(barWidth - filled)}]`);
        }
        parts.push(`${(fraction * 100).toFixed(1)}%`, `${formatBytes(p.downloadedBytes)} / ${formatBytes(total)}`);
    } else if (p.downloadedBytes > 0) {
        parts.push(formatBytes(p.downloadedBytes));
    }
    if (p.phase === "downloading" && p.bytesPerSecond !== undefined && p.bytesPerSecond > 0) {
        parts.push(`${formatBytes(p.bytesPerSecond)}/s`);
        if (total !== null && total > p.downloadedBytes) parts.push(`ETA ${formatDuration((total - p.downloadedBytes) / p.bytesPerSecond)}`);
    }
    return parts.join("  ");
}

export class ProgressBar {
    private lastAt = -Infinity;
    private lastPhase: ProvisionProgress["phase"] | null = null;
    private lastLength = 0;
    private pending: ProvisionProgress | null = null;

    public constructor(private readonly options: ProgressBarOptions) {}

    public update(p: ProvisionProgress): void {
        const now = (this.options.now ?? Date.now)();
        const tty = this.options.stream.isTTY === true;
        const interval = tty ? this.options.redrawIntervalMs ?? 100 : this.options.lineIntervalMs ?? 5000;
        const complete = p.totalBytes !== null && p.downloadedBytes >= p.totalBytes;
        if (p.phase === this.lastPhase && !complete && now - this.lastAt < interval) {
            this.pending = p;
            return;
        }
        this.draw(p, now);
    }

    /** Draws the last throttled update, ends the bar's line, and prints `message` if given. */
    public finish(message?: string): void {
        if (this.pending !== null) this.draw(this.pending, (this.options.now ?? Date.now)());
        if (this.options.stream.isTTY === true && this.lastLength > 0) this.options.stream.write("\n");
        this.lastLength = 0;
        if (message !== undefined) this.options.stream.write(`${message}\n`);
    }

    private draw(p: ProvisionProgress, now: number): void {
        this.pending = null;
        this.lastAt = now;
        this.lastPhase = p.phase;
        const {stream, label} = this.options;
        if (stream.isTTY !== true) {
            stream.write(`${renderProgress(p, label)}\n`);
            return;
        }
        const columns = stream.columns ?? 80;
        const bar = Math.max(0, Math.min(40, columns - 75));
        const line = renderProgress(p, label, bar > 10 ? bar : 0).slice(0, Math.max(10, columns - 1));
        // pad over the previous, possibly longer line instead of relying on ANSI erase
        stream.write(`\r${line.padEnd(this.lastLength)}`);
        this.lastLength = line.length;
    }
}
