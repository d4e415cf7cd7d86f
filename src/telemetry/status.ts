/**
 * The retained `{base}/{device}/status` topic: one state at a time, republished on every connect
 * (a broker restart without persistence forgets retained messages) and whenever it changes.
 *
 * Two inputs make the published state: the lifecycle (`set`: starting, loading, online, degraded,
 * offline) and named conditions (`setCondition`: e.g. "thermal", "memory") that turn `online` into
 * `degraded` with their reasons while they last. Transitions made before the first connection are
 * published in order once the broker is reached, so a subscriber sees starting -> loading -> online
 * even when the broker came up late.
 */
import {shortReason} from "../errors.js";
import type {Logger} from "../log.js";

export type DeviceState = "starting" | "loading" | "online" | "degraded" | "offline";

export const DEVICE_STATES: readonly DeviceState[] = ["starting", "loading", "online", "degraded", "offline"];

export interface StatusMessage {
    state: DeviceState;
    since: string;
    reason?: string;
    /** names of the conditions that made the device degraded, e.g. ["thermal"] */
    conditions?: string[];
    progress?: Record<string, unknown>;
    /** the publishing daemon: a random id per process and the host name (two daemons with one device id tell apart) */
    instance?: string;
    host?: string;
}

export interface StatusPublisher {
    publish(topic: string, payload: string, options: {qos: 1; retain: true}): Promise<void>;
    readonly connected: boolean;
}

export interface StatusReporterDeps {
    log: Logger;
    topic: string;
    link: StatusPublisher;
    onChange?: (status: StatusMessage) => void;
    /** goes into every message (src/mqtt/session-guard.ts) */
    identity?: {instance: string; host: string};
}

interface Lifecycle {
    state: DeviceState;
    reason?: string;
    progress?: Record<string, unknown>;
}

/** Progress-only updates (download or load percentages) go out at most this often. */
const PROGRESS_MIN_INTERVAL_MS = 1000;
/** Transitions kept for the first connection; more than this is start-up churn nobody needs. */
const MAX_EARLY_TRANSITIONS = 8;

export class StatusReporter {
    private readonly deps: StatusReporterDeps;
    private lifecycle: Lifecycle = {state: "starting"};
    private readonly conditions = new Map<string, string>();
    private current: StatusMessage = {state: "starting", since: new Date().toISOString()};
    private publishing: Promise<void> = Promise.resolve();
    private everPublished = false;
    private early: StatusMessage[] = [this.current];
    private lastProgressAt = 0;
    private lastProgressPhase: unknown = undefined;
    private progressTimer: NodeJS.Timeout | null = null;
    private readonly listeners = new Set<(status: StatusMessage) => void>();

    public constructor(deps: StatusReporterDeps) {
        this.deps = deps;
    }

    public get status(): StatusMessage {
        return this.current;
    }

    /** The lifecycle state; `since` changes only when the published state itself does. */
    public set(state: DeviceState, extra: {reason?: string; progress?: Record<string, unknown>} = {}): Promise<void> {
        const progressOnly = state === this.lifecycle.state && extra.reason === this.lifecycle.reason && extra.progress !== undefined;
        this.lifecycle = {state, ...(extra.reason !== undefined ? {reason: extra.reason} : {}), ...(extra.progress !== undefined ? {progress: extra.progress} : {})};
        const changed = this.recompute();
        const phase = extra.progress?.phase;
        if (!changed && progressOnly && phase === this.lastProgressPhase) {
            // Same phase: at most one publish per interval, and the latest figures always go out in the end.
            const wait = this.lastProgressAt + PROGRESS_MIN_INTERVAL_MS - Date.now();
            if (wait > 0) {
                this.progressTimer ??= setTimeout(() => {
                    this.progressTimer = null;
                    this.lastProgressAt = Date.now();
                    void this.republish();
                }, wait).unref();
                return Promise.resolve();
            }
        }
        if (this.progressTimer) clearTimeout(this.progressTimer);
        this.progressTimer = null;
        this.lastProgressAt = Date.now();
        this.lastProgressPhase = phase;
        return this.republish();
    }

    /** Raises (reason) or clears (null) a named condition; while any is raised, `online` shows as `degraded`. */
    public setCondition(name: string, reason: string | null): Promise<void> {
        if (reason === null ? !this.conditions.has(name) : this.conditions.get(name) === reason) return Promise.resolve();
        if (reason === null) this.conditions.delete(name);
        else this.conditions.set(name, reason);
        return this.recompute() ? this.republish() : Promise.resolve();
    }

    public get activeConditions(): ReadonlyMap<string, string> {
        return this.conditions;
    }

    /** Calls `listener` on every change of state or reason (besides deps.onChange); returns the unsubscribe. */
    public addListener(listener: (status: StatusMessage) => void): () => void {
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
    }

    /** Publishes the current state (retained, QoS 1); never rejects. */
    public republish(): Promise<void> {
        if (!this.deps.link.connected) return Promise.resolve();
        const messages = this.everPublished ? [this.current] : collapse([...this.early, this.current]);
        this.everPublished = true;
        this.early = [];
        for (const message of messages) {
            const payload = JSON.stringify({...message, ...this.deps.identity});
            this.publishing = this.publishing.then(() => this.deps.link.publish(this.deps.topic, payload, {qos: 1, retain: true}))
                .catch((err: unknown) => {
                    this.deps.log.warn("status publish failed", {message: (err as Error).message});
                });
        }
        return this.publishing;
    }

    /** Recomputes the published message; true when the state or reason changed. */
    private recompute(): boolean {
        const degradable = this.lifecycle.state === "online" || this.lifecycle.state === "degraded";
        const conditionNames = degradable ? [...this.conditions.keys()] : [];
        const state: DeviceState = conditionNames.length > 0 ? "degraded" : this.lifecycle.state;
        const reasons = [this.lifecycle.reason, ...conditionNames.map((n) => this.conditions.get(n))].filter((r): r is string => r !== undefined);
        // One line for dashboards and Home Assistant's attributes; the log line that raised it has the details.
        const reason = reasons.length > 0 ? shortReason(reasons.join("; ")) : undefined;
        const changed = state !== this.current.state || reason !== this.current.reason;
        this.current = {
            state,
            since: state === this.current.state ? this.current.since : new Date().toISOString(),
            ...(reason !== undefined ? {reason} : {}),
            ...(conditionNames.length > 0 ? {conditions: conditionNames} : {}),
            ...(this.lifecycle.progress !== undefined ? {progress: this.lifecycle.progress} : {})
        };
        if (changed) {
            this.deps.log.info("status", {state, ...(reason !== undefined ? {reason} : {})});
            this.deps.onChange?.(this.current);
            for (const listener of this.listeners) listener(this.current);
            if (!this.everPublished) {
                this.early.push(this.current);
                if (this.early.length > MAX_EARLY_TRANSITIONS) this.early.shift();
            }
        }
        return changed;
    }
}

/** Drops a message followed by one of the same state and reason: only the newest of a run matters. */
function collapse(messages: StatusMessage[]): StatusMessage[] {
    return messages.filter((m, i) => {
        const next = messages[i + 1];
        return next === undefined || next.state !== m.state || next.reason !== m.reason;
    });
}
