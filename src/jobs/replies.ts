/**
 * Replies: where and how a request's answer, its streamed chunks and its errors are published, and the
 * job store's `done` once the broker has the final one. The request pipeline (pipeline.ts) decides what
 * to say; this decides how it goes out, and what happens when the broker will not take it.
 *
 * A final reply the broker refuses (a v5 PUBACK reason code such as 0x87 not-authorized from an ACL) is
 * tried again a few times, then given up: logged, counted (replyDropped) and the job leaves the journal,
 * so one poison reply can never stay pending, block its id or be run again at every start. A reply that
 * would exceed the broker's Maximum Packet Size is never sent (the broker would disconnect us and the
 * kept message would be resent at every reconnect): a short error goes instead, or nothing.
 */
import type {IClientPublishOptions} from "mqtt";
import {RequestError} from "../errors.js";
import type {EventBus} from "../events.js";
import type {Logger} from "../log.js";
import {errorReply, type ReplyTarget} from "../mqtt/protocol.js";
import {publishPacketBytes} from "../mqtt/reply-policy.js";
import type {Router} from "../routes/router.js";
import type {JobStore, KeptReply} from "./store.js";

/** The part of the MQTT link replies need. */
export interface ReplyLink {
    publish(topic: string, payload: string | Buffer, options?: IClientPublishOptions): Promise<void>;
    /** the CONNACK's Maximum Packet Size of the current connection, if the broker announced one */
    brokerMaximumPacketSize(): number | undefined;
    /** the CONNACK's Maximum QoS (2 when the broker announced none) */
    brokerMaximumQos?(): 0 | 1 | 2;
}

/** The durable outgoing store's side of a final reply (src/mqtt/outgoing-store.ts). */
export interface DurableReplies {
    settle(topic: string, id: string): void;
}

export interface ReplySenderDeps {
    log: Logger;
    link: ReplyLink;
    store: Pick<JobStore, "finish" | "sync">;
    /**
     * With it, a native request's final reply goes at QoS 2 through MQTT.js's outgoing store on disk, so a
     * crash at any point never answers twice (src/mqtt/outgoing-store.ts); without it, QoS 1.
     */
    outgoing?: DurableReplies;
    router: Pick<Router, "note">;
    events: EventBus;
    device: string;
    /** the model being served, named in error replies ("" before one is chosen) */
    modelName: () => string;
    /** waits before the 2nd, 3rd... attempt of a refused final reply; default 1 s, 5 s, 30 s */
    retryDelaysMs?: readonly number[];
}

const RETRY_DELAYS_MS = [1000, 5000, 30_000];
/** Delivered replies are forgotten by the outgoing store in batches, once the journal's `done` records are synced. */
const SETTLE_EVERY_MS = 2000;

export class ReplySender {
    private readonly deps: ReplySenderDeps;
    private readonly timers = new Set<NodeJS.Timeout>();
    /** delivered durable replies whose jobs are done, for the outgoing store to forget after the next journal sync */
    private settled: Array<{topic: string; id: string}> = [];
    private settleTimer: NodeJS.Timeout | null = null;
    /** final replies published and not yet acknowledged (QoS 2 takes a round trip more), by job key */
    private readonly sending = new Map<string, KeptReply>();

    public constructor(deps: ReplySenderDeps) {
        this.deps = deps;
    }

    /** Stops pending retries (at shutdown: their jobs stay in the journal for the next start). */
    public stop(): void {
        for (const timer of this.timers) clearTimeout(timer);
        this.timers.clear();
        this.settle();
    }

    /** Syncs the journal, then lets the outgoing store forget the replies whose `done` is now on disk. */
    private settle(): void {
        if (this.settleTimer) clearTimeout(this.settleTimer);
        this.settleTimer = null;
        if (this.settled.length === 0 || !this.deps.outgoing || !this.deps.store.sync()) return;
        for (const r of this.settled) this.deps.outgoing.settle(r.topic, r.id);
        this.settled = [];
    }

    /** A streamed chunk: QoS 0, not retained; a lost chunk is made good by the final reply. */
    public chunk(reply: ReplyTarget, payload: string): void {
        if (this.tooLarge(reply, payload, 0) !== null) return;
        void this.deps.link.publish(reply.topic, payload, replyOptions(reply, 0, false))
            .catch((err: unknown) => this.deps.log.debug("stream chunk publish failed", {topic: reply.topic, message: (err as Error).message}));
    }

    /**
     * An error answer. For a journaled job (`key`) it is the final reply (the job is done once the broker
     * has it); otherwise it is published once. A "text" route publishes no errors: a dashboard or actuator
     * could not tell one from an answer.
     */
    public error(id: string | null, key: string | null, reply: ReplyTarget, error: RequestError): void {
        const {events, router} = this.deps;
        events.emit("requestError", {id, code: error.code});
        // A route's unreadable payload (no id yet) was counted by the router already.
        if (id !== null) router.note(reply, "failed", {id, code: error.code});
        const payload = reply.format === "text" ? null : this.errorPayload(id, error);
        if (key !== null) this.final(id ?? key, key, reply, payload, false);
        else if (payload !== null && this.tooLarge(reply, payload, 1) === null) {
            void this.deps.link.publish(reply.topic, payload, replyOptions(reply, 1, false))
                .catch((err: unknown) => this.deps.log.warn("error reply not published", {id, topic: reply.topic, message: (err as Error).message}));
        }
    }

    /** The final reply (null: nothing to publish); the job is marked done once the broker has it, or it was given up. */
    public final(id: string, key: string, reply: ReplyTarget, payload: string | null, answer: boolean, attempt = 0): void {
        if (payload === null) {
            this.deps.store.finish(key);
            return;
        }
        // a native request's final reply: QoS 2 through the durable outgoing store (exactly once across crashes)
        const durable = this.deps.outgoing !== undefined && reply.qos === undefined;
        const options = replyOptions(reply, durable ? Math.min(2, this.deps.link.brokerMaximumQos?.() ?? 2) as 1 | 2 : 1, answer);
        const oversize = this.tooLarge(reply, payload, options.qos ?? 1);
        if (oversize !== null) {
            this.deps.log.warn("reply larger than the broker takes; an error goes instead", {id, topic: reply.topic, problem: oversize});
            const instead = answer && reply.format !== "text"
                ? this.errorPayload(id, new RequestError("internal", `the answer ${oversize}; ask for fewer maxTokens`)) : null;
            if (instead !== null && this.tooLarge(reply, instead, 1) === null) return this.final(id, key, reply, instead, false, attempt);
            this.giveUp(id, key, reply, `too large: ${oversize}`);
            return;
        }
        const kept: KeptReply = {topic: reply.topic, payload, qos: reply.qos ?? 1, retain: options.retain === true,
            ...(reply.correlationData ? {correlationData: reply.correlationData} : {})};
        this.sending.set(key, kept);
        this.deps.link.publish(reply.topic, payload, options).then(() => {
            this.sending.delete(key);
            this.deps.store.finish(key, kept);
            if (durable && options.qos === 2) {
                this.settled.push({topic: reply.topic, id});
                if (!this.settleTimer) {
                    this.settleTimer = setTimeout(() => this.settle(), SETTLE_EVERY_MS);
                    this.settleTimer.unref();
                }
            }
        }, (err: unknown) => {
            this.sending.delete(key);
            const reason = refusal(err);
            const delay = (this.deps.retryDelaysMs ?? RETRY_DELAYS_MS)[attempt];
            if (delay === undefined) return this.giveUp(id, key, reply, reason);
            this.deps.log.warn("reply not taken by the broker; trying again", {id, topic: reply.topic, reason, attempt: attempt + 1, inMs: delay});
            const timer = setTimeout(() => {
                this.timers.delete(timer);
                this.final(id, key, reply, payload, answer, attempt + 1);
            }, delay);
            this.timers.add(timer);
        });
    }

    /** The final reply of a job that is out but not yet acknowledged by the broker, or null. */
    public inFlight(key: string): KeptReply | null {
        return this.sending.get(key) ?? null;
    }

    /** Publishes a reply kept from an earlier answer (a retried request, within the dedupe window). */
    public again(kept: KeptReply): void {
        void this.deps.link.publish(kept.topic, kept.payload, {qos: kept.qos, ...(kept.retain ? {retain: true} : {}),
            ...(kept.correlationData ? {properties: {correlationData: kept.correlationData}} : {})})
            .catch((err: unknown) => this.deps.log.warn("kept reply not published", {topic: kept.topic, message: (err as Error).message}));
    }

    private giveUp(id: string, key: string, reply: ReplyTarget, reason: string): void {
        this.deps.log.error("reply given up: the broker would not take it; the request leaves the journal", {id, topic: reply.topic, reason});
        this.deps.events.emit("replyDropped", {id, topic: reply.topic, reason});
        this.deps.store.finish(key);
    }

    private errorPayload(id: string | null, error: RequestError): string {
        return JSON.stringify(errorReply(id, error, {model: this.deps.modelName(), device: this.deps.device}));
    }

    /** Why the broker would refuse this publish for its size, or null. */
    private tooLarge(reply: ReplyTarget, payload: string, qos: 0 | 1 | 2): string | null {
        const max = this.deps.link.brokerMaximumPacketSize();
        if (max === undefined) return null;
        const bytes = publishPacketBytes({topic: reply.topic, payloadBytes: Buffer.byteLength(payload), qos,
            correlationDataBytes: reply.correlationData?.length ?? 0});
        return bytes > max ? `would be a ${bytes}-byte packet and the broker takes at most ${max}` : null;
    }
}

/** What the broker (or the client) said: the v5 reason code when there is one. */
function refusal(err: unknown): string {
    const e = err as {message?: string; code?: unknown};
    return typeof e.code === "number" ? `${e.message ?? "refused"} (reason code 0x${e.code.toString(16)})` : e.message ?? String(err);
}

/**
 * A reply's publish options: a route's QoS; retained only for a route's answer, so an error never
 * replaces the last retained answer; the request's correlation data echoed.
 */
export function replyOptions(reply: ReplyTarget, qos: 0 | 1 | 2, answer: boolean): IClientPublishOptions {
    return {qos: reply.qos ?? qos, ...(answer && reply.retain === true ? {retain: true} : {}),
        ...(reply.correlationData ? {properties: {correlationData: reply.correlationData}} : {})};
}
