/**
 * Replies: where and how a request's answer, its streamed chunks and its errors are published, and the
 * job store's `done` once the broker has the final one. The request pipeline (pipeline.ts) decides what
 * to say; this decides how it goes out.
 */
import type {IClientPublishOptions} from "mqtt";
import type {RequestError} from "../errors.js";
import type {EventBus} from "../events.js";
import type {Logger} from "../log.js";
import {errorReply, type ReplyTarget} from "../mqtt/protocol.js";
import type {Router} from "../routes/router.js";
import type {JobStore} from "./store.js";

/** The part of the MQTT link replies need. */
export interface ReplyLink {
    publish(topic: string, payload: string | Buffer, options?: IClientPublishOptions): Promise<void>;
}

export interface ReplySenderDeps {
    log: Logger;
    link: ReplyLink;
    store: Pick<JobStore, "lookup" | "finish">;
    router: Pick<Router, "note">;
    events: EventBus;
    device: string;
    /** the model being served, named in error replies ("" before one is chosen) */
    modelName: () => string;
    /** called once a job's final reply is out (or given up) and the job left the journal */
    onFinished?: (id: string) => void;
}

export class ReplySender {
    private readonly deps: ReplySenderDeps;

    public constructor(deps: ReplySenderDeps) {
        this.deps = deps;
    }

    /** A streamed chunk: QoS 0, not retained; a lost chunk is made good by the final reply. */
    public chunk(reply: ReplyTarget, payload: string): void {
        void this.deps.link.publish(reply.topic, payload, replyOptions(reply, 0, false))
            .catch((err: unknown) => this.deps.log.warn("reply publish failed", {topic: reply.topic, message: (err as Error).message}));
    }

    /**
     * An error answer. For a journaled job it is the final reply (the job is done once the broker has it);
     * otherwise it is published once. A "text" route publishes no errors: a dashboard or actuator could
     * not tell one from an answer.
     */
    public error(id: string | null, reply: ReplyTarget, error: RequestError): void {
        const {events, router, store} = this.deps;
        events.emit("requestError", {id, code: error.code});
        // A route's unreadable payload (no id yet) was counted by the router already.
        if (id !== null) router.note(reply, "failed", {id, code: error.code});
        const payload = reply.format === "text" ? null
            : JSON.stringify(errorReply(id, error, {model: this.deps.modelName(), device: this.deps.device}));
        if (id !== null && store.lookup(id) === "pending") this.final(id, reply, payload, false);
        else if (payload !== null) {
            void this.deps.link.publish(reply.topic, payload, replyOptions(reply, 1, false))
                .catch((err: unknown) => this.deps.log.warn("reply publish failed", {topic: reply.topic, message: (err as Error).message}));
        }
    }

    /** The final reply (null: nothing to publish); the job is marked done once the broker has it. */
    public final(id: string, reply: ReplyTarget, payload: string | null, answer: boolean): void {
        void (payload === null ? Promise.resolve() : this.deps.link.publish(reply.topic, payload, replyOptions(reply, 1, answer)))
            .then(async () => {
                await this.deps.store.finish(id);
                this.deps.onFinished?.(id);
            })
            .catch((err: unknown) => this.deps.log.warn("reply publish failed; the job stays pending", {id, message: (err as Error).message}));
    }
}

/**
 * A reply's publish options: a route's QoS; retained only for a route's answer, so an error never
 * replaces the last retained answer; the request's correlation data echoed.
 */
export function replyOptions(reply: ReplyTarget, qos: 0 | 1, answer: boolean): IClientPublishOptions {
    return {qos: reply.qos ?? qos, ...(answer && reply.retain === true ? {retain: true} : {}),
        ...(reply.correlationData ? {properties: {correlationData: reply.correlationData}} : {})};
}
