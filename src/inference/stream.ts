/**
 * Coalesces streamed text so a fast model does not cost one MQTT publish per token: the first delta
 * goes out at once (time to first chunk is what users feel), later ones are batched per interval.
 */
/** Answer text, or thought text (sent as `thinkingDelta` so `delta`s join to exactly the answer). */
export type StreamPart = "text" | "thinking";

export interface StreamCoalescerOptions {
    intervalMs: number;
    /** flush early when this many characters are waiting; default 1024 */
    maxPendingChars?: number;
    emit: (seq: number, delta: string, part: StreamPart) => void;
}

export class StreamCoalescer {
    private readonly options: StreamCoalescerOptions;
    private pending = "";
    private pendingPart: StreamPart = "text";
    private seq = 0;
    private timer: NodeJS.Timeout | null = null;
    private lastEmit = 0;

    public constructor(options: StreamCoalescerOptions) {
        this.options = options;
    }

    public push(delta: string, part: StreamPart = "text"): void {
        if (part !== this.pendingPart) {
            this.flush();
            this.pendingPart = part;
        }
        this.pending += delta;
        const now = Date.now();
        if (this.seq === 0 || now - this.lastEmit >= this.options.intervalMs || this.pending.length >= (this.options.maxPendingChars ?? 1024)) {
            this.flush();
            return;
        }
        this.timer ??= setTimeout(() => this.flush(), this.options.intervalMs - (now - this.lastEmit));
    }

    /** Emits what is left; call before the final reply so chunks precede it. */
    public close(): void {
        this.flush();
    }

    private flush(): void {
        if (this.timer) clearTimeout(this.timer);
        this.timer = null;
        if (this.pending === "") return;
        const delta = this.pending;
        this.pending = "";
        this.lastEmit = Date.now();
        this.options.emit(this.seq++, delta, this.pendingPart);
    }
}
