/**
 * The retained `{base}/{device}/status` topic: one state at a time, republished on every connect
 * (a broker restart without persistence forgets retained messages) and whenever it changes.
 */
import type {Logger} from "../log.js";

export type DeviceState = "starting" | "loading" | "online" | "degraded" | "offline";

export interface StatusMessage {
    state: DeviceState;
    since: string;
    reason?: string;
    progress?: Record<string, unknown>;
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
}

export class StatusReporter {
    private readonly deps: StatusReporterDeps;
    private current: StatusMessage = {state: "starting", since: new Date().toISOString()};
    private publishing: Promise<void> = Promise.resolve();

    public constructor(deps: StatusReporterDeps) {
        this.deps = deps;
    }

    public get status(): StatusMessage {
        return this.current;
    }

    /** Sets the state; `since` changes only when the state itself does. */
    public set(state: DeviceState, extra: {reason?: string; progress?: Record<string, unknown>} = {}): Promise<void> {
        const changed = state !== this.current.state || extra.reason !== this.current.reason;
        this.current = {
            state,
            since: state === this.current.state ? this.current.since : new Date().toISOString(),
            ...(extra.reason !== undefined ? {reason: extra.reason} : {}),
            ...(extra.progress !== undefined ? {progress: extra.progress} : {})
        };
        if (changed) {
            this.deps.log.info("status", {state, ...(extra.reason !== undefined ? {reason: extra.reason} : {})});
            this.deps.onChange?.(this.current);
        }
        return this.republish();
    }

    /** Publishes the current state (retained, QoS 1); never rejects. */
    public republish(): Promise<void> {
        if (!this.deps.link.connected) return Promise.resolve();
        const payload = JSON.stringify(this.current);
        this.publishing = this.publishing.then(() => this.deps.link.publish(this.deps.topic, payload, {qos: 1, retain: true}))
            .catch((err: unknown) => {
                this.deps.log.warn("status publish failed", {message: (err as Error).message});
            });
        return this.publishing;
    }
}
