/**
 * Per-request figures for health and /metrics: token counts, generation speed and time to first
 * token. The daemon records each finished generation and each error reply; everything here is
 * O(1) per request except the reads, which sort or sum bounded windows.
 */

/** Error codes answered before a request was accepted: counted as rejected, not failed. */
const REJECTION_CODES = new Set(["invalid_json", "invalid_request", "invalid_encoding", "payload_too_large", "queue_full", "shutting_down", "paused", "duplicate_id", "unavailable"]);

export interface GenerationRecord {
    promptTokens: number;
    completionTokens: number;
    /** prompt evaluation through the first token; null when no token came */
    ttftMs: number | null;
    /** generation time, prompt evaluation included */
    totalMs: number;
}

export interface InferenceFigures {
    /** generations answered `ok` (any finish reason) */
    completed: number;
    /** accepted requests answered with an error (timeout, cancelled, internal, ...) */
    failed: number;
    /** requests refused at intake (invalid, too large, queue full) */
    rejected: number;
    /** error replies by code */
    errors: Record<string, number>;
    promptTokens: number;
    tokensGenerated: number;
    /** seconds spent evaluating prompts (to the first token) */
    promptSeconds: number;
    /** seconds spent generating after the first token */
    generationSeconds: number;
    /**
     * `recent`: generation speed over the generations that finished in the last `windowSeconds`,
     * null when none did (idle); `last` keeps the last request's speed however old it is.
     */
    tokensPerSecond: {last: number | null; average: number | null; recent: number | null; windowSeconds: number};
    /** percentiles over the last `window` requests; `count` is every TTFT ever recorded */
    ttftMs: {p50: number | null; p95: number | null; samples: number; count: number};
}

/** Tokens per second of prompts and of generation over the recent window; null when nothing finished in it. */
export interface RecentRates {
    prompt: number | null;
    predicted: number | null;
}

interface Finished {
    at: number;
    promptTokens: number;
    promptMs: number;
    timedTokens: number;
    generationMs: number;
}

/** At most this many finished generations are kept for the recent rates, however short the requests. */
const MAX_RECENT = 2000;

export interface InferenceStatsOptions {
    /** how many recent TTFTs the percentiles cover; default 200 */
    window?: number;
    /** the window of the recent rates; default 60 s */
    rateWindowMs?: number;
    now?: () => number;
}

export class InferenceStats {
    private readonly window: number;
    private readonly rateWindowMs: number;
    private readonly now: () => number;
    private readonly finished: Finished[] = [];
    private completed = 0;
    private failed = 0;
    private rejected = 0;
    private readonly errors = new Map<string, number>();
    private promptTokens = 0;
    private tokensGenerated = 0;
    private promptMs = 0;
    private generationMs = 0;
    /** tokens after the first, over generationMs: the figure replies report as tokensPerSecond */
    private timedTokens = 0;
    private lastTokensPerSecond: number | null = null;
    private readonly ttfts: number[] = [];
    private ttftNext = 0;
    private ttftCount = 0;

    public constructor(options: InferenceStatsOptions = {}) {
        this.window = options.window ?? 200;
        this.rateWindowMs = options.rateWindowMs ?? 60_000;
        this.now = options.now ?? Date.now;
    }

    public recordGeneration(r: GenerationRecord): void {
        this.completed++;
        this.promptTokens += r.promptTokens;
        this.tokensGenerated += r.completionTokens;
        if (r.ttftMs !== null) {
            this.promptMs += r.ttftMs;
            this.ttftCount++;
            if (this.ttfts.length < this.window) this.ttfts.push(r.ttftMs);
            else this.ttfts[this.ttftNext] = r.ttftMs;
            this.ttftNext = (this.ttftNext + 1) % this.window;
        }
        const genMs = r.totalMs - (r.ttftMs ?? r.totalMs);
        // The first token's time is in the TTFT; speed is counted over the tokens after it.
        const timed = genMs > 0 && r.completionTokens > 1;
        if (timed) {
            this.generationMs += genMs;
            this.timedTokens += r.completionTokens - 1;
            this.lastTokensPerSecond = (r.completionTokens - 1) / (genMs / 1000);
        }
        this.finished.push({at: this.now(), promptTokens: r.promptTokens, promptMs: r.ttftMs ?? 0,
            timedTokens: timed ? r.completionTokens - 1 : 0, generationMs: timed ? genMs : 0});
        if (this.finished.length > MAX_RECENT) this.finished.shift();
    }

    /** Prompt and generation speed over the generations that finished within the rate window. */
    public recentRates(): RecentRates {
        const since = this.now() - this.rateWindowMs;
        while (this.finished.length > 0 && this.finished[0]!.at < since) this.finished.shift();
        let promptTokens = 0, promptMs = 0, timedTokens = 0, generationMs = 0;
        for (const f of this.finished) {
            promptTokens += f.promptTokens;
            promptMs += f.promptMs;
            timedTokens += f.timedTokens;
            generationMs += f.generationMs;
        }
        return {
            prompt: promptMs > 0 ? round(promptTokens / (promptMs / 1000)) : null,
            predicted: generationMs > 0 ? round(timedTokens / (generationMs / 1000)) : null
        };
    }

    public recordError(code: string): void {
        this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
        if (REJECTION_CODES.has(code)) this.rejected++;
        else this.failed++;
    }

    public figures(): InferenceFigures {
        const sorted = [...this.ttfts].sort((a, b) => a - b);
        return {
            completed: this.completed, failed: this.failed, rejected: this.rejected,
            errors: Object.fromEntries(this.errors),
            promptTokens: this.promptTokens, tokensGenerated: this.tokensGenerated,
            promptSeconds: this.promptMs / 1000, generationSeconds: this.generationMs / 1000,
            tokensPerSecond: {
                last: round(this.lastTokensPerSecond),
                average: this.generationMs > 0 ? round(this.timedTokens / (this.generationMs / 1000)) : null,
                recent: this.recentRates().predicted,
                windowSeconds: Math.round(this.rateWindowMs / 1000)
            },
            ttftMs: {p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), samples: sorted.length, count: this.ttftCount}
        };
    }
}

/** Nearest-rank percentile of an ascending list; null when empty. */
export function percentile(sorted: readonly number[], q: number): number | null {
    if (sorted.length === 0) return null;
    const rank = Math.max(1, Math.ceil(q * sorted.length));
    return sorted[Math.min(sorted.length, rank) - 1] ?? null;
}

function round(value: number | null): number | null {
    return value === null ? null : Math.round(value * 100) / 100;
}
