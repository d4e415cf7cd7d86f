/**
 * Scheduler: a bounded FIFO queue in front of `parallel` generation slots, with per-job deadlines
 * and cancellation. It knows nothing of MQTT or the model: `run` does the work, `expire` answers a
 * job that ended before it ran. An AbortSignal's reason tells `run` why it was stopped.
 */
import {RequestError} from "../errors.js";
import {withTimeout} from "../util/timeout.js";
import type {Logger} from "../log.js";


/** The longest delay setTimeout keeps (2^31-1 ms); longer ones fire at once. */
const MAX_TIMER_MS = 2_147_483_647;
export type StopReason = "cancelled" | "timeout" | "shutdown";

export interface SchedulableJob {
    id: string;
    /** epoch ms after which the job is answered `timeout` */
    deadline: number;
    /** jobs with the same value run one at a time, in the order queued (a conversation's turns) */
    exclusive?: string;
}

export interface SchedulerDeps<J extends SchedulableJob> {
    log: Logger;
    maxQueue: number;
    parallel: number;
    /** runs one job; resolves when it is answered. Must not reject for request-level failures. */
    run: (job: J, signal: AbortSignal, queuedMs: number) => Promise<void>;
    /** answers a job that never ran (cancelled or timed out while queued) */
    expire: (job: J, reason: Exclude<StopReason, "shutdown">) => void;
    /** the queue or the running set changed (e.g. to leave or rejoin a fleet queue by capacity) */
    onChange?: () => void;
    /** test seam */
    now?: () => number;
}

export interface SchedulerStats {
    queued: number;
    running: number;
    completed: number;
    expired: number;
    rejected: number;
    avgJobMs: number | null;
    paused: boolean;
}

interface Entry<J> {
    job: J;
    queuedAt: number;
    controller: AbortController;
    timer: NodeJS.Timeout | null;
    running: boolean;
}

export class Scheduler<J extends SchedulableJob> {
    private readonly deps: SchedulerDeps<J>;
    private readonly queue: Entry<J>[] = [];
    private readonly running = new Map<string, Entry<J>>();
    private readonly idle = new Set<() => void>();
    private accepting = true;
    private paused = false;
    private completed = 0;
    private expired = 0;
    private rejected = 0;
    private avgJobMs: number | null = null;
    /** when recent jobs finished: the throughput behind retryAfterMs */
    private readonly finishedAt: number[] = [];
    /** jobs stopped by `stop()` before they finished: they stay pending in the job store */
    private abortedAtStop = 0;

    public constructor(deps: SchedulerDeps<J>) {
        this.deps = deps;
    }

    /**
     * Queues a job or throws RequestError `queue_full` (with a retry estimate) / `shutting_down`. A job
     * whose id is already queued or running is not queued again (false): one owner per id.
     */
    public submit(job: J, options: {force?: boolean} = {}): boolean {
        if (!this.accepting) throw new RequestError("shutting_down", "the daemon is shutting down");
        if (this.has(job.id)) {
            this.deps.log.warn("job already queued or running; not queued twice", {id: job.id});
            return false;
        }
        if (this.isFull() && options.force !== true) throw this.refuse();
        const entry: Entry<J> = {job, queuedAt: Date.now(), controller: new AbortController(), timer: null, running: false};
        this.armDeadline(entry);
        this.queue.push(entry);
        this.pump();
        this.deps.onChange?.();
        return true;
    }

    /**
     * Node fires a timer longer than 2^31-1 ms (24.8 days) after 1 ms, and timeoutMs has no upper bound: a
     * far deadline is reached in steps of at most MAX_TIMER_MS.
     */
    private armDeadline(entry: Entry<J>): void {
        const left = Math.max(0, entry.job.deadline - Date.now());
        entry.timer = left > MAX_TIMER_MS ? setTimeout(() => this.armDeadline(entry), MAX_TIMER_MS)
            : setTimeout(() => this.stopEntry(entry, "timeout"), left);
    }

    public isFull(): boolean {
        return this.queue.length >= this.deps.maxQueue;
    }

    /** Counts a refusal and returns the `queue_full` error, with an estimate of when to retry. */
    public refuse(): RequestError {
        this.rejected++;
        return new RequestError("queue_full", `the queue is full (${this.deps.maxQueue} waiting)`, {retryAfterMs: this.retryAfterMs()});
    }

    /** Removes and returns every queued job (e.g. to answer them when the model cannot load). */
    public takeQueued(): J[] {
        const taken = this.queue.splice(0);
        for (const e of taken) if (e.timer) clearTimeout(e.timer);
        return taken.map((e) => e.job);
    }

    /** Cancels a queued or running job; false when no such job is here. */
    public cancel(id: string): boolean {
        const entry = this.running.get(id) ?? this.queue.find((e) => e.job.id === id);
        if (!entry) return false;
        this.stopEntry(entry, "cancelled");
        return true;
    }

    public has(id: string): boolean {
        return this.running.has(id) || this.queue.some((e) => e.job.id === id);
    }

    /** While paused (e.g. too hot), queued jobs wait; running ones finish. */
    public setPaused(paused: boolean): void {
        this.paused = paused;
        if (!paused) this.pump();
    }

    /**
     * Stops taking work, lets running jobs finish for up to `drainMs`, then aborts them with reason
     * `shutdown`. Queued jobs are left alone (they stay in the job store for the next start).
     */
    public async stop(drainMs: number): Promise<{finished: number; aborted: number; leftQueued: number}> {
        this.accepting = false;
        const leftQueued = this.queue.length;
        for (const e of this.queue.splice(0)) if (e.timer) clearTimeout(e.timer);
        const before = this.running.size;
        if (before > 0) {
            const drained = await withTimeout(this.whenIdle().then(() => true), drainMs, () => false);
            if (!drained) for (const e of this.running.values()) e.controller.abort("shutdown" satisfies StopReason);
            await this.whenIdle();
        }
        return {finished: before - this.abortedAtStop, aborted: this.abortedAtStop, leftQueued};
    }

    public stats(): SchedulerStats {
        return {queued: this.queue.length, running: this.running.size, completed: this.completed, expired: this.expired,
            rejected: this.rejected, avgJobMs: this.avgJobMs, paused: this.paused};
    }

    /**
     * When to try again: the wait until the queue has room for one more, from the measured throughput
     * (jobs finished in the last minute); without recent jobs, the jobs that must finish first over the slots
     * times the average job (5 s before any has finished). Bounded to [100 ms, 10 min]. Either way it is the
     * wait for room for one more request, not for the whole queue to drain (L01 once said 165 s for a queue
     * that drained in 1.3 s).
     */
    public retryAfterMs(): number {
        const now = this.now();
        const recent = this.finishedAt.filter((at) => now - at <= 60_000);
        const ahead = this.queue.length - this.deps.maxQueue + 1;
        let ms: number;
        if (recent.length >= 2) {
            const perSecond = (recent.length - 1) / Math.max(0.001, ((recent.at(-1) ?? now) - (recent[0] ?? now)) / 1000);
            ms = (Math.max(1, ahead) / perSecond) * 1000;
        } else {
            ms = (Math.max(1, ahead) / this.deps.parallel) * (this.avgJobMs ?? 5000);
        }
        return Math.min(600_000, Math.max(100, Math.round(ms)));
    }

    private now(): number {
        return this.deps.now?.() ?? Date.now();
    }

    private whenIdle(): Promise<void> {
        if (this.running.size === 0) return Promise.resolve();
        return new Promise((resolve) => this.idle.add(resolve));
    }

    private stopEntry(entry: Entry<J>, reason: Exclude<StopReason, "shutdown">): void {
        if (entry.timer) clearTimeout(entry.timer);
        entry.timer = null;
        if (entry.running) {
            entry.controller.abort(reason);
            return;
        }
        const index = this.queue.indexOf(entry);
        if (index < 0) return;
        this.queue.splice(index, 1);
        this.expired++;
        this.deps.log.info("job ended before running", {id: entry.job.id, reason, queuedMs: Date.now() - entry.queuedAt});
        this.deps.expire(entry.job, reason);
        this.deps.onChange?.();
    }

    private pump(): void {
        while (!this.paused && this.accepting && this.running.size < this.deps.parallel && this.queue.length > 0) {
            // the first queued job whose exclusive group is not running (a group's jobs keep their order)
            const busy = new Set([...this.running.values()].map((e) => e.job.exclusive).filter((x) => x !== undefined));
            const index = this.queue.findIndex((e) => e.job.exclusive === undefined || !busy.has(e.job.exclusive));
            if (index < 0) break;
            const entry = this.queue.splice(index, 1)[0]!;
            entry.running = true;
            this.running.set(entry.job.id, entry);
            void this.execute(entry);
        }
    }

    private async execute(entry: Entry<J>): Promise<void> {
        const started = Date.now();
        try {
            await this.deps.run(entry.job, entry.controller.signal, started - entry.queuedAt);
        } catch (err) {
            this.deps.log.error("job runner failed", {id: entry.job.id, message: (err as Error).message});
        } finally {
            if (entry.timer) clearTimeout(entry.timer);
            this.running.delete(entry.job.id);
            if (entry.controller.signal.reason === "shutdown") this.abortedAtStop++;
            else {
                this.completed++;
                const ms = Date.now() - started;
                this.avgJobMs = this.avgJobMs === null ? ms : this.avgJobMs * 0.8 + ms * 0.2;
                this.finishedAt.push(this.now());
                if (this.finishedAt.length > 64) this.finishedAt.shift();
            }
            if (this.running.size === 0) for (const resolve of this.idle) resolve();
            if (this.running.size === 0) this.idle.clear();
            this.pump();
            this.deps.onChange?.();
        }
    }
}
