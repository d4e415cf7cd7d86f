/**
 * Membership of the fleet queue ($share/{group}/{base}/fleet/request). Mosquitto's shared subscriptions
 * hand messages round-robin and do not follow load, and a member that is subscribed keeps being handed
 * its share even when it cannot run it (and, with a persistent session, even while it is stopped). So a
 * member holds the subscription only while it can take work: it leaves while the model is not ready,
 * while paused (too hot), while its journal cannot take requests and while its queue is full (back when
 * half of it has drained), and before a clean stop. A subscription the broker refuses makes the device
 * `degraded` with the broker's reason and is tried again with backoff (docs/DESIGN.md, "Fleet").
 */
import type {Logger} from "../log.js";

export interface FleetLink {
    setSubscribed(filter: string, qos: 0 | 1, on: boolean): Promise<void>;
}

export interface FleetCapacity {
    modelReady: boolean;
    /** new work is paused (telemetry.pauseWhenHot) */
    paused: boolean;
    /** the job journal takes requests */
    storageOk: boolean;
    queued: number;
    maxQueue: number;
}

export interface FleetMembershipDeps {
    log: Logger;
    link: FleetLink;
    /** the shared-subscription filter */
    filter: string;
    /** raises (reason) or clears (null) the device's "fleet" condition */
    onProblem: (reason: string | null) => void;
    /** retry delays for a refused subscription, growing to the last; default 5 s ... 5 min */
    retryDelaysMs?: readonly number[];
}

const RETRY_DELAYS_MS = [5000, 15_000, 60_000, 300_000];

export class FleetMembership {
    private readonly deps: FleetMembershipDeps;
    private member = false;
    private stopped = false;
    private refused = 0;
    private retryTimer: NodeJS.Timeout | null = null;
    private capacity: FleetCapacity | null = null;

    public constructor(deps: FleetMembershipDeps) {
        this.deps = deps;
    }

    /** The member's capacity changed: join or leave the rotation. */
    public update(capacity: FleetCapacity): void {
        this.capacity = capacity;
        if (this.stopped || this.retryTimer !== null) return;
        const full = capacity.queued >= capacity.maxQueue;
        const drained = capacity.queued <= Math.floor(capacity.maxQueue / 2);
        const able = capacity.modelReady && !capacity.paused && capacity.storageOk;
        const join = able && (this.member ? !full : drained);
        if (join === this.member) return;
        this.member = join;
        this.deps.log.info(join ? "fleet queue joined" : "fleet queue left", {filter: this.deps.filter, modelReady: capacity.modelReady,
            paused: capacity.paused, storageOk: capacity.storageOk, queued: capacity.queued});
        void this.deps.link.setSubscribed(this.deps.filter, 1, join);
    }

    /** The broker's answer to a subscription (MqttLink onSubscription). */
    public onSubscription(filter: string, problem: string | null): void {
        if (filter !== this.deps.filter) return;
        if (problem === null) {
            if (this.refused > 0) this.deps.log.info("fleet subscription taken by the broker", {filter});
            this.refused = 0;
            this.deps.onProblem(null);
            return;
        }
        const delays = this.deps.retryDelaysMs ?? RETRY_DELAYS_MS;
        const delay = delays[Math.min(this.refused, delays.length - 1)] ?? 300_000;
        this.refused++;
        this.deps.onProblem(`the broker refused the fleet subscription ${filter} (${problem}); retrying in ${Math.round(delay / 1000)} s`);
        // drop it so a later update subscribes afresh, after the delay
        this.member = false;
        void this.deps.link.setSubscribed(filter, 1, false);
        if (this.retryTimer) clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            if (this.capacity) this.update(this.capacity);
        }, delay);
        this.retryTimer.unref();
    }

    /** Before a clean stop: out of the rotation, so the broker hands fleet work to the others. */
    public async leave(): Promise<void> {
        this.stopped = true;
        if (this.retryTimer) clearTimeout(this.retryTimer);
        this.retryTimer = null;
        if (!this.member) return;
        this.member = false;
        await this.deps.link.setSubscribed(this.deps.filter, 1, false);
        this.deps.log.info("fleet queue left before stopping", {filter: this.deps.filter});
    }
}
